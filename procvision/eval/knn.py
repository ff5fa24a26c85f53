"""k-NN classification with the visual memory (paper §4.1): build a memory, sweep k and votes.

Results are flat dicts of numbers in percent, keyed `"{method}/k{k}/top1"` and `.../top5`, plus
`"{method}/best/top1"` and `"{method}/best/k"` (the best k by top-1, as the paper's tables report)
and a few counts under `"info/..."`. Callbacks log them with a `knn/` prefix; the JSON stores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from procvision.constants import PAPER_T
from procvision.memory import METHODS, PAPER_KS, VisualMemory, build_memory, knn_sweep

DEFAULT_KS = PAPER_KS  # 1, 2, 3, 4, 5, 10, 20, 100, 200
DEFAULT_T = PAPER_T


def flatten_sweep(sweep: dict) -> dict[str, float]:
    """`knn_sweep`'s nested dict -> {"weighted/k20/top1": ..., "weighted/best/k": ..., "info/...": ...}."""
    out: dict[str, float] = {}
    for method, table in sweep.items():
        for key, value in table.items():
            if method == "info":
                if isinstance(value, (int, float)):
                    out[f"info/{key}"] = float(value)
            elif key == "best":
                out.update({f"{method}/best/{m}": float(v) for m, v in value.items()})
            else:
                out.update({f"{method}/k{key}/{m}": float(v) for m, v in value.items()})
    return out


def knn_evaluate(
    memory_emb: Any,
    memory_labels: Any,
    query_emb: Any,
    query_labels: Any,
    ks: Sequence[int] = DEFAULT_KS,
    methods: Sequence[str] = ("weighted",),
    T: float = DEFAULT_T,
    engine: str = "auto",
) -> dict[str, float]:
    """k-NN top-1/top-5 (percent) of queries against a memory, every k from one search.

    Args:
        memory_emb, memory_labels: [N, D] embeddings and [N] integer labels (any values).
        query_emb, query_labels: [Q, D] and [Q].
        ks: neighbour counts (the paper's 1..200 by default; k > N is evaluated at N).
        methods: any of "weighted" (exp(s/T), the paper's), "plurality", "rank".
        T: temperature of "weighted".
        engine: VisualMemory engine ("auto", "faiss", "torch").
    """
    memory = build_memory(memory_emb, memory_labels, engine=engine, allow_empty=False)
    return knn_results(memory, query_emb, query_labels, ks, methods, T)


def knn_results(
    memory: VisualMemory,
    query_emb: Any,
    query_labels: Any,
    ks: Sequence[int] = DEFAULT_KS,
    methods: Sequence[str] = ("weighted",),
    T: float = DEFAULT_T,
) -> dict[str, float]:
    """`knn_evaluate` on a memory already built (what `KNNCallback` and the demo table share)."""
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods: {m!r} is not one of {METHODS}")
    sweep = knn_sweep(
        memory,
        _np(query_emb, np.float32),
        _np(query_labels, np.int64),
        tuple(int(k) for k in ks),
        tuple(methods),
        T,
    )
    return flatten_sweep(sweep)


def _np(x: Any, dtype: type) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=dtype))

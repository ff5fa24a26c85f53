"""The one memory builder: embeddings and labels (plus optional provenance) -> a `VisualMemory`.

Every place that makes a memory from embeddings (the `memory build` command, k-NN evaluation,
the demo's saved memory) calls `build_memory`; loading from disk goes through
`VisualMemory._from_state` instead (stored rows are adopted bit for bit, not re-normalised).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from procvision.memory.errors import InvalidArgument
from procvision.memory.index import to_numpy
from procvision.memory.store import VisualMemory


def build_memory(
    embeddings: Any,
    labels: Any,
    *,
    ids: Any = None,
    metadata: list[dict | None] | None = None,
    engine: str = "auto",
    fingerprint: str | None = None,
    class_names: Sequence[str] | None = None,
    recipe: dict | None = None,
    device: str | None = None,
    allow_empty: bool = True,
) -> VisualMemory:
    """A new `VisualMemory` holding `embeddings` with `labels`.

    Args:
        embeddings: [N, D] tensor or array (L2-normalised here).
        labels: [N] non-negative integers (indices into class_names when it is given).
        ids: [N] unique ids (default 0..N-1).
        metadata: N JSON-able dicts (e.g. {"source", "sha256"}) or None.
        engine, fingerprint, class_names, device: as for `VisualMemory`.
        recipe: the memory's embedding recipe and default vote (`memory.recipe.make_recipe`).
        allow_empty: accept N == 0 (an empty memory is a valid state); False refuses it.
    Returns:
        the memory (not saved; `memory.save(directory)` writes it).
    """
    emb = np.asarray(to_numpy(embeddings, "embeddings"), dtype=np.float32)
    if emb.ndim != 2:
        raise InvalidArgument(f"memory embeddings: expected an [N, D] array, got shape {emb.shape}")
    if emb.shape[0] == 0 and not allow_empty:
        raise InvalidArgument(
            f"memory embeddings: expected a non-empty [N, D] array, got {emb.shape}"
        )
    names = None if class_names is None else [str(c) for c in class_names]
    mem = VisualMemory(
        emb.shape[1], engine=engine, fingerprint=fingerprint, class_names=names, device=device,
        recipe=recipe,
    )  # fmt: skip
    mem.add(emb, to_numpy(labels, "labels"), ids=ids, metadata=metadata)
    return mem

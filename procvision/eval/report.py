"""Tables of k-NN results, and the Fashion-MNIST demo report (model vs random init vs raw pixels)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from procvision.constants import PAPER_T

_KEY = re.compile(r"^(?:knn/)?(?P<method>[a-z_]+)/k(?P<k>\d+)/top(?P<top>[15])$")


def _parse(results: Mapping[str, float]) -> dict[tuple[str, int, int], float]:
    out = {}
    for key, value in results.items():
        if m := _KEY.match(key):
            out[(m["method"], int(m["k"]), int(m["top"]))] = float(value)
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def knn_table(results: Mapping) -> str:
    """Markdown table of k-NN accuracies (percent).

    `results` is one result dict of `knn_evaluate` ({"weighted/k20/top1": 84.1, ...}): one row per k,
    top-1 and top-5 per method. Or {name: result dict}: one row per name, a column per (method, k)
    top-1, plus top-5 when there is a single (method, k).
    """
    if results and all(isinstance(v, Mapping) for v in results.values()):
        parsed = {name: _parse(r) for name, r in results.items()}
        cols = sorted(
            {(m, k) for p in parsed.values() for (m, k, _t) in p}, key=lambda c: (c[0], c[1])
        )
        with_top5 = len(cols) == 1
        head = (
            ["features"] + [f"{m} k={k} top-1" for m, k in cols] + (["top-5"] if with_top5 else [])
        )
        rows = []
        for name, p in parsed.items():
            cells = [_fmt(p.get((m, k, 1))) for m, k in cols]
            if with_top5:
                cells.append(_fmt(p.get((cols[0][0], cols[0][1], 5))))
            rows.append([str(name)] + cells)
    else:
        p = _parse(results)
        methods = sorted({m for m, _k, _t in p})
        ks = sorted({k for _m, k, _t in p})
        head = ["k"] + [f"{m} top-{t}" for m in methods for t in (1, 5)]
        rows = [[str(k)] + [_fmt(p.get((m, k, t))) for m in methods for t in (1, 5)] for k in ks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fashion_mnist_knn_report(
    backbone_or_path: torch.nn.Module | str | Path,
    k: int = 20,
    max_memory: int | None = None,
    max_queries: int | None = None,
    device: str = "cpu",
    image_size: int | None = None,
    batch_size: int = 256,
    root: str | None = None,
    seed: int = 0,
    T: float = PAPER_T,
    progress: bool = True,
    memory_dir: str | Path | None = None,
    precision: str = "auto",
) -> dict:
    """The demo table: Fashion-MNIST k-NN (memory = train, queries = test; full 60k/10k by default)
    of the given backbone, the same architecture at random init (seed `seed`) and raw pixels.

    The evaluation of `procvision validate --config configs/eval/knn_fashion_mnist.yaml`, so the
    numbers agree: the same sets (`KNNDataModule`'s: images resized (bicubic) straight to the
    backbone's `img_size` (or `image_size`), ImageNet-normalised; memory subset seed `seed`,
    queries `seed + 1`), the same features (`embed_batch`, CLS after the final norm, `precision`
    resolved by `resolve_precision` as the evaluator does), the same random init
    (`random:PATH`, seed `seed`) and the same k-NN (`knn_evaluate`: weighted vote exp(cos/T),
    T = 0.07, at the given k).

    With `memory_dir`, the model's memory (embeddings, labels, class names, per-item source,
    sha256 and recipe, backbone fingerprint) is saved there for `procvision memory classify`.

    Returns:
        {"results": {"model": {...}, "random init": {...}, "raw pixels": {...}},
         "seconds": {...}, "config": {...}}; print `knn_table(report["results"])`.
    """
    from procvision.data.datasets.datamodule import knn_sets
    from procvision.eval.embed import embed_dataset, pixel_embeddings, resolve_precision
    from procvision.eval.knn import knn_evaluate
    from procvision.eval.recipe import load_backbone_spec, random_spec, resolve_backbone_spec

    spec = None
    if isinstance(backbone_or_path, (str, Path)):
        spec = resolve_backbone_spec(str(backbone_or_path))
        backbone = load_backbone_spec(spec, device)
    else:
        backbone = backbone_or_path.to(device)
    config = dict(getattr(backbone, "config", {}))
    size = int(image_size or config.get("img_size", 224))
    where = f"fashion_mnist:{root}" if root else "fashion_mnist"
    mem_set, qry_set = knn_sets(
        f"{where}:train", f"{where}:test", size, "resize", max_memory=max_memory,
        max_queries=max_queries, subset_seed=seed, batch_size=batch_size,
    )  # fmt: skip
    memory, queries = mem_set.open(size), qry_set.open(size)
    transform = mem_set.transform(size)
    used = resolve_precision(precision, device)

    seconds: dict[str, float] = {}
    results: dict[str, dict] = {}

    def run(name: str, embed) -> tuple[torch.Tensor, torch.Tensor]:
        t0 = time.perf_counter()
        (m_emb, m_lab), (q_emb, q_lab) = embed(memory, "memory"), embed(queries, "queries")
        results[name] = knn_evaluate(
            m_emb, m_lab, q_emb, q_lab, ks=(k,), methods=("weighted",), T=T
        )
        seconds[name] = time.perf_counter() - t0
        return m_emb, m_lab

    def with_model(model):
        return lambda ds, what: embed_dataset(
            model, ds, batch_size, device, progress, desc=what, precision=used
        )

    m_emb, m_lab = run("model", with_model(backbone))
    if memory_dir is not None:
        save_memory_of(memory_dir, memory, m_emb, m_lab, backbone, spec, transform, used)
    random_init = None
    if config:
        if spec is not None and not spec.startswith("random:"):
            random_init = resolve_backbone_spec(f"random:{spec}", seed=seed)
        else:
            arch = {k: v for k, v in config.items() if k != "drop_path_rate"}
            random_init = random_spec(**{**arch, "seed": seed})
        run("random init", with_model(load_backbone_spec(random_init, device)))
    run("raw pixels", lambda ds, what: pixel_embeddings(ds, progress=progress))
    return {
        "results": results,
        "seconds": seconds,
        "config": {
            "k": k, "T": T, "memory": len(memory), "queries": len(queries),
            "image_size": size, "backbone": config, "backbone_spec": spec,
            "random_init_spec": random_init, "precision": used,
            "sets": [mem_set.describe(), qry_set.describe()],
        },
    }  # fmt: skip


def save_memory_of(
    directory: str | Path,
    dataset,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    backbone,
    backbone_spec: str | None,
    transform,
    precision: str = "fp32",
) -> Path:
    """Save embeddings of every item of `dataset` as a memory with full per-item provenance and
    the recipe they were made with (backbone, transform, precision)."""
    from procvision.eval.recipe import item_metadata, recipe_for, transform_to_str
    from procvision.memory import build_memory

    tstr = transform_to_str(transform)
    meta = [item_metadata(dataset, i, backbone_spec, tstr) for i in range(len(dataset))]
    mem = build_memory(
        embeddings, labels, metadata=meta, fingerprint=backbone.fingerprint(),
        class_names=dataset.class_names,
        recipe=recipe_for(backbone_spec, backbone, transform, precision=precision),
    )  # fmt: skip
    return mem.save(directory)

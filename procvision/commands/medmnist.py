"""`procvision medmnist`: k-NN on the ten MedMNIST 2D sets of the paper's Table 3, one command.

    procvision medmnist --root /data/medmnist --backbone runs/kml_mixup/export --out runs/eval/medmnist
    procvision medmnist --root /data/medmnist --backbone pixels --size 28 --sets [path, blood]

For each set, reads the official `{name}mnist_224.npz` (or `{name}mnist.npz`, the 28-px file, or
`{name}mnist_{size}.npz`) from `--root`; memory = the train split, queries = the official test split
(to compare with the MedMNIST paper's row); images resized (bicubic) straight to the backbone's
size, L2-normalised CLS, weighted vote exp(cos / 0.07) over k in 1, 2, 3, 4, 5, 10, 20, 100, 200.
Prints best-k and k = 20 beside the MedMNIST paper's best and the paper's S. KML Mixup; writes one
JSON per set (`{out}/{name}.json`, the k-NN JSON shape) and the table (`{out}/medmnist_table.md`).
A set whose file is missing is a gap in the table, never a zero. With `--cache-dir DIR` the
embeddings are kept on disk by the evaluation layer's cache (keyed by the backbone fingerprint and
each set's file, split, transform and subset): a second run with the same backbone (another `--ks`
or `--T`) embeds nothing. Off by default; the raw-pixel baseline is never cached.
`--precision`/`--feature` mean what validate's `--model.precision`/`--model.feature` mean
(default auto/cls) and are recorded in each JSON.
"""

from __future__ import annotations

import time
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from procvision.atomic import write_json_atomic, write_text_atomic
from procvision.commands._common import (
    PATH_ERRORS,
    add_embedding_arguments,
    open_dataset_features,
    run_reporting,
)
from procvision.constants import PAPER_K, PAPER_KS, PAPER_T
from procvision.data.datasets import EvalTransform, MedMNIST
from procvision.data.datasets.datamodule import EvalSet
from procvision.errors import UserError
from procvision.eval.knn import knn_evaluate
from procvision.eval.paper_report import MEDMNIST_PAPER_BEST, MEDMNIST_SETS, TABLE3_MEDMNIST

PROG = "procvision medmnist"
PIXELS_MAX_SIDE = 128  # the raw-pixel baseline holds all images as vectors in memory


class MedMNISTArgumentError(UserError):
    """An argument of `procvision medmnist` is wrong (unknown set, no file found, bad size)."""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    p.add_argument("--root", type=str, required=True, help="folder of the official .npz files")
    p.add_argument("--backbone", type=str, required=True,
                   help="PATH (export, .safetensors, .ckpt, DINO .pth), random:ARCH, or pixels")  # fmt: skip
    p.add_argument("--sets", type=list[str], default=list(MEDMNIST_SETS), help="default: all ten")
    p.add_argument("--size", type=str, default="auto",
                   help="file resolution: auto (224 if present, else 28), 28, 64, 128 or 224")  # fmt: skip
    p.add_argument("--out", type=str | None, default=None, help="folder for the JSONs and table")
    p.add_argument("--ks", type=list[int], default=list(PAPER_KS))
    p.add_argument("--T", type=float, default=PAPER_T)
    p.add_argument("--memory-split", type=str, default="train")
    p.add_argument("--query-split", type=str, default="test")
    p.add_argument("--max-memory", type=int | None, default=None, help="seeded subset")
    p.add_argument("--max-queries", type=int | None, default=None, help="seeded subset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int | None, default=None,
                   help="default: the backbone's img_size (224)")  # fmt: skip
    p.add_argument("--device", type=str, default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    add_embedding_arguments(p, "each JSON")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--cache-dir", type=str | None, default=None,
                   help="keep the embeddings here, keyed by the backbone fingerprint (default: off)")  # fmt: skip
    return p


def medmnist_file(root: str | Path, name: str, size: str = "auto") -> Path | None:
    """The official file of set `name` in `root` for `size` ("auto": 224 px if present, else 28 px),
    or None when absent."""
    root = Path(root)
    if size == "auto":
        candidates = [f"{name}mnist_224.npz", f"{name}mnist.npz", f"{name}mnist_28.npz"]
    elif size == "28":
        candidates = [f"{name}mnist.npz", f"{name}mnist_28.npz"]
    else:
        candidates = [f"{name}mnist_{size}.npz"]
    for c in candidates:
        if (root / c).is_file():
            return root / c
    return None


def _check(cfg: Namespace) -> list[str]:
    unknown = [s for s in cfg.sets if s not in MEDMNIST_SETS]
    if unknown:
        raise MedMNISTArgumentError(
            f"--sets: unknown set(s) {unknown}; the paper's ten are {', '.join(MEDMNIST_SETS)}"
        )
    if cfg.size not in ("auto", "28", "64", "128", "224"):
        raise MedMNISTArgumentError(f"--size must be auto, 28, 64, 128 or 224, got {cfg.size!r}")
    for flag, split in (("--memory-split", cfg.memory_split), ("--query-split", cfg.query_split)):
        if split not in ("train", "val", "test"):
            raise MedMNISTArgumentError(f"{flag} must be train, val or test, got {split!r}")
    if not Path(cfg.root).is_dir():
        raise MedMNISTArgumentError(f"--root {cfg.root}: no such folder of MedMNIST .npz files")
    return list(cfg.sets)


def evaluate_set(features, path: Path, name: str, transform: EvalTransform, cfg: Namespace,
                 model: dict) -> dict:  # fmt: skip
    """The k-NN record of one set: memory = `cfg.memory_split`, queries = `cfg.query_split`."""
    t0 = time.perf_counter()
    mem_set, qry_set = (
        EvalSet(f"medmnist:{path.absolute()}:{split}", image_size=transform.size,
                resize_policy="resize", max_items=limit, subset_seed=seed,
                batch_size=cfg.batch_size, num_workers=cfg.num_workers)
        for split, limit, seed in ((cfg.memory_split, cfg.max_memory, cfg.seed),
                                   (cfg.query_split, cfg.max_queries, cfg.seed + 1))
    )  # fmt: skip
    if model.get("backbone") == "pixels":
        probe = MedMNIST(path, cfg.memory_split, transform)  # memory-mapped: cheap to open
        side = int(probe.load_image(0).size[0]) if len(probe) else 0
        if side > PIXELS_MAX_SIDE:
            raise MedMNISTArgumentError(
                f"{path.name}: raw pixels of {side}-px images would need {side * side * 3}-d vectors "
                f"for every image; use the 28-px files for the pixel baseline (--size 28)"
            )
    memory, *m = features.embed_set(mem_set, f"{name}/{cfg.memory_split}")
    queries, *q = features.embed_set(qry_set, f"{name}/{cfg.query_split}")
    results = knn_evaluate(*m, *q, ks=tuple(cfg.ks), methods=("weighted",), T=cfg.T)
    return {
        "kind": "knn", "version": 1, "dataset": f"medmnist/{name}", "file": str(path.absolute()),
        "results": results, "ks": list(cfg.ks), "methods": ["weighted"], "T": cfg.T,
        "memory": memory.describe(), "queries": queries.describe(),
        "memory_uri": f"medmnist:{path.absolute()}:{cfg.memory_split}",
        "query_uri": f"medmnist:{path.absolute()}:{cfg.query_split}",
        "transform": transform.describe(), "model": model,
        "sets": [mem_set.describe(), qry_set.describe()],
        "features": {"cache_dir": cfg.cache_dir,
                     "sources": {k: v for k, v in features.sources.items() if k.startswith(name + "/")}},
        "paper": {"medmnist_best": MEDMNIST_PAPER_BEST[name],
                  "s_kml_mixup": TABLE3_MEDMNIST["S. KML Mixup"][name]},
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip


def medmnist_table(records: dict[str, dict | None], files: dict[str, Path | None]) -> str:
    """Markdown table: one row per set (paper order); a missing set is a gap ("–"), never 0."""
    head = ["set", "file", "memory", "queries", "best-k top-1", "best k", f"k={PAPER_K} top-1",
            "MedMNIST paper best", "paper S. KML Mixup"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rec in records.items():
        paper = [f"{MEDMNIST_PAPER_BEST[name]:.1f}", f"{TABLE3_MEDMNIST['S. KML Mixup'][name]:.2f}"]
        if rec is None:
            file = "missing" if files.get(name) is None else files[name].name
            lines.append(f"| {name} | {file} | – | – | – | – | – | " + " | ".join(paper) + " |")
            continue
        r = rec["results"]
        k20 = r.get(f"weighted/k{PAPER_K}/top1")
        cells = [name, Path(rec["file"]).name, str(rec["memory"]["size"]), str(rec["queries"]["size"]),
                 f"{r['weighted/best/top1']:.2f}", str(int(r["weighted/best/k"])),
                 "–" if k20 is None else f"{k20:.2f}", *paper]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(cfg: Namespace) -> int:
    return run_reporting(PROG, _run, cfg, extra=PATH_ERRORS)


def _run(cfg: Namespace) -> int:
    sets = _check(cfg)
    files = {s: medmnist_file(cfg.root, s, cfg.size) for s in sets}
    if all(f is None for f in files.values()):
        raise MedMNISTArgumentError(
            f"--root {cfg.root}: none of the files found (expected e.g. pathmnist_224.npz or "
            "pathmnist.npz, the official MedMNIST downloads from zenodo.org/records/10519652)"
        )
    features, model, size = open_dataset_features(cfg, cfg.batch_size, MedMNISTArgumentError)
    transform = EvalTransform(size, "resize")
    out = Path(cfg.out) if cfg.out else None
    records: dict[str, dict | None] = {}
    for name in sets:
        if files[name] is None:
            print(
                f"{name}: no {name}mnist file for size {cfg.size} in {cfg.root}: a gap in the table"
            )
            records[name] = None
            continue
        rec = evaluate_set(features, files[name], name, transform, cfg, model)
        records[name] = rec
        r = rec["results"]
        print(f"{name}: best k={int(r['weighted/best/k'])} {r['weighted/best/top1']:.2f}%, "
              f"k={PAPER_K} {r.get(f'weighted/k{PAPER_K}/top1', float('nan')):.2f}% "
              f"({rec['memory']['size']} memory, {rec['queries']['size']} queries"
              + (", embeddings " + ", ".join(rec["features"]["sources"].values()) if cfg.cache_dir else "")
              + ")")  # fmt: skip
        if out is not None:
            write_json_atomic(out / f"{name}.json", rec)
    table = medmnist_table(records, files)
    print(f"\nMedMNIST k-NN top-1 (%), backbone {model['backbone']}, T={cfg.T}\n{table}")
    if out is not None:
        write_text_atomic(out / "medmnist_table.md", table + "\n")
        print(f"wrote {out}/<set>.json and {out / 'medmnist_table.md'}")
    return 0

"""The paper-shaped report: evaluation JSONs of several models -> the paper's Tables 1-6 and figures.

`build_report(run_dirs, out_dir)` reads every evaluation JSON under each run folder (one folder per
model), normalises it into `Entry`s (kind, dataset, numbers, source file, fingerprint), and writes
`report.md` (markdown tables shaped like the paper's Tables 1-6, every number a link to its JSON),
PNG plots (matplotlib) and `report.json`. Missing results are gaps ("–"), never zeros. The JSON
shapes it reads are documented in docs_evidence.md and in `entries_of`.

The paper's own numbers (spec §4.9, §5) are the module's constants (TABLE1_KNN ... TABLE6_KNN_LINEAR),
used as reference rows; keys are model names as the paper writes them, values in percent except
NIGHTS (a fraction).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from procvision.errors import UserError
from procvision.eval.stats import mean_and_spread, pairwise_z_tests

PAPER_MODELS = ("ImageNet", "Places", "S. KML Mixup", "S. KML", "S. Mixup", "Shaders", "StyleGAN",
                "Random init")  # fmt: skip

#: Table 1, k-NN top-1 (best k) per dataset
TABLE1_KNN = {
    "ImageNet": {"flowers102": 83.43, "cub": 55.20, "food101": 64.45, "imagenet": 68.89},
    "Places": {"flowers102": 59.51, "cub": 19.09, "food101": 47.78, "imagenet": 47.30},
    "S. KML Mixup": {"flowers102": 75.20, "cub": 27.08, "food101": 48.70, "imagenet": 37.88},
    "S. KML": {"flowers102": 71.86, "cub": 24.02, "food101": 46.00, "imagenet": 35.38},
    "S. Mixup": {"flowers102": 73.33, "cub": 19.85, "food101": 47.78, "imagenet": 35.45},
    "Shaders": {"flowers102": 66.18, "cub": 15.59, "food101": 38.05, "imagenet": 30.69},
    "StyleGAN": {"flowers102": 41.86, "cub": 8.61, "food101": 22.73, "imagenet": 13.73},
    "Random init": {"flowers102": 11.18, "cub": 1.93, "food101": 5.32, "imagenet": 1.84},
}

#: Table 2, COCO R² (100 (1 - inertia))
TABLE2_R2 = {"ImageNet": 63.7, "Places": 62.1, "S. KML Mixup": 53.7, "S. KML": 55.9,
             "S. Mixup": 51.4, "Shaders": 55.0, "StyleGAN": 48.5, "Random init": 36.7,
             "RGB": 19.4}  # fmt: skip

#: Table 3, MedMNIST k-NN top-1 (best k) on the official test split, 224 px
MEDMNIST_SETS = (
    "path",
    "derma",
    "oct",
    "pneumonia",
    "breast",
    "blood",
    "tissue",
    "organa",
    "organc",
    "organs",
)  # fmt: skip  (the paper's column order)
MEDMNIST_PAPER_BEST = {
    "path": 91.1,
    "derma": 76.8,
    "oct": 77.6,
    "pneumonia": 94.6,
    "breast": 86.3,
    "blood": 96.6,
    "tissue": 70.3,
    "organa": 95.1,
    "organc": 92.0,
    "organs": 81.3,
}  # fmt: skip  (best of the MedMNIST paper)
TABLE3_MEDMNIST = {
    "ImageNet": (98.34, 82.05, 95.11, 95.23, 91.03, 96.79, 57.00, 94.33, 93.81, 85.89),
    "Places": (98.21, 80.96, 94.52, 96.18, 91.03, 95.85, 54.83, 90.09, 92.56, 82.26),
    "S. KML Mixup": (98.60, 81.36, 92.85, 96.56, 93.59, 95.09, 55.62, 83.76, 81.48, 74.43),
    "S. KML": (99.30, 82.15, 92.12, 96.56, 91.03, 96.26, 58.02, 85.07, 85.37, 81.57),
    "S. Mixup": (98.88, 81.56, 89.14, 96.56, 92.31, 96.73, 53.27, 81.96, 82.53, 74.10),
    "Shaders": (98.96, 81.26, 92.09, 95.61, 92.31, 97.72, 58.74, 86.83, 86.04, 81.69),
    "StyleGAN": (98.05, 77.67, 85.04, 95.04, 87.18, 91.59, 53.10, 76.81, 77.30, 76.06),
    "Random init": (73.05, 67.50, 66.39, 84.54, 83.33, 85.51, 44.27, 75.07, 68.94, 60.93),
}
TABLE3_MEDMNIST = {m: dict(zip(MEDMNIST_SETS, v, strict=True)) for m, v in TABLE3_MEDMNIST.items()}

#: Table 4, Gestalt R² per principle
GESTALT_PRINCIPLES = ("closure", "kanisza", "connection", "continuity", "enclosure", "proximity",
                      "similarity")  # fmt: skip
TABLE4_GESTALT = {
    "ImageNet": (53.1, 21.7, 6.0, 6.3, 15.8, 24.4, 4.9),
    "Places": (29.0, 12.7, 11.7, 17.3, 25.6, 47.1, 3.1),
    "S. KML Mixup": (36.1, 10.4, 45.1, 9.3, 31.9, 65.1, 1.3),
    "S. KML": (34.5, 14.6, 52.7, 17.7, 64.8, 52.0, 21.5),
    "S. Mixup": (22.8, 15.4, 15.0, 31.1, 1.1, 30.2, 4.3),
    "Shaders": (36.6, 15.8, 8.7, 40.0, 26.0, 12.1, 50.9),
    "StyleGAN": (25.4, 12.2, 20.4, 46.3, 21.7, 7.9, 64.8),
    "Random init": (0.9, 1.0, 17.6, 13.3, 2.8, 4.3, 21.9),
    "RGB": (1.2, 0.0, 13.4, 28.5, 4.7, 28.9, 73.4),
}
TABLE4_GESTALT = {
    m: dict(zip(GESTALT_PRINCIPLES, v, strict=True)) for m, v in TABLE4_GESTALT.items()
}

#: Table 5, NIGHTS val 2AFC (fraction) and its std of the mean, N = 1720
TABLE5_NIGHTS = {"ImageNet": (0.8733, 0.0080), "Places": (0.8331, 0.0090),
                 "S. KML Mixup": (0.8105, 0.0095), "S. KML": (0.8244, 0.0092),
                 "S. Mixup": (0.8110, 0.0094), "Shaders": (0.8169, 0.0093),
                 "StyleGAN": (0.7605, 0.0103)}  # fmt: skip
NIGHTS_VAL_N = 1720

#: Table 6 (App. B.2), ImageNet-1K k-NN vs linear top-1
TABLE6_KNN_LINEAR = {"ImageNet": (68.9, 73.6), "Places": (47.3, 59.6),
                     "S. KML Mixup": (37.9, 47.3), "S. KML": (35.4, 47.1),
                     "S. Mixup": (35.4, 44.8), "Shaders": (30.7, 43.1),
                     "StyleGAN": (13.7, 26.4)}  # fmt: skip


# =================================================================================================
# The report: gather evaluation JSONs of several runs into the paper's tables and figures.
# =================================================================================================

GAP = "–"
KINDS = ("knn", "linear", "nights", "privacy", "r2", "gestalt")
RUN_FILE = "run.json"
_KNN_KEY = re.compile(r"^(?:knn/)?(?P<method>[a-z_]+)/(?:k(?P<k>\d+)|best)/(?:top1|k)$")
_SEED_SUFFIX = re.compile(r"^(?P<family>.+?)[-_](?:seed|s)(?P<seed>\d+)$")

#: display order of families (normalised names); others follow alphabetically
FAMILY_ORDER = ("imagenet", "places", "kml_mixup", "kml", "shaders_mixup", "shaders", "stylegan",
                "random_init", "raw_pixels", "rgb")  # fmt: skip
_FAMILY_ALIASES = {"s_kml_mixup": "kml_mixup", "shaders_kml_mixup": "kml_mixup",
                   "s_kml": "kml", "shaders_kml": "kml", "s_mixup": "shaders_mixup",
                   "mixup": "shaders_mixup", "random": "random_init", "pixels": "raw_pixels",
                   "stylegan_random": "stylegan", "stylegan_oriented": "stylegan"}  # fmt: skip


class ReportError(UserError):
    """The report's inputs are unusable (no run folder, nothing to report)."""


@dataclass
class Entry:
    """One evaluation result of one model, normalised from its JSON.

    Attributes:
        kind: one of KINDS.
        dataset: what it was measured on ("fashion_mnist", "medmnist/path", "nights/val", ...).
        values: the numbers the report uses (percent, except NIGHTS fractions).
        source: the JSON file.
        fingerprint: the checkpoint/backbone fingerprint recorded with it, or None.
        order: (global_step, mtime) to keep the latest of repeated evaluations.
        info: extra facts (params, ckpt_path).
    """

    kind: str
    dataset: str
    values: dict[str, float]
    source: Path
    fingerprint: str | None = None
    order: tuple[float, float] = (0.0, 0.0)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """One model: its name, family, seed, and its entries keyed (kind, dataset)."""

    name: str
    family: str
    seed: int | None
    root: Path
    meta: dict[str, Any]
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    ignored: list[Path] = field(default_factory=list)

    @property
    def fingerprint(self) -> str | None:
        fps = [e.fingerprint for e in self.entries.values() if e.fingerprint]
        return self.meta.get("fingerprint") or (fps[0] if fps else None)

    @property
    def params(self) -> int | None:
        if self.meta.get("params"):
            return int(self.meta["params"])
        got = [e.info.get("params") for e in self.entries.values() if e.info.get("params")]
        return int(got[0]) if got else None

    def add(self, entry: Entry) -> None:
        key = (entry.kind, entry.dataset)
        old = self.entries.get(key)
        if old is None or entry.order >= old.order:
            self.entries[key] = entry


def normalise_family(name: str) -> str:
    """ "S. KML Mixup", "kml-mixup", "shaders_kml_mixup" -> "kml_mixup" (for ordering and grouping)."""
    key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return _FAMILY_ALIASES.get(key, key)


def family_rank(family: str) -> tuple[int, str]:
    f = normalise_family(family)
    return (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f)


def dataset_of_uri(uri: str | None) -> str:
    """A short dataset name of a dataset URI: "fashion_mnist:test" -> "fashion_mnist",
    "medmnist:/d/pathmnist_224.npz:test" -> "medmnist/path", "imagefolder:/d/imagenet" -> "imagenet"."""
    if not uri:
        return "unknown"
    kind, _, rest = str(uri).partition(":")
    kind = kind.strip().lower().replace("-", "_")
    path = rest.rsplit(":", 1)[0] if rest.rsplit(":", 1)[-1] in ("train", "val", "test") else rest
    if kind == "medmnist" and path:
        return "medmnist/" + Path(path).name.split("_")[0].split(".")[0].removesuffix("mnist")
    if kind == "imagefolder" and path:
        return Path(path).name or kind
    return kind


def _knn_values(results: Mapping[str, Any]) -> dict[str, float]:
    method = (
        "weighted" if any(k.startswith(("weighted/", "knn/weighted/")) for k in results) else None
    )
    out: dict[str, float] = {}
    for key, v in results.items():
        key = key.removeprefix("knn/")
        m = _KNN_KEY.match(key)
        if not m or not isinstance(v, (int, float)):
            continue
        if method is not None and m["method"] != method:
            continue
        if key.endswith("/best/top1"):
            out["best_top1"] = float(v)
        elif key.endswith("/best/k"):
            out["best_k"] = float(v)
        elif key.endswith("/top1") and m["k"] is not None:
            out[f"k{m['k']}_top1"] = float(v)
    if "best_top1" not in out:
        ks = [(v, k) for k, v in out.items() if k.startswith("k") and k.endswith("_top1")]
        if ks:
            best = max(ks)
            out["best_top1"], out["best_k"] = best[0], float(best[1][1:].split("_")[0])
    return out


def _is_knn_results(results: Any) -> bool:
    return isinstance(results, Mapping) and any(
        isinstance(k, str) and _KNN_KEY.match(k.removeprefix("knn/")) for k in results
    )


def _is_knn_seg_block(block: Any) -> bool:
    """One backbone's block of `procvision segment knn --json`: {"memory_patches", "softmax": {...}}."""
    return (
        isinstance(block, Mapping)
        and "memory_patches" in block
        and any(isinstance(block.get(v), Mapping) for v in ("softmax", "topk"))
    )


def _knn_seg_values(block: Mapping[str, Any]) -> dict[str, float]:
    """{"softmax_miou", "topk_miou", "softmax_fg_pixel_acc"} in percent, of whichever votes ran,
    from a block nested per vote ({"softmax": {"miou": ...}}) or already flat ({"softmax_miou"})."""
    flat = dict(block) | {f"{v}_{k}": x for v in ("softmax", "topk")
                          if isinstance(block.get(v), Mapping) for k, x in block[v].items()}  # fmt: skip
    return {
        k: 100.0 * float(flat[k]) for k in KNN_SEG_KEYS if isinstance(flat.get(k), (int, float))
    }


def _fingerprint(record: Mapping[str, Any]) -> str | None:
    model = record.get("model")
    if isinstance(model, Mapping) and model.get("fingerprint"):
        return str(model["fingerprint"])
    for key in ("fingerprint", "backbone_fingerprint"):
        if isinstance(record.get(key), str):
            return record[key]
    return None


def _info(record: Mapping[str, Any]) -> dict[str, Any]:
    model = record.get("model") if isinstance(record.get("model"), Mapping) else {}
    info = {"params": model.get("params"), "ckpt_path": record.get("ckpt_path") or model.get("ckpt_path"),
            "backbone": model.get("backbone") or record.get("backbone")}  # fmt: skip
    return {k: v for k, v in info.items() if v is not None}


def entries_of(record: Any, source: Path, mtime: float = 0.0) -> list[tuple[str | None, Entry]]:
    """Normalise one JSON into (model override or None, Entry) pairs; [] for files it does not know.

    The override names a baseline carried inside another run's file (the demo JSON's "random
    init" and "raw pixels" rows).
    """
    if not isinstance(record, Mapping):
        return []
    kind = record.get("kind")
    results = record.get("results")
    fp, info = _fingerprint(record), _info(record)
    order = (float(record.get("global_step") or 0), mtime)

    def entry(k: str, dataset: str, values: dict[str, float]) -> Entry:
        return Entry(k, dataset, values, source, fp, order, info)

    if kind == "nights" and isinstance(results, Mapping):
        split = (record.get("data") or {}).get("split", "val")
        vals = {k: float(results[k]) for k in ("2afc", "stderr", "n", "psnr_2afc", "psnr_stderr",
                                               "ssim_2afc", "ssim_stderr") if k in results}  # fmt: skip
        return [(None, entry("nights", f"nights/{split}", vals))]
    if kind == "linear" and isinstance(results, Mapping):
        vals = {"linear_top1": float(results["top1"])}
        knn = _knn_values(record.get("knn") or {})
        vals.update({f"knn_{k}": v for k, v in knn.items()})
        return [(None, entry("linear", str(record.get("dataset") or "unknown"), vals))]
    if kind == "gestalt" and isinstance(results, Mapping):
        vals = {normalise_family(k): float(v) for k, v in results.items()
                if isinstance(v, (int, float))}  # fmt: skip
        return [(None, entry("gestalt", str(record.get("dataset") or "gestalt"), vals))]
    if kind == "knn_segmentation" and isinstance(results, Mapping):  # reproduce_small's shape
        return [
            (None, entry("knn_seg", str(record.get("dataset") or "coco"), _knn_seg_values(results)))
        ]
    if _is_knn_seg_block(record.get("model")):  # `procvision segment knn --json`
        dataset = str(record.get("dataset") or dataset_of_uri(record.get("data")))
        dataset = "seg_benchmark" if dataset == "benchmark" else dataset
        out = [(None, entry("knn_seg", dataset, _knn_seg_values(record["model"])))]
        if _is_knn_seg_block(record.get("random init")):
            out.append(("random init", Entry("knn_seg", dataset, _knn_seg_values(record["random init"]),
                                             source, None, order)))  # fmt: skip
        return out
    if kind == "r2" and isinstance(results, Mapping):
        vals = {k: float(v) for k, v in results.items() if isinstance(v, (int, float))}
        return [(None, entry("r2", str(record.get("dataset") or "coco"), vals))]
    if isinstance(record.get("scores"), Mapping) and isinstance(
        record["scores"].get("model"), Mapping
    ):
        s = record["scores"]["model"]  # `procvision segment --json`
        vals = {k: float(s[k]) for k in ("model", "rgb", "images") if k in s}
        if "model" in vals:
            vals["r2"] = vals.pop("model")
        dataset = str(record.get("dataset") or "voc")
        out = [(None, entry("r2", dataset, vals))]
        if (
            isinstance(record["scores"].get("random init"), Mapping)
            and "model" in record["scores"]["random init"]
        ):
            out.append(("random init", Entry("r2", dataset, {"r2": float(record["scores"]["random init"]["model"])},
                                             source, None, order)))  # fmt: skip
        return out
    if kind in (None, "knn") and _is_knn_results(results):
        dataset = str(record.get("dataset") or dataset_of_uri(record.get("query_uri")))
        return [(None, entry("knn", dataset, _knn_values(results)))]
    if (
        kind in (None, "privacy")
        and isinstance(results, Mapping)
        and "non_private_fraction" in results
    ):
        vals = {
            "non_private_pct": float(results["non_private_fraction"])
        }  # PrivacyCallback: percent
        if "accuracy_top1" in results:
            vals["accuracy"] = float(results["accuracy_top1"])
        return [(None, entry("privacy", dataset_of_uri(record.get("query_uri")), vals))]
    if kind in (None, "privacy") and "non_private_fraction" in record and "n_memory" in record:
        vals = {"non_private_pct": 100.0 * float(record["non_private_fraction"])}  # the command
        if "accuracy_top1" in record:
            vals["accuracy"] = float(record["accuracy_top1"])
        return [(None, entry("privacy", str(record.get("dataset") or "memory"), vals))]
    if (
        kind is None
        and isinstance(results, Mapping)
        and results
        and all(_is_knn_results(v) for v in results.values())
    ):  # the demo's {"results": {"model": {...}, "random init": {...}, "raw pixels": {...}}}
        out = []
        for name, res in results.items():
            override = None if name == "model" else str(name)
            e = Entry("knn", str(record.get("dataset") or "fashion_mnist"), _knn_values(res), source,
                      fp if override is None else None, order, info if override is None else {})  # fmt: skip
            out.append((override, e))
        return out
    return []


def _file_fingerprint(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return "file-sha256:" + h.hexdigest()


def load_run(root: str | Path) -> tuple[Run, list[Run]]:
    """The run of folder `root` (every *.json under it, recursively) and the baseline runs carried
    inside its files. Name, family and seed come from `root/run.json` ({"name", "family", "seed",
    "params", "fingerprint"}, all optional), else from the folder name (`kml_mixup_seed1`)."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"--runs {root}: no such folder (give one folder per model)")
    meta: dict[str, Any] = {}
    if (root / RUN_FILE).is_file():
        try:
            meta = json.loads((root / RUN_FILE).read_text())
        except ValueError as err:
            raise ReportError(f"{root / RUN_FILE}: not valid JSON ({err})") from err
    name = str(meta.get("name") or root.absolute().name)
    m = _SEED_SUFFIX.match(name)
    family = str(meta.get("family") or (m["family"] if m else name))
    seed = meta.get("seed", int(m["seed"]) if m else None)
    run = Run(name, family, seed, root, meta)
    extras: dict[str, Run] = {}
    for path in sorted(root.rglob("*.json")):
        if path.name == RUN_FILE and path.parent == root:
            continue
        if any(part.startswith(".") for part in path.relative_to(root).parts[:-1]):
            continue  # hidden folders hold bookkeeping (done-markers, editor state), not results
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            run.ignored.append(path)
            continue
        got = entries_of(record, path, path.stat().st_mtime)
        if not got:
            run.ignored.append(path)
        for override, e in got:
            if override is None:
                if e.fingerprint is None:
                    e.fingerprint = run.meta.get("fingerprint") or _file_fingerprint(
                        e.info.get("ckpt_path")
                    )
                run.add(e)
            else:
                x = extras.setdefault(override, Run(override, override, seed, root, {}))
                x.add(e)
    return run, list(extras.values())


def load_runs(roots: Iterable[str | Path]) -> list[Run]:
    """Every run of `roots`, plus baselines found inside their files (merged by name)."""
    runs: list[Run] = []
    baselines: dict[tuple[str, int | None], Run] = {}
    for root in roots:
        run, extras = load_run(root)
        runs.append(run)
        for x in extras:
            key = (x.name, x.seed)
            if key in baselines:
                for e in x.entries.values():
                    baselines[key].add(e)
            else:
                baselines[key] = x
    names = {(r.name, r.seed) for r in runs}
    runs += [b for k, b in baselines.items() if k not in names]
    return sorted(
        runs, key=lambda r: (family_rank(r.family), r.seed if r.seed is not None else -1, r.name)
    )


# ----- markdown ---------------------------------------------------------------------------------
def _link(text: str, source: Path, out_dir: Path) -> str:
    return f"[{text}]({Path(os.path.relpath(source, out_dir)).as_posix()})"


def _cell(run: Run, kind: str, dataset: str, key: str, out_dir: Path, fmt: str = "{:.2f}") -> str:
    e = run.entries.get((kind, dataset))
    if e is None or key not in e.values:
        return GAP
    return _link(fmt.format(e.values[key]), e.source, out_dir)


def _family_cell(runs: Sequence[Run], kind: str, dataset: str, key: str, out_dir: Path,
                 fmt: str = "{:.2f}") -> str:  # fmt: skip
    got = [(r, r.entries[(kind, dataset)]) for r in runs
           if (kind, dataset) in r.entries and key in r.entries[(kind, dataset)].values]  # fmt: skip
    if not got:
        return GAP
    mean, sd = mean_and_spread([e.values[key] for _, e in got])
    links = " ".join(_link(f"s{r.seed}" if r.seed is not None else r.name, e.source, out_dir)
                     for r, e in got)  # fmt: skip
    spread = "" if sd is None else " ± " + fmt.format(sd)
    return f"{fmt.format(mean)}{spread} (n={len(got)}: {links})"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _datasets(runs: Sequence[Run], kind: str, keep=lambda d: True) -> list[str]:
    return sorted({d for r in runs for (k, d) in r.entries if k == kind and keep(d)})


def families(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by family ("S. KML Mixup" and "kml_mixup" are one), in the display order;
    each group is named as its first run names it."""
    groups: dict[str, list[Run]] = {}
    for r in sorted(runs, key=lambda r: family_rank(r.family)):
        groups.setdefault(normalise_family(r.family), []).append(r)
    return {rs[0].family: rs for rs in groups.values()}


def _per_run_and_family(title: str, runs: Sequence[Run], kind: str, columns: Sequence[tuple[str, str]],
                        out_dir: Path, fmt: str = "{:.2f}",
                        labels: Sequence[str] | None = None) -> list[str]:  # fmt: skip
    """A per-run table and a per-family (mean ± sd over seeds) table; columns = (dataset, key),
    headed by `labels` (default: the dataset names)."""
    head_names = list(labels) if labels is not None else [d for d, _ in columns]
    lines = [f"### {title}", "", "Per run (each number links to its JSON):", ""]
    rows = [[r.name, r.family, GAP if r.seed is None else str(r.seed),
             *[_cell(r, kind, d, key, out_dir, fmt) for d, key in columns]] for r in runs
            if any((kind, d) in r.entries for d, _ in columns)]  # fmt: skip
    lines += (
        _table(["model", "family", "seed", *head_names], rows) if rows else [f"({GAP}: no results)"]
    )
    fams = families([r for r in runs if any((kind, d) in r.entries for d, _ in columns)])
    if fams and any(len(v) > 1 for v in fams.values()):
        lines += ["", "Per family (mean ± sample sd over seeds):", ""]
        lines += _table(["family", *head_names],
                        [[f, *[_family_cell(rs, kind, d, key, out_dir, fmt) for d, key in columns]]
                         for f, rs in fams.items()])  # fmt: skip
    return lines + [""]


def knn_section(runs: Sequence[Run], out_dir: Path) -> list[str]:
    """Table 1 (k-NN top-1 per family and dataset), best k and k = 20; MedMNIST (Table 3) apart."""
    ds = _datasets(runs, "knn", lambda d: not d.startswith("medmnist/"))
    lines = ["## k-NN classification (Table 1)", ""]
    if not ds:
        return lines + [f"{GAP}: no k-NN results found.", ""]
    lines += _per_run_and_family(
        "k-NN top-1 %, best k", runs, "knn", [(d, "best_top1") for d in ds], out_dir
    )
    lines += _per_run_and_family(
        "k-NN top-1 %, k = 20", runs, "knn", [(d, "k20_top1") for d in ds], out_dir
    )
    paper_cols = [d for d in ds if d in TABLE1_KNN["ImageNet"]]
    if paper_cols:
        lines += ["Paper (Table 1):", ""]
        lines += _table(["model", *paper_cols], [[m, *[f"{v[d]:.2f}" for d in paper_cols]]
                                                 for m, v in TABLE1_KNN.items()])  # fmt: skip
        lines.append("")
    return lines


def medmnist_section(runs: Sequence[Run], out_dir: Path) -> list[str]:
    """Table 3: k-NN best-k top-1 on the MedMNIST sets, with the MedMNIST paper's best row."""
    got = _datasets(runs, "knn", lambda d: d.startswith("medmnist/"))
    lines = ["## MedMNIST (Table 3)", ""]
    if not got:
        return lines + [f"{GAP}: no MedMNIST results found.", ""]
    cols = [f"medmnist/{s}" for s in MEDMNIST_SETS]
    lines += _per_run_and_family(
        "k-NN top-1 %, best k",
        runs,
        "knn",
        [(c, "best_top1") for c in cols],
        out_dir,
        labels=list(MEDMNIST_SETS),
    )
    lines += ["Reference rows:", ""]
    lines += _table(["model", *MEDMNIST_SETS], [
        ["Best from the MedMNIST paper", *[f"{MEDMNIST_PAPER_BEST[s]:.1f}" for s in MEDMNIST_SETS]],
        ["Paper S. KML Mixup", *[f"{TABLE3_MEDMNIST['S. KML Mixup'][s]:.2f}" for s in MEDMNIST_SETS]],
    ])  # fmt: skip
    return lines + [""]


def linear_section(runs: Sequence[Run], out_dir: Path) -> list[str]:
    """Table 6: k-NN vs linear probe on the same features."""
    ds = _datasets(runs, "linear")
    lines = ["## k-NN vs linear probe (Table 6)", ""]
    if not ds:
        return lines + [f"{GAP}: no linear-probe results found.", ""]
    for d in ds:
        cols = [(d, "knn_k20_top1"), (d, "knn_best_top1"), (d, "linear_top1")]
        sect = _per_run_and_family(f"{d}: top-1 %, k-NN and linear on the same features", runs,
                                   "linear", cols, out_dir,
                                   labels=["k-NN k=20", "k-NN best k", "linear"])  # fmt: skip
        lines += sect
    lines += ["Paper (ImageNet-1K, App. B.2): " + "; ".join(
        f"{m} {k:.1f} / {li:.1f}" for m, (k, li) in TABLE6_KNN_LINEAR.items()) + " (k-NN / linear).", ""]  # fmt: skip
    return lines


def r2_section(runs: Sequence[Run], out_dir: Path) -> list[str]:
    """Table 2: zero-shot segmentation R² per family (and the RGB baseline of each file)."""
    ds = _datasets(runs, "r2")
    lines = ["## Zero-shot segmentation R² (Table 2)", ""]
    if not ds:
        return lines + [f"{GAP}: no R² results found.", ""]
    cols = [(d, "r2") for d in ds] + [(d, "rgb") for d in ds]
    lines += _per_run_and_family("R² (100 (1 - normalised inertia))", runs, "r2", cols, out_dir,
                                 labels=[*ds, *[f"{d} RGB baseline" for d in ds]])  # fmt: skip
    lines += ["Paper (COCO): " + ", ".join(f"{m} {v}" for m, v in TABLE2_R2.items()) + ".", ""]
    return lines


def knn_seg_section(runs: Sequence[Run], out_dir: Path) -> list[str]:
    """k-NN segmentation with a patch memory (spec §4.5): mIoU and foreground pixel accuracy, %."""
    ds = _datasets(runs, "knn_seg")
    lines = ["## k-NN segmentation (patch memory)", ""]
    if not ds:
        return lines + [f"{GAP}: no k-NN segmentation results found.", ""]
    for d in ds:
        lines += _per_run_and_family(f"{d}: mIoU % and foreground pixel accuracy %", runs, "knn_seg",
                                     [(d, k) for k in KNN_SEG_KEYS], out_dir,
                                     labels=[KNN_SEG_LABELS[k] for k in KNN_SEG_KEYS])  # fmt: skip
    return lines


def gestalt_section(runs: Sequence[Run], out_dir: Path) -> list[str]:
    """Table 4: Gestalt R² per principle."""
    ds = _datasets(runs, "gestalt")
    lines = ["## Gestalt (Table 4)", ""]
    if not ds:
        return lines + [f"{GAP}: no Gestalt results found.", ""]
    for d in ds:
        lines += _per_run_and_family(f"{d}: R² per principle", runs, "gestalt",
                                     [(d, p) for p in GESTALT_PRINCIPLES], out_dir, "{:.1f}",
                                     labels=list(GESTALT_PRINCIPLES))  # fmt: skip
    lines += ["Paper (S. KML Mixup): " + ", ".join(
        f"{p} {v}" for p, v in TABLE4_GESTALT["S. KML Mixup"].items()) + ".", ""]  # fmt: skip
    return lines


def nights_section(runs: Sequence[Run], out_dir: Path, alpha: float = 0.05) -> list[str]:
    """Table 5 / Fig. 4: NIGHTS 2AFC ± standard error, PSNR/SSIM, and pairwise z-tests (App. B.1)."""
    ds = _datasets(runs, "nights")
    lines = ["## NIGHTS 2AFC (Fig. 4, Table 5)", ""]
    if not ds:
        return lines + [f"{GAP}: no NIGHTS results found.", ""]
    for d in ds:
        have = [r for r in runs if ("nights", d) in r.entries]
        rows = []
        for r in have:
            e = r.entries[("nights", d)]
            v = e.values
            rows.append([r.name, r.family, _link(f"{v['2afc']:.4f}", e.source, out_dir),
                         f"{v.get('stderr', float('nan')):.4f}", str(int(v.get("n", 0))),
                         GAP if "psnr_2afc" not in v else f"{v['psnr_2afc']:.4f}",
                         GAP if "ssim_2afc" not in v else f"{v['ssim_2afc']:.4f}"])  # fmt: skip
        lines += [f"### {d}", ""]
        lines += _table(
            ["model", "family", "2AFC", "std. error", "N", "PSNR 2AFC", "SSIM 2AFC"], rows
        )
        scores = {r.name: (r.entries[("nights", d)].values["2afc"], int(r.entries[("nights", d)].values["n"]))
                  for r in have}  # fmt: skip
        tests = pairwise_z_tests(scores, alpha)
        if tests:
            lines += ["", f"Two-proportion z-tests (two-sided, {int(alpha * 100)}% level):", ""]
            lines += _table(["A", "B", "z", "p-value", "different?"],
                            [[a, b, f"{t.z:.2f}", f"{t.p_value:.3g}", "yes" if t.significant else "no"]
                             for (a, b), t in tests.items()])  # fmt: skip
        lines.append("")
    lines += ["Paper (val, N = 1720): " + ", ".join(f"{m} {s:.4f} ± {e:.4f}"
                                                   for m, (s, e) in TABLE5_NIGHTS.items()) + ".", ""]  # fmt: skip
    return lines


def privacy_section(runs: Sequence[Run], out_dir: Path) -> list[str]:
    """Fig. 12: k-NN accuracy against the non-private fraction of the memory."""
    ds = _datasets(runs, "privacy")
    lines = ["## Privacy: accuracy vs non-private fraction (Fig. 12)", ""]
    if not ds:
        return lines + [f"{GAP}: no privacy results found.", ""]
    cols = [(d, "accuracy") for d in ds] + [(d, "non_private_pct") for d in ds]
    lines += _per_run_and_family("k-NN accuracy % and non-private % of the memory", runs, "privacy",
                                 cols, out_dir, "{:.4g}",
                                 labels=[*[f"{d} accuracy %" for d in ds],
                                         *[f"{d} non-private %" for d in ds]])  # fmt: skip
    return lines + ["Paper (ImageNet-1K): S. KML Mixup has < 0.6% non-private training images.", ""]


def size_points(runs: Sequence[Run]) -> tuple[str | None, list[tuple[int, float, Run]]]:
    """(dataset, [(params, k-NN best top-1, run)]) for Fig. 14, on the k-NN dataset most runs share."""
    counts: dict[str, int] = {}
    for r in runs:
        if r.params:
            for k, d in r.entries:
                if k == "knn":
                    counts[d] = counts.get(d, 0) + 1
    if not counts:
        return None, []
    d = max(sorted(counts), key=lambda x: counts[x])
    pts = [(r.params, r.entries[("knn", d)].values["best_top1"], r) for r in runs
           if r.params and ("knn", d) in r.entries and "best_top1" in r.entries[("knn", d)].values]  # fmt: skip
    return d, pts


def size_section(runs: Sequence[Run], out_dir: Path) -> list[str]:
    """Fig. 14: accuracy against model size; a gap until runs of several sizes exist."""
    d, pts = size_points(runs)
    lines = ["## Accuracy vs model size (Fig. 14)", ""]
    if len({p for p, _, _ in pts}) < 2:
        return lines + [f"{GAP}: needs k-NN results of runs of at least two model sizes "
                        f"(found {len({p for p, _, _ in pts})}).", ""]  # fmt: skip
    rows = [[r.name, r.family, f"{p:,}", _link(f"{a:.2f}", r.entries[('knn', d)].source, out_dir)]
            for p, a, r in sorted(pts, key=lambda t: t[0])]  # fmt: skip
    return (
        lines
        + [f"k-NN best-k top-1 on {d}:", ""]
        + _table(["model", "family", "parameters", "top-1 %"], rows)
        + [""]
    )


#: the paper's k-NN ordering (spec §5, §8): KML Mixup >= KML ≈ Mixup > Shaders > StyleGAN, and every
#: procedural family above the white-box baselines
PAPER_ORDERING = (("kml_mixup", ">=", "kml"), ("kml", "≈", "shaders_mixup"),
                  ("shaders_mixup", ">", "shaders"), ("shaders", ">", "stylegan"))  # fmt: skip
PROCEDURAL = ("kml_mixup", "kml", "shaders_mixup", "shaders", "stylegan")
BASELINES = ("random_init", "raw_pixels")
#: the k-NN segmentation values the report reads (`procvision segment knn --json`), as percent
KNN_SEG_KEYS = ("softmax_miou", "topk_miou", "softmax_fg_pixel_acc")
KNN_SEG_LABELS = {"softmax_miou": "mIoU (softmax vote, paper)", "topk_miou": "mIoU (top-20 cosine)",
                  "softmax_fg_pixel_acc": "fg pixel acc (softmax)"}  # fmt: skip


@dataclass(frozen=True)
class ClaimCheck:
    """One ordering claim `a op b` on one dataset, checked against the family means over seeds."""

    a: str
    op: str
    b: str
    diff: float
    spread: float | None
    verdict: str


def check_claim(
    a: Sequence[float], op: str, b: Sequence[float], names: tuple[str, str],
    exact: tuple[bool, bool] = (False, False),
) -> ClaimCheck:  # fmt: skip
    """Verdict of the claim "mean(a) op mean(b)" given seed repeats a and b.

    spread = sqrt(sd_a² + sd_b²), the seed-to-seed standard deviation of a difference (None with
    fewer than 2 seeds on a side that is not `exact`; an exact side, such as raw pixels, has no
    seed and counts sd 0). Verdicts: "held"; "did not hold"; "inside the seed spread"
    (|diff| <= spread, for > and >=); for ≈: "held" when |diff| <= spread, else "did not hold",
    and "not judged" without a spread; "(1 seed: spread unknown)" is appended when there is none.
    """
    ma, sa = mean_and_spread(list(a))
    mb, sb = mean_and_spread(list(b))
    sa, sb = (0.0 if exact[0] else sa), (0.0 if exact[1] else sb)
    diff = ma - mb
    spread = None if sa is None or sb is None else (sa**2 + sb**2) ** 0.5
    if op == "≈":
        if spread is None:
            verdict = "not judged (1 seed: spread unknown)"
        else:
            verdict = "held" if abs(diff) <= spread else "did not hold"
    else:
        if spread is not None and abs(diff) <= spread:
            verdict = "inside the seed spread"
        elif diff > 0 or (op == ">=" and diff == 0):
            verdict = "held"
        else:
            verdict = "did not hold"
        if spread is None:
            verdict += " (1 seed: spread unknown)"
    return ClaimCheck(names[0], op, names[1], diff, spread, verdict)


def ordering_checks(runs: Sequence[Run], dataset: str, key: str = "best_top1") -> list[ClaimCheck]:
    """The paper's ordering claims, and procedural-vs-baseline claims, on one k-NN dataset, for the
    families present (by normalised name). A family whose every run has no seed (raw pixels: a
    deterministic baseline) is exact: it adds nothing to the spread."""
    by_family: dict[str, list[float]] = {}
    shown: dict[str, str] = {}
    seeded: dict[str, bool] = {}
    for r in runs:
        e = r.entries.get(("knn", dataset))
        if e is not None and key in e.values:
            f = normalise_family(r.family)
            by_family.setdefault(f, []).append(e.values[key])
            shown.setdefault(f, r.family)
            seeded[f] = seeded.get(f, False) or r.seed is not None
    claims = list(PAPER_ORDERING)
    claims += [(p, ">", b) for p in PROCEDURAL for b in BASELINES]
    return [check_claim(by_family[a], op, by_family[b], (shown[a], shown[b]),
                        exact=(not seeded[a], not seeded[b]))
            for a, op, b in claims if a in by_family and b in by_family]  # fmt: skip


def ordering_section(runs: Sequence[Run]) -> list[str]:
    """Which of the paper's k-NN ordering claims held on each dataset, and which differences are
    inside the seed-to-seed spread."""
    lines = ["## The paper's ordering (k-NN, best k)", ""]
    ds = _datasets(runs, "knn")
    rows = [[d, f"{c.a} {c.op} {c.b}", f"{c.diff:+.2f}", GAP if c.spread is None else f"{c.spread:.2f}",
             c.verdict] for d in ds for c in ordering_checks(runs, d)]  # fmt: skip
    if not rows:
        return lines + [f"{GAP}: needs k-NN results of at least two of the families "
                        "(kml_mixup, kml, shaders_mixup, shaders, stylegan, random init, raw pixels).", ""]  # fmt: skip
    lines += ["Claims: the paper's KML Mixup ≥ KML ≈ Mixup > Shaders > StyleGAN (spec §8, IN-1K), and, "
              "as a check rather than a paper claim, every procedural family against random init and "
              "raw pixels. diff = mean(A) − mean(B) over seeds; spread = sqrt(sd_A² + sd_B²), a "
              "seedless baseline (raw pixels) counting sd 0.", ""]  # fmt: skip
    lines += _table(["dataset", "claim", "diff (points)", "seed spread", "verdict"], rows)
    return lines + [""]


def sources_section(runs: Sequence[Run], out_dir: Path) -> list[str]:
    """Every JSON read, with the fingerprint recorded for it; files that were not understood."""
    lines = ["## Sources", ""]
    rows = []
    for r in runs:
        for (kind, d), e in sorted(r.entries.items()):
            fp = e.fingerprint or "unrecorded"
            rows.append([r.name, kind, d, _link(Path(e.source).name, e.source, out_dir),
                         fp[:24] + ("…" if len(fp) > 24 else "")])  # fmt: skip
    lines += _table(["model", "kind", "dataset", "JSON", "fingerprint"], rows)
    ignored = [p for r in runs for p in r.ignored]
    if ignored:
        lines += ["", "Not evaluation results (ignored): " + ", ".join(
            _link(p.name, p, out_dir) for p in sorted(set(ignored)))]  # fmt: skip
    return lines + [""]


# ----- plots ------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from procvision.atomic import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    _plt().close(fig)
    return path


def plot_family_bars(runs: Sequence[Run], kind: str, columns: Sequence[tuple[str, str, str]],
                     ylabel: str, title: str, path: Path) -> Path | None:  # fmt: skip
    """Grouped bars, one group per column (dataset, key, label) and one bar per family: the mean
    over seeds (written on the bar), each seed's own value as a dot, and the sd as an error bar
    (only with two or more seeds), so the seed-to-seed spread shows beside the gaps between
    families. A missing value is no bar (a gap, never a zero); None when there is nothing."""
    cols = [c for c in columns if any(_value(r, kind, c[0], c[1]) is not None for r in runs)]
    fams = families([r for r in runs if any(_value(r, kind, d, k) is not None for d, k, _ in cols)])
    if not cols or not fams:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(min(12.0, max(5.0, 0.3 * len(cols) * len(fams) + 2.0)), 3.6))
    width = 0.8 / len(fams)
    for i, (f, rs) in enumerate(fams.items()):
        means, xs, seeds = [], [], []
        for j, (d, key, _) in enumerate(cols):
            vals = [v for v in (_value(r, kind, d, key) for r in rs) if v is not None]
            if not vals:
                continue
            m, sd = mean_and_spread(vals)
            x = j + i * width
            xs.append(x)
            means.append(m)
            seeds += [(x, v) for v in vals]
            if sd is not None:
                ax.errorbar(x, m, yerr=sd, color="black", capsize=3, linewidth=1)
            ax.annotate(f"{m:.1f}", (x, m), ha="center", va="bottom", fontsize=6,
                        xytext=(0, 2), textcoords="offset points")  # fmt: skip
        ax.bar(xs, means, width, label=f)
        ax.scatter([x for x, _ in seeds], [v for _, v in seeds], s=8, color="black", zorder=3)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))], [c[2] for c in cols],
                  rotation=20, ha="right")  # fmt: skip
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(f"{title} (dots: seeds)")
    return _save(fig, path)


def _value(run: Run, kind: str, dataset: str, key: str) -> float | None:
    e = run.entries.get((kind, dataset))
    return None if e is None or key not in e.values else float(e.values[key])


def plot_knn(runs: Sequence[Run], path: Path) -> Path | None:
    """Table 1 as bars: k-NN best-k top-1 per dataset and family."""
    cols = [(d, "best_top1", d) for d in _datasets(runs, "knn")]
    return plot_family_bars(runs, "knn", cols, "k-NN top-1 % (best k)",
                            "k-NN accuracy per family and dataset", path)  # fmt: skip


def plot_r2(runs: Sequence[Run], path: Path) -> Path | None:
    """Table 2 as bars: zero-shot segmentation R² per dataset and family."""
    cols = [(d, "r2", d) for d in _datasets(runs, "r2")]
    return plot_family_bars(runs, "r2", cols, "R² (100 (1 - normalised inertia))",
                            "Zero-shot segmentation R² per family", path)  # fmt: skip


def plot_gestalt(runs: Sequence[Run], path: Path) -> Path | None:
    """Table 4 as bars: Gestalt R² per principle and family (the first Gestalt dataset)."""
    ds = _datasets(runs, "gestalt")
    if not ds:
        return None
    cols = [(ds[0], p, p) for p in GESTALT_PRINCIPLES]
    return plot_family_bars(runs, "gestalt", cols, "R²", "Gestalt R² per principle", path)


def plot_linear(runs: Sequence[Run], path: Path) -> Path | None:
    """Table 6 as a scatter: k-NN (best k) against the linear probe on the same features, one point
    per run and dataset, with the diagonal (above it: the linear probe wins)."""
    pts = [(e.values["knn_best_top1"], e.values["linear_top1"], r.name) for r in runs
           for (k, _d), e in r.entries.items()
           if k == "linear" and "knn_best_top1" in e.values and "linear_top1" in e.values]  # fmt: skip
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts])
    for x, y, name in pts:
        ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    lo = min(min(p[0], p[1]) for p in pts) - 2
    hi = max(max(p[0], p[1]) for p in pts) + 2
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("k-NN top-1 % (best k)")
    ax.set_ylabel("linear probe top-1 %")
    ax.set_title("k-NN vs linear on the same features")
    return _save(fig, path)


def plot_nights(runs: Sequence[Run], path: Path) -> Path | None:
    """Fig. 4: NIGHTS 2AFC per model with standard-error bars; PSNR/SSIM as dashed lines."""
    ds = _datasets(runs, "nights")
    if not ds:
        return None
    d = ds[0]
    have = [r for r in runs if ("nights", d) in r.entries]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(have) + 2), 3.4))
    vals = [r.entries[("nights", d)].values for r in have]
    ax.bar(range(len(have)), [v["2afc"] for v in vals], yerr=[v.get("stderr", 0) for v in vals],
           capsize=3, color="tab:blue")  # fmt: skip
    for key, style in (("psnr_2afc", "--"), ("ssim_2afc", ":")):
        got = [v[key] for v in vals if key in v]
        if got:
            ax.axhline(got[0], linestyle=style, color="grey", label=key.split("_")[0].upper())
    ax.axhline(0.5, color="black", linewidth=0.5)
    ax.set_xticks(range(len(have)), [r.name for r in have], rotation=30, ha="right")
    ax.set_ylabel(f"2AFC agreement ({d})")
    ax.set_ylim(0.4, 1.0)
    ax.legend(fontsize=7)
    ax.set_title("NIGHTS 2AFC (± std. error)")
    return _save(fig, path)


def plot_privacy(runs: Sequence[Run], path: Path) -> Path | None:
    """Fig. 12: k-NN accuracy against the non-private fraction of the memory, one point per run."""
    pts = [(e.values["non_private_pct"], e.values["accuracy"], r.name) for r in runs
           for (k, _d), e in r.entries.items()
           if k == "privacy" and "accuracy" in e.values]  # fmt: skip
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts])
    for x, y, name in pts:
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("non-private fraction of the memory (%)")
    ax.set_ylabel("k-NN top-1 %")
    ax.set_title("Accuracy vs privacy")
    return _save(fig, path)


def plot_size(runs: Sequence[Run], path: Path) -> Path | None:
    """Fig. 14: k-NN accuracy against parameter count, per family; None until two sizes exist."""
    d, pts = size_points(runs)
    if len({p for p, _, _ in pts}) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for f, rs in families([r for _, _, r in pts]).items():
        xs = sorted((r.params, r.entries[("knn", d)].values["best_top1"]) for r in rs)
        ax.plot([x for x, _ in xs], [y for _, y in xs], marker="o", label=f)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"k-NN top-1 % ({d})")
    ax.legend(fontsize=7)
    return _save(fig, path)


# ----- the whole report -------------------------------------------------------------------------
def build_report(roots: Sequence[str | Path], out_dir: str | Path, alpha: float = 0.05,
                 title: str = "procvision report") -> dict[str, Any]:  # fmt: skip
    """Write `out_dir/report.md`, the PNG plots and `out_dir/report.json` (what was read and
    where each number came from). Missing results are gaps ("–"), never zeros.

    Returns {"markdown": path, "plots": [paths], "json": path, "runs": n}.
    """
    from procvision.atomic import write_json_atomic, write_text_atomic

    out_dir = Path(out_dir)
    runs = load_runs(roots)
    if not any(r.entries for r in runs):
        raise ReportError(
            "no evaluation JSON found under " + ", ".join(map(str, roots))
            + " (k-NN, linear, NIGHTS, privacy, R² or Gestalt results; see docs for their shapes)"
        )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {
        "knn.png": plot_knn(runs, out_dir / "knn.png"),
        "knn_vs_linear.png": plot_linear(runs, out_dir / "knn_vs_linear.png"),
        "r2.png": plot_r2(runs, out_dir / "r2.png"),
        "gestalt.png": plot_gestalt(runs, out_dir / "gestalt.png"),
        "nights.png": plot_nights(runs, out_dir / "nights.png"),
        "privacy.png": plot_privacy(runs, out_dir / "privacy.png"),
        "model_size.png": plot_size(runs, out_dir / "model_size.png"),
    }
    lines = [f"# {title}", "", f"{len(runs)} models: " + ", ".join(r.name for r in runs) + ".",
             f"Missing results are shown as {GAP} (a gap, never a zero). Each number links to the JSON "
             "it came from; the Sources table gives the checkpoint fingerprint recorded with it.", ""]  # fmt: skip
    for name, p in plots.items():
        if p is not None:
            lines += [f"![{name}]({name})", ""]
    lines += knn_section(runs, out_dir)
    lines += linear_section(runs, out_dir)
    lines += medmnist_section(runs, out_dir)
    lines += r2_section(runs, out_dir)
    lines += knn_seg_section(runs, out_dir)
    lines += gestalt_section(runs, out_dir)
    lines += nights_section(runs, out_dir, alpha)
    lines += privacy_section(runs, out_dir)
    lines += size_section(runs, out_dir)
    lines += ordering_section(runs)
    lines += sources_section(runs, out_dir)
    md = write_text_atomic(out_dir / "report.md", "\n".join(lines))

    def rel(path: Path) -> str:  # a report moved with its runs (e.g. committed) still resolves
        return Path(os.path.relpath(Path(path).absolute(), out_dir.absolute())).as_posix()

    summary = {
        "kind": "report", "version": 1, "alpha": alpha,
        "paths": "relative to this file's folder",
        "runs": [{"name": r.name, "family": r.family, "seed": r.seed, "root": rel(r.root),
                  "fingerprint": r.fingerprint, "params": r.params,
                  "results": [{"kind": e.kind, "dataset": e.dataset, "values": e.values,
                               "source": rel(e.source), "fingerprint": e.fingerprint}
                              for e in r.entries.values()],
                  "ignored": [rel(p) for p in r.ignored]} for r in runs],
        "plots": [k for k, v in plots.items() if v is not None],
        "ordering": {d: [asdict(c) for c in ordering_checks(runs, d)] for d in _datasets(runs, "knn")},
    }  # fmt: skip
    js = write_json_atomic(out_dir / "report.json", summary)
    return {"markdown": md, "plots": [p for p in plots.values() if p is not None], "json": js,
            "runs": len(runs)}  # fmt: skip

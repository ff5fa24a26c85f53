"""NIGHTS 2AFC: agreement of a model's similarity with human judgements (paper Fig. 4, Table 5).

For each triplet (ref, left, right) with human-majority target p (1 = right looks more like ref):

    d0 = 1 - cos(e(ref), e(left)),  d1 = 1 - cos(e(ref), e(right))
    score = mean[(d0 < d1) (1 - p) + (d1 < d0) p + 0.5 (d0 == d1)]

with standard error sqrt(score (1 - score) / N) (spec §4.2). The embedding e is the CLS token of
the last block, either after the final LayerNorm (what `Backbone.forward` and the k-NN use,
"after_norm") or before it (DreamSim's DINO baseline, "before_norm"); the choice is recorded in the
JSON. The PSNR and SSIM baselines score the same triplets with d = -PSNR and d = -SSIM on the
resized images in [0, 1] (torchmetrics).

Entry points: `evaluate_nights(backbone, root, ...)` (a function), and `NightsCallback` with
`NightsDataModule` for `procvision validate --config configs/eval/nights.yaml`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from procvision.atomic import write_json_atomic
from procvision.data.datasets.base import collate_skip
from procvision.data.datasets.nights import (
    PAPER_IMAGE_SIZE,
    PAPER_MIN_VOTES,
    ROLES,
    NightsImages,
    NightsTriplet,
    csv_sha256,
    nights_root,
    nights_transform,
    read_nights_csv,
)
from procvision.data.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from procvision.eval.stats import proportion_stderr

CLS_CHOICES = ("after_norm", "before_norm")
ClsChoice = Literal["after_norm", "before_norm"]
RESULT_KIND = "nights"


# ----- scoring (pure) ---------------------------------------------------------------------------
def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise 1 - cos(a_i, b_i) of [N, D] and [N, D] -> [N] (float64, computed from float64)."""
    return 1.0 - F.cosine_similarity(a.double(), b.double(), dim=1, eps=1e-12)


def twoafc_scores(d0: torch.Tensor, d1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-triplet 2AFC credit: (d0 < d1)(1 - p) + (d1 < d0) p + 0.5 (d0 == d1).

    Args:
        d0: [N] distance ref-left; d1: [N] distance ref-right.
        target: [N] human-majority target p in {0, 0.5, 1} (1 = right is more similar).
    Returns:
        float64 [N] in [0, 1].
    """
    p = target.double()
    return (d0 < d1).double() * (1 - p) + (d1 < d0).double() * p + 0.5 * (d0 == d1).double()


def twoafc_summary(d0: torch.Tensor, d1: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """{"2afc": mean score, "stderr": sqrt(s (1 - s) / N), "n": N, "ties": #(d0 == d1)}."""
    n = int(target.numel())
    if n == 0:
        raise ValueError("no triplets to score")
    s = float(twoafc_scores(d0, d1, target).mean())
    return {"2afc": s, "stderr": proportion_stderr(s, n), "n": float(n),
            "ties": float((d0 == d1).sum())}  # fmt: skip


def targets_of(triplets: Sequence[NightsTriplet]) -> torch.Tensor:
    """float64 [N] human-majority targets of the triplets."""
    return torch.tensor([t.target for t in triplets], dtype=torch.float64)


# ----- CLS before / after the final norm --------------------------------------------------------
#: the evaluator's feature kind of each CLS choice (procvision.eval.embed)
CLS_FEATURE = {"after_norm": "cls", "before_norm": "cls_prenorm"}


def cls_of_feature(feature: str) -> ClsChoice:
    """The NIGHTS CLS choice of an evaluator feature kind ("cls" -> "after_norm", ...)."""
    for cls, kind in CLS_FEATURE.items():
        if kind == feature:
            return cls  # type: ignore[return-value]
    raise ValueError(
        f"NIGHTS compares CLS embeddings: set --model.feature cls (after the final norm) or "
        f"cls_prenorm (before it), not {feature!r}"
    )


def cls_embedder(backbone: nn.Module, cls: ClsChoice = "after_norm") -> Callable:
    """images [B, 3, H, W] -> CLS [B, D], after the final norm or entering it (the evaluation
    layer's `raw_features`, so NIGHTS and every other evaluation read the same token)."""
    if cls not in CLS_CHOICES:
        raise ValueError(f"cls must be one of {CLS_CHOICES}, got {cls!r}")
    from procvision.eval.embed import raw_features

    return lambda x: raw_features(backbone, x, CLS_FEATURE[cls])


@torch.inference_mode()
def embed_stream(
    embed: Callable[[torch.Tensor], torch.Tensor],
    dataset: NightsImages,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features float32 [M, D], row numbers int64 [M]) of one stream; skipped images are absent."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_skip)  # fmt: skip
    feats, rows = [], []
    for batch in tqdm(loader, desc=f"NIGHTS {dataset.role}", disable=not progress, leave=False):
        if batch is None:
            continue
        x, row = batch[0], batch[1]
        feats.append(embed(x.to(device)).float().cpu())
        rows.append(row.to(torch.int64))
    if not feats:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.int64)
    return torch.cat(feats), torch.cat(rows)


def align_streams(
    streams: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Keep the triplet rows present in every stream: ([ref, left, right] features, rows [M])."""
    common = None
    for _feats, rows in streams:
        s = set(rows.tolist())
        common = s if common is None else common & s
    keep = torch.tensor(sorted(common or ()), dtype=torch.int64)
    out = []
    for feats, rows in streams:
        pos = {int(r): i for i, r in enumerate(rows.tolist())}
        out.append(feats[[pos[int(r)] for r in keep]] if len(keep) else feats[:0])
    return out, keep


def score_streams(
    streams: Sequence[tuple[torch.Tensor, torch.Tensor]], triplets: Sequence[NightsTriplet]
) -> dict[str, float]:
    """2AFC summary of the [ref, left, right] (features, rows) streams of `triplets`."""
    (ref, left, right), rows = align_streams(streams)
    target = targets_of(triplets)[rows]
    out = twoafc_summary(cosine_distance(ref, left), cosine_distance(ref, right), target)
    out["skipped_triplets"] = float(len(triplets) - len(rows))
    return out


# ----- PSNR / SSIM baselines --------------------------------------------------------------------
def _unit_images(x: torch.Tensor, normalized: bool) -> torch.Tensor:
    if not normalized:
        return x
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)


def pixel_similarities(ref: torch.Tensor, other: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pair PSNR (dB) and SSIM of images [B, 3, H, W] in [0, 1] (torchmetrics) -> {[B], [B]}."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    psnr = peak_signal_noise_ratio(other, ref, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(other, ref, data_range=1.0, reduction="none")
    return {"psnr": psnr.double().reshape(-1), "ssim": ssim.double().reshape(-1)}


def pixel_baselines(
    root: str | Path,
    triplets: Sequence[NightsTriplet],
    image_size: int = PAPER_IMAGE_SIZE,
    interpolation: str = "bicubic",
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, float]:
    """2AFC of PSNR and SSIM (distance = minus the similarity) on the resized images in [0, 1].

    Returns {"psnr_2afc", "psnr_stderr", "ssim_2afc", "ssim_stderr"}.
    """
    tf = nights_transform(image_size, interpolation, "none")
    streams = [NightsImages(root, triplets, r, tf) for r in ROLES]
    sims: dict[str, list[torch.Tensor]] = {"psnr0": [], "psnr1": [], "ssim0": [], "ssim1": []}
    n = len(triplets)
    for start in tqdm(range(0, n, batch_size), desc="NIGHTS PSNR/SSIM", disable=not progress,
                      leave=False):  # fmt: skip
        idx = range(start, min(n, start + batch_size))
        ref, left, right = (torch.stack([s[i][0] for i in idx]) for s in streams)
        for side, other in (("0", left), ("1", right)):
            got = pixel_similarities(ref, other)
            sims["psnr" + side].append(got["psnr"])
            sims["ssim" + side].append(got["ssim"])
    target = targets_of(triplets)
    out = {}
    for name in ("psnr", "ssim"):
        s0, s1 = torch.cat(sims[name + "0"]), torch.cat(sims[name + "1"])
        summary = twoafc_summary(-s0, -s1, target)
        out[f"{name}_2afc"], out[f"{name}_stderr"] = summary["2afc"], summary["stderr"]
    return out


# ----- records ----------------------------------------------------------------------------------
def nights_record(
    results: dict[str, float],
    cls: str,
    data: dict[str, Any],
    model: dict[str, Any],
    seconds: float | None = None,
) -> dict[str, Any]:
    """The NIGHTS result JSON (read by `procvision report` and `stats.nights_z_test`)."""
    record = {"kind": RESULT_KIND, "version": 1, "metric": "2afc", "cls": cls,
              "distance": "1 - cos", "results": results, "data": data, "model": model}  # fmt: skip
    if seconds is not None:
        record["seconds"] = seconds
    return record


def model_info(backbone: nn.Module | None, spec: str | None = None) -> dict[str, Any]:
    """{"backbone": spec, "fingerprint", "arch", "params", "config"} of a procvision Backbone."""
    info: dict[str, Any] = {"backbone": spec}
    if backbone is not None:
        fp = getattr(backbone, "fingerprint", None)
        info["fingerprint"] = fp() if callable(fp) else None
        config = dict(getattr(backbone, "config", {}) or {})
        info["arch"] = config.get("arch")
        info["config"] = config
        info["params"] = int(sum(p.numel() for p in backbone.parameters()))
    return info


def evaluate_nights(
    backbone: nn.Module,
    root: str | Path,
    split: str = "val",
    cls: ClsChoice = "after_norm",
    min_votes: float = PAPER_MIN_VOTES,
    image_size: int = PAPER_IMAGE_SIZE,
    interpolation: str = "bicubic",
    max_triplets: int | None = None,
    baselines: bool = True,
    batch_size: int = 64,
    device: str = "cpu",
    num_workers: int = 0,
    skip_corrupt: bool = False,
    progress: bool = True,
    spec: str | None = None,
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """The NIGHTS 2AFC score of `backbone` on `split` (and the PSNR/SSIM baselines); the record
    of `nights_record`, written atomically to `json_path` when given."""
    t0 = time.perf_counter()
    triplets = read_nights_csv(root, split, min_votes)
    if max_triplets is not None:
        triplets = triplets[:max_triplets]
    if not triplets:
        raise ValueError(f"{root}: no triplet of split {split!r} with votes >= {min_votes}")
    tf = nights_transform(image_size, interpolation, "imagenet")
    was_training = backbone.training
    embed = cls_embedder(backbone.to(device).eval(), cls)
    try:
        streams = [
            embed_stream(embed, NightsImages(root, triplets, r, tf, skip_corrupt), batch_size,
                         device, num_workers, progress)
            for r in ROLES
        ]  # fmt: skip
    finally:
        backbone.train(was_training)
    results = score_streams(streams, triplets)
    if baselines:
        results.update(
            pixel_baselines(root, triplets, image_size, interpolation, progress=progress)
        )
    data = _data_info(root, split, min_votes, max_triplets, len(triplets), tf.describe())
    record = nights_record(results, cls, data, model_info(backbone, spec), time.perf_counter() - t0)
    if json_path is not None:
        write_json_atomic(json_path, record)
    return record


def _data_info(root, split, min_votes, max_triplets, n, transform) -> dict[str, Any]:
    return {"root": str(nights_root(root).absolute()), "csv_sha256": csv_sha256(root),
            "split": split, "min_votes": min_votes, "max_triplets": max_triplets,
            "triplets": n, "transform": transform}  # fmt: skip


def format_nights(results: dict[str, float]) -> str:
    """Markdown table of a NIGHTS result: model, PSNR and SSIM rows with standard errors."""
    lines = ["| similarity | 2AFC | std. error |", "|---|---|---|"]
    lines.append(f"| model | {results['2afc']:.4f} | {results['stderr']:.4f} |")
    for name in ("psnr", "ssim"):
        if f"{name}_2afc" in results:
            lines.append(f"| {name.upper()} | {results[f'{name}_2afc']:.4f} | "
                         f"{results[f'{name}_stderr']:.4f} |")  # fmt: skip
    return "\n".join(lines)


# ----- Lightning: procvision validate ------------------------------------------------------------
class NightsCallback(pl.Callback):
    """NIGHTS 2AFC of the evaluated backbone at the end of `procvision validate` with
    `NightsDataModule`.

    The evaluator (`BackboneEvaluator`) embeds the three loaders [ref, left, right] with its
    feature kind: `--model.feature cls` is the CLS after the final norm ("after_norm", the k-NN's
    embedding), `cls_prenorm` the CLS entering it ("before_norm", DreamSim's DINO baseline); the
    choice is recorded in the JSON. Under DDP the evaluator gathers every rank's shard first.
    Writes the JSON (`results_path`, default `<log_dir>/nights_results.json`); `summary` holds the
    table that `procvision validate` prints.

    Args:
        baselines: also score PSNR and SSIM on the same triplets.
        results_path: where the JSON goes.
    """

    def __init__(self, baselines: bool = True, results_path: str | None = None) -> None:
        self.baselines, self.results_path = baselines, results_path
        self.last_record: dict[str, Any] | None = None
        self.summary: str | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        dm = trainer.datamodule
        triplets = getattr(dm, "triplets", None)
        gathered = getattr(pl_module, "gathered", None)
        if triplets is None or gathered is None:
            raise RuntimeError(
                "NightsCallback needs the NightsDataModule (data.class_path) and the evaluator "
                "(procvision validate)"
            )
        cls = cls_of_feature(pl_module.feature)
        got = gathered()  # a collective under DDP: every rank calls it
        if any(i not in got for i in range(3)):
            return
        from procvision.eval.callbacks import run_on_rank_zero

        run_on_rank_zero(trainer, lambda: self._score(trainer, pl_module, got, cls), "NIGHTS")

    def _score(self, trainer, pl_module, got, cls: ClsChoice) -> None:
        dm = trainer.datamodule
        streams = [(got[i].embeddings, got[i].labels) for i in range(3)]
        results = score_streams(streams, dm.triplets)
        if self.baselines:
            results.update(pixel_baselines(dm.root, dm.triplets, dm.transform.size,
                                           dm.interpolation, progress=False))  # fmt: skip
        model = model_info(pl_module.teacher_backbone, getattr(pl_module, "spec", None))
        model["ckpt_path"] = getattr(trainer, "ckpt_path", None)
        model["precision"] = getattr(pl_module, "precision_used", None)
        record = nights_record(results, cls, dm.describe(), model)
        self.last_record = record
        pl_module.log_dict(
            {f"nights/{k}": float(v) for k, v in results.items()}, rank_zero_only=True
        )
        self.summary = (
            f"NIGHTS {dm.split} 2AFC ({int(results['n'])} triplets, CLS {cls})\n"
            + format_nights(results)
        )
        path = self.results_path or str(
            Path(trainer.log_dir or trainer.default_root_dir) / "nights_results.json"
        )
        write_json_atomic(path, record)

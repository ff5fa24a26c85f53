"""`SegmentationCallback`: zero-shot segmentation R² (spec §4.3) of the evaluated backbone.

Two ways, like the memory callbacks of `procvision.eval.callbacks`:
- during `fit`, every `every_n_epochs` at the end of a training epoch, on the `data` spec
  (`voc:DIR[:SPLIT] | coco:DIR[:SPLIT] | benchmark:DIR | gestalt[:P,...]`, or the old `voc` folder):
  global rank 0 scores the teacher (`pl_module.teacher_backbone`) while the others wait
  (`run_on_rank_zero`); the RGB baseline and the random-init model do not change between epochs
  and are scored once;
- at the end of a validation epoch of `procvision validate --config configs/eval/segmentation_*.yaml`
  (a `BackboneEvaluator` over a `SegmentationDataModule`): each rank scores the batches of its
  shard as the validation loop brings them, the per-image inertias are all-gathered (every rank,
  so none waits), and rank 0 logs, writes the JSON and sets `summary` (printed by validate).

Patch tokens come from the evaluation layer's `procvision.eval.embed.raw_features(..., "patches")`
(last block after the norm, un-normalised: the PCA of spec §4.3 is fitted on raw tokens), in
float32; the PCA is the batched gram solver of `procvision.eval.seg_pca`. Logged: `seg/r2`,
`seg/r2_rgb`, optionally `seg/r2_random_init` and per group (Gestalt principle) `seg/<group>/r2`;
a TensorBoard picture `seg/pca` with one row per image: image | PCA of the features as RGB |
labels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from procvision.atomic import write_json_atomic
from procvision.data.augment import normalize
from procvision.data.seg_benchmark import SegmentationData, segmentation_data
from procvision.eval.callbacks import run_on_rank_zero
from procvision.eval.embed import raw_features
from procvision.eval.seg_pca import batched_grid_colours, batched_image_inertia, label_colours
from procvision.eval.segmentation import r2_score

ROWS = ("model", "random init", "RGB")


def group_of(name: object) -> str:
    """The group of a dataset item's name: a Gestalt stimulus "<principle>_<i>" -> principle."""
    text = str(name)
    head, sep, tail = text.rpartition("_")
    return head if sep and tail.isdigit() else "all"


def r2_rows(
    inertias: dict[str, Sequence[float]], groups: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """R² per feature row, overall and per group (spec §4.3 step 7 on each subset).

    Args:
        inertias: {row name: per-image inertias (NaN = not scorable)}, all in dataset order.
        groups: the group of each image (None: one group).
    Returns:
        {row: {"all": R², <group>: R², ...}}; a subset without a scorable image gives NaN.
    """
    out: dict[str, dict[str, float]] = {}
    for row, vals in inertias.items():
        subsets: dict[str, list[float]] = {"all": list(vals)}
        if groups is not None and len(set(groups)) > 1:
            for g, v in zip(groups, vals, strict=True):
                subsets.setdefault(g, []).append(v)
        out[row] = {}
        for g, vs in subsets.items():
            ok = [v for v in vs if not math.isnan(v)]
            out[row][g] = r2_score(ok) if ok else math.nan
    return out


def r2_table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table: one line per group ("all" last), one column per feature row."""
    names = list(rows)
    groups = [g for g in next(iter(rows.values())) if g != "all"] + ["all"]
    lines = ["| group | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for g in groups:
        lines.append(f"| {g} | " + " | ".join(f"{rows[n][g]:.2f}" for n in names) + " |")
    return "\n".join(lines)


@torch.no_grad()
def patch_tokens(backbone: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Raw patch tokens float32 [B, h, w, D] of images float [B, 3, S, S] in [0, 1]."""
    return raw_features(backbone, normalize(images), "patches").float()


def pca_picture(
    images: torch.Tensor, features: torch.Tensor, label_maps: Sequence[torch.Tensor], grid: int
) -> torch.Tensor:
    """One row per image: image | PCA of its features as RGB | labels, float [3, n*grid, 3*grid].

    Args:
        images: float [n, 3, S, S] in [0, 1].
        features: float [n, h, w, D] patch features of the same images.
        label_maps: n int label maps.
        grid: side of each tile.
    """
    small = F.interpolate(images.float().cpu(), size=(grid, grid), mode="bilinear", antialias=True)
    pca = batched_grid_colours(features.cpu(), grid).nan_to_num(0.0).permute(0, 3, 1, 2).float()
    rows = []
    for i, lab in enumerate(label_maps):
        lab_small = F.interpolate(lab[None, None].float().cpu(), size=(grid, grid), mode="nearest")
        colours = torch.from_numpy(label_colours(lab_small[0, 0].long().numpy())).float()
        rows.append(torch.cat([small[i], pca[i], colours.permute(2, 0, 1)], dim=2))
    return torch.cat(rows, dim=1).clamp(0, 1)


class SegmentationCallback(pl.Callback):
    """Zero-shot segmentation R² of the evaluated backbone's patch features (spec §4.3).

    Args:
        voc: a Pascal VOC2012 folder (the old form; same as `data: voc:DIR:SPLIT`).
        split: VOC split of `voc`.
        data: a `segmentation_data` spec for fit (`voc:DIR[:SPLIT] | coco:DIR[:SPLIT] |
            benchmark:DIR | gestalt[:P,...]`); under `procvision validate` the
            `SegmentationDataModule`'s data is scored (giving both, they must agree).
        max_images: the first N images during fit (gestalt: stimuli per principle).
        image_size: side the images are resized to during fit (None: the model's img_size); a
            ViT is run there through positional-embedding interpolation.
        grid: evaluation grid side (paper: 112).
        every_n_epochs: evaluation period in training epochs.
        n_images: images (rows) in the TensorBoard picture (0: none).
        with_rgb: also score RGB pixels (the paper's baseline).
        with_random_init: also score the same architecture at random init (seed `seed`).
        kmeans: also K-means mIoU (App. B.4) at a validation epoch (rank 0, whole set).
        per_group: one R² per group of images (Gestalt: per principle).
        batch_size: images per forward pass and per batched PCA during fit.
        benchmark_images: images written by `benchmark:DIR` when DIR holds none yet.
        seed: seed of the random init.
        results_path: JSON written after each evaluation (validate: `<log_dir>/segmentation.json`
            by default).
    """

    def __init__(
        self,
        voc: str | None = None,
        split: str = "val",
        data: str | None = None,
        max_images: int | None = 100,
        image_size: int | None = None,
        grid: int = 112,
        every_n_epochs: int = 1,
        n_images: int = 4,
        with_rgb: bool = True,
        with_random_init: bool = False,
        kmeans: bool = False,
        per_group: bool = False,
        batch_size: int = 8,
        benchmark_images: int = 64,
        seed: int = 0,
        results_path: str | None = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if max_images is not None and max_images < 1:  # fail at construction, not at epoch end
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if voc is not None and data is not None:
            raise ValueError("give `data` (a segmentation data spec) or the old `voc`, not both")
        self.data = data if voc is None else f"voc:{voc}:{split}"
        self.max_images, self.image_size, self.grid = max_images, image_size, grid
        self.every_n_epochs, self.n_images = every_n_epochs, n_images
        self.with_rgb, self.with_random_init = with_rgb, with_random_init
        self.kmeans, self.per_group = kmeans, per_group
        self.batch_size, self.benchmark_images, self.seed = batch_size, benchmark_images, seed
        self.results_path = results_path
        self._segmentation: SegmentationData | None = None
        self._random: torch.nn.Module | None = None
        self._fixed: dict[str, list[float]] = {}  # rows that do not change during fit
        self._shard: dict[str, list[float]] = {}
        self.last_results: dict[str, Any] | None = None
        self.summary: str | None = None
        self.seconds: float | None = None  # cost of the last evaluation (s)
        self.first_seconds: float | None = None  # of the first (opens the data, scores RGB once)

    # ----- what is scored ---------------------------------------------------------------------
    def _fit_data(self, pl_module: pl.LightningModule) -> SegmentationData:
        if self._segmentation is None:
            if self.data is None:
                raise ValueError("SegmentationCallback during fit needs `data` (or `voc`)")
            size = self.image_size or int(pl_module.teacher_backbone.config.get("img_size", 448))
            self._segmentation = segmentation_data(
                self.data, size, self.max_images, self.benchmark_images
            )
        return self._segmentation

    def _random_backbone(self, pl_module: pl.LightningModule) -> torch.nn.Module | None:
        if not self.with_random_init:
            return None
        if self._random is None:
            from procvision.models import random_backbone

            config = dict(pl_module.teacher_backbone.config)
            self._random = random_backbone(**{**config, "seed": self.seed}).eval()
        return self._random.to(pl_module.device)

    def _batch_inertias(
        self,
        pl_module: pl.LightningModule,
        images: torch.Tensor,
        labels: Sequence[torch.Tensor],
        ignore: int | None,
        rows: Sequence[str],
    ) -> dict[str, list[float]]:
        """Per-image inertias of one batch for each of `rows` (model, random init, RGB)."""
        out: dict[str, list[float]] = {}
        images = images.to(pl_module.device)
        for row in rows:
            if row == "RGB":
                feats = images.permute(0, 2, 3, 1)
            else:
                bb = (
                    pl_module.teacher_backbone
                    if row == "model"
                    else self._random_backbone(pl_module)
                )
                feats = patch_tokens(bb, images)
            out[row] = batched_image_inertia(feats, labels, self.grid, ignore)
        return out

    def _rows(self) -> list[str]:
        return [r for r in ROWS if r == "model" or (r == "RGB" and self.with_rgb)
                or (r == "random init" and self.with_random_init)]  # fmt: skip

    # ----- fit --------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        run_on_rank_zero(trainer, lambda: self._fit_evaluate(trainer, pl_module), "segmentation")

    def _fit_evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        t0 = time.perf_counter()
        seg = self._fit_data(pl_module)
        ds = seg.dataset
        first = not self._fixed
        rows = self._rows() if first else ["model"]
        scores: dict[str, list[float]] = {r: [] for r in rows}
        for s in range(0, len(ds), self.batch_size):
            items = [ds[i] for i in range(s, min(s + self.batch_size, len(ds)))]
            images = torch.stack([it[0] for it in items])
            got = self._batch_inertias(pl_module, images, [it[1] for it in items],
                                       seg.ignore_index, rows)  # fmt: skip
            for r in rows:
                scores[r] += got[r]
        if first:
            self._fixed = {r: v for r, v in scores.items() if r != "model"}
        inertias = {"model": scores["model"], **self._fixed}
        how = {"backbone": "the teacher being trained", "data": seg.description}
        self._finish(trainer, pl_module, seg, inertias, how, validating=False, t0=t0)

    # ----- validate ---------------------------------------------------------------------------
    def _validation_data(self, trainer: pl.Trainer) -> SegmentationData | None:
        seg = getattr(trainer.datamodule, "segmentation", None)
        if not isinstance(seg, SegmentationData):
            return None
        if self.data is not None and self.data != seg.description:
            raise ValueError(
                f"SegmentationCallback data {self.data!r} differs from the data module's "
                f"{seg.description!r}: give the data once (data.init_args.data)"
            )
        return seg

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._shard = {}
        self._t0 = time.perf_counter()

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        seg = self._validation_data(trainer)
        if seg is None or trainer.sanity_checking:
            return
        images, indices = batch[0], batch[2]
        labels = [seg.dataset[int(i)][1] for i in indices]
        got = self._batch_inertias(pl_module, images, labels, seg.ignore_index, self._rows())
        self._shard.setdefault("index", []).extend(float(i) for i in indices)
        for r, v in got.items():
            self._shard.setdefault(r, []).extend(v)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seg = self._validation_data(trainer)
        if seg is None or trainer.sanity_checking:
            return
        keys = ["index", *self._rows()]
        local = torch.tensor([self._shard.get(k, []) for k in keys], dtype=torch.float64).T
        table = _gather_rows(pl_module, local.reshape(-1, len(keys)))  # every rank: a collective
        how = pl_module.describe() if hasattr(pl_module, "describe") else {}
        how = {**how, "data": seg.description}
        path = self.results_path
        if path is None:  # trainer.log_dir is a broadcast under DDP: every rank asks it here
            path = str(Path(trainer.log_dir or trainer.default_root_dir) / "segmentation.json")

        def finish() -> None:
            order = table[:, 0].argsort()
            rows = table[order]
            inertias = {k: rows[:, j].tolist() for j, k in enumerate(keys) if k != "index"}
            self._finish(trainer, pl_module, seg, inertias, how, True, self._t0, path)

        run_on_rank_zero(trainer, finish, "segmentation")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.on_validation_epoch_start(trainer, pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.on_validation_epoch_end(trainer, pl_module)

    # ----- output (global rank 0) -------------------------------------------------------------
    def _finish(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        seg: SegmentationData,
        inertias: dict[str, list[float]],
        how: dict,
        validating: bool,
        t0: float,
        path: str | None = None,
    ) -> None:
        ds = seg.dataset
        groups = [group_of(ds[i][2]) if len(ds[i]) > 2 else "all" for i in range(len(ds))]
        try:
            rows = r2_rows(inertias, groups if self.per_group else None)
        except ValueError as err:
            rank_zero_warn(f"SegmentationCallback: no R² this epoch: {err}")
            return
        if all(math.isnan(v["all"]) for v in rows.values()):
            rank_zero_warn("SegmentationCallback: no image was scorable (no R² this epoch)")
            return
        metrics = {"seg/r2": rows["model"]["all"]}
        if "RGB" in rows:
            metrics["seg/r2_rgb"] = rows["RGB"]["all"]
        if "random init" in rows:
            metrics["seg/r2_random_init"] = rows["random init"]["all"]
        for g, v in rows["model"].items():
            if g != "all":
                metrics[f"seg/{g}/r2"] = v
        pl_module.log_dict({k: float(v) for k, v in metrics.items() if not math.isnan(v)},
                           rank_zero_only=True)  # fmt: skip
        kmeans = self._kmeans(pl_module, seg) if self.kmeans and validating else None
        self._picture(trainer, pl_module, seg)
        self.seconds = time.perf_counter() - t0
        if self.first_seconds is None:
            self.first_seconds = self.seconds
        n = sum(not math.isnan(v) for v in inertias["model"])
        size = int(ds[0][0].shape[-1]) if len(ds) else None
        table = r2_table(rows)
        self.summary = (f"zero-shot segmentation R² on {seg.description}: {n} of {len(ds)} images "
                        f"scored, {size} px, grid {self.grid}\n{table}")  # fmt: skip
        if kmeans:
            self.summary += "\nK-means mIoU: " + ", ".join(
                f"{k} {v['miou']:.2f}" for k, v in kmeans.items()
            )
        backbone = pl_module.teacher_backbone
        trained = int(getattr(backbone, "config", {}).get("img_size", size or 0))
        patch = getattr(backbone, "patch_size", None)
        self.last_results = {
            "r2": rows, "table": table, "images": len(ds), "images_scored": n,
            "per_image_inertia": inertias, "kmeans": kmeans,
            "produced_by": {
                **how, "image_size": size, "model_img_size": trained, "patch_size": patch,
                "token_grid": size // patch if patch and size else None,
                "pos_embed_interpolated": bool(getattr(backbone, "is_vit", False))
                and trained != size,
                "grid": self.grid, "pca": "batched gram (procvision.eval.seg_pca)",
                "features": "raw patch tokens after the final norm, float32",
                "ignore_index": seg.ignore_index, "random_init_seed": self.seed,
                "rgb_and_random_init": "scored once (fixed during fit)" if not validating
                else "scored with the model",
            },
            "epoch": int(trainer.current_epoch), "global_step": int(trainer.global_step),
            "seconds": self.seconds,
        }  # fmt: skip
        path = path or self.results_path
        if path is not None:
            write_json_atomic(path, self.last_results)

    def _kmeans(self, pl_module: pl.LightningModule, seg: SegmentationData) -> dict:
        from procvision.eval.kmeans_seg import kmeans_segmentation

        out = {}
        bbs = {"model": pl_module.teacher_backbone, "random init": self._random_backbone(pl_module)}
        for name in self._rows():
            bb = None if name == "RGB" else bbs[name]
            with torch.no_grad():
                out[name] = kmeans_segmentation(bb, seg.dataset, self.grid, None,
                                                seg.ignore_index, str(pl_module.device),
                                                self.seed, progress=False)  # fmt: skip
        return out

    @torch.no_grad()
    def _picture(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, seg: SegmentationData
    ) -> None:
        """TensorBoard image `seg/pca`: a row per image: image | PCA as RGB | labels."""
        boards = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        n = min(self.n_images, len(seg.dataset))
        if not boards or n == 0:
            return
        items = [seg.dataset[i] for i in range(n)]
        images = torch.stack([it[0] for it in items]).to(pl_module.device)
        feats = patch_tokens(pl_module.teacher_backbone, images)
        picture = pca_picture(images, feats, [it[1] for it in items], self.grid)
        for board in boards:
            board.add_image("seg/pca", picture, trainer.global_step)


def _gather_rows(module: pl.LightningModule, rows: torch.Tensor) -> torch.Tensor:
    """All ranks' rows float64 [M, K] (rank-local counts may differ; index column 0 >= 0):
    padded for the collective, duplicates of the distributed sampler's padding dropped."""
    trainer = module.trainer
    if trainer.world_size == 1:
        return rows
    dev = module.device
    n = module.all_gather(torch.tensor([len(rows)], device=dev)).reshape(-1)
    pad = torch.full((int(n.max()), rows.shape[1]), -1.0, dtype=torch.float64, device=dev)
    pad[: len(rows)] = rows.to(dev)
    got = module.all_gather(pad).reshape(-1, rows.shape[1]).cpu()
    got = got[got[:, 0] >= 0]
    keep = torch.zeros(len(got), dtype=torch.bool)
    seen: set[float] = set()
    for i, v in enumerate(got[:, 0].tolist()):
        if v not in seen:
            seen.add(v)
            keep[i] = True
    return got[keep]

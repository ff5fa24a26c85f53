"""DINOModule: the DINO self-distillation recipe (Caron et al. 2021) as thin Lightning glue.

The maths lives in pure functions (`loss`, `ema`, `schedules`, `optim`, `diagnostics`); this file
wires them into Lightning's hooks:
- `training_step`: teacher on the 2 global crops (no grad), student on all crops (one backbone pass
  per resolution, then one head pass), fp32 loss, NaN guard, teacher-output sums accumulated for the
  centre, logging;
- `on_train_batch_start`: lr and weight decay from the global step;
- `on_before_optimizer_step` (gradients already unscaled): per-tensor clipping, last layer frozen;
- `optimizer_step`, once per optimiser step, after the step: the centre update from the teacher
  outputs of every micro-batch of the step (all-reduced once under DDP; a buffer, so it is in
  checkpoints), then the EMA teacher update.
The teacher is the model that is exported and evaluated (`teacher_backbone`, `embed`).
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from procvision.data.rng import derive_seed
from procvision.errors import UserError
from procvision.models import diagnostics as diag
from procvision.models.backbone import Backbone
from procvision.models.ema import ema_update_
from procvision.models.head import DINOHead
from procvision.models.loss import (
    pairwise_cross_entropy,
    student_log_probs,
    teacher_probs,
    update_center,
)
from procvision.models.optim import clip_grad_per_param_, param_groups
from procvision.models.schedules import cosine_schedule, linear_warmup, warmup_cosine

N_GLOBAL_CROPS = 2
CENTER_ACCUMULATOR_KEY = "center_accumulator"

# The teacher is in eval mode on purpose; Lightning warns about eval-mode modules at fit start.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


class TrainingConfigError(UserError, ValueError):
    """Model and data settings that cannot train together (crop sizes, batch size, crop count)."""


def check_crop_sizes(sizes: dict[str, int], patch_size: int | None) -> None:
    """Refuse crop sizes that the ViT's patch size does not divide (timm asserts at step 0).

    Args:
        sizes: e.g. {"global_size": 224, "local_size": 96}.
        patch_size: the backbone's patch side, or None (not a ViT: any size works).
    """
    if not patch_size:
        return
    for name, size in sizes.items():
        if size % patch_size:
            lower = max(patch_size, size - size % patch_size)
            raise TrainingConfigError(
                f"data.{name} = {size} is not a multiple of the model's patch size {patch_size}: "
                f"use data.{name} = {lower} or {lower + patch_size} (or a model.patch_size "
                f"that divides {size})"
            )


@torch.no_grad()
def center_statistics(teacher_out: torch.Tensor) -> torch.Tensor:
    """Sufficient statistics of one micro-batch for the centre, local to this rank.

    Args:
        teacher_out: [V_t, B, K] teacher head outputs (any float dtype).
    Returns:
        fp32 [K + 1]: the sum over views and batch of the outputs, then the item count V_t * B.
        Statistics of several micro-batches (and ranks) add up.
    """
    if teacher_out.dim() != 3:
        raise ValueError(f"teacher_out must be [V, B, K], got shape {tuple(teacher_out.shape)}")
    t = teacher_out.detach().float()
    count = t.new_tensor([float(t.shape[0] * t.shape[1])])
    return torch.cat([t.sum(dim=(0, 1)), count])


@torch.no_grad()
def center_from_statistics(
    center: torch.Tensor, statistics: torch.Tensor, momentum: float
) -> torch.Tensor:
    """The centre after one optimiser step: EMA towards the mean of the accumulated outputs.

    Args:
        center: [1, K] current centre.
        statistics: fp32 [K + 1] summed `center_statistics` of the step's micro-batches (and ranks).
        momentum: centre momentum (0.9).
    Returns:
        [1, K] = momentum * center + (1 - momentum) * sum / count; `center` unchanged if count is
        0. No host-device synchronisation (nothing is read back to the CPU).
    """
    count = statistics[-1:]
    mean = (statistics[:-1] / count.clamp_min(1.0)).unsqueeze(0)
    return torch.where(count > 0, update_center(center, mean, momentum), center)


def all_reduce_sum_(x: torch.Tensor) -> torch.Tensor:
    """Sum `x` over ranks in place when torch.distributed is initialised (one collective call)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
    return x


class DINOModule(pl.LightningModule):
    """Student/teacher DINO on multi-crop batches {"crops": [g1, g2, l1..lN]} (ImageNet-normalised).

    Args:
        arch: timm model name (any ViT; or a ConvNet such as resnet18).
        img_size: positional-embedding grid size of the ViT (other sizes are interpolated).
        patch_size: ViT patch size override.
        backbone_kwargs: extra timm arguments, e.g. {depth: 4, embed_dim: 192, num_heads: 3}.
        out_dim: number of prototypes K (paper 65536).
        hidden_dim: head MLP width (2048).
        bottleneck_dim: head bottleneck (256).
        head_layers: head MLP layers (3).
        norm_last_layer: fix the prototypes' weight-norm magnitude at 1.
        n_local_crops: local crops per image (linked from the data by the CLI).
        student_temp: tau_s (0.1).
        teacher_temp: final tau_t (paper 0.04; "above 0.07 is unstable").
        warmup_teacher_temp: tau_t at step 0, linearly warmed up to teacher_temp.
        warmup_teacher_temp_epochs: length of that warm-up (paper 0: constant).
        center_momentum: EMA of the centre (0.9).
        momentum_teacher: teacher EMA momentum at step 0, cosine to 1 (0.996).
        base_lr: lr per 256 images; peak lr = base_lr * global_batch / 256 (5e-4 -> 1e-3 at 512).
        min_lr: lr at the end of the cosine (1e-6).
        warmup_epochs: linear lr warm-up from 0 (10; fractions allowed).
        weight_decay: weight decay at step 0, cosine to weight_decay_end (0.04 -> 0.4).
        weight_decay_end: final weight decay.
        clip_grad: per-parameter gradient-norm clip (3.0); None or 0 disables.
        freeze_last_layer: epochs during which the prototypes get no update (1; fractions allowed).
        drop_path_rate: stochastic depth of the student (0.1); the teacher has none.
        init_backbone: weights to start both backbones from (an export, a Lightning or DINO
            checkpoint; see `procvision.models.export.load_backbone`).
        batch_size: per-device batch for the lr rule; None reads `trainer.datamodule.batch_size`.
        log_crops: log a grid of augmented crops once per run to TensorBoard.
    """

    def __init__(
        self,
        arch: str = "vit_small_patch16_224",
        img_size: int = 224,
        patch_size: int | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        head_layers: int = 3,
        norm_last_layer: bool = True,
        n_local_crops: int = 8,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: float = 0.0,
        center_momentum: float = 0.9,
        momentum_teacher: float = 0.996,
        base_lr: float = 5e-4,
        min_lr: float = 1e-6,
        warmup_epochs: float = 10.0,
        weight_decay: float = 0.04,
        weight_decay_end: float = 0.4,
        clip_grad: float | None = 3.0,
        freeze_last_layer: float = 1.0,
        drop_path_rate: float = 0.1,
        init_backbone: str | None = None,
        batch_size: int | None = None,
        log_crops: bool = True,
    ) -> None:
        super().__init__()
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise TrainingConfigError(
                f"model.batch_size must be >= 1 or null (read from the data), got {batch_size!r}"
            )
        self.save_hyperparameters()
        kw = dict(backbone_kwargs or {})
        student = Backbone(
            arch, img_size=img_size, patch_size=patch_size, drop_path_rate=drop_path_rate, **kw
        )
        teacher = Backbone(arch, img_size=img_size, patch_size=patch_size, drop_path_rate=0.0, **kw)
        if init_backbone:
            from procvision.models.export import load_backbone

            loaded = load_backbone(init_backbone)
            try:
                student.load_state_dict(loaded.state_dict(), strict=True)
            except RuntimeError as error:
                first = " ".join(str(error).split())[:300]
                raise TrainingConfigError(
                    f"model.init_backbone {init_backbone} ({loaded.config}) does not fit "
                    f"model.arch {arch} {kw} (img_size {img_size}, patch_size {patch_size}): "
                    f"{first}; set the model's arch, patch_size and backbone_kwargs to the "
                    "export's config.json"
                ) from error
        head = DINOHead(
            student.embed_dim, out_dim, hidden_dim, bottleneck_dim, head_layers, norm_last_layer
        )
        self.student = nn.ModuleDict({"backbone": student, "head": head})
        teacher_head = copy.deepcopy(head)
        self.teacher = nn.ModuleDict({"backbone": teacher, "head": teacher_head})
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.register_buffer("center", torch.zeros(1, out_dim))
        # teacher-output sums and item count of the current optimiser step's micro-batches
        # (saved under checkpoint["procvision"], so the state dict keeps its keys)
        self.register_buffer("center_accumulator", torch.zeros(out_dim + 1), persistent=False)
        self.collected: dict[int, dict[str, list[torch.Tensor]]] = {}
        self._ema_step = -1
        self._total_steps = 1
        self._steps_per_epoch = 1
        self._peak_lr = base_lr
        self._tick: float | None = None
        self._crops_logged = False

    # ----- models -------------------------------------------------------------------------------
    @property
    def teacher_backbone(self) -> Backbone:
        """The teacher backbone: the model exported and evaluated."""
        return self.teacher["backbone"]

    @property
    def student_backbone(self) -> Backbone:
        return self.student["backbone"]

    def train(self, mode: bool = True) -> DINOModule:
        """Switch the student's mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher CLS [B, D] of ImageNet-normalised images [B, 3, H, W] (not L2-normalised)."""
        return self.teacher_backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)

    def _student_forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """One backbone pass per run of equal-size crops, then one head pass: [V * B, K]."""
        feats, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            feats.append(self.student["backbone"](torch.cat(crops[start:end])))
            start = end
        return self.student["head"](torch.cat(feats))

    # ----- schedules ----------------------------------------------------------------------------
    def schedule(self, step: int) -> dict[str, float]:
        """lr, weight decay, teacher momentum and temperature at optimiser step `step`."""
        hp = self.hparams
        spe = self._steps_per_epoch
        return {
            "lr": warmup_cosine(
                step, self._total_steps, round(hp.warmup_epochs * spe), self._peak_lr, hp.min_lr
            ),
            "wd": cosine_schedule(step, self._total_steps, hp.weight_decay, hp.weight_decay_end),
            "momentum": cosine_schedule(step, self._total_steps, hp.momentum_teacher, 1.0),
            "teacher_temp": linear_warmup(
                step,
                round(hp.warmup_teacher_temp_epochs * spe),
                hp.warmup_teacher_temp,
                hp.teacher_temp,
            ),
        }

    def _global_batch(self) -> int:
        b = self.hparams.batch_size
        if b is None:
            b = getattr(self.trainer.datamodule, "batch_size", None)
        if b is None:
            raise TrainingConfigError(
                "DINOModule needs batch_size (or a datamodule with .batch_size) for the lr rule: "
                "set model.batch_size"
            )
        return int(b) * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def setup(self, stage: str) -> None:
        """Before any step: the data's crops must suit the model (count, patch size)."""
        augment = getattr(getattr(self.trainer, "datamodule", None), "augment", None)
        if stage != "fit" or augment is None:
            return
        views = getattr(augment, "views", None)
        if views is None:
            return
        n_local = self.hparams.n_local_crops
        if len(views) != N_GLOBAL_CROPS + n_local:
            raise TrainingConfigError(
                f"the data makes {len(views)} crops but the model expects 2 global + {n_local} "
                "local: set data.n_local_crops and model.n_local_crops alike"
            )
        sizes = {"global_size": views[0].size}
        if len(views) > N_GLOBAL_CROPS:
            sizes["local_size"] = views[N_GLOBAL_CROPS].size
        check_crop_sizes(sizes, self.student_backbone.patch_size)

    def on_train_start(self) -> None:
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise TrainingConfigError(
                "set trainer.max_epochs or trainer.max_steps: the schedules need a length"
            )
        self._total_steps = max(1, int(total))
        n_batches = self.trainer.num_training_batches
        if math.isfinite(n_batches):
            self._steps_per_epoch = max(
                1, math.ceil(n_batches / self.trainer.accumulate_grad_batches)
            )
        self._peak_lr = self.hparams.base_lr * self._global_batch() / 256.0
        self._ema_step = self.trainer.global_step - 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(param_groups(self.student.named_parameters()), lr=0.0)

    # ----- training -----------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Global RNG (drop-path) as a function of (seed, micro-batch counter, rank), so a resumed
        # run draws what an uninterrupted one would (checkpoints restore the counter).
        base = int(os.environ.get("PL_GLOBAL_SEED", 0))
        micro = int(self.trainer.fit_loop.epoch_loop.batch_progress.total.completed)
        torch.manual_seed(derive_seed(base, micro, self.global_rank))
        s = self.schedule(self.trainer.global_step)
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = s["lr"]
            group["weight_decay"] = s["wd"] if group.get("name") == "decay" else 0.0
        now = time.perf_counter()
        if self._tick is not None:
            dt = now - self._tick
            n = self._batch_len(batch) * self.trainer.world_size
            self.log("perf/step_time_s", dt)
            self.log("perf/images_per_s", n / max(dt, 1e-9))
        self._tick = now

    @staticmethod
    def _batch_len(batch: Any) -> int:
        crops = batch["crops"] if isinstance(batch, dict) else batch
        return int(crops[0].shape[0])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        crops = batch["crops"] if isinstance(batch, dict) else batch
        n_views = N_GLOBAL_CROPS + self.hparams.n_local_crops
        if len(crops) != n_views:
            raise TrainingConfigError(
                f"got {len(crops)} crops but the model expects 2 global + "
                f"{self.hparams.n_local_crops} local: set data.n_local_crops and "
                "model.n_local_crops alike"
            )
        step = self.trainer.global_step
        s = self.schedule(step)
        b = crops[0].shape[0]
        with torch.no_grad():
            t_cls = self.teacher["backbone"](torch.cat(crops[:N_GLOBAL_CROPS]))
            t_out = self.teacher["head"](t_cls).view(N_GLOBAL_CROPS, b, -1)
        s_out = self._student_forward(crops).view(n_views, b, -1)
        t_probs = teacher_probs(t_out, self.center, s["teacher_temp"])
        s_logp = student_log_probs(s_out, self.hparams.student_temp)
        loss = pairwise_cross_entropy(t_probs, s_logp)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"DINO loss is {loss.item()} at global step {step}. Hints: use precision bf16-mixed or 32 "
                "(not 16-mixed), lower base_lr, keep teacher_temp <= 0.07, keep clip_grad, check the data for NaN."
            )
        self.center_accumulator.add_(center_statistics(t_out))
        self.log("train/loss", loss, prog_bar=True)
        for key, value in s.items():
            self.log(f"train/{key}", value)
        if step % max(1, self.trainer.log_every_n_steps) == 0:
            self._log_diagnostics(loss.detach(), t_probs, t_cls.detach())
        if self.hparams.log_crops and not self._crops_logged:
            self._log_crops(crops)
        return loss

    @torch.no_grad()
    def _log_diagnostics(
        self, loss: torch.Tensor, t_probs: torch.Tensor, t_cls: torch.Tensor
    ) -> None:
        h = diag.entropy(t_probs)
        self.log("collapse/teacher_entropy", h)
        self.log("collapse/teacher_marginal_entropy", diag.marginal_entropy(t_probs))
        # mean over pairs of KL(t_q || s_v) = loss - mean_q H(t_q): every q is in the same number of pairs
        self.log("collapse/kl_teacher_student", loss - h)
        self.log("collapse/teacher_cls_std", diag.cls_std(t_cls))
        self.log("collapse/teacher_effective_rank", diag.effective_rank(t_cls))

    @torch.no_grad()
    def _log_crops(self, crops: list[torch.Tensor]) -> None:
        self._crops_logged = True
        from lightning.pytorch.loggers import TensorBoardLogger
        from torchvision.utils import make_grid

        from procvision.data.augment import denormalize

        if not self.trainer.is_global_zero or not isinstance(self.logger, TensorBoardLogger):
            return
        n = min(8, crops[0].shape[0])
        for name, views in (("global", crops[:N_GLOBAL_CROPS]), ("local", crops[N_GLOBAL_CROPS:])):
            if views:
                tiles = torch.stack([denormalize(v[:n].float()) for v in views], dim=1).flatten(
                    0, 1
                )
                grid = make_grid(tiles.cpu(), nrow=len(views), padding=1)
                self.logger.experiment.add_image(f"crops/{name}", grid, self.trainer.global_step)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradients are unscaled here (Lightning unscales before this hook)."""
        if self.hparams.clip_grad:
            norms = clip_grad_per_param_(self.student.parameters(), self.hparams.clip_grad)
            if (
                norms is not None
                and self.trainer.global_step % max(1, self.trainer.log_every_n_steps) == 0
            ):
                self.log("train/grad_norm_max", norms.max())
        freeze_steps = round(self.hparams.freeze_last_layer * self._steps_per_epoch)
        if self.trainer.global_step < freeze_steps:
            for p in self.student["head"].last_layer.parameters():
                p.grad = None

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure=None
    ) -> None:
        """The optimiser step (Lightning calls this once per step, not per micro-batch), then the
        centre and the EMA teacher updates of that step. Done here rather than in
        `on_train_batch_end` so that any checkpoint, even one ModelCheckpoint writes after the
        step (`every_n_train_steps`, `train_time_interval`: callbacks run before the module's
        batch-end hook), holds the state after the whole step."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        step = self.trainer.global_step  # the step just taken (the counter moves after this hook)
        if step <= self._ema_step:
            return  # already updated for this step (defensive: Lightning steps once)
        self._ema_step = step
        self._update_center()
        m = self.schedule(step)["momentum"]
        ema_update_(self.teacher.parameters(), self.student.parameters(), m)
        t_buf = [b for b in self.teacher.buffers() if b.is_floating_point()]
        s_buf = [b for b in self.student.buffers() if b.is_floating_point()]
        ema_update_(t_buf, s_buf, m)

    @torch.no_grad()
    def _update_center(self) -> None:
        """One centre update per optimiser step from every micro-batch of the step (a short last
        accumulation at an epoch end is weighted by its count); one all-reduce under DDP."""
        stats = all_reduce_sum_(self.center_accumulator.clone())
        self.center.copy_(center_from_statistics(self.center, stats, self.hparams.center_momentum))
        self.center_accumulator.zero_()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["procvision"] = {
            "teacher_backbone_config": dict(self.teacher_backbone.config),
            # non-zero only for a checkpoint taken between the micro-batches of one step
            CENTER_ACCUMULATOR_KEY: self.center_accumulator.detach().cpu().clone(),
        }

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> DINOModule:
        """Lightning's loader, always with `weights_only=True` (an explicit value, which
        `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` cannot override): a checkpoint never runs code."""
        return super().load_from_checkpoint(
            checkpoint_path, map_location, hparams_file, strict, weights_only=True, **kwargs
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("procvision", {}).get(CENTER_ACCUMULATOR_KEY)
        if saved is not None and saved.shape == self.center_accumulator.shape:
            self.center_accumulator.copy_(saved)

    # ----- evaluation ---------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.collected = {}

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Store L2-normalised teacher CLS (CPU) and labels of (images, labels) batches in
        `self.collected[dataloader_idx]` = {"embeddings": [...], "labels": [...]}. Images must be
        ImageNet-normalised (see `procvision.data.augment.normalize`)."""
        images, labels = batch[0], batch[1]
        z = F.normalize(self.embed(images).float(), dim=-1)
        store = self.collected.setdefault(dataloader_idx, {"embeddings": [], "labels": []})
        store["embeddings"].append(z.cpu())
        store["labels"].append(torch.as_tensor(labels).cpu())

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Teacher CLS [B, D] of the images in `batch` (a tensor or a tuple starting with one)."""
        images = batch if isinstance(batch, torch.Tensor) else batch[0]
        return self.embed(images)

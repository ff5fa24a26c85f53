"""`BackboneEvaluator`: what `procvision validate|test|predict` run (one backbone, no heads).

    procvision validate --config configs/eval/knn_fashion_mnist.yaml --model.backbone EXPORT_DIR
    procvision validate --config configs/eval/knn_fashion_mnist.yaml --model.backbone last.ckpt
    procvision validate --config configs/eval/knn_fashion_mnist.yaml --model.backbone random:EXPORT_DIR

The backbone is named with the grammar of the tool commands (`procvision.eval.recipe`):
`PATH` (an export directory, whose config.json is the architecture; a .safetensors; a Lightning
checkpoint, whose teacher is taken; an original DINO .pth, with `arch` or the shapes giving the
architecture), `random:ARCH`, `random:{json}`, or `random:PATH`: the architecture of the model at
PATH at random init (seed `seed`), the same model as the demo table's "random init" row.

`validation_step` embeds each batch (feature kind and precision as configured; float32, unit
norm) and keeps (embeddings, labels, dataset indices) per dataloader; `gathered()` returns them
for the whole sets: under DDP each rank embeds its shard and the shards are all-gathered (the
distributed sampler's padding removed by index), so callbacks see what one process would.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch

from procvision.errors import UserError
from procvision.eval.embed import Embedded, FeatureKind, embed_batch, resolve_precision


class BackboneSpecError(UserError, ValueError):
    """The backbone named on the command line cannot be built or does not fit."""


class BackboneEvaluator(pl.LightningModule):
    """A backbone to evaluate, with no heads and no training.

    Args:
        backbone: `PATH | random:ARCH | random:{json} | random:PATH` (see the module docstring).
            `procvision validate --ckpt_path X` is read as `--model.backbone X`.
        arch: timm name of an original DINO checkpoint's ViT (else inferred from its shapes).
        checkpoint_key: which state dict of an original DINO checkpoint ("teacher" or "student").
        seed: seed of a random init.
        feature: "cls" (CLS after the final norm, the paper's k-NN feature), "cls_prenorm" or
            "patches".
        precision: "auto" (bf16 autocast on CUDA and on CPUs with native bf16, else fp32),
            "fp32" or "bf16". Features are cast to float32 and L2-normalised in float32 either way.
    """

    def __init__(
        self,
        backbone: str | None = None,
        arch: str | None = None,
        checkpoint_key: Literal["teacher", "student"] = "teacher",
        seed: int = 0,
        feature: FeatureKind = "cls",
        precision: Literal["auto", "fp32", "bf16"] = "auto",
    ) -> None:
        super().__init__()
        if backbone is None:
            raise BackboneSpecError(
                "no backbone to evaluate: give --model.backbone PATH (an export directory, a "
                "Lightning .ckpt or a DINO .pth) or random:ARCH / random:PATH"
            )
        resolve_precision(precision)  # check the value now
        from procvision.eval.recipe import load_backbone_spec, resolve_backbone_spec

        try:
            self.spec = resolve_backbone_spec(backbone, seed=seed)
            model = load_backbone_spec(self.spec, "cpu", arch=arch, checkpoint_key=checkpoint_key)
        except (FileNotFoundError, ValueError, TypeError) as err:
            raise BackboneSpecError(f"--model.backbone {backbone}: {err}") from err
        self.backbone = model.requires_grad_(False)
        self.feature: FeatureKind = feature
        self.precision_setting = precision
        self.collected: dict[int, dict[str, list[torch.Tensor]]] = {}
        self._gathered: dict[int, Embedded] | None = None

    # ----- the model ------------------------------------------------------------------------------
    @property
    def teacher_backbone(self) -> torch.nn.Module:
        """The backbone evaluated (named like DINOModule's, so callbacks and DataModules take both)."""
        return self.backbone

    @property
    def precision_used(self) -> str:
        """The resolved precision on the current device ("fp32" or "bf16")."""
        return resolve_precision(self.precision_setting, self.device)

    def describe(self) -> dict[str, Any]:
        """How the evaluated features are made (recorded in every results file)."""
        return {
            "backbone": self.spec,
            "config": dict(getattr(self.backbone, "config", {})),
            "fingerprint": self.backbone.fingerprint(),
            "feature": self.feature,
            "precision": self.precision_used,
        }

    def train(self, mode: bool = True) -> BackboneEvaluator:
        """The backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return embed_batch(self.backbone, x, self.feature, self.precision_used)

    def configure_optimizers(self) -> None:
        raise BackboneSpecError(
            "BackboneEvaluator only evaluates: use `procvision fit` with a training config"
        )

    # ----- evaluation -----------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.collected, self._gathered = {}, None

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Store float32 unit features (CPU), labels and dataset indices of (images, labels[,
        indices]) batches in `self.collected[dataloader_idx]`."""
        images, labels = batch[0], batch[1]
        z = self(images)
        store = self.collected.setdefault(
            dataloader_idx, {"embeddings": [], "labels": [], "indices": []}
        )
        store["embeddings"].append(z.cpu())
        store["labels"].append(torch.as_tensor(labels).cpu().long())
        if len(batch) > 2:
            store["indices"].append(torch.as_tensor(batch[2]).cpu().long())

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx, dataloader_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Features [B, D] of the images in `batch` (a tensor or a tuple starting with one)."""
        images = batch if isinstance(batch, torch.Tensor) else batch[0]
        return self(images)

    def gathered(self) -> dict[int, Embedded]:
        """{dataloader index: Embedded} of the whole sets, in dataset order, on every rank.

        Under DDP this is a collective: every rank must call it (the callbacks do, on every rank).
        """
        if self._gathered is None:
            self._gathered = {i: self._gather(self.collected[i]) for i in sorted(self.collected)}
        return self._gathered

    def _gather(self, store: dict[str, list[torch.Tensor]]) -> Embedded:
        emb = torch.cat(store["embeddings"]) if store["embeddings"] else torch.zeros(0, 0)
        lab = torch.cat(store["labels"]) if store["labels"] else torch.zeros(0, dtype=torch.long)
        if store["indices"]:
            idx = torch.cat(store["indices"])
        elif self.trainer.world_size == 1:
            idx = torch.arange(len(lab))
        else:
            raise RuntimeError("distributed evaluation needs batches (images, labels, indices)")
        if self.trainer.world_size > 1:
            emb, lab, idx = _all_gather_rows(self, emb, lab, idx)
        return Embedded(emb, lab, idx)


def _all_gather_rows(
    module: pl.LightningModule, emb: torch.Tensor, lab: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All ranks' rows, padded to equal length for the collective, then de-duplicated by dataset
    index (the distributed sampler repeats items to even the shards) and sorted by it."""
    dev = module.device
    n = module.all_gather(torch.tensor([len(idx)], device=dev)).reshape(-1)
    m = int(n.max())
    shape = tuple(emb.shape[1:])
    pad_e = torch.zeros((m, *shape), dtype=torch.float32, device=dev)
    pad_l = torch.full((m,), -1, dtype=torch.long, device=dev)
    pad_i = torch.full((m,), -1, dtype=torch.long, device=dev)
    pad_e[: len(idx)], pad_l[: len(idx)], pad_i[: len(idx)] = emb.to(dev), lab.to(dev), idx.to(dev)
    all_e = module.all_gather(pad_e).reshape(-1, *shape).cpu()
    all_l = module.all_gather(pad_l).reshape(-1).cpu()
    all_i = module.all_gather(pad_i).reshape(-1).cpu()
    keep = all_i >= 0
    all_e, all_l, all_i = all_e[keep], all_l[keep], all_i[keep]
    _, first = np.unique(all_i.numpy(), return_index=True)  # sorted by index
    first = torch.from_numpy(first)
    return all_e[first], all_l[first], all_i[first]

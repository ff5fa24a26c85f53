"""Callbacks of DINO training (non-essential logic): export of the teacher backbone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from procvision.models.export import export_backbone


def _export_dir(trainer: pl.Trainer) -> Path:
    return Path(trainer.log_dir or trainer.default_root_dir)


class ExportTeacherCallback(pl.Callback):
    """Export the teacher backbone (safetensors + config.json) to `<log_dir>/<dirname>/` at the end
    of fit, and optionally to `<log_dir>/<dirname>/epoch_XXXX/` every `every_n_epochs` epochs.

    The export records the training data (`datamodule.describe()`), steps, epochs and the model's
    hyper-parameters; it is what `procvision memory` and every evaluation load.

    Args:
        dirname: sub-directory of the log directory.
        every_n_epochs: also export during training every that many epochs (0: only at the end).
    """

    def __init__(self, dirname: str = "export", every_n_epochs: int = 0) -> None:
        self.dirname, self.every_n_epochs = dirname, every_n_epochs
        self.last_path: Path | None = None

    @staticmethod
    def meta(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        dm = trainer.datamodule
        data = dm.describe() if dm is not None and hasattr(dm, "describe") else None
        return {
            "training_data": data,
            "global_step": int(trainer.global_step),
            "epoch": int(trainer.current_epoch),
            "hparams": {
                k: v for k, v in dict(pl_module.hparams).items() if not str(k).startswith("_")
            },
            "world_size": int(trainer.world_size),
        }

    def _export(self, trainer: pl.Trainer, pl_module: pl.LightningModule, path: Path) -> None:
        if not hasattr(pl_module, "teacher_backbone"):
            raise TypeError(f"{type(pl_module).__name__} has no teacher_backbone to export")
        if trainer.is_global_zero:
            self.last_path = export_backbone(
                pl_module.teacher_backbone, path, self.meta(trainer, pl_module)
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            epoch_dir = _export_dir(trainer) / self.dirname / f"epoch_{trainer.current_epoch:04d}"
            self._export(trainer, pl_module, epoch_dir)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._export(trainer, pl_module, _export_dir(trainer) / self.dirname)
        if trainer.is_global_zero and self.last_path is not None:
            pl.utilities.rank_zero_info(
                f"exported the teacher backbone to {os.fspath(self.last_path.parent)}"
            )

"""`procvision fit|validate|test|predict`: LightningCLI over DINOModule and the DataModules.

    procvision fit --config configs/kml_mixup.yaml
    procvision fit --config configs/kml_mixup.yaml --ckpt_path last      # resume
    procvision fit --config configs/demo.yaml --trainer.fast_dev_run=true

The data section selects a DataModule by class_path (ProceduralDataModule, ImageFolderDataModule).
`data.n_local_crops` is linked to `model.n_local_crops`, so the crops and the loss cannot disagree.
Checkpoints go to `<trainer.default_root_dir>/checkpoints/` (every epoch, plus `last.ckpt`), a fixed
place so that `--ckpt_path last` finds them from a new run; TensorBoard logs and the saved config go
to `<default_root_dir>/lightning_logs/version_N/`, and the teacher export to its `export/`.
"""

from __future__ import annotations

import os
import warnings

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from procvision.models.callbacks import ExportTeacherCallback
from procvision.models.checkpoint_io import SafeCheckpointCLIMixin
from procvision.models.module import DINOModule


class ProcvisionCLI(SafeCheckpointCLIMixin, LightningCLI):
    """LightningCLI with DINO's links and always-on checkpoint and export callbacks."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.n_local_crops", "model.n_local_crops", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.every_n_epochs": 1,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "epoch{epoch:04d}-step{step:07d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(ExportTeacherCallback, "export")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        if config.get("checkpoint") is not None and config.checkpoint.get("dirpath") is None:
            root = config.trainer.get("default_root_dir") or os.getcwd()
            config.checkpoint.dirpath = os.path.join(root, "checkpoints")


def run_lightning_cli(argv: list[str] | None = None, **kwargs) -> ProcvisionCLI:
    """Run `fit|validate|test|predict` with `argv` (the part after `procvision`)."""
    # `procvision.cli.main` passes sys.argv[1:] explicitly, which LightningCLI warns about.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    return ProcvisionCLI(
        DINOModule,
        pl.LightningDataModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=argv,
        **kwargs,
    )

"""`procvision fit|validate|test|predict`: LightningCLI over DINOModule (fit) and BackboneEvaluator.

    procvision fit --config configs/kml_mixup.yaml
    procvision fit --config configs/kml_mixup.yaml --ckpt_path last      # resume
    procvision fit --config configs/demo.yaml --trainer.fast_dev_run=true
    procvision validate --config configs/eval/knn_fashion_mnist.yaml --model.backbone EXPORT_DIR

`fit` trains a `DINOModule`; its data section selects a DataModule by class_path
(ProceduralDataModule, ImageFolderDataModule), and `data.n_local_crops` is linked to
`model.n_local_crops`, so the crops and the loss cannot disagree. Checkpoints go to
`<trainer.default_root_dir>/checkpoints/` (every epoch, plus `last.ckpt`), a fixed place so that
`--ckpt_path last` finds them from a new run; TensorBoard logs and the saved config go to
`<default_root_dir>/lightning_logs/version_N/`, and the teacher export to its `export/`.

`validate`, `test` and `predict` run a `BackboneEvaluator` (one backbone, no heads) on the model
named by `--model.backbone PATH | random:ARCH | random:{json} | random:PATH`; `--ckpt_path X` there
means `--model.backbone X` (the checkpoint's teacher). Eval configs (configs/eval/*.yaml) hold
data, evaluation settings and callbacks only. After the run the callbacks' summaries (the k-NN
table, ...) are printed. A user error (a bad backbone, path or data file) is one line on stderr and
exit code 2.
"""

from __future__ import annotations

import os
import warnings

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from procvision.eval.evaluator import BackboneEvaluator, BackboneSpecError
from procvision.models.callbacks import ExportTeacherCallback
from procvision.models.checkpoint_io import SafeCheckpointCLIMixin
from procvision.models.module import DINOModule

EVAL_SUBCOMMANDS = ("validate", "test", "predict")


class ProcvisionCLI(SafeCheckpointCLIMixin, LightningCLI):
    """LightningCLI whose model class depends on the subcommand (DINOModule for fit, the
    BackboneEvaluator for validate/test/predict), with DINO's links and always-on checkpoint and
    export callbacks for fit."""

    _building: str | None = None
    eval_only = False  # run=False with an evaluation config: the evaluator's arguments

    def _is_eval(self) -> bool:
        return self._building in EVAL_SUBCOMMANDS or (self._building is None and self.eval_only)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs):
        self._building = subcommand
        saved = self._model_class
        self._model_class = BackboneEvaluator if subcommand in EVAL_SUBCOMMANDS else DINOModule
        try:
            return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        finally:
            self._model_class = saved
            self._building = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if self._is_eval():
            return
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

    def _parse_ckpt_path(self) -> None:
        # an evaluation's checkpoint is a backbone to load, not hyper-parameters of its model
        if self.config.get("subcommand") in EVAL_SUBCOMMANDS:
            return
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        if self.subcommand in EVAL_SUBCOMMANDS or (self.subcommand is None and self.eval_only):
            ckpt = config.get("ckpt_path")
            model = config.model
            if ckpt:
                backbone = model.get("backbone")
                if backbone and os.path.abspath(backbone) != os.path.abspath(ckpt):
                    raise BackboneSpecError(
                        f"both --model.backbone {backbone} and --ckpt_path {ckpt} name the model "
                        "to evaluate: give one of them"
                    )
                model.backbone = ckpt
                config.ckpt_path = None  # the evaluator loads the teacher; Lightning loads nothing
            return
        if config.get("checkpoint") is not None and config.checkpoint.get("dirpath") is None:
            root = config.trainer.get("default_root_dir") or os.getcwd()
            config.checkpoint.dirpath = os.path.join(root, "checkpoints")

    @rank_zero_only
    def _print_summaries(self) -> None:
        for cb in self.trainer.callbacks:
            text = getattr(cb, "summary", None)
            if isinstance(text, str) and text:
                print(f"\n{text}")

    def after_validate(self) -> None:
        self._print_summaries()

    def after_test(self) -> None:
        self._print_summaries()


def run_lightning_cli(
    argv: list[str] | None = None, evaluate: bool = False, **kwargs
) -> ProcvisionCLI:
    """Run `fit|validate|test|predict` with `argv` (the part after `procvision`).

    With `run=False` (no subcommand) the parser is fit's, or with `evaluate=True` the evaluator's
    (for building an evaluation config's objects without running). A `UserError` propagates:
    `procvision.cli.main` reports it as one line (`procvision <command>: error: ...`), exit 2.
    """
    # `procvision.cli.main` passes sys.argv[1:] explicitly, which LightningCLI warns about.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    cls = (
        type("ProcvisionEvalCLI", (ProcvisionCLI,), {"eval_only": True})
        if evaluate
        else ProcvisionCLI
    )
    return cls(
        BackboneEvaluator if evaluate else DINOModule,
        pl.LightningDataModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=argv,
        **kwargs,
    )

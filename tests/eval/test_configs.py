"""configs/eval/*.yaml parse with the LightningCLI, and `procvision validate` runs the k-NN protocol
with a BackboneEvaluator on an export, a Lightning checkpoint and a random init, printing the same
numbers as the demo table; architecture and argument mistakes are one-line errors; DDP on gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest

from procvision.cli import main
from procvision.eval.callbacks import KNNCallback
from procvision.eval.evaluator import BackboneEvaluator
from procvision.eval.recipe import random_spec
from procvision.eval.report import fashion_mnist_knn_report
from procvision.lightning_cli import run_lightning_cli
from procvision.models.export import export_backbone
from procvision.models.module import DINOModule
from tests.eval.test_callbacks import TINY, TwoCrops
from tests.fixtures_real import make_idx_root

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "eval"
TINY_ARCH = {"arch": "vit_tiny_patch16_224", "img_size": 16, "patch_size": 8, "depth": 1,
             "embed_dim": 32, "num_heads": 2}  # fmt: skip
TINY_SPEC = random_spec(**TINY_ARCH)
PAPER_KS = [1, 2, 3, 4, 5, 10, 20, 100, 200]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.mark.parametrize(
    "name",
    ["knn_fashion_mnist", "knn_imagenet", "knn_cub", "knn_flowers", "knn_food", "knn_medmnist"],
)
def test_eval_config_parses_and_instantiates(name: str, tmp_path: Path) -> None:
    cli = run_lightning_cli(
        ["--config", str(CONFIGS / f"{name}.yaml"), "--model.backbone", TINY_SPEC,
         "--trainer.default_root_dir", str(tmp_path)],
        run=False, evaluate=True,
    )  # fmt: skip
    [knn] = [c for c in cli.trainer.callbacks if isinstance(c, KNNCallback)]
    assert knn.ks == PAPER_KS and knn.methods == ["weighted"] and knn.T == 0.07
    assert type(cli.datamodule).__name__ == "KNNDataModule"
    assert ":" in cli.datamodule.memory and ":" in cli.datamodule.queries
    assert isinstance(cli.model, BackboneEvaluator) and cli.model.backbone.embed_dim == 32
    assert not hasattr(cli.datamodule, "n_local_crops")


@pytest.mark.parametrize(
    "name", ["segmentation_coco", "segmentation_voc", "segmentation_benchmark", "gestalt"]
)
def test_segmentation_config_parses_and_instantiates(name: str, tmp_path: Path) -> None:
    from procvision.data.seg_benchmark import SegmentationDataModule
    from procvision.eval.segmentation_callback import SegmentationCallback

    cli = run_lightning_cli(
        ["--config", str(CONFIGS / f"{name}.yaml"), "--model.backbone", TINY_SPEC,
         "--trainer.default_root_dir", str(tmp_path)],
        run=False, evaluate=True,
    )  # fmt: skip
    [seg] = [c for c in cli.trainer.callbacks if isinstance(c, SegmentationCallback)]
    assert seg.grid == 112 and seg.with_rgb and seg.with_random_init
    assert seg.per_group == (name == "gestalt")
    assert isinstance(cli.datamodule, SegmentationDataModule)
    kind = cli.datamodule.data.split(":")[0]
    assert kind == {"segmentation_coco": "coco", "segmentation_voc": "voc",
                    "segmentation_benchmark": "benchmark", "gestalt": "gestalt"}[name]  # fmt: skip
    assert isinstance(cli.model, BackboneEvaluator) and cli.model.backbone.embed_dim == 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A one-step DINOModule: its Lightning checkpoint, its teacher export, a fixture dataset."""
    tmp = tmp_path_factory.mktemp("trained")
    root = make_idx_root(tmp / "fm", n_train=30, n_test=12)
    model = DINOModule(**{**TINY, "backbone_kwargs": {"depth": 1, "embed_dim": 48, "num_heads": 2}})
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(model, datamodule=TwoCrops())
    ckpt = tmp / "tiny.ckpt"
    trainer.save_checkpoint(ckpt)
    export = tmp / "export"
    export_backbone(model.teacher_backbone, export)
    return {"root": root, "ckpt": ckpt, "export": export}


def _validate(root: Path, out: Path, *extra: str) -> dict:
    rc = main([
        "validate", "--config", str(CONFIGS / "knn_fashion_mnist.yaml"), *QUIET,
        "--data.init_args.memory", f"fashion_mnist:{root}:train",
        "--data.init_args.queries", f"fashion_mnist:{root}:test",
        "--data.init_args.max_memory", "25",
        "--trainer.callbacks.init_args.results_path", str(out),
        "--trainer.callbacks.init_args.ks", "[1, 5, 20]",
        "--trainer.default_root_dir", str(out.parent / "runs"), *extra,
    ])  # fmt: skip
    assert rc == 0
    return json.loads(out.read_text())


def test_validate_agrees_with_the_demo_table(trained: dict, tmp_path: Path, capsys) -> None:
    """Export, Lightning checkpoint (as --model.backbone and as --ckpt_path) and random:EXPORT give
    the numbers of the demo report for the same model (same sets, features, precision, seed)."""
    root, export, ckpt = trained["root"], trained["export"], trained["ckpt"]
    report = fashion_mnist_knn_report(export, k=5, root=str(root), max_memory=25, progress=False)
    capsys.readouterr()
    by_export = _validate(root, tmp_path / "a.json", "--model.backbone", str(export))
    assert "| k | weighted top-1 | weighted top-5 |" in capsys.readouterr().out  # the CLI prints
    by_ckpt = _validate(root, tmp_path / "b.json", "--model.backbone", str(ckpt))
    by_ckpt_path = _validate(root, tmp_path / "c.json", "--ckpt_path", str(ckpt))
    at_random = _validate(root, tmp_path / "d.json", "--model.backbone", f"random:{export}")
    model, random = report["results"]["model"], report["results"]["random init"]
    for key in ("weighted/k5/top1", "weighted/k5/top5"):
        assert by_export["results"][key] == model[key]
        assert by_ckpt["results"][key] == model[key] and by_ckpt_path["results"][key] == model[key]
        assert at_random["results"][key] == random[key]
    how = by_export["produced_by"]
    assert how["backbone"] == str(export.absolute()) and how["config"]["embed_dim"] == 48
    assert how["precision"] == report["config"]["precision"] and how["feature"] == "cls"
    assert by_ckpt["produced_by"]["fingerprint"] == how["fingerprint"]  # the teacher, extracted
    assert at_random["produced_by"]["backbone"] == report["config"]["random_init_spec"]
    assert by_export["memory"]["size"] == 25 and by_export["queries"]["size"] == 12
    assert how["sets"][0]["max_items"] == 25 and how["sets"][1]["subset_seed"] == 1


def test_validate_mistakes_are_one_line_errors(trained: dict, tmp_path: Path, capsys) -> None:
    root, export, ckpt = trained["root"], trained["export"], trained["ckpt"]
    cases = [
        (["--model.backbone", str(export), "--ckpt_path", str(ckpt)], "give one of them"),
        ([], "no backbone to evaluate"),
        (["--model.backbone", str(tmp_path / "missing")], "no such file"),
        (["--model.backbone", "random:{bad json"], "invalid JSON"),
    ]
    for extra, message in cases:
        rc = main([
            "validate", "--config", str(CONFIGS / "knn_fashion_mnist.yaml"), *QUIET,
            "--data.init_args.memory", f"fashion_mnist:{root}:train",
            "--data.init_args.queries", f"fashion_mnist:{root}:test",
            "--trainer.default_root_dir", str(tmp_path / "runs"), *extra,
        ])  # fmt: skip
        assert rc == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("procvision validate: error:") and message in err[-1], err


def test_ddp_validate_gathers_every_shard(trained: dict, tmp_path: Path) -> None:
    """2 processes on gloo embed one shard each (25 memory items: the sampler pads one); the
    gathered sets give the single-process numbers."""
    root, export = trained["root"], trained["export"]
    single = _validate(root, tmp_path / "one.json", "--model.backbone", str(export),
                       "--model.precision", "fp32")  # fmt: skip
    out = tmp_path / "two.json"
    cmd = [
        sys.executable, "-m", "procvision.cli", "validate",
        "--config", str(CONFIGS / "knn_fashion_mnist.yaml"), *QUIET,
        "--data.init_args.memory", f"fashion_mnist:{root}:train",
        "--data.init_args.queries", f"fashion_mnist:{root}:test",
        "--data.init_args.max_memory", "25", "--data.init_args.batch_size", "4",
        "--trainer.callbacks.init_args.results_path", str(out),
        "--trainer.callbacks.init_args.ks", "[1, 5, 20]",
        "--trainer.default_root_dir", str(tmp_path / "ddp"),
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
        "--model.backbone", str(export), "--model.precision", "fp32",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["memory"]["size"] == 25 and two["queries"]["size"] == 12
    for key, value in single["results"].items():
        assert two["results"][key] == pytest.approx(value), key


def test_fit_overlay_takes_evalsets(tmp_path: Path) -> None:
    """configs/experiments/proxy_knn.yaml: the fit-time callback's sets are EvalSets from YAML."""
    from procvision.data.datasets.datamodule import EvalSet

    cli = run_lightning_cli(
        ["--config", str(ROOT / "configs/demo.yaml"),
         "--config", str(ROOT / "configs/experiments/proxy_knn.yaml"),
         "--trainer.default_root_dir", str(tmp_path)],
        run=False,
    )  # fmt: skip
    [knn] = [c for c in cli.trainer.callbacks if isinstance(c, KNNCallback)]
    assert isinstance(knn.memory, EvalSet) and knn.memory.max_items == 5000
    assert knn.memory.split == "train" and knn.queries.split == "test"
    assert (knn.queries.max_items, knn.queries.subset_seed, knn.ks) == (2000, 1, [20])
    assert isinstance(cli.model, DINOModule)  # fit keeps DINOModule

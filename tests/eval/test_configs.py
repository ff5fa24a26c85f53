"""configs/eval/*.yaml parse with the LightningCLI, and `procvision validate` runs the k-NN protocol."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest

from procvision.cli import main
from procvision.data.datasets import EvalTransform, FashionMNIST
from procvision.eval.callbacks import KNNCallback
from procvision.eval.embed import embed_dataset
from procvision.eval.knn import knn_evaluate
from procvision.lightning_cli import run_lightning_cli
from procvision.models import load_backbone
from procvision.models.module import DINOModule
from tests.eval.test_callbacks import TINY, TwoCrops
from tests.fixtures_real import make_idx_root

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "eval"
TINY_ARGS = [
    "--model.arch", "vit_tiny_patch16_224", "--model.img_size", "16", "--model.patch_size", "8",
    "--model.backbone_kwargs", '{"depth": 1, "embed_dim": 32, "num_heads": 2}',
    "--model.out_dim", "32", "--model.hidden_dim", "32", "--model.bottleneck_dim", "16",
]  # fmt: skip
PAPER_KS = [1, 2, 3, 4, 5, 10, 20, 100, 200]


@pytest.mark.parametrize(
    "name",
    ["knn_fashion_mnist", "knn_imagenet", "knn_cub", "knn_flowers", "knn_food", "knn_medmnist"],
)
def test_eval_config_parses_and_instantiates(name: str, tmp_path: Path) -> None:
    cli = run_lightning_cli(
        ["--config", str(CONFIGS / f"{name}.yaml"), *TINY_ARGS, "--trainer.default_root_dir", str(tmp_path)],
        run=False,
    )  # fmt: skip
    [knn] = [c for c in cli.trainer.callbacks if isinstance(c, KNNCallback)]
    assert knn.ks == PAPER_KS and knn.methods == ["weighted"] and knn.T == 0.07
    assert type(cli.datamodule).__name__ == "KNNDataModule"
    assert ":" in cli.datamodule.memory and ":" in cli.datamodule.queries


def test_validate_fashion_config_with_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=30, n_test=12)
    # a checkpoint whose architecture differs from the config's model section (embed_dim 48)
    model = DINOModule(**{**TINY, "backbone_kwargs": {"depth": 1, "embed_dim": 48, "num_heads": 2}})
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(model, datamodule=TwoCrops())
    ckpt = tmp_path / "tiny.ckpt"
    trainer.save_checkpoint(ckpt)
    results = tmp_path / "knn.json"
    capsys.readouterr()
    rc = main([
        "validate", "--config", str(CONFIGS / "knn_fashion_mnist.yaml"), *TINY_ARGS,
        "--data.init_args.memory", f"fashion_mnist:{root}:train", "--data.init_args.queries", f"fashion_mnist:{root}:test",
        "--data.init_args.max_memory", "25", "--data.init_args.batch_size", "8",
        "--trainer.callbacks.init_args.results_path", str(results), "--trainer.callbacks.init_args.ks", "[1, 5, 20]",
        "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
        "--ckpt_path", str(ckpt),
    ])  # fmt: skip
    assert rc == 0
    assert "| k | weighted top-1 | weighted top-5 |" in capsys.readouterr().out
    record = json.loads(results.read_text())
    assert (
        record["memory"]["size"] == 25
        and record["queries"]["size"] == 12
        and record["ckpt_path"] == str(ckpt)
    )
    # reference: the checkpoint's teacher, embedded by hand on the same seeded subset
    teacher = load_backbone(ckpt)
    assert teacher.embed_dim == 48
    from procvision.data.datasets import seeded_subset

    tf = EvalTransform(16, "resize")
    mem = seeded_subset(FashionMNIST(root, "train", tf), 25, 0)
    m, q = (
        embed_dataset(teacher, mem, progress=False),
        embed_dataset(teacher, FashionMNIST(root, "test", tf), progress=False),
    )
    ref = knn_evaluate(*m, *q, ks=(1, 5, 20))
    for key in ("weighted/k1/top1", "weighted/k5/top1", "weighted/k20/top5"):
        assert record["results"][key] == pytest.approx(ref[key])

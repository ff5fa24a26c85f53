"""`procvision validate --config configs/eval/segmentation_*.yaml | gestalt.yaml` on tiny fixtures
in the official formats: the evaluator's loop, the callback's scores equal to `segmentation_r2`'s,
the printed table, the JSON and its record of how it was made; the pure helpers by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from procvision.cli import main
from procvision.data.seg_benchmark import segmentation_data, write_benchmark
from procvision.eval.recipe import load_backbone_spec, random_spec
from procvision.eval.segmentation import segmentation_r2
from procvision.eval.segmentation_callback import group_of, pca_picture, r2_rows, r2_table
from tests.fixtures_seg import write_tiny_coco
from tests.test_cli_segment import _voc

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "eval"
TINY_ARCH = {"arch": "vit_tiny_patch16_224", "img_size": 16, "patch_size": 8, "depth": 1,
             "embed_dim": 32, "num_heads": 2}  # fmt: skip
TINY_SPEC = random_spec(**TINY_ARCH)
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.logger", "false"]  # fmt: skip


def test_r2_rows_per_group_and_table_by_hand() -> None:
    rows = r2_rows({"model": [0.2, 0.4, math.nan, 0.8], "RGB": [0.0, 0.0, 0.5, 0.5]},
                   ["a", "a", "b", "b"])  # fmt: skip
    assert rows["model"]["all"] == pytest.approx(100 * (1 - (0.2 + 0.4 + 0.8) / 3))
    assert rows["model"]["a"] == pytest.approx(70.0) and rows["model"]["b"] == pytest.approx(20.0)
    assert rows["RGB"]["b"] == pytest.approx(50.0)
    assert math.isnan(r2_rows({"model": [math.nan]})["model"]["all"])
    table = r2_table(rows)
    assert table.splitlines()[0] == "| group | model | RGB |"
    assert table.splitlines()[-1].startswith("| all | ")
    assert group_of("closure_3") == "closure" and group_of("000000000001.png") == "all"


def test_pca_picture_rows_are_image_pca_labels() -> None:
    images = torch.rand(2, 3, 16, 16)
    feats = torch.randn(2, 2, 2, 8)
    labels = [torch.zeros(16, 16, dtype=torch.long), torch.ones(10, 12, dtype=torch.long)]
    pic = pca_picture(images, feats, labels, grid=8)
    assert pic.shape == (3, 16, 24) and 0 <= float(pic.min()) and float(pic.max()) <= 1
    assert float(pic[:, :8, 16:].abs().sum()) == 0.0  # label 0 is black
    small = torch.nn.functional.interpolate(images[1:], size=(8, 8), mode="bilinear",
                                            antialias=True)[0]  # fmt: skip
    torch.testing.assert_close(pic[:, 8:, :8], small.clamp(0, 1))  # row 2, column 1: the image
    tile = pic[:, 8:, 16:]  # one label: one colour, not black
    assert float((tile - tile[:, :1, :1]).abs().max()) == 0.0 and float(tile.sum()) > 0


def _run(config: str, data: str, tmp_path: Path, capsys, *extra: str) -> tuple[dict, str]:
    argv = ["validate", "--config", str(CONFIGS / config), *QUIET, "--model.backbone", TINY_SPEC,
            "--trainer.default_root_dir", str(tmp_path), "--data.init_args.data", data,
            "--trainer.accelerator", "cpu", "--trainer.callbacks.grid", "16", *extra]  # fmt: skip
    assert main(argv) == 0
    out = tmp_path / "segmentation.json"  # the default: <log_dir>/segmentation.json
    return json.loads(out.read_text()), capsys.readouterr().out


def _reference(data: str, size: int, max_images: int | None = None) -> dict:
    seg = segmentation_data(data, size, max_images)
    bb = load_backbone_spec(TINY_SPEC, "cpu")
    return segmentation_r2(bb, seg.dataset, 16, seg.ignore_index, progress=False,
                           batch_size=None)  # fmt: skip


def test_validate_segmentation_coco_config(tmp_path: Path, capsys) -> None:
    coco = write_tiny_coco(tmp_path / "coco")
    rec, out = _run("segmentation_coco.yaml", f"coco:{coco}", tmp_path, capsys,
                    "--data.init_args.image_size", "32")  # fmt: skip
    ref = _reference(f"coco:{coco}", 32)
    assert rec["r2"]["model"]["all"] == pytest.approx(
        ref["model"], rel=1e-5
    )  # batched forward: float32 rounding
    assert rec["r2"]["RGB"]["all"] == pytest.approx(
        ref["rgb"], rel=1e-5
    )  # batched forward: float32 rounding
    assert rec["images"] == 2 and rec["images_scored"] == 1  # image 2 has no annotation
    how = rec["produced_by"]
    assert how["backbone"] == TINY_SPEC and how["fingerprint"] and how["data"] == f"coco:{coco}"
    assert how["image_size"] == 32 and how["model_img_size"] == 16
    assert how["pos_embed_interpolated"] is True and how["token_grid"] == 4
    assert "zero-shot segmentation R²" in out and "| all |" in out and "random init" in out


def test_validate_segmentation_voc_config(tmp_path: Path, capsys) -> None:
    root = _voc(tmp_path / "VOC")
    rec, out = _run("segmentation_voc.yaml", f"voc:{root}:val", tmp_path, capsys,
                    "--data.init_args.image_size", "16")  # fmt: skip
    ref = _reference(f"voc:{root}:val", 16)
    assert rec["r2"]["model"]["all"] == pytest.approx(
        ref["model"], rel=1e-5
    )  # batched forward: float32 rounding
    assert rec["produced_by"]["ignore_index"] == 255 and rec["images_scored"] == 3
    assert rec["produced_by"]["pos_embed_interpolated"] is False


def test_validate_segmentation_benchmark_config_with_kmeans(tmp_path: Path, capsys) -> None:
    bench = tmp_path / "bench"
    write_benchmark(bench, n_images=3, size=32, seed=0)
    rec, out = _run("segmentation_benchmark.yaml", f"benchmark:{bench}", tmp_path, capsys,
                    "--data.init_args.image_size", "32", "--trainer.callbacks.kmeans", "true")  # fmt: skip
    ref = _reference(f"benchmark:{bench}", 32)
    assert rec["r2"]["model"]["all"] == pytest.approx(
        ref["model"], rel=1e-5
    )  # batched forward: float32 rounding
    assert set(rec["kmeans"]) == {"model", "random init", "RGB"} and "K-means mIoU" in out


def test_validate_gestalt_config_per_principle(tmp_path: Path, capsys) -> None:
    rec, out = _run("gestalt.yaml", "gestalt:closure,similarity", tmp_path, capsys,
                    "--data.init_args.image_size", "32", "--data.init_args.max_images", "2",
                    "--trainer.callbacks.per_group", "true")  # fmt: skip
    assert set(rec["r2"]["model"]) == {"closure", "similarity", "all"}
    ref = _reference("gestalt:closure", 32, 2)
    assert rec["r2"]["model"]["closure"] == pytest.approx(
        ref["model"], rel=1e-5
    )  # batched forward: float32 rounding
    assert "| closure |" in out and "| similarity |" in out


def test_ddp_validate_scores_every_shard_once(tmp_path: Path) -> None:
    """2 processes on gloo score one shard each of 5 stimuli (the sampler pads one); the gathered
    inertias, de-duplicated by index, give the single-process R²."""
    import os
    import subprocess
    import sys

    cmd = [
        sys.executable, "-m", "procvision.cli", "validate", "--config", str(CONFIGS / "gestalt.yaml"),
        *QUIET, "--model.backbone", TINY_SPEC, "--data.init_args.data", "gestalt:closure",
        "--data.init_args.image_size", "32", "--data.init_args.max_images", "5",
        "--data.init_args.batch_size", "2", "--trainer.callbacks.grid", "16",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator=cpu",
        "--trainer.devices=2", "--trainer.strategy=ddp",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((tmp_path / "segmentation.json").read_text())
    assert rec["images"] == 5 and len(rec["per_image_inertia"]["model"]) == 5
    ref = _reference("gestalt:closure", 32, 5)
    assert rec["r2"]["model"]["all"] == pytest.approx(ref["model"], rel=1e-5)
    assert rec["r2"]["RGB"]["all"] == pytest.approx(ref["rgb"], rel=1e-5)


def test_segmentation_r2_default_batched_path_equals_the_per_image_reference() -> None:
    from procvision.data.gestalt import GestaltDataset

    ds = GestaltDataset(("closure", "proximity"), 3, 32)
    bb = load_backbone_spec(TINY_SPEC, "cpu")
    ref = segmentation_r2(bb, ds, 16, None, progress=False, batch_size=None)  # one SVD per image
    for batch, solver in [(8, "gram"), (2, "gram"), (4, "svd")]:
        got = segmentation_r2(bb, ds, 16, None, progress=False, batch_size=batch, solver=solver)
        assert got.keys() == ref.keys()
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, abs=1e-6), (batch, solver, key)

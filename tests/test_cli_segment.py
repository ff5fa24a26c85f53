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

"""COCO reader: polygons, RLE and crowd RLE decoded to semantic maps, later annotations on top."""

from __future__ import annotations

import numpy as np
import pytest

from procvision.data.datasets.base import DatasetFormatError
from procvision.data.datasets.coco import COCOSegmentation
from tests.fixtures_seg import hand_drawn_labels, write_tiny_coco


def test_polygon_rle_and_crowd_decode_to_the_hand_drawn_map(tmp_path):
    ds = COCOSegmentation(write_tiny_coco(tmp_path / "coco"), size=16)
    assert len(ds) == 2
    image, labels, name = ds[0]  # ids in sorted order: image 1 first
    assert name == "000000000001.jpg" and image.shape == (3, 16, 16)
    np.testing.assert_array_equal(labels.numpy(), hand_drawn_labels())
    assert ds.categories == {3: "cat", 5: "dog", 7: "person"}


def test_an_image_without_annotations_is_all_background(tmp_path):
    ds = COCOSegmentation(write_tiny_coco(tmp_path / "coco"), size=16)
    image, labels, _ = ds[1]
    assert labels.shape == (6, 8) and int(labels.abs().sum()) == 0


def test_missing_annotations_and_images_are_named(tmp_path):
    with pytest.raises(DatasetFormatError, match="instances_val2017.json"):
        COCOSegmentation(tmp_path)
    root = write_tiny_coco(tmp_path / "coco")
    (root / "val2017" / "000000000001.jpg").unlink()
    with pytest.raises(DatasetFormatError, match="000000000001.jpg"):
        COCOSegmentation(root)[0]
    with pytest.raises(ValueError, match="max-images"):
        COCOSegmentation(root, max_images=0)

"""Tiny segmentation fixtures in official formats (COCO instances JSON + images), shared by tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 10, 12


def hand_drawn_labels() -> np.ndarray:
    """The label map the annotations of `write_tiny_coco`'s first image must decode to."""
    want = np.zeros((H, W), np.int64)
    want[2:6, 2:6] = 3  # polygon, category 3
    want[4:8, 4:9] = 5  # compressed RLE, category 5, drawn later: overwrites the polygon
    want[5:7, 5] = 7  # crowd (uncompressed RLE), category 7, last: overwrites both
    want[1:4, 10] = 7
    return want


def write_tiny_coco(root: Path, split: str = "val2017") -> Path:
    """COCO layout: annotations/instances_<split>.json and <split>/*.jpg; two images.

    Image 1 (12 x 10) has a polygon (cat 3), a compressed RLE (cat 5) and a crowd uncompressed
    RLE (cat 7), in that order; image 2 (8 x 6) has no annotation.
    """
    from pycocotools import mask as mask_utils

    (root / "annotations").mkdir(parents=True)
    (root / split).mkdir()
    rle_mask = np.zeros((H, W), np.uint8, order="F")
    rle_mask[4:8, 4:9] = 1
    rle = mask_utils.encode(rle_mask)
    rle["counts"] = rle["counts"].decode("ascii")
    # Column-major runs starting with zeros: pixels (5..6, col 5) = 55, 56; (1..3, col 10) = 101..103.
    crowd = {"size": [H, W], "counts": [55, 2, 44, 3, 16]}
    rng = np.random.default_rng(0)
    for name, (h, w) in (("000000000001.jpg", (H, W)), ("000000000002.jpg", (6, 8))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / split / name)
    data = {
        "images": [
            {"id": 2, "file_name": "000000000002.jpg", "height": 6, "width": 8},
            {"id": 1, "file_name": "000000000001.jpg", "height": H, "width": W},
        ],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 3,
                "iscrowd": 0,
                "area": 16.0,
                "bbox": [2, 2, 4, 4],
                "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]],
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 5,
                "iscrowd": 0,
                "area": 20.0,
                "bbox": [4, 4, 5, 4],
                "segmentation": rle,
            },
            {
                "id": 12,
                "image_id": 1,
                "category_id": 7,
                "iscrowd": 1,
                "area": 5.0,
                "bbox": [5, 1, 6, 6],
                "segmentation": crowd,
            },
        ],  # fmt: skip
        "categories": [
            {"id": 3, "name": "cat", "supercategory": "animal"},
            {"id": 5, "name": "dog", "supercategory": "animal"},
            {"id": 7, "name": "person", "supercategory": "person"},
        ],
    }
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root

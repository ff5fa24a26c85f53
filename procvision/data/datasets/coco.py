"""COCO instance annotations (official layout) read as semantic label maps (spec §4.3 step 3).

ROOT/annotations/instances_<split>.json   the official instances file (polygons, RLE, crowd RLE)
ROOT/<split>/<file_name>                  the images it lists (split e.g. "val2017")

Label map of an image: zeros, then for each of its instance annotations in file order (crowd
included) `mask[annToMask(a) == 1] = category_id`, so later annotations overwrite earlier ones.
Decoding is pycocotools' (the field's own library).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from procvision.data.datasets.base import CorruptImageError, DatasetFormatError


def semantic_label_map(coco, image_id: int) -> np.ndarray:
    """Semantic labels of one image: category ids painted in annotation order, crowd included.

    Args:
        coco: a `pycocotools.coco.COCO` index.
        image_id: the image's id.
    Returns:
        int64 [H0, W0]; 0 where no annotation covers the pixel.
    """
    info = coco.imgs[image_id]
    mask = np.zeros((int(info["height"]), int(info["width"])), np.int64)
    for ann in coco.imgToAnns.get(image_id, []):  # file order
        m = coco.annToMask(ann)
        if m.shape != mask.shape:
            raise DatasetFormatError(
                f"annotation {ann.get('id')} of image {image_id} decodes to {m.shape[1]}x"
                f"{m.shape[0]} but the image is declared {mask.shape[1]}x{mask.shape[0]}"
            )
        mask[m == 1] = int(ann["category_id"])
    return mask


def load_coco(annotations: str | Path):
    """A pycocotools COCO index of an instances JSON (its progress prints silenced)."""
    from pycocotools.coco import COCO

    path = Path(annotations)
    if not path.is_file():
        raise DatasetFormatError(
            f"{path} not found: expected a COCO folder with annotations/instances_<split>.json "
            "and <split>/ (e.g. annotations/instances_val2017.json and val2017/)"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetFormatError(f"{path}: not a COCO instances file ({err!r})") from err


class COCOSegmentation:
    """COCO images (resized to size x size, aspect not kept, as the paper's R² protocol) and
    semantic label maps.

    Item i is (image float [3, size, size] in [0, 1], labels int64 [H0, W0] at the original
    resolution holding category ids (0 = no annotation), file name).

    Args:
        root: the COCO folder (holding annotations/ and <split>/).
        split: "val2017" (the paper's) or any split with instances_<split>.json.
        size: side the images are resized to (paper: 448).
        max_images: keep only the first N images in id order (None: all).
        annotations: the instances JSON, if not at root/annotations/instances_<split>.json.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val2017",
        size: int = 448,
        max_images: int | None = None,
        annotations: str | Path | None = None,
    ) -> None:
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images (--max-images) must be >= 1 or None, got {max_images}")
        self.root, self.split, self.size = Path(root), split, int(size)
        ann = annotations or self.root / "annotations" / f"instances_{split}.json"
        self.coco = load_coco(ann)
        self.ids = sorted(self.coco.imgs)[:max_images]
        if not self.ids:
            raise DatasetFormatError(f"{ann} lists no images")
        self.categories = {int(c["id"]): str(c["name"]) for c in self.coco.cats.values()}

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        return self.root / self.split / self.coco.imgs[self.ids[i]]["file_name"]

    def labels(self, i: int) -> torch.Tensor:
        """int64 [H0, W0] semantic label map of item i."""
        return torch.from_numpy(semantic_label_map(self.coco, self.ids[i]))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        path = self.image_path(i)
        if not path.is_file():
            raise DatasetFormatError(f"{path} is listed in the annotations but missing")
        try:
            img = Image.open(path)
            img.load()
        except OSError as err:
            raise CorruptImageError(f"cannot decode {path}: {err}") from err
        labels = self.labels(i)
        if (img.size[1], img.size[0]) != tuple(labels.shape):
            raise DatasetFormatError(
                f"{path} is {img.size[0]}x{img.size[1]} but the annotations declare "
                f"{labels.shape[1]}x{labels.shape[0]}: image and labels must align"
            )
        x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)
        x = F.interpolate(x.permute(2, 0, 1)[None], size=(self.size, self.size), mode="bilinear")
        return x[0].clamp_(0.0, 1.0), labels, path.name

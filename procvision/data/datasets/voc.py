"""Pascal VOC 2012 semantic segmentation, read from its official on-disk layout.

ROOT/ImageSets/Segmentation/{train,val}.txt   image ids, one per line
ROOT/JPEGImages/<id>.jpg                      images
ROOT/SegmentationClass/<id>.png               palette PNGs: 0 background, 1-20 classes, 255 void
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from procvision.data.datasets.base import CorruptImageError, DatasetFormatError

VOC_IGNORE = 255


class VOCSegmentation:
    """Images (resized to size x size, aspect not kept, as in the paper's R² protocol) and labels.

    Item i is (image float [3, size, size] in [0, 1], labels int64 [H0, W0] at the original
    resolution, image id).

    Args:
        root: the VOC2012 folder (holding ImageSets/, JPEGImages/, SegmentationClass/).
        split: a file of ImageSets/Segmentation without ".txt" (train, val, trainval).
        size: side the images are resized to (paper: 448).
        max_images: keep only the first N ids of the split (None: all).
    """

    def __init__(
        self, root: str | Path, split: str = "val", size: int = 448, max_images: int | None = None
    ) -> None:
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images (--max-images) must be >= 1 or None, got {max_images}")
        self.root, self.size = Path(root), int(size)
        ids = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not ids.is_file():
            raise DatasetFormatError(
                f"{ids} not found: expected a Pascal VOC folder with "
                "ImageSets/Segmentation/<split>.txt, JPEGImages/ and SegmentationClass/"
            )
        self.ids = [line.strip() for line in ids.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise DatasetFormatError(f"{ids} lists no image ids")
        self.ids = self.ids[:max_images]

    def __len__(self) -> int:
        return len(self.ids)

    def _open(self, path: Path) -> Image.Image:
        if not path.is_file():
            raise DatasetFormatError(f"{path} is listed in the split but missing")
        try:
            img = Image.open(path)
            img.load()
        except OSError as err:
            raise CorruptImageError(f"cannot decode {path}: {err}") from err
        return img

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        item = self.ids[i]
        img = self._open(self.root / "JPEGImages" / f"{item}.jpg").convert("RGB")
        png = self._open(self.root / "SegmentationClass" / f"{item}.png")
        if png.mode not in ("P", "L"):
            raise DatasetFormatError(
                f"{png.filename}: expected a palette (P) or grey (L) label PNG, got mode {png.mode}"
            )
        if png.size != img.size:
            raise DatasetFormatError(
                f"{png.filename} is {png.size[0]}x{png.size[1]} but its image is "
                f"{img.size[0]}x{img.size[1]}: labels and image must align pixel for pixel"
            )
        labels = torch.from_numpy(np.asarray(png, dtype=np.int64).copy())
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear")[0]
        return x.clamp_(0.0, 1.0), labels, item

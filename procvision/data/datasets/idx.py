"""Fashion-MNIST and MNIST from their official IDX files (`.gz` or raw).

Layouts found under `root`: the files themselves (the Debian package `dataset-fashion-mnist` puts them
in /usr/share/datasets/fashion-mnist), or torchvision's `raw/` and `FashionMNIST/raw/` folders.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from procvision.data.datasets.base import ArrayDataset, DatasetFormatError, Transform

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_PREFIX = {"train": "train", "test": "t10k", "t10k": "t10k"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a numpy array of its declared shape."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise DatasetFormatError(
                f"{path}: broken gzip stream ({err}); the file is corrupt: download or copy it again"
            ) from err
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise DatasetFormatError(
            f"{path}: not an IDX file (expected magic 00 00 <dtype> <ndim>, got {data[:4].hex()})"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(
            f"{path}: truncated in its header ({len(data)} bytes, the header of a {ndim}-d IDX "
            f"file has {header}); the file is incomplete: download or copy it again"
        )
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4"))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetFormatError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes) but the file has "
            f"{len(data)} bytes; the file is truncated or not an IDX file"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def find_idx_file(root: str | Path, stem: str) -> Path:
    """`root/stem[.gz]`, `root/raw/...` or `root/FashionMNIST|MNIST/raw/...`, first found."""
    root = Path(root)
    folders = [root, root / "raw", root / "FashionMNIST" / "raw", root / "MNIST" / "raw"]
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise DatasetFormatError(
        f"{root}: no {stem}[.gz] found (looked in {', '.join(str(f) for f in folders)}). "
        f"Expected the official IDX files, e.g. from `apt-get install dataset-fashion-mnist` "
        f"({FASHION_MNIST_ROOT}) or torchvision's FashionMNIST/raw folder"
    )


def load_idx_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """(images uint8 [N, 28, 28], labels int64 [N], images file) of one split: train or test."""
    if split not in _SPLIT_PREFIX:
        raise DatasetFormatError(
            f"unknown split {split!r} of the IDX files in {root}; valid splits: train, test"
        )
    prefix = _SPLIT_PREFIX[split]
    img_path = find_idx_file(root, f"{prefix}-images-idx3-ubyte")
    lbl_path = find_idx_file(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetFormatError(
            f"{img_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1:
        raise DatasetFormatError(f"{lbl_path}: expected labels [N], got shape {labels.shape}")
    if len(images) != len(labels):
        raise DatasetFormatError(
            f"{img_path} has {len(images)} images but {lbl_path} {len(labels)} labels"
        )
    return images, labels.astype(np.int64), img_path


class FashionMNIST(ArrayDataset):
    """Fashion-MNIST (60k train, 10k test, 28x28 grey, 10 classes) from local IDX files."""

    CLASSES = FASHION_MNIST_CLASSES
    DEFAULT_ROOT: str | None = FASHION_MNIST_ROOT

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        transform: Transform | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        if not root and self.DEFAULT_ROOT is None:
            raise DatasetFormatError(
                f"{type(self).__name__} has no default path: pass the IDX folder"
            )
        root = Path(root or self.DEFAULT_ROOT)
        images, labels, img_path = load_idx_split(root, split)
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.CLASSES)):
            raise DatasetFormatError(f"{root}: labels outside 0..{len(self.CLASSES) - 1}")
        super().__init__(images, labels, self.CLASSES, str(img_path), transform, skip_corrupt)
        self.split = split


class MNIST(FashionMNIST):
    """MNIST digits from local IDX files (same layout as Fashion-MNIST; no default path)."""

    CLASSES = tuple(str(d) for d in range(10))
    DEFAULT_ROOT = None

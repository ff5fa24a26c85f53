"""Base classes of the real-image datasets.

Every dataset returns `(image float [3, H, W], label int, index int)` for item `index` and can tell,
without decoding, each item's label, its source (file path, or `file#row` for array datasets) and
the sha256 of its content, which the visual memory stores as metadata. A corrupt image raises
`CorruptImageError` naming the file; with `skip_corrupt=True` the item becomes `None` instead, and
`collate_skip` drops it from the batch (`embed_dataset` then reports it as skipped).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate

from procvision.data.datasets.transforms import EvalTransform, to_rgb
from procvision.errors import UserError

Item = tuple[torch.Tensor, int, int]
Transform = Callable[[Image.Image], torch.Tensor]


class DatasetFormatError(UserError, ValueError):
    """A dataset path is missing or its files are not in the expected official format."""


class CorruptImageError(UserError, OSError):
    """An image file exists but cannot be decoded."""


class CorruptImageWarning(UserWarning):
    """A corrupt image was skipped (`skip_corrupt=True`)."""


class RealDataset(Dataset):
    """Labelled images with provenance. Subclasses implement `__len__`, `load_image`, `source`
    and `content_hash`, and set `labels` (int64 [N]) and `class_names`.

    Args:
        transform: PIL image -> tensor; default `EvalTransform()` (the paper's 224-px pipeline).
        skip_corrupt: return `None` for an undecodable image instead of raising.
    """

    labels: np.ndarray
    class_names: list[str]

    def __init__(self, transform: Transform | None = None, skip_corrupt: bool = False) -> None:
        self.transform = transform if transform is not None else EvalTransform()
        self.skip_corrupt = bool(skip_corrupt)

    def __len__(self) -> int:
        return len(self.labels)

    def load_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def source(self, index: int) -> str:
        raise NotImplementedError

    def content_hash(self, index: int) -> str:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Item | None:
        try:
            img = self.load_image(index)
        except CorruptImageError as err:
            if not self.skip_corrupt:
                raise
            warnings.warn(f"skipping corrupt image: {err}", CorruptImageWarning, stacklevel=2)
            return None
        return self.transform(img), int(self.labels[index]), int(index)

    def describe(self) -> dict:
        """JSON-serialisable summary (for reports and memory manifests)."""
        return {"kind": type(self).__name__, "size": len(self), "classes": len(self.class_names)}


class ArrayDataset(RealDataset):
    """Images held in a uint8 array [N, H, W] or [N, H, W, 3] (Fashion-MNIST, MedMNIST).

    `source(i)` is `"{origin}#{i}"`; `content_hash(i)` is the sha256 of the image's raw bytes.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        class_names: Sequence[str],
        origin: str,
        transform: Transform | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(transform, skip_corrupt)
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise DatasetFormatError(
                f"{origin}: expected images [N, H, W] or [N, H, W, 3], got shape {images.shape}"
            )
        if len(images) != len(labels):
            raise DatasetFormatError(
                f"{origin}: {len(images)} images but {len(labels)} labels; the files do not match"
            )
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.class_names = list(class_names)
        self.origin = origin

    def load_image(self, index: int) -> Image.Image:
        arr = np.asarray(self.images[index])
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        return to_rgb(Image.fromarray(arr))

    def source(self, index: int) -> str:
        return f"{self.origin}#{int(index)}"

    def content_hash(self, index: int) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.images[index]).tobytes()).hexdigest()

    def describe(self) -> dict:
        return {**super().describe(), "origin": self.origin}

    def raw_pixels(self) -> np.ndarray:
        """All images as uint8 [N, H*W*C] (the raw-pixel baseline's features)."""
        return np.asarray(self.images).reshape(len(self.images), -1)


# The one list of image suffixes (lower case) of every image-folder reader: training folders,
# folder sources and labelled ImageFolder trees.
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif",
)  # fmt: skip


def list_files(root: str | Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[str]:
    """The one folder listing: sorted relative paths (posix) of the files under `root` whose
    suffix is in `extensions` (case-insensitive), recursively, following links; hidden files and
    folders (".name") are left out.

    Args:
        root: an existing folder.
        extensions: suffixes with their dot, e.g. (".png",).
    Returns:
        e.g. ["a.png", "sub/b.jpg"]; every caller decides what an empty list means.
    """
    root = Path(root)
    exts = {e.lower() for e in extensions}
    out = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(folder).relative_to(root)
        out.extend(
            (rel / f).as_posix()
            for f in files
            if not f.startswith(".") and Path(f).suffix.lower() in exts
        )
    return sorted(out)


def open_image(path: str | Path, draft: int | None = None) -> Image.Image:
    """The one image reader: decode a file fully to 8-bit RGB (any mode, see `to_rgb`).

    Args:
        path: the image file.
        draft: if given, JPEGs are decoded at the smallest scale whose sides are >= draft
            (PIL's draft mode; a speed-up for images much larger than they will be used).
    Raises:
        CorruptImageError: naming the file, if it is missing or does not decode.
    """
    try:
        with Image.open(path) as img:
            if draft is not None:
                img.draft("RGB", (draft, draft))
            img.load()
            return to_rgb(img)
    except FileNotFoundError as err:
        raise CorruptImageError(f"{path}: file not found (was it removed after indexing?)") from err
    except (
        OSError,
        SyntaxError,
        ValueError,
        UnidentifiedImageError,
        Image.DecompressionBombError,
    ) as err:
        raise CorruptImageError(
            f"{path}: cannot decode image ({err}); fix or remove the file, or pass skip_corrupt=True (CLI: --skip-corrupt)"
        ) from err


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class FileDataset(RealDataset):
    """Images listed as files with labels (ImageFolder trees and the official index files of CUB,
    Food101 and Flowers102). `source(i)` is the absolute path; `content_hash(i)` the file's sha256."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | np.ndarray,
        class_names: Sequence[str],
        transform: Transform | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(transform, skip_corrupt)
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [str(Path(p).absolute()) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.class_names = list(class_names)

    def load_image(self, index: int) -> Image.Image:
        return open_image(self.paths[index])

    def source(self, index: int) -> str:
        return self.paths[index]

    def content_hash(self, index: int) -> str:
        return file_sha256(self.paths[index])


class SubsetDataset(RealDataset):
    """Rows `indices` of `base`, renumbered 0..len-1 (labels, sources and hashes follow)."""

    def __init__(self, base: RealDataset, indices: Sequence[int] | np.ndarray) -> None:
        super().__init__(base.transform, base.skip_corrupt)
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self.labels = base.labels[self.indices]
        self.class_names = base.class_names

    def load_image(self, index: int) -> Image.Image:
        return self.base.load_image(int(self.indices[index]))

    def source(self, index: int) -> str:
        return self.base.source(int(self.indices[index]))

    def content_hash(self, index: int) -> str:
        return self.base.content_hash(int(self.indices[index]))

    def raw_pixels(self) -> np.ndarray:
        """Raises AttributeError when the base dataset has no raw pixel array."""
        return self.base.raw_pixels()[self.indices]  # type: ignore[attr-defined]

    def describe(self) -> dict:
        return {**self.base.describe(), "size": len(self), "subset_of": len(self.base)}


def seeded_subset(dataset: RealDataset, max_items: int | None, seed: int = 0) -> RealDataset:
    """A seeded random subset of at most `max_items` items (sorted indices), or `dataset` itself."""
    if max_items is None or max_items >= len(dataset):
        return dataset
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    gen = torch.Generator().manual_seed(int(seed))
    picked = torch.randperm(len(dataset), generator=gen)[:max_items].sort().values
    return SubsetDataset(dataset, picked.numpy())


def collate_skip(
    batch: list[Item | None],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Default collation after dropping `None` (skipped corrupt) items; `None` if all were."""
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    check_same_size(kept)
    return default_collate(kept)


class MixedImageSizeError(DatasetFormatError):
    """Images of different sizes in one batch (resize policy "none" on images of mixed sizes)."""


def check_same_size(items: Sequence[Item]) -> None:
    """Raise `MixedImageSizeError` naming two items of different image shapes, else nothing.

    Args:
        items: `(image [3, H, W], label, index)` tuples of one batch.
    """
    first = items[0]
    for item in items[1:]:
        if item[0].shape != first[0].shape:
            a, b = (tuple(x[0].shape[-2:]) for x in (first, item))
            ids = f"items {first[2]} and {item[2]}" if len(item) > 2 else "two items"
            raise MixedImageSizeError(
                f"images of different sizes in one batch ({ids}: {a[0]}x{a[1]} and {b[0]}x{b[1]} "
                "pixels); resize policy 'none' needs images of one size: use --resize-policy "
                "resize (or crop) with --image-size, or resize the images beforehand"
            )

"""A folder of images as a source (e.g. the released Shaders21k JPEGs).

Image i is the file at position i mod N of a seeded permutation of the sorted file list, decoded
to RGB, centre-cropped to a square and resized: a pure function of (seed, i, size, files).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from procvision.data.datasets.base import (
    IMAGE_EXTENSIONS,
    CorruptImageError,
    list_files,
    open_image,
)
from procvision.data.rng import hash_coords
from procvision.data.source import Source
from procvision.errors import UserError

log = logging.getLogger(__name__)

_S_PERM = 5


class SourceFolderError(UserError, FileNotFoundError):
    """A source's folder (images, shaders) is missing, holds no usable file, or none is readable."""


class UnreadableFolderError(UserError, RuntimeError):
    """Every file of a source's folder failed (no image decodes, no shader compiles)."""


def failure_summary(failures: dict[str, str], shown: int = 3) -> str:
    """`n failed, e.g. name: reason; ...` for an error line (the first `shown` failures)."""
    items = [f"{Path(k).name}: {v[:120]}" for k, v in list(failures.items())[:shown]]
    more = f"; and {len(failures) - shown} more" if len(failures) > shown else ""
    return f"{len(failures)} failed, e.g. " + "; ".join(items) + more


def seeded_permutation(seed: int, n: int) -> torch.Tensor:
    """A permutation of range(n) as int64 [n], a pure function of (seed, n)."""
    keys = hash_coords(seed, torch.arange(n, dtype=torch.int64), _S_PERM)
    return torch.argsort(keys, stable=True)


def square_resize(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """Centre square crop of [3, H, W] floats, then bilinear antialiased resize to [3, size, size]."""
    _, h, w = rgb.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = rgb[:, top : top + s, left : left + s]
    if s == size:
        return crop
    return F.interpolate(
        crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0]


class ImageFolderSource(Source):
    """Images from a folder tree, as an endless indexed source.

    Unreadable files are skipped (logged once and recorded in `failures`); the next file of the
    permutation takes their place, so the stream never stops while one readable file exists.

    Args:
        root: folder searched recursively.
        seed: seed of the file permutation.
        extensions: file suffixes accepted (case-insensitive).
    """

    name = "folder"

    def __init__(
        self, root: str | Path, seed: int = 0, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    ) -> None:
        super().__init__(seed)
        self.root = Path(root)
        self.extensions = tuple(extensions)
        if not self.root.is_dir():
            raise SourceFolderError(
                f"image folder {str(self.root)!r} does not exist or is not a folder; "
                "pass root=<a folder of images>"
            )
        files = list_files(self.root, self.extensions)
        if not files:
            raise SourceFolderError(
                f"image folder {str(self.root)!r} holds no images with suffix in "
                f"{self.extensions}; add images or pass extensions=..."
            )
        # numpy bytes array: compact and free of per-object refcounts in forked workers
        self.files = np.array([os.fsencode(f) for f in files])
        self.perm = seeded_permutation(self.seed, len(files))
        self.failures: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.files)

    def path(self, position: int) -> Path:
        """Path of the file at permutation position `position` (0 <= position < N)."""
        return self.root / os.fsdecode(self.files[int(self.perm[position])])

    def _load(self, position: int, size: int) -> torch.Tensor:
        """Decode the first readable file from `position` on; returns float [3, size, size]."""
        n = len(self.files)
        for k in range(n):
            p = self.path((position + k) % n)
            key = str(p)
            if key in self.failures:
                continue
            try:
                rgb = np.asarray(open_image(p, draft=size))  # JPEG: decoded at a scale >= size
            except CorruptImageError as e:
                self.failures[key] = str(e.__cause__ or e)
                log.warning("skipping unreadable image %s (%s)", key, self.failures[key])
                continue
            t = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0)
            return square_resize(t, size)
        raise UnreadableFolderError(
            f"no image in {str(self.root)!r} can be decoded ({failure_summary(self.failures)}); "
            "fix or replace the files, or pass another --root"
        )

    def _render(self, indices: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
        pos = (indices.cpu() % len(self.files)).tolist()
        return torch.stack([self._load(p, size) for p in pos]).to(device)

    def describe(self) -> dict:
        return {**super().describe(), "root": str(self.root), "n_files": len(self.files)}

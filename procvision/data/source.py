"""The one interface of procedural data: render images for a batch of integer indices.

A *source* is a pure function of (seed, index): image i never depends on the batch it is
rendered in, the worker or rank that asks, or the device. Streaming, export and previews all
call `render`. Compositions (Mixup, KML, KML Mixup) are sources built on sources.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Source(ABC):
    """Base class of every image source.

    Subclasses implement `_render`; `render` validates input and output.

    Attributes:
        seed: the integer seed; image i of (source, seed) is fixed forever.
        name: a short family name used in manifests and logs.
    """

    name: str = "source"
    # True for sources whose output is built only from other sources' (already sanitised)
    # images with finite weights: render then only clamps, skipping the NaN/inf scan. Such a
    # source's _render must return a fresh tensor (render clamps it in place).
    finite_by_construction: bool = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def render(
        self,
        indices: torch.Tensor | list[int],
        size: int,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Render images for `indices`.

        Args:
            indices: int64 [B] sample indices (any non-negative integers).
            size: output side length in pixels (images are square).
            device: where to render; defaults to the device of `indices`.
        Returns:
            float32 tensor [B, 3, size, size] with values in [0, 1], no NaN or inf.
        """
        if not isinstance(indices, torch.Tensor):
            indices = torch.as_tensor(indices, dtype=torch.int64)
        if device is None:
            device = indices.device
        indices = indices.to(device=device, dtype=torch.int64).reshape(-1)
        if size < 2:
            raise ValueError(f"size must be at least 2 pixels, got {size}")
        if indices.numel() and int(indices.min()) < 0:
            raise ValueError("indices must be non-negative")
        if indices.numel() == 0:
            return torch.zeros(0, 3, size, size, device=device)
        out = self._render(indices, int(size), torch.device(device)).float()
        if not self.finite_by_construction:
            out = torch.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
        return out.clamp_(0.0, 1.0)

    @abstractmethod
    def _render(self, indices: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
        """Render [B] int64 indices on `device` into [B, 3, size, size] floats (any range)."""

    def describe(self) -> dict:
        """JSON-serialisable description for manifests."""
        return {"family": self.name, "seed": self.seed}


def pixel_grid(size: int, device: torch.device | str) -> torch.Tensor:
    """GLSL-style centred coordinates: uv = (2*pix - R)/R with y up, shape [1, size, size, 2].

    Pixel centres are used, so uv spans (-1, 1) exclusively and is symmetric.
    """
    c = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * 2.0 / size - 1.0
    y, x = torch.meshgrid(-c, c, indexing="ij")  # row 0 is the top of the image: y up
    return torch.stack([x, y], dim=-1)[None]

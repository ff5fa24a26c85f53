"""`BankSource`: a finite bank of a source's images, rendered once and kept on the device as uint8.

This is the data form of the paper: Shaders21k is a set of pre-rendered images, and the authors
compose Mixup / KML / KML Mixup from them on the fly. Put a bank under a composition
(`make_source("kml_mixup", bank_size=21083)`) and each base image is rendered once, then every
composite costs only its mixing (2-means masks, blends): new composites every step at a fraction of
the cost of six fresh renders. Put a bank over a whole source (`ProceduralDataModule(num_unique=N)`)
and training sees a fixed dataset of N images.

Image i of a bank is image (i mod bank_size) of the wrapped source, quantised to uint8 like the
paper's JPEGs; it stays a pure function of (source, bank_size, i), independent of the batch (and of
the device up to one quantisation step, where CPU and GPU renders differ in the last bits).

Memory: N x 3 x S^2 bytes per (size, device), plus N x S^2 per cached KML mask grid: 8,192 images
at 32 px take 25 MB; 21,083 at 384 px take 9.3 GB (+3.1 GB of masks) on every rank.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from procvision.data.source import Source


def _canonical(device: torch.device) -> torch.device:
    """ "cuda" and "cuda:0" name one bank."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class BankSource(Source):
    """Image i = image (i mod bank_size) of `base`, rendered on first use and cached as uint8.

    One cache per (render size, device); entries are rendered lazily (only the ones a batch needs
    and the bank lacks) or all at once with `fill`.

    Args:
        base: the source whose images fill the bank.
        bank_size: number of distinct images (>= 1).
    """

    name = "bank"
    finite_by_construction = True

    def __init__(self, base: Source, bank_size: int) -> None:
        super().__init__(base.seed)
        if int(bank_size) != bank_size or bank_size < 1:
            raise ValueError(f"bank_size must be a positive integer, got {bank_size}")
        self.base, self.bank_size = base, int(bank_size)
        # (what, size, device) -> (values uint8 [N, C, size, size], filled bool [N]); what is
        # "images" for the bank itself or the name of a `derived` function.
        self._caches: dict[tuple[str, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _cache(
        self, what: str, size: int, device: torch.device, channels: int = 3
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(values uint8 [N, channels, size, size], filled bool [N]), created empty on first use."""
        key = (what, int(size), _canonical(device))
        if key not in self._caches:
            n = self.bank_size
            self._caches[key] = (
                torch.zeros(n, channels, size, size, dtype=torch.uint8, device=device),
                torch.zeros(n, dtype=torch.bool, device=device),
            )
        return self._caches[key]

    @staticmethod
    def _complete(
        cache: tuple[torch.Tensor, torch.Tensor],
        ids: torch.Tensor,
        compute: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        """Store compute(missing ids) (floats in [0, 1]) for the `ids` ([B] in [0, N)) not cached."""
        values, filled = cache
        todo = torch.unique(ids[~filled[ids]])
        if todo.numel():
            values[todo] = compute(todo).clamp(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
            filled[todo] = True

    def _images(self, ids: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
        """The bank's uint8 images [N, 3, size, size], with the entries `ids` rendered if missing."""
        cache = self._cache("images", size, device)
        self._complete(cache, ids, lambda todo: self.base.render(todo, size, device))
        return cache[0]

    def fill(
        self,
        size: int,
        device: torch.device | str = "cpu",
        batch_size: int = 256,
        progress: bool = True,
    ) -> None:
        """Render every missing bank entry at `size` on `device` now (with a progress bar)."""
        device, size = torch.device(device), int(size)
        missing = torch.arange(self.bank_size, device=device)[
            ~self._cache("images", size, device)[1]
        ]
        for chunk in tqdm(
            missing.split(batch_size), desc=f"rendering bank ({size} px)", disable=not progress
        ):
            self._images(chunk, size, device)

    def filled(self, size: int, device: torch.device | str = "cpu") -> int:
        """Number of bank entries already rendered at (size, device)."""
        key = ("images", int(size), _canonical(torch.device(device)))
        return int(self._caches[key][1].sum()) if key in self._caches else 0

    def derived(
        self,
        name: str,
        indices: torch.Tensor,
        size: int,
        fn: Callable[[torch.Tensor], torch.Tensor],
        channels: int = 1,
    ) -> torch.Tensor:
        """`fn` of bank images, computed once per bank entry and cached as uint8.

        For per-image functions of a base image that compositions need again and again (KML's
        mask of s1): `fn` maps float [n, 3, size, size] in [0, 1] to [n, channels, size, size] in
        [0, 1] and must treat every image independently.

        Args:
            name: cache key of the function (include its parameters).
            indices: int64 [B] image indices (reduced mod bank_size).
            size: image side.
            fn: the per-image function.
            channels: channels of fn's output.
        Returns:
            float32 [B, channels, size, size], quantised to multiples of 1/255.
        """
        device, ids = indices.device, indices % self.bank_size
        cache = self._cache(f"derived/{name}", size, device, channels)
        self._complete(cache, ids, lambda todo: fn(self.render(todo, size, device)))
        return cache[0][ids].float().div_(255.0)

    def _render(self, indices: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
        """Bank images of `indices` (int64 [B]) as float [B, 3, size, size] in [0, 1]."""
        ids = indices % self.bank_size
        return self._images(ids, size, device)[ids].float().div_(255.0)

    def describe(self) -> dict:
        return {"family": self.name, "bank_size": self.bank_size, "base": self.base.describe()}

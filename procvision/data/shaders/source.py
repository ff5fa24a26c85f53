"""`ShaderSource`: the torch-native stand-in for Shaders21k (a pool of seeded shader programs)."""

from __future__ import annotations

import torch
from torch import Tensor

from procvision.constants import SHADERS21K_POOL_SIZE
from procvision.data import rng
from procvision.data.shaders.core import Program, program, render_ids, resolve_families
from procvision.data.shaders.filter import (
    FILTER_VERSION,
    cached_rejection_rate,
    rejection_rate,
    valid_programs,
)
from procvision.data.source import Source

STREAM_PROGRAM, STREAM_PICK, STREAM_TIME = 31, 32, 33


class ShaderSource(Source):
    """Image i = program P(i) of the pool rendered at its own time t(i) ~ U(0.1, 10).

    Args:
        seed: seed of the pool and of the per-image draws.
        pool_size: number of programs (Shaders21k has 21,083).
        families: family subset (None = all ten); see `FAMILY_NAMES`.
        filter_degenerate: draw only from programs that pass the degeneracy filter (the valid
            set is computed on first use, on CPU, and cached; see `filter.valid_programs`).
        supersample: render at supersample x size and average-pool (anti-aliasing).
    """

    name = "shaders"

    def __init__(
        self,
        seed: int = 0,
        pool_size: int = SHADERS21K_POOL_SIZE,
        families: list[str] | None = None,
        filter_degenerate: bool = True,
        supersample: int = 1,
    ) -> None:
        super().__init__(seed)
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        if int(supersample) != supersample or supersample < 1:
            raise ValueError(f"supersample must be a positive integer, got {supersample}")
        self.pool_size = int(pool_size)
        self.families = resolve_families(families)
        self.filter_degenerate = bool(filter_degenerate)
        self.supersample = int(supersample)
        self._valid: dict[torch.device, Tensor] = {}

    def valid_programs(self, device: torch.device | str = "cpu") -> Tensor:
        """Sorted int64 ids of the pool's valid programs (all ids when not filtering)."""
        device = torch.device(device)
        if device not in self._valid:
            if self.filter_degenerate:
                v = valid_programs(self.seed, self.pool_size, self.families)
            else:
                v = torch.arange(self.pool_size, dtype=torch.int64)
            self._valid[device] = v.to(device)
        return self._valid[device]

    def program_ids(self, indices: Tensor) -> Tensor:
        """Program id of each image index [B] -> int64 [B] (same device)."""
        if not self.filter_degenerate:
            return rng.randint(self.seed, indices, STREAM_PROGRAM, self.pool_size)
        valid = self.valid_programs(indices.device)
        return valid[rng.randint(self.seed, indices, STREAM_PICK, len(valid))]

    def times(self, indices: Tensor) -> Tensor:
        """Render time of each image index [B] -> float32 [B] in [0.1, 10)."""
        return 0.1 + 9.9 * rng.uniform(self.seed, indices, STREAM_TIME)

    def _render(self, indices: Tensor, size: int, device: torch.device) -> Tensor:
        pids = self.program_ids(indices)
        return render_ids(
            self.seed, pids, self.times(indices), size, self.families, self.supersample
        )

    def program(self, p: int) -> Program:
        """Program p of this pool (any id in [0, pool_size))."""
        if not 0 <= p < self.pool_size:
            raise ValueError(f"program id {p} outside the pool [0, {self.pool_size})")
        return program(self.seed, p, list(self.families))

    def rejection_rate(self) -> float:
        """Fraction of the pool rejected by the filter (computes the valid set if needed)."""
        return rejection_rate(self.seed, self.pool_size, self.families)

    def describe(self) -> dict:
        """JSON-serialisable description; the rejection rate appears once it has been computed."""
        d = super().describe() | {
            "pool_size": self.pool_size,
            "families": list(self.families),
            "filter_degenerate": self.filter_degenerate,
            "supersample": self.supersample,
            "filter_version": FILTER_VERSION,
        }
        if self.filter_degenerate:
            rate = cached_rejection_rate(self.seed, self.pool_size, self.families)
            if rate is not None:
                d["rejection_rate"] = rate
        return d

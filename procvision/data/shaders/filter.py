"""Degenerate-program filter, after Shaders21k's "good fragments" list (spec section 6.2).

An image is degenerate when it has NaN/inf, a per-image std below 0.03, or fewer than 8
occupied colour bins (8 levels per channel). A program is degenerate when more than half of
8 renders at random times t ~ U(0.1, 10) are. The valid ids of a pool are computed once per
(version, seed, pool size, families) and cached in memory and under ~/.cache/procvision.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import torch
from torch import Tensor

from procvision.atomic import atomic_write_path
from procvision.data import rng
from procvision.data.shaders.core import render_ids, resolve_families
from procvision.data.shaders.shipped import shipped_valid

log = logging.getLogger(__name__)

FILTER_VERSION = 2  # bump whenever rendering or the criteria change: it invalidates file caches
FILTER_SIZE = 32
N_RENDERS = 8
STD_MIN = 0.03
MIN_BINS = 6
LEVELS = 16
STREAM_FILTER_T = 21

_VALID: dict[tuple, Tensor] = {}


def is_degenerate_image(images: Tensor) -> Tensor:
    """Per-image degeneracy.

    Args:
        images: [B, 3, H, W] float images (values outside [0, 1] are clamped; NaN/inf count).
    Returns:
        bool [B]: True where the image is non-finite, near-constant or has too few colours.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    b = images.shape[0]
    finite = torch.isfinite(images).reshape(b, -1).all(1)
    x = torch.nan_to_num(images.float(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
    std = x.reshape(b, -1).std(1)
    q = (x * LEVELS).to(torch.int64).clamp_(max=LEVELS - 1)
    code = (q[:, 0] * LEVELS + q[:, 1]) * LEVELS + q[:, 2]
    occupied = torch.zeros(b, LEVELS**3, device=x.device).scatter_(1, code.reshape(b, -1), 1.0)
    return ~finite | (std < STD_MIN) | (occupied.sum(1) < MIN_BINS)


def _bad_counts(
    seed: int, pids: Tensor, fams: tuple[str, ...], size: int, renders: Tensor
) -> Tensor:
    """Number of degenerate renders among the render slots `renders` [R] of each program [P]."""
    t = 0.1 + 9.9 * rng.uniform(seed, pids, STREAM_FILTER_T, N_RENDERS)[:, renders]  # [P, R]
    ids = pids.repeat_interleave(len(renders))
    raw = render_ids(seed, ids, t.reshape(-1), size, fams, sanitize=False)
    return is_degenerate_image(raw).reshape(len(pids), len(renders)).sum(1)


def degenerate_mask(
    seed: int,
    program_ids: Tensor | list[int],
    families: list[str] | tuple[str, ...] | None = None,
    size: int = FILTER_SIZE,
    chunk: int = 128,
) -> Tensor:
    """Which programs are degenerate (more than half of their 8 renders are).

    Renders the first 4 times of every program and the last 4 only where one of the first 4
    failed: a program needs at least 5 failures, so the answer is the same as rendering all 8.

    Args:
        seed: program seed.
        program_ids: int64 [P] ids.
        families: the family subset the ids are drawn from (None = all).
        size: render size in pixels.
        chunk: programs per batch.
    Returns:
        bool [P] on the ids' device.
    """
    fams = resolve_families(families)
    pids = torch.as_tensor(program_ids, dtype=torch.int64).reshape(-1)
    half = N_RENDERS // 2
    first, second = torch.arange(half), torch.arange(half, N_RENDERS)
    out = torch.zeros(len(pids), dtype=torch.bool, device=pids.device)
    for s in range(0, len(pids), chunk):
        p = pids[s : s + chunk]
        bad = _bad_counts(seed, p, fams, size, first.to(p.device))
        again = torch.nonzero(bad > 0).reshape(-1)
        if len(again):
            bad.index_add_(0, again, _bad_counts(seed, p[again], fams, size, second.to(p.device)))
        out[s : s + chunk] = bad > N_RENDERS // 2
    return out


def cache_dir() -> Path:
    """Folder of the valid-id cache files ($PROCVISION_CACHE_DIR or ~/.cache/procvision)."""
    return Path(os.environ.get("PROCVISION_CACHE_DIR", Path.home() / ".cache" / "procvision"))


def _cache_path(seed: int, pool_size: int, fams: tuple[str, ...]) -> Path:
    tag = zlib.crc32(",".join(fams).encode())
    name = f"shaders_valid_v{FILTER_VERSION}_s{FILTER_SIZE}_seed{seed}_pool{pool_size}_{tag:08x}.pt"
    return cache_dir() / name


def _load(path: Path, pool_size: int) -> Tensor | None:
    try:
        v = torch.load(path, weights_only=True).to(torch.int64)
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        if path.exists():
            log.warning("ignoring unreadable shader cache %s: %s", path, e)
        return None
    return v if v.dim() == 1 and (len(v) == 0 or int(v.max()) < pool_size) else None


def _save(path: Path, valid: Tensor) -> None:
    try:
        atomic_write_path(path, lambda tmp: torch.save(valid.to(torch.int32).cpu(), tmp))
    except OSError as e:
        log.warning("could not write shader cache %s: %s", path, e)


def valid_programs(
    seed: int,
    pool_size: int,
    families: list[str] | tuple[str, ...] | None = None,
    file_cache: bool = True,
    chunk: int = 128,
    shipped: bool = True,
) -> Tensor:
    """Sorted int64 ids of the non-degenerate programs of a pool (computed on CPU, cached).

    The filter always runs on CPU so that the valid set, and hence every image, does not depend
    on the device of the first caller.
    """
    if pool_size < 1:
        raise ValueError(f"pool_size must be at least 1, got {pool_size}")
    fams = resolve_families(families)
    key = (FILTER_VERSION, seed, pool_size, fams)
    if key in _VALID:
        return _VALID[key]
    path = _cache_path(seed, pool_size, fams)
    valid = shipped_valid(FILTER_VERSION, FILTER_SIZE, seed, pool_size, fams) if shipped else None
    if valid is None and file_cache:
        valid = _load(path, pool_size)
    if valid is None:
        log.info("filtering %d shader programs (seed %d); cached at %s", pool_size, seed, path)
        ids = torch.arange(pool_size, dtype=torch.int64)
        valid = ids[~degenerate_mask(seed, ids, fams, chunk=chunk)]
        if file_cache:
            _save(path, valid)
    if len(valid) == 0:
        raise ValueError(
            f"no valid shader program among {pool_size} (seed {seed}, families {fams})"
        )
    _VALID[key] = valid
    return valid


def rejection_rate(
    seed: int, pool_size: int, families: list[str] | tuple[str, ...] | None = None
) -> float:
    """Fraction of the pool's programs that the filter rejects."""
    return 1.0 - len(valid_programs(seed, pool_size, families)) / pool_size


def cached_rejection_rate(
    seed: int, pool_size: int, families: list[str] | tuple[str, ...] | None = None
) -> float | None:
    """The rejection rate if the valid set is already in memory, else None (computes nothing)."""
    v = _VALID.get((FILTER_VERSION, seed, pool_size, resolve_families(families)))
    return None if v is None else 1.0 - len(v) / pool_size

"""Counter-based random numbers: every draw is a pure function of (seed, index, stream).

Procedural images must not depend on batch size, worker count, rank or device, so no draw may
come from a stateful generator. Instead each value is a 32-bit integer hash of its coordinates,
computed with int64 tensor ops that give the same bits on every device.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Mix int64 tensor values (taken mod 2**32) into well-distributed 32-bit hashes.

    "lowbias32" integer hash. Products may wrap in int64, but the low 32 bits that are kept are
    exact in two's complement, so the result is identical on CPU and GPU.

    Args:
        x: int64 tensor of any shape.
    Returns:
        int64 tensor of the same shape with values in [0, 2**32).
    """
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    x = x ^ (x >> 16)
    return x


def hash_coords(seed: int, index: torch.Tensor, stream: int | torch.Tensor) -> torch.Tensor:
    """Hash of (seed, index, stream) as int64 in [0, 2**32); shape broadcast of index and stream."""
    index = torch.as_tensor(index, dtype=torch.int64)
    if not isinstance(stream, torch.Tensor):
        stream = torch.tensor(stream, dtype=torch.int64, device=index.device)
    h = hash32(torch.full_like(index, 0) + (seed & _MASK32) + 0x9E3779B9)
    h = hash32(h ^ (index & _MASK32))
    h = hash32(h ^ ((index >> 32) & _MASK32) ^ 0x85EBCA6B)
    return hash32(h ^ stream.to(index.device))


def uniform(seed: int, index: torch.Tensor, stream: int, n: int | None = None) -> torch.Tensor:
    """Uniform floats in [0, 1), a pure function of (seed, index, stream[, j]).

    Args:
        seed: integer seed of the source.
        index: int64 tensor [B] of sample (or program) indices.
        stream: integer naming what the draw is for; different streams are independent.
        n: if given, draw n values per index (streams stream*1024 + j); else one.
    Returns:
        float32 tensor [B] (n is None) or [B, n], on index's device.
    """
    index = torch.as_tensor(index, dtype=torch.int64)
    if n is None:
        h = hash_coords(seed, index, stream)
    else:
        j = torch.arange(n, device=index.device, dtype=torch.int64) + stream * 1024
        h = hash_coords(seed, index[:, None], j[None, :])
    # 24 bits fit a float32 mantissa exactly, so the value is the same everywhere.
    return (h >> 8).to(torch.float32) / float(1 << 24)


def randint(
    seed: int, index: torch.Tensor, stream: int, high: int, n: int | None = None
) -> torch.Tensor:
    """Integers in [0, high) with the same purity as `uniform`; int64, shape as `uniform`."""
    u = uniform(seed, index, stream, n)
    return (u.to(torch.float64) * high).to(torch.int64).clamp_(max=high - 1)


def normal(seed: int, index: torch.Tensor, stream: int, n: int | None = None) -> torch.Tensor:
    """Standard normal floats by Box-Muller over two independent uniform streams."""
    u1 = uniform(seed, index, 2 * stream + 1_000_003, n).clamp_min(1e-7)
    u2 = uniform(seed, index, 2 * stream + 1_000_004, n)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)


def derive_seed(seed: int, *salt: int) -> int:
    """A new integer seed from a seed and salts (for sub-sources of a composition)."""
    x = torch.tensor([seed & _MASK32], dtype=torch.int64)
    for s in salt:
        x = hash32(x ^ (s & _MASK32) ^ 0x27D4EB2F)
    return int(x.item())

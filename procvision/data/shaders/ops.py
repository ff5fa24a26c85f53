"""GLSL-like math on batched torch tensors, chosen to give the same bits in any batch.

Conventions: a 2D point is a pair of tensors (x, y), each [B, H, W] (or broadcastable to it);
per-program scalars are [B, 1, 1] (see `col`). Some torch ops (atan2, pow, sigmoid, exp2) give
different bits in the vectorised body and the scalar tail of a CPU kernel, which would make an
image depend on its position in the batch; the helpers here avoid them (atan, exp, log are safe).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

TAU = 2.0 * math.pi
_MASK32 = 0xFFFFFFFF


def col(v: Tensor) -> Tensor:
    """Per-program values [B] -> [B, 1, 1] for broadcasting against [B, H, W] fields."""
    return v.reshape(-1, 1, 1)


def col3(v: Tensor) -> Tensor:
    """Per-program RGB values [B, 3] -> [B, 3, 1, 1] for broadcasting against images."""
    return v.reshape(-1, 3, 1, 1)


def fract(x: Tensor) -> Tensor:
    """x - floor(x), in [0, 1)."""
    return x - torch.floor(x)


def mix(a: Tensor, b: Tensor | float, t: Tensor | float) -> Tensor:
    """Linear interpolation a + (b - a) * t."""
    return a + (b - a) * t


def clamp01(x: Tensor) -> Tensor:
    """Clamp to [0, 1]."""
    return x.clamp(0.0, 1.0)


def smoothstep(e0: Tensor | float, e1: Tensor | float, x: Tensor) -> Tensor:
    """GLSL smoothstep; e0 > e1 gives a decreasing step."""
    t = clamp01((x - e0) / (e1 - e0))
    return t * t * (3.0 - 2.0 * t)


def length(x: Tensor, y: Tensor) -> Tensor:
    """Euclidean norm of (x, y)."""
    return torch.sqrt(x * x + y * y)


def rotate(x: Tensor, y: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate (x, y) by angle a (radians, counter-clockwise)."""
    c, s = torch.cos(a), torch.sin(a)
    return c * x - s * y, s * x + c * y


def atan2(y: Tensor, x: Tensor) -> Tensor:
    """Angle of (x, y) in (-pi, pi], built on atan (torch.atan2 is not batch-invariant on CPU)."""
    xs = torch.where(x == 0, torch.full_like(x, 1e-30), x)
    a = torch.atan(y / xs)
    shift = torch.where(y >= 0, math.pi, -math.pi)
    return torch.where(x < 0, a + shift, a)


def powp(x: Tensor, k: Tensor | float) -> Tensor:
    """x**k for x >= 0 via exp/log (torch.pow is not batch-invariant on CPU); 0**k = 0."""
    return torch.exp(k * torch.log(x.clamp_min(1e-30)))


def modp(x: Tensor, m: Tensor | float) -> Tensor:
    """GLSL mod: x - m * floor(x / m), for m != 0."""
    return x - m * torch.floor(x / m)


def tri(x: Tensor) -> Tensor:
    """Triangle wave with period 1 and range [0, 1]: 0 at integers, 1 at half-integers."""
    return 1.0 - (2.0 * fract(x) - 1.0).abs()


def hsv(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """TwiGL's hsv(h, s, v) for broadcastable [B, ...] inputs -> [B, 3, ...] RGB."""
    k = torch.tensor([3.0, 2.0, 1.0], device=h.device).reshape((1, 3) + (1,) * (h.dim() - 1)) / 3.0
    rgb = clamp01((fract(h[:, None] + k) * 6.0 - 3.0).abs() - 1.0)
    return v[:, None] * mix(torch.ones_like(rgb), rgb, s[:, None])


def _s32(c: int) -> int:
    """A 32-bit constant as the signed int32 with the same bits."""
    c &= _MASK32
    return c - (1 << 32) if c >= 1 << 31 else c


_K1, _K2, _M1, _M2 = _s32(0x27D4EB2D), _s32(0x165667B1), _s32(0x7FEB352D), _s32(0x846CA68B)


def mul32(h: Tensor, c: int) -> Tensor:
    """h * c modulo 2**32 for a 32-bit hash held in int32 (wrapping multiply, same bits)."""
    return h * _s32(c)


def hash32_i32(x: Tensor) -> Tensor:
    """`rng.hash32` on int32 tensors (the same 32 bits, in half the memory; shifts are logical)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _M1
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _M2
    return x ^ ((x >> 16) & 0xFFFF)


def _salt32(salt: Tensor | int) -> Tensor | int:
    if isinstance(salt, Tensor):
        return (salt & _MASK32).to(torch.int32) if salt.dtype != torch.int32 else salt
    return _s32(salt)


def lattice_hash(ix: Tensor, iy: Tensor, salt: Tensor | int) -> Tensor:
    """32-bit hash of integer lattice points (int32 tensors) and a per-program salt -> int32.

    The bits are those of the int64 formula hash32((ix * 0x27D4EB2D) ^ (iy * 0x165667B1) ^ salt)
    taken mod 2**32: int32 products wrap to the same low 32 bits.
    """
    return hash32_i32((ix * _K1) ^ (iy * _K2) ^ _salt32(salt))


def hash_unit(h: Tensor) -> Tensor:
    """A 32-bit hash (int32 bits or int64 in [0, 2**32)) -> float32 in [0, 1) (24 bits, exact)."""
    return ((h >> 8) & 0xFFFFFF).to(torch.float32) * (1.0 / (1 << 24))


def to_lattice(x: Tensor) -> Tensor:
    """floor(x) as int32, clamped so that wild coordinates (after inversions) cannot overflow."""
    return torch.floor(x.clamp(-1e7, 1e7)).to(torch.int32)


def value_noise(x: Tensor, y: Tensor, salt: Tensor | int) -> Tensor:
    """Value noise on the integer lattice with quintic fade; same shape as x, values in [0, 1)."""
    ix, iy = to_lattice(x), to_lattice(y)
    fx, fy = x - ix.to(x.dtype), y - iy.to(y.dtype)
    ux = fx * fx * fx * (fx * (fx * 6.0 - 15.0) + 10.0)
    uy = fy * fy * fy * (fy * (fy * 6.0 - 15.0) + 10.0)
    # (ix + 1) * K = ix * K + K modulo 2**32: the four corners share two products.
    hx0 = ix * _K1
    hx1 = hx0 + _K1
    hy0 = (iy * _K2) ^ _salt32(salt)
    hy1 = ((iy + 1) * _K2) ^ _salt32(salt)
    a = hash_unit(hash32_i32(hx0 ^ hy0))
    b = hash_unit(hash32_i32(hx1 ^ hy0))
    c = hash_unit(hash32_i32(hx0 ^ hy1))
    d = hash_unit(hash32_i32(hx1 ^ hy1))
    return mix(mix(a, b, ux), mix(c, d, ux), uy)


def fbm(
    x: Tensor,
    y: Tensor,
    salt: Tensor | int,
    octaves: Tensor,
    max_octaves: int,
    gain: Tensor | float = 0.5,
    lacunarity: Tensor | float = 2.0,
    drift: Tensor | float = 0.0,
    mode: str | Tensor = "plain",
) -> Tensor:
    """Fractal sum of value noise, normalised to about [0, 1].

    Args:
        x, y: coordinates [B, H, W].
        salt: int64 [B, 1, 1] (or int) selecting the noise of a program.
        octaves: [B, 1, 1] float number of octaves; octave k is used when k < octaves.
        max_octaves: loop bound (Python int), at least octaves.max().
        gain, lacunarity: amplitude and frequency ratios per octave.
        drift: offset added to x per octave, times the octave index (animates octaves apart).
        mode: "plain", "ridged" (1 - |2n - 1| squared) or "turbulence" (|2n - 1|), or an int64
            [B, 1, 1] tensor of mode indices (0, 1, 2) choosing per row.
    Returns:
        [B, H, W] values in about [0, 1].
    """
    modes = present(mode, 3) if isinstance(mode, Tensor) else []
    total = torch.zeros_like(x)
    norm = torch.zeros_like(octaves)
    amp = torch.ones_like(octaves)
    # Octaves past a program's count add exactly 0 (noise is finite): stop at the batch's largest.
    for k in range(min(max_octaves, int(octaves.max()))):
        on = (octaves > k).to(x.dtype)
        n = value_noise(x + drift * k, y, salt + 977 * k)
        if isinstance(mode, Tensor):  # per-row mode index (0 plain, 1 ridged, 2 turbulence)
            if modes[-1] > 0:
                a = (2.0 * n - 1.0).abs()
                r = 1.0 - a
                r = r * r
                if modes == [1]:
                    n = r
                elif modes == [2]:
                    n = a
                else:
                    n = torch.where(mode == 1, r, torch.where(mode == 2, a, n))
        elif mode == "ridged":
            n = 1.0 - (2.0 * n - 1.0).abs()
            n = n * n
        elif mode == "turbulence":
            n = (2.0 * n - 1.0).abs()
        total = total + (amp * on) * n
        norm = norm + amp * on
        amp = amp * gain
        # Rotate between octaves so lattice axes do not line up.
        x, y = (0.8 * x - 0.6 * y) * lacunarity + 1.7, (0.6 * x + 0.8 * y) * lacunarity + 9.2
    return total / norm.clamp_min(1e-6)


def image_mean(v: Tensor) -> Tensor:
    """Per-image mean of [B, H, W] (or [B, C, H, W]) -> [B, 1, 1] (or [B, C, 1, 1]).

    avg_pool computes each output from its own window in a fixed order, so, unlike a reduction
    that may be split across threads, the result does not depend on the batch.
    """
    squeeze = v.dim() == 3
    x = v[:, None] if squeeze else v
    m = torch.nn.functional.avg_pool2d(x, kernel_size=tuple(x.shape[-2:]))
    return m[:, 0] if squeeze else m


def split_by(labels: Tensor, n: int) -> list[tuple[int, Tensor]]:
    """Group batch positions by an int64 label in [0, n): [(label, positions int64 [m]), ...].

    One host sync (the counts); the groups keep the original order of their members.
    """
    counts = torch.bincount(labels, minlength=n).tolist()
    order = torch.argsort(labels, stable=True)
    groups, start = [], 0
    for k, c in enumerate(counts):
        if c:
            groups.append((k, order[start : start + c]))
            start += c
    return groups


def sel_dict(params: dict[str, Tensor], idx: Tensor | None) -> dict[str, Tensor]:
    """`sel` applied to every tensor of a parameter dict."""
    return {k: sel(v, idx) for k, v in params.items()}


def sel(x: Tensor, idx: Tensor | None) -> Tensor:
    """Rows idx of x; x itself when idx is None or x has a single (broadcast) row."""
    return x if idx is None or x.shape[0] == 1 else x.index_select(0, idx)


def dispatch(kind: Tensor, n: int, fn: Callable[[int, Tensor | None], Tensor]) -> Tensor:
    """Evaluate each kind only on its own rows and reassemble the batch.

    Args:
        kind: int64 [B] per-row kind in [0, n).
        fn: fn(k, idx) -> Tensor [m, ...] for the m rows idx (int64 [m]) of kind k; idx is None
            when every row has kind k. Use `sel(x, idx)` inside fn to pick rows.
    Returns:
        Tensor [B, ...] whose row b was computed by fn for kind[b].
    """
    groups = split_by(kind, n)
    if len(groups) == 1:
        return fn(groups[0][0], None)
    out = None
    for k, idx in groups:
        r = fn(k, idx)
        if out is None:
            out = r.new_empty((kind.shape[0],) + tuple(r.shape[1:]))
        out.index_copy_(0, idx, r)
    return out


def present(kind: Tensor, n: int) -> list[int]:
    """Sorted kinds in [0, n) that occur in the int64 [B] (or [B, 1, 1]) tensor `kind` (one sync)."""
    return [k for k, c in enumerate(torch.bincount(kind.reshape(-1), minlength=n).tolist()) if c]


def branch(kind: Tensor, n: int, fns: dict[int, Callable[[], Tensor]]) -> Tensor:
    """Per-row choice among branches, evaluating only the branches some row uses.

    kind: int64 [B, 1, 1] (or broadcastable) in [0, n); fns[k]() gives the field of branch k.
    Equivalent, bit for bit, to a chain of `torch.where(kind == k, fns[k](), ...)` over all k:
    `where` copies the chosen values, and a branch no row chose contributes nothing.
    """
    ks = present(kind, n)
    out = fns[ks[-1]]()
    for k in reversed(ks[:-1]):
        out = torch.where(kind == k, fns[k](), out)
    return out


def count_range(v: Tensor) -> tuple[int, int]:
    """(min, max) of an integer tensor as Python ints (one sync)."""
    return int(v.min()), int(v.max())

"""Dead leaves (spec §2.3, Baradad et al. 2021): random shapes occluding each other.

Shapes are circles, axis-aligned squares, oriented squares, oriented rectangles, triangles and
convex quadrilaterals with uniform RGB colours and radius fraction r in [r_min, r_max] drawn with
density proportional to r^-sigma (inverse-CDF sampling). Rendering is front to back: shape k only
paints pixels no earlier shape covered, which is the occlusion order of the dead-leaves model and
lets a pixel stop as soon as it is covered (the canvas is done when all are, or after `n_shapes`;
pixels still empty then keep a background colour). Batched over images; shapes are processed in
chunks and only still-uncovered pixels are tested, so the cost falls as the canvas fills.
"""

from __future__ import annotations

import math

import torch

from procvision.data.rng import hash_coords, uniform
from procvision.data.source import Source, pixel_grid

SHAPES = ("circle", "square", "oriented_square", "rectangle", "triangle", "quadrilateral")
_S_TYPE, _S_RADIUS, _S_CENTRE, _S_COLOUR, _S_ANGLE, _S_ASPECT, _S_VERTS = range(1, 8)
_S_BACKGROUND = 9


def sample_radius(u: torch.Tensor, r_min: float, r_max: float, sigma: float) -> torch.Tensor:
    """Inverse CDF of the density p(r) proportional to r^-sigma on [r_min, r_max]; u in [0, 1)."""
    if abs(sigma - 1.0) < 1e-9:
        return r_min * (r_max / r_min) ** u
    e = 1.0 - sigma
    return (r_min**e + u * (r_max**e - r_min**e)) ** (1.0 / e)


def slot_uniform(seed: int, indices: torch.Tensor, stream: int, k0: int, k1: int, n: int):
    """Uniforms [B, k1 - k0, n] for shape slots k0..k1-1 of each image; pure in (seed, i, k)."""
    k = torch.arange(k0, k1, device=indices.device, dtype=torch.int64)
    t = torch.arange(n, device=indices.device, dtype=torch.int64)
    code = (stream << 26) + k[:, None] * 8 + t[None, :]  # n <= 8, k < 2**23
    h = hash_coords(seed, indices[:, None, None], code[None])
    return (h >> 8).to(torch.float32) / float(1 << 24)


def convex_inside(px, py, vx, vy) -> torch.Tensor:
    """Points inside counter-clockwise convex polygons (repeated vertices allowed).

    Args:
        px, py: point coordinates [..., 1] (y up).
        vx, vy: vertices [..., K, V].
    Returns:
        bool [..., K].
    """
    inside = None
    v = vx.shape[-1]
    for a in range(v):
        b = (a + 1) % v
        ex, ey = vx[..., b] - vx[..., a], vy[..., b] - vy[..., a]
        ok = ex * (py - vy[..., a]) - ey * (px - vx[..., a]) >= 0
        inside = ok if inside is None else inside & ok
    return inside


class DeadLeavesSource(Source):
    """Dead-leaves images.

    Args:
        seed: seed of the draws.
        n_shapes: maximum shapes per image (original: up to 5000 iterations).
        sigma: exponent of the radius density r^-sigma (paper: 3).
        r_min, r_max: radius range as a fraction of the image side (paper: 0.03, 1).
        chunk: most shapes tested per step (fewer while much of the canvas is uncovered).
    """

    name = "dead_leaves"

    def __init__(
        self,
        seed: int = 0,
        n_shapes: int = 5000,
        sigma: float = 3.0,
        r_min: float = 0.03,
        r_max: float = 1.0,
        chunk: int = 256,
    ) -> None:
        super().__init__(seed)
        if not 0 < r_min <= r_max:
            raise ValueError(f"need 0 < r_min <= r_max, got r_min={r_min}, r_max={r_max}")
        if n_shapes < 1 or chunk < 1:
            raise ValueError("n_shapes and chunk must be >= 1")
        self.n_shapes, self.sigma = int(n_shapes), float(sigma)
        self.r_min, self.r_max, self.chunk = float(r_min), float(r_max), int(chunk)

    def shapes(self, indices: torch.Tensor, k0: int, k1: int) -> dict[str, torch.Tensor]:
        """Shapes k0..k1-1 of each image on the [-1, 1]^2 canvas (y up).

        Returns kind [B, K] (index into SHAPES), centre cx, cy [B, K], radius r [B, K] (canvas
        units: fraction * 2), polygon vertices vx, vy [B, K, 4] (counter-clockwise; unused for
        circles) and colour [B, K, 3].
        """

        def draw(stream: int, n: int = 1) -> torch.Tensor:
            u = slot_uniform(self.seed, indices, stream, k0, k1, n)
            return u[..., 0] if n == 1 else u

        kind = (draw(_S_TYPE) * len(SHAPES)).long().clamp_max(len(SHAPES) - 1)
        r = sample_radius(draw(_S_RADIUS), self.r_min, self.r_max, self.sigma) * 2.0
        c = draw(_S_CENTRE, 2) * 2.0 - 1.0
        angle = draw(_S_ANGLE) * (2 * math.pi)
        aspect = 0.25 + 0.75 * draw(_S_ASPECT)
        dev = indices.device
        bx = torch.tensor([1.0, -1.0, -1.0, 1.0], device=dev)
        by = torch.tensor([1.0, 1.0, -1.0, -1.0], device=dev)
        half_y = torch.where(kind == 3, aspect, torch.ones_like(aspect))
        box_x, box_y = r[..., None] * bx, (r * half_y)[..., None] * by  # squares, rectangles
        th = torch.sort(draw(_S_VERTS, 4) * (2 * math.pi), dim=-1).values
        th = torch.where((kind == 4)[..., None], torch.cat([th[..., :3], th[..., 2:3]], -1), th)
        ring = (kind >= 4)[..., None]  # triangles, quadrilaterals: vertices on a circle
        ex = torch.where(ring, r[..., None] * torch.cos(th), box_x)
        ey = torch.where(ring, r[..., None] * torch.sin(th), box_y)
        rot = torch.where(kind == 1, torch.zeros_like(angle), angle)  # kind 1 stays axis-aligned
        cs, sn = torch.cos(rot)[..., None], torch.sin(rot)[..., None]
        return {
            "kind": kind,
            "cx": c[..., 0],
            "cy": c[..., 1],
            "r": r,
            "vx": c[..., 0, None] + cs * ex - sn * ey,
            "vy": c[..., 1, None] + sn * ex + cs * ey,
            "colour": draw(_S_COLOUR, 3),
        }

    def _render(self, indices: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
        b, npx = indices.numel(), size * size
        grid = pixel_grid(size, device).view(npx, 2)
        out = uniform(self.seed, indices, _S_BACKGROUND, 3)[:, None, :].repeat(1, npx, 1)
        # still-uncovered (image, pixel) pairs, compacted after each chunk
        fb = torch.arange(b, device=device).repeat_interleave(npx)
        fp = torch.arange(npx, device=device).repeat(b)
        k0 = 0
        while k0 < self.n_shapes and fb.numel():
            # few shapes per step while many pixels are free, more as the canvas fills: the work
            # M x K stays bounded, and chunking never changes which shape covers a pixel first
            k = max(8, min(self.chunk, (16 * b * npx) // fb.numel()))
            sh = self.shapes(indices, k0, min(k0 + k, self.n_shapes))
            k0 += k
            px, py = grid[fp, 0, None], grid[fp, 1, None]  # [M, 1]
            cx, cy, r = sh["cx"][fb], sh["cy"][fb], sh["r"][fb]  # [M, K]
            circle = (px - cx) ** 2 + (py - cy) ** 2 <= r * r
            poly = convex_inside(px, py, sh["vx"][fb], sh["vy"][fb])
            inside = torch.where(sh["kind"][fb] == 0, circle, poly)
            hit = inside.any(1)
            first = inside.to(torch.uint8).argmax(1)  # front-most covering shape
            hb, hp = fb[hit], fp[hit]
            out[hb, hp] = sh["colour"][hb, first[hit]]
            fb, fp = fb[~hit], fp[~hit]
        return out.transpose(1, 2).reshape(b, 3, size, size)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "n_shapes": self.n_shapes,
            "sigma": self.sigma,
            "r_min": self.r_min,
            "r_max": self.r_max,
        }

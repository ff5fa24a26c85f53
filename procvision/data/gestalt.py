"""Gestalt stimuli (paper §8, Table 4; spec §4.8): images with the grouping a person perceives.

No stimuli were published, so these are built here from the paper's definitions. Each stimulus is
ink (black, or two colours for similarity) on white paper with a little pixel noise (so no region
is of one constant colour, which the R² metric would reward whatever its grouping), drawn from
elements with a signed distance (<= 0 inside). Its label map is the perceived grouping, not the
drawn pixels: background 0 (dropped by the metric), groups 1..n, each group's region = its
elements grown by a margin, or the figure's whole interior.

- closure: two dashed outlines (circle or square); each interior is one region (1, 2).
- kanizsa: an illusory triangle and an illusory square cut out of black discs ("pac-men"); the
  illusory figures (paper-coloured, no ink) are 1 and 2, the discs 3.
- connection: six equal dots evenly spaced on a circle, joined in pairs by lines; each pair 1..3.
- continuity: two dotted smooth curves that cross (a sine across, a sine down); each curve 1, 2.
- enclosure: a grid of equal dots, two rectangles drawn around 2 x 2 of them; each rectangle's
  interior 1, 2, the dots outside 3.
- proximity: three clusters of 3 x 3 equal dots; each cluster (dots and the gaps between them) 1..3.
- similarity: a grid of dots, half red half blue at random places; red 1, blue 2.

Every item is a pure function of (principle, size, seed, index), at any size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

PRINCIPLES = (
    "closure",
    "kanizsa",
    "connection",
    "continuity",
    "enclosure",
    "proximity",
    "similarity",
)
INK = (0.0, 0.0, 0.0)
RED, BLUE = (0.85, 0.15, 0.15), (0.15, 0.3, 0.85)


@dataclass
class Stimulus:
    """One stimulus: image float32 [3, S, S] in [0, 1], labels int64 [S, S], ink bool [S, S]."""

    image: np.ndarray
    labels: np.ndarray
    ink: np.ndarray
    principle: str


class _Canvas:
    """Unit-square pixel-centre coordinates of an S x S image, and its layers."""

    def __init__(self, size: int) -> None:
        if size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {size}")
        self.size = size
        c = (np.arange(size) + 0.5) / size
        self.y, self.x = np.meshgrid(c, c, indexing="ij")
        self.lw = max(0.02, 1.5 / size)  # line width, at least 1.5 px
        self.colour = np.ones((size, size, 3))
        self.ink = np.zeros((size, size), bool)
        self.labels = np.zeros((size, size), np.int64)

    def dot(self, cx: float, cy: float, r: float) -> np.ndarray:
        return np.hypot(self.x - cx, self.y - cy) - r

    def segment(self, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
        ax, ay = a
        dx, dy = b[0] - ax, b[1] - ay
        t = np.clip(((self.x - ax) * dx + (self.y - ay) * dy) / (dx * dx + dy * dy), 0, 1)
        return np.hypot(self.x - ax - t * dx, self.y - ay - t * dy) - self.lw / 2

    def polygon(self, verts: np.ndarray) -> np.ndarray:
        """Max over edges of the signed distance to each edge's line (<= 0 inside): a convex
        polygon given by its vertices [V, 2] in either orientation."""
        x, y = verts[:, 0], verts[:, 1]
        orient = np.sign(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))  # shoelace sign
        d = np.full(self.x.shape, -np.inf)
        for i in range(len(verts)):
            (x0, y0), (x1, y1) = verts[i], verts[(i + 1) % len(verts)]
            nx, ny = orient * (y1 - y0), -orient * (x1 - x0)  # outward normal
            n = math.hypot(nx, ny)
            d = np.maximum(d, ((self.x - x0) * nx + (self.y - y0) * ny) / n)
        return d

    def draw(self, sdf: np.ndarray, colour=INK) -> None:
        m = sdf <= 0
        self.colour[m] = colour
        self.ink |= m

    def erase(self, region: np.ndarray) -> None:
        self.colour[region] = 1.0
        self.ink &= ~region

    def label(self, region: np.ndarray, value: int) -> None:
        self.labels[region] = value

    def finish(self, rng: np.random.Generator, noise: float, principle: str) -> Stimulus:
        img = self.colour + rng.normal(0.0, noise, self.colour.shape) if noise else self.colour
        img = np.clip(img, 0, 1).astype(np.float32).transpose(2, 0, 1)
        return Stimulus(np.ascontiguousarray(img), self.labels, self.ink, principle)


def _ngon(n: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Vertices [n, 2] of a regular n-gon."""
    a = angle - 2 * np.pi * np.arange(n) / n
    return np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a)], 1)


def _closure(cv: _Canvas, rng: np.random.Generator) -> None:
    for value, cx in ((1, rng.uniform(0.25, 0.3)), (2, rng.uniform(0.7, 0.75))):
        cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.12, 0.17)
        dx, dy = cv.x - cx, cv.y - cy
        if rng.random() < 0.5:  # circle
            dist = np.hypot(dx, dy) - r
        else:  # axis-aligned square of half side r
            dist = np.maximum(np.abs(dx), np.abs(dy)) - r
        dashes = int(rng.integers(8, 14))
        phase = rng.uniform(0, 2 * np.pi)
        on = np.floor((np.arctan2(dy, dx) + np.pi + phase) / (np.pi / dashes)) % 2 == 0
        cv.draw(np.where(on, np.abs(dist) - cv.lw / 2, 1.0))
        cv.label(dist <= cv.lw / 2, value)


def _kanizsa(cv: _Canvas, rng: np.random.Generator) -> None:
    figures = []
    for value, n, cx in ((1, 3, rng.uniform(0.25, 0.28)), (2, 4, rng.uniform(0.72, 0.75))):
        cy, radius = rng.uniform(0.35, 0.65), rng.uniform(0.12, 0.15)
        verts = _ngon(n, cx, cy, radius, rng.uniform(0, 2 * np.pi))
        discs = np.min([cv.dot(vx, vy, 0.4 * radius) for vx, vy in verts], 0)
        figures.append((value, verts, discs))
    for _, _, discs in figures:
        cv.draw(discs)
    for value, verts, _ in figures:
        inside = cv.polygon(verts) <= 0
        cv.erase(inside)  # the pac-men's mouths: the illusory figure has no ink
        cv.label(inside, value)
    for _, verts, discs in figures:
        cv.label((discs <= 0) & (cv.polygon(verts) > 0), 3)


def _connection(cv: _Canvas, rng: np.random.Generator) -> None:
    phi = rng.uniform(0, 2 * np.pi)
    pts = [
        (0.5 + 0.32 * math.cos(phi + k * np.pi / 3), 0.5 + 0.32 * math.sin(phi + k * np.pi / 3))
        for k in range(6)
    ]
    r, margin = 0.035, 0.03
    for pair in range(3):
        a, b = pts[2 * pair], pts[2 * pair + 1]
        sdf = np.minimum(np.minimum(cv.dot(*a, r), cv.dot(*b, r)), cv.segment(a, b))
        cv.draw(sdf)
        cv.label(sdf <= margin, pair + 1)


def _dots_along(curve: Callable[[np.ndarray], tuple], n: int) -> list[tuple[float, float]]:
    t = np.linspace(0.05, 0.95, n)
    xs, ys = curve(t)
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def _continuity(cv: _Canvas, rng: np.random.Generator) -> None:
    a1, f1, p1 = rng.uniform(0.1, 0.2), rng.uniform(0.6, 1.2), rng.uniform(0, 2 * np.pi)
    a2, f2, p2 = rng.uniform(0.1, 0.2), rng.uniform(0.6, 1.2), rng.uniform(0, 2 * np.pi)
    across = _dots_along(lambda t: (t, 0.5 + a1 * np.sin(2 * np.pi * f1 * t + p1)), 18)
    down = _dots_along(lambda t: (0.5 + a2 * np.sin(2 * np.pi * f2 * t + p2), t), 18)
    r, margin = 0.014, 0.012
    for value, dots in ((1, across), (2, down)):
        sdf = np.min([cv.dot(x, y, r) for x, y in dots], 0)
        cv.draw(sdf)
        cv.label(sdf <= margin, value)


def _grid_dots(n: int) -> np.ndarray:
    c = np.linspace(0.12, 0.88, n)
    return np.stack(np.meshgrid(c, c, indexing="ij"), -1)  # [n, n, 2] as (y, x)


def _enclosure(cv: _Canvas, rng: np.random.Generator) -> None:
    n, r = 6, 0.025
    grid = _grid_dots(n)
    step = grid[1, 0, 0] - grid[0, 0, 0]
    while True:  # two 2 x 2 blocks of dots with at least one free row or column between them
        (i1, j1), (i2, j2) = rng.integers(0, n - 1, (2, 2))
        if max(abs(int(i1) - int(i2)), abs(int(j1) - int(j2))) >= 3:
            break
    dots = np.min([cv.dot(x, y, r) for y, x in grid.reshape(-1, 2)], 0)
    cv.draw(dots)
    cv.label(dots <= 0.01, 3)
    for value, (i, j) in ((1, (i1, j1)), (2, (i2, j2))):
        y0, x0 = grid[i, j] - 0.45 * step
        y1, x1 = grid[i + 1, j + 1] + 0.45 * step
        box = np.maximum(np.maximum(y0 - cv.y, cv.y - y1), np.maximum(x0 - cv.x, cv.x - x1))
        cv.draw(np.abs(box) - cv.lw / 2)
        cv.label(box <= cv.lw / 2, value)


def _proximity(cv: _Canvas, rng: np.random.Generator) -> None:
    spacing, r, margin = 0.05, 0.014, 0.03
    centres: list[np.ndarray] = []
    while len(centres) < 3:
        c = rng.uniform(0.2, 0.8, 2)
        if all(np.hypot(*(c - o)) >= 0.36 for o in centres):
            centres.append(c)
    offsets = (np.arange(3) - 1) * spacing
    for value, (cx, cy) in enumerate(centres, 1):
        jitter = rng.uniform(-0.006, 0.006, (3, 3, 2))
        sdf = np.min(
            [
                cv.dot(cx + dx + jitter[i, j, 0], cy + dy + jitter[i, j, 1], r)
                for i, dx in enumerate(offsets)
                for j, dy in enumerate(offsets)
            ],
            0,
        )
        cv.draw(sdf)
        cv.label(sdf <= margin, value)


def _similarity(cv: _Canvas, rng: np.random.Generator) -> None:
    n, r = 6, 0.03
    pts = _grid_dots(n).reshape(-1, 2)
    red = rng.permutation(len(pts)) < len(pts) // 2
    for value, colour, sel in ((1, RED, red), (2, BLUE, ~red)):
        sdf = np.min([cv.dot(x, y, r) for y, x in pts[sel]], 0)
        cv.draw(sdf, colour)
        cv.label(sdf <= 0.01, value)


_DRAW = {
    "closure": _closure,
    "kanizsa": _kanizsa,
    "connection": _connection,
    "continuity": _continuity,
    "enclosure": _enclosure,
    "proximity": _proximity,
    "similarity": _similarity,
}


def gestalt_stimulus(
    principle: str, size: int = 224, seed: int = 0, index: int = 0, noise: float = 0.03
) -> Stimulus:
    """One stimulus of a principle, a pure function of (principle, size, seed, index, noise).

    Args:
        principle: one of PRINCIPLES.
        size: image side in pixels (>= 8); the layout is in relative units, so any size.
        seed, index: the item (layouts are drawn from numpy's generator seeded with both).
        noise: standard deviation of the pixel noise on paper and ink (0: none).
    """
    if principle not in _DRAW:
        raise ValueError(f"principle: expected one of {PRINCIPLES}, got {principle!r}")
    cv = _Canvas(int(size))
    layout = np.random.default_rng([int(seed), PRINCIPLES.index(principle), int(index), 0])
    _DRAW[principle](cv, layout)
    pixels = np.random.default_rng([int(seed), PRINCIPLES.index(principle), int(index), 1])
    return cv.finish(pixels, noise, principle)


class GestaltDataset:
    """`n` stimuli per principle as segmentation items (like VOCSegmentation's).

    Item i is (image float [3, size, size] in [0, 1], labels int64 [size, size], name
    "<principle>_<index>"), principles in PRINCIPLES order.
    """

    def __init__(
        self,
        principles: str | tuple[str, ...] | list[str] = PRINCIPLES,
        n: int = 8,
        size: int = 224,
        seed: int = 0,
        noise: float = 0.03,
    ) -> None:
        self.principles = (principles,) if isinstance(principles, str) else tuple(principles)
        for p in self.principles:
            if p not in _DRAW:
                raise ValueError(f"principle: expected one of {PRINCIPLES}, got {p!r}")
        if n < 1:
            raise ValueError(f"n: expected >= 1 stimulus per principle, got {n}")
        self.n, self.size, self.seed, self.noise = int(n), int(size), int(seed), float(noise)

    def __len__(self) -> int:
        return self.n * len(self.principles)

    def stimulus(self, i: int) -> Stimulus:
        p, j = self.principles[i // self.n], i % self.n
        return gestalt_stimulus(p, self.size, self.seed, j, self.noise)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        s = self.stimulus(i)
        return torch.from_numpy(s.image), torch.from_numpy(s.labels), f"{s.principle}_{i % self.n}"

"""Texture families: fbm / domain-warped noise, Voronoi, periodic patterns and tunnels."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from procvision.data.shaders.colour import colour
from procvision.data.shaders.family import Family
from procvision.data.shaders.ops import (
    TAU,
    atan2,
    branch,
    clamp01,
    col,
    dispatch,
    fbm,
    fract,
    hash_unit,
    lattice_hash,
    length,
    modp,
    rotate,
    sel,
    sel_dict,
    smoothstep,
    to_lattice,
    tri,
    value_noise,
)
from procvision.data.shaders.spec import C, F, I, L

# --- 5. fbm and domain-warped noise (integer-lattice hashing)

_OCT_MAX = 6
NOISE_VARIANTS = ("fbm", "ridged", "turbulence", "warp", "warp2", "marble", "wood")

NOISE_SPECS = (
    C("variant", NOISE_VARIANTS),
    I("octaves", 3, _OCT_MAX),
    F("gain", 0.4, 0.65),
    F("lacunarity", 1.8, 2.3),
    L("scale", 1.5, 6.0),
    F("flow", -0.5, 0.5, 2),
    L("warp_k", 1.0, 4.0),
    L("freq", 2.0, 12.0),
    L("contrast", 1.2, 3.0),
    I("salt", 0, 1 << 30),
)


_PLAIN_KINDS = (0, 1, 2, 5, 6)  # variants made of one fbm call (mode per row)


def _noise(k: int, p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> Tensor:
    """Variant group k for m programs: 0 = the one-fbm variants (fbm, ridged, turbulence, marble,
    wood; each row picks its own with `branch`), 3 = warp, 4 = warp2."""
    sc = col(p["scale"])
    x = x * sc + col(p["flow"][:, 0]) * t
    y = y * sc + col(p["flow"][:, 1]) * t
    salt = col(p["salt"])
    octv = col(p["octaves"]).to(x.dtype)
    g, lac = col(p["gain"]), col(p["lacunarity"])
    drift = 0.05 * t
    var = col(p["variant"])

    def f(a: Tensor, b: Tensor, s: int, oc: Tensor) -> Tensor:
        return fbm(a, b, salt + s, oc, _OCT_MAX, g, lac, drift)

    if k in (3, 4):
        oc = octv.clamp_max(4.0)  # warps call fbm 3 or 5 times: fewer octaves keep cost down
        wk = col(p["warp_k"])
        qx, qy = f(x, y, 0, oc=oc), f(x + 5.2, y + 1.3, 1, oc=oc)
        if k == 4:
            rx = f(x + wk * qx + 1.7, y + wk * qy + 9.2, 2, oc=oc)
            ry = f(x + wk * qx + 8.3, y + wk * qy + 2.8, 3, oc=oc)
            qx, qy = rx, ry
        v = f(x + wk * qx, y + wk * qy, 4, oc=oc) + 0.3 * (length(qx, qy) - 0.7)
    else:
        # marble (5) and wood (6) shade a plain fbm
        mode = torch.where(var >= 5, 0, var)
        n = fbm(x, y, salt, octv, _OCT_MAX, g, lac, drift, mode)
        kinds = {
            0: lambda: n,
            5: lambda: 0.5 + 0.5 * torch.sin(col(p["freq"]) * (x + 2.0 * n)),
            6: lambda: fract(col(p["freq"]) * (length(x, y) * 0.3 + 0.4 * n)),
        }
        v = branch(torch.where(var < 5, 0, var), 7, kinds)
    return 0.5 + (v - 0.5) * col(p["contrast"])


def render_noise(prm: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor, px: float) -> Tensor:
    """Value-noise fbm, ridged, turbulence, IQ domain warping, marble and wood."""
    del px

    def run(k: int, idx: Tensor | None) -> Tensor:
        return _noise(k, sel_dict(prm, idx), sel(x, idx), sel(y, idx), sel(t, idx))

    var = prm["variant"]
    group = torch.where((var == 3) | (var == 4), var, 0)  # one group for all one-fbm variants
    return colour(prm, dispatch(group, len(NOISE_VARIANTS), run), t)


NOISE = Family("noise", NOISE_SPECS, render_noise, "fbm and domain-warped value noise")

# --- 6. Voronoi / Worley

VORONOI_SPECS = (
    C("mode", ("cells", "edges", "f1", "f2", "crackle")),
    L("scale", 2.0, 8.0),
    F("jitter", 0.5, 1.0),
    F("speed", 0.2, 2.0),
    C("metric", ("euclid", "manhattan", "chebyshev"), (3.0, 1.0, 1.0)),
    L("width", 0.02, 0.15),
    F("hue_step", 0.3, 1.0),
    F("drift", -0.5, 0.5, 2),
    I("salt", 0, 1 << 30),
)


def render_voronoi(prm: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor, px: float) -> Tensor:
    """Jittered-lattice Voronoi with animated points: cells, edges, F1, F2 or F2 - F1."""
    del px
    sc = col(prm["scale"])
    x = x * sc + col(prm["drift"][:, 0]) * t
    y = y * sc + col(prm["drift"][:, 1]) * t
    ix, iy = to_lattice(x), to_lattice(y)
    fx, fy = x - ix.to(x.dtype), y - iy.to(y.dtype)
    salt, jit, w = col(prm["salt"]), col(prm["jitter"]), col(prm["speed"]) * t
    metric = col(prm["metric"])
    f1 = torch.full_like(x, 8.0)
    f2 = torch.full_like(x, 8.0)
    cid = torch.zeros_like(x)
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            h = lattice_hash(ix + ox, iy + oy, salt)
            hx = (h & 0xFFFF).to(x.dtype) * (1.0 / 65536.0)
            hy = ((h >> 16) & 0xFFFF).to(x.dtype) * (1.0 / 65536.0)
            dx = ox + 0.5 + 0.5 * jit * torch.sin(w + TAU * hx) - fx
            dy = oy + 0.5 + 0.5 * jit * torch.sin(0.8 * w + TAU * hy) - fy
            d = torch.where(
                metric == 0,
                length(dx, dy),
                torch.where(
                    metric == 1, (dx.abs() + dy.abs()) * 0.7, torch.maximum(dx.abs(), dy.abs())
                ),
            )
            closer = d < f1
            f2 = torch.where(closer, f1, torch.minimum(f2, d))
            cid = torch.where(closer, hx + hy, cid)
            f1 = torch.minimum(f1, d)
    mode = col(prm["mode"])
    edge = f2 - f1
    wd = col(prm["width"])
    cell_rgb = colour(prm, cid * col(prm["hue_step"]), t)
    v = torch.where(mode == 2, f1, torch.where(mode == 3, f2 * 0.7, 3.0 * edge))
    field_rgb = colour(prm, v, t)
    bright = torch.where(
        mode == 0,
        smoothstep(0.0, wd, edge),
        torch.where(
            mode == 1,
            0.2 + torch.exp(-edge / wd),
            torch.where(mode == 4, clamp01(edge * 3 + 0.2), 1.0 - 0.5 * f1),
        ),
    )
    rgb = torch.where(
        (mode == 0)[:, None], cell_rgb * (0.35 + 0.65 * (1 - f1 * 0.6))[:, None], field_rgb
    )
    return rgb * bright[:, None]


VORONOI = Family("voronoi", VORONOI_SPECS, render_voronoi, "Voronoi / Worley cells")

# --- 7. periodic patterns

PATTERNS = ("plasma", "stripes", "zigzag", "checker", "grid", "truchet", "moire", "rings", "spiral")

PERIODIC_SPECS = (
    C("variant", PATTERNS),
    L("freq", 2.0, 12.0),
    F("speed", -2.0, 2.0),
    F("angle", 0.0, TAU),
    F("k", 0.5, 2.5, 4),
    F("w", -2.0, 2.0, 4),
    F("phase", 0.0, TAU, 4),
    F("dir", 0.0, TAU, 4),
    C("edge", ("smooth", "hard")),
    L("width", 0.05, 0.4),
    I("arms", 1, 8),
    L("tight", 2.0, 10.0),
    F("ratio", 0.85, 1.15),
    I("salt", 0, 1 << 30),
)


def _pattern(k: int, p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> Tensor:
    """Pattern kind k -> field in [0, 1] for m programs."""
    f, sp, wd = col(p["freq"]), col(p["speed"]) * t, col(p["width"])
    x, y = rotate(x, y, col(p["angle"]))
    if k == 0:
        v = torch.zeros_like(x)
        for i in range(4):
            kk, dd = col(p["k"][:, i]) * f * 0.5, col(p["dir"][:, i])
            arg = torch.cos(dd) * x + torch.sin(dd) * y if i < 3 else length(x, y)
            v = v + torch.sin(kk * arg + col(p["w"][:, i]) * t + col(p["phase"][:, i]))
        return 0.5 + 0.125 * v
    if k == 1:
        return 0.5 + 0.5 * torch.sin(f * math.pi * x + sp)
    if k == 2:
        return tri(0.5 * f * (y + 2.0 * tri(0.5 * f * x) / f) + 0.1 * sp)
    if k == 3:
        ax = 0.5 + 0.5 * torch.sin(math.pi * f * 0.5 * x + sp)
        ay = 0.5 + 0.5 * torch.sin(math.pi * f * 0.5 * y)
        return ax * ay + (1 - ax) * (1 - ay)
    if k == 4:
        gx, gy = (fract(f * 0.5 * x + 0.1 * sp) - 0.5).abs(), (fract(f * 0.5 * y) - 0.5).abs()
        return smoothstep(wd * 0.5, 0.0, torch.minimum(gx, gy))
    if k == 5:
        qx, qy = f * 0.5 * x + 0.1 * sp, f * 0.5 * y
        ix, iy = to_lattice(qx), to_lattice(qy)
        flip = hash_unit(lattice_hash(ix, iy, col(p["salt"]))) < 0.5
        lx, ly = qx - ix.to(x.dtype) - 0.5, qy - iy.to(y.dtype) - 0.5
        lx = torch.where(flip, -lx, lx)
        d = torch.minimum(length(lx - 0.5, ly - 0.5), length(lx + 0.5, ly + 0.5))
        return smoothstep(wd * 0.5, 0.0, (d - 0.5).abs())
    if k == 6:
        c = 0.3 * torch.sin(0.3 * sp)
        r1, r2 = length(x - c, y), length(x + c, y + 0.1)
        return 0.5 + 0.25 * (torch.sin(f * 4 * r1) + torch.sin(f * 4 * col(p["ratio"]) * r2))
    if k == 7:
        return 0.5 + 0.5 * torch.sin(f * math.pi * length(x, y) - sp)
    a = atan2(y, x)
    r = length(x, y).clamp_min(1e-4)
    return 0.5 + 0.5 * torch.sin(
        col(p["tight"]) * torch.log(r) + col(p["arms"]).to(x.dtype) * a - sp
    )


def render_periodic(prm: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor, px: float) -> Tensor:
    """Plasma, stripes, zig-zags, checkers, grids, truchet arcs, moire, rings, log-spirals."""
    del px

    def run(k: int, idx: Tensor | None) -> Tensor:
        return _pattern(k, sel_dict(prm, idx), sel(x, idx), sel(y, idx), sel(t, idx))

    v = dispatch(prm["variant"], len(PATTERNS), run)
    hard = smoothstep(0.45, 0.55, v)
    # Hard edges keep a little of the smooth field, as shaded two-tone patterns do.
    v = torch.where(col(prm["edge"]) == 1, 0.25 + 0.5 * hard + 0.15 * (v - 0.5), v)
    return colour(prm, v, t)


PERIODIC = Family("periodic", PERIODIC_SPECS, render_periodic, "periodic patterns")

# --- 9. tunnels and polar warps

TEXTURES = ("checker", "stripes", "rings", "noise", "grid", "bricks")

TUNNEL_SPECS = (
    C("shape", ("round", "square", "super")),
    L("k", 0.2, 1.0),
    F("speed", 0.3, 2.0),
    F("rot", -1.0, 1.0),
    I("m", 1, 6),
    F("twist", -0.5, 0.5),
    C("texture", TEXTURES),
    F("fog", 0.5, 2.0),
    L("ratio", 0.5, 2.0),
    F("centre", -0.2, 0.2, 2),
    I("salt", 0, 1 << 30),
)


def render_tunnel(prm: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor, px: float) -> Tensor:
    """uv' = (k / r + speed t, angle / pi * m), textured and darkened towards the far end."""
    del px
    x = x - col(prm["centre"][:, 0]) * torch.cos(0.5 * t)
    y = y - col(prm["centre"][:, 1]) * torch.sin(0.4 * t)
    shape = col(prm["shape"])
    x2, y2 = x * x, y * y
    r = torch.where(
        shape == 0,
        torch.sqrt(x2 + y2),
        torch.where(
            shape == 1, torch.maximum(x.abs(), y.abs()), torch.sqrt(torch.sqrt(x2 * x2 + y2 * y2))
        ),
    ).clamp_min(1e-3)
    a = atan2(y, x)
    u = col(prm["k"]) / r + col(prm["speed"]) * t
    m = col(prm["m"]).to(x.dtype)
    v = a / math.pi * m + col(prm["rot"]) * t + col(prm["twist"]) * u
    uu = u * col(prm["ratio"])
    tex = col(prm["texture"])
    checker = (modp(torch.floor(uu * 2) + torch.floor(v * 2), 2.0) - 0.5) * 0.8 + 0.5
    stripes = tri(uu * 2)
    rings = tri(v * 2)
    noise = (
        value_noise(uu * 3, 2 * torch.sin(a) + 7, col(prm["salt"])) * 0.5
        + value_noise(uu * 3 + 11, 2 * torch.cos(a), col(prm["salt"])) * 0.5
    )
    grid = 1 - smoothstep(
        0.0, 0.1, torch.minimum((fract(uu * 2) - 0.5).abs(), (fract(v * 2) - 0.5).abs())
    )
    row = torch.floor(uu * 2)
    bricks = 1 - smoothstep(
        0.0, 0.08, torch.minimum((fract(uu * 2) - 0.5).abs(), (fract(v + 0.5 * row) - 0.5).abs())
    )
    val = torch.where(
        tex == 0,
        checker,
        torch.where(
            tex == 1,
            stripes,
            torch.where(
                tex == 2,
                rings,
                torch.where(tex == 3, 2 * noise - 0.5, torch.where(tex == 4, grid, bricks)),
            ),
        ),
    )
    fog = clamp01(r * col(prm["fog"]) * 1.5)
    return colour(prm, val + 0.05 * u, t) * fog[:, None]


TUNNEL = Family("tunnel", TUNNEL_SPECS, render_tunnel, "tunnels and polar warps")

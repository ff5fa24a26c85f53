"""Geometric 2D families: SDF shapes with domain repetition and glow; glow particles, metaballs."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from procvision.data.shaders.colour import colour
from procvision.data.shaders.family import Family
from procvision.data.shaders.ops import (
    TAU,
    atan2,
    clamp01,
    col,
    dispatch,
    hash_unit,
    lattice_hash,
    length,
    mix,
    modp,
    mul32,
    rotate,
    sel,
    sel_dict,
    smoothstep,
    to_lattice,
    tri,
)
from procvision.data.shaders.spec import C, F, I, L

# --- 3. 2D SDF shapes with domain repetition and glow

SHAPES = ("circle", "box", "roundbox", "ngon", "star", "flower", "ring", "capsule", "heart")

SDF_SPECS = (
    C("rep", ("none", "grid", "polar", "hex"), (0.7, 2.0, 1.2, 1.0)),
    L("cells", 1.2, 5.0),
    I("sectors", 3, 12),
    F("ring", 0.3, 0.8),
    C("shape", SHAPES),
    C("shape2", ("none",) + SHAPES, (9.0,) + (1.0,) * len(SHAPES)),
    C("combine", ("min", "max", "smin", "cut")),
    F("size", 0.22, 0.45),
    F("size2", 0.1, 0.4),
    F("jitter", 0.0, 0.4),
    F("rot_jitter", 0.0, 1.0),
    F("spin", -2.0, 2.0),
    I("n", 3, 8),
    F("inner", 0.35, 0.7),
    F("petal", 0.1, 0.4),
    C("style", ("fill", "outline", "glow", "fill_glow", "bands"), (1.5, 1.0, 1.5, 1.5, 1.0)),
    L("width", 0.015, 0.08),
    L("glow_k", 4.0, 30.0),
    F("hue_step", 0.2, 1.0),
    C("bg", ("black", "dark", "gradient")),
    F("drift", -0.5, 0.5, 2),
    L("zoom", 0.7, 2.0),
    I("salt", 0, 1 << 30),
)


def _shape(k: int, p: dict[str, Tensor], x: Tensor, y: Tensor, s: Tensor) -> Tensor:
    """Signed distance of shape kind k (in SHAPES) with radius about s; all [m, H, W]."""
    r = length(x, y)
    n = col(p["n"]).to(x.dtype)
    if k == 0:
        return r - s
    if k in (1, 2):
        b = s * (0.8 if k == 1 else 0.55)
        qx, qy = x.abs() - b, y.abs() - b
        d = length(qx.clamp_min(0), qy.clamp_min(0)) + torch.maximum(qx, qy).clamp_max(0)
        return d if k == 1 else d - 0.3 * s
    a = atan2(y, x)
    if k == 3:
        sec = TAU / n
        return torch.cos(torch.floor(0.5 + a / sec) * sec - a) * r - s * torch.cos(math.pi / n)
    if k == 4:
        edge = s * mix(torch.ones_like(a), col(p["inner"]), tri(a * n / TAU))
        return (r - edge) * 0.7
    if k == 5:
        pet = col(p["petal"])
        return (r - s * (1.0 + pet * torch.cos(n * a)) / (1.0 + pet)) * 0.8
    if k == 6:
        return (r - s).abs() - 0.2 * s
    if k == 7:
        return length(x - x.clamp(-s, s), y) - 0.3 * s
    # heart (after Inigo Quilez's exact heart SDF), scaled to radius s and centred
    hx, hy = x.abs() / (1.6 * s), y / (1.6 * s) + 0.55
    upper = length(hx - 0.25, hy - 0.75) - math.sqrt(2.0) / 4.0
    m = (hx + hy).clamp_min(0) * 0.5
    lower = torch.sqrt(torch.minimum(hx * hx + (hy - 1) ** 2, (hx - m) ** 2 + (hy - m) ** 2))
    lower = lower * torch.sign(hx - hy)
    return torch.where(hx + hy > 1.0, upper, lower) * 1.6 * s


def _repeat(k: int, p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor):
    """Domain repetition kind k -> (local x, local y, cell id x, cell id y, local units per uv)."""
    zoom = col(p["zoom"])
    if k == 0:  # a single, larger shape
        z = 0.45 * zoom
        return x * z, y * z, torch.zeros_like(x), torch.zeros_like(y), z
    if k == 1:
        n = col(p["cells"]) * zoom
        qx, qy = x * n + col(p["drift"][:, 0]) * t, y * n + col(p["drift"][:, 1]) * t
        ix, iy = torch.floor(qx), torch.floor(qy)
        return qx - ix - 0.5, qy - iy - 0.5, ix, iy, n
    if k == 2:
        n = col(p["sectors"]).to(x.dtype)
        sec = TAU / n
        a = atan2(y, x) + 0.1 * col(p["spin"]) * t
        r = length(x, y) * zoom
        ring = col(p["ring"])
        cell = torch.floor(a / sec)
        aa = (a / sec - cell - 0.5) * sec
        unit = 1.0 / (ring * sec).clamp(0.15, 1.0)
        lx, ly = (r * torch.cos(aa) - ring) * unit, r * torch.sin(aa) * unit
        return lx, ly, modp(cell, n), torch.floor((r - ring) * unit + 0.5), unit * zoom
    # hexagonal tiling: nearest of two offset rectangular lattices
    n = col(p["cells"]) * zoom
    qx, qy = x * n + col(p["drift"][:, 0]) * t, y * n
    sy = math.sqrt(3.0)
    ax, ay = torch.floor(qx) + 0.5, torch.floor(qy / sy) + 0.5
    bx, by = torch.floor(qx - 0.5) + 0.5, torch.floor((qy - sy / 2) / sy) + 0.5
    hx, hy = qx - ax, qy - ay * sy
    gx, gy = qx - (bx + 0.5), qy - (by + 0.5) * sy
    first = hx * hx + hy * hy < gx * gx + gy * gy
    lx, ly = torch.where(first, hx, gx), torch.where(first, hy, gy)
    ix = torch.where(first, ax, bx + 0.5) * 2
    iy = torch.where(first, ay, by + 0.5) * 2
    return lx / sy * 2 * 0.5, ly / sy * 2 * 0.5, ix, iy, n / sy


def render_sdf2d(prm: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor, px: float) -> Tensor:
    """Repeated 2D shapes, each cell hashed to its own rotation, size and colour."""

    def rep(k: int, idx: Tensor | None) -> Tensor:
        out = _repeat(k, sel_dict(prm, idx), sel(x, idx), sel(y, idx), sel(t, idx))
        return torch.stack(torch.broadcast_tensors(*out), 1)

    lx, ly, ix, iy, unit = dispatch(prm["rep"], 4, rep).unbind(1)
    h = lattice_hash(to_lattice(ix), to_lattice(iy), col(prm["salt"]))
    h1 = hash_unit(h)
    h2 = hash_unit(mul32(h, 0x9E3779B1))
    ang = col(prm["rot_jitter"]) * TAU * h1 + col(prm["spin"]) * t
    lx, ly = rotate(lx, ly, ang)
    s = col(prm["size"]) * (1.0 + col(prm["jitter"]) * (2.0 * h2 - 1.0))

    def shape(key: str, size: Tensor):
        def run(k: int, idx: Tensor | None) -> Tensor:
            if key == "shape2" and k == 0:
                return torch.full_like(sel(lx, idx), 1e3)
            kk = k - 1 if key == "shape2" else k
            return _shape(kk, sel_dict(prm, idx), sel(lx, idx), sel(ly, idx), sel(size, idx))

        return dispatch(prm[key], len(SHAPES) + (key == "shape2"), run)

    d1 = shape("shape", s)
    s2 = col(prm["size2"]) * (1.0 + col(prm["jitter"]) * (2.0 * h2 - 1.0))
    ox = 0.25 * col(prm["size"])  # second shape slightly offset so cuts show
    lx = lx - ox
    d2 = shape("shape2", s2)
    comb = col(prm["combine"])
    hk = clamp01(0.5 + 0.5 * (d2 - d1) / 0.1)
    smin = mix(d2, d1, hk) - 0.1 * hk * (1.0 - hk)
    d = torch.where(
        comb == 0,
        torch.minimum(d1, d2),
        torch.where(
            comb == 1, torch.maximum(d1, -d2), torch.where(comb == 2, smin, torch.maximum(d1, -d2))
        ),
    )
    d = torch.where(col(prm["shape2"]) == 0, d1, d)
    aa = px * unit
    w = col(prm["width"])
    glow = torch.exp(-col(prm["glow_k"]) * d.clamp_min(0))
    fill = smoothstep(aa, -aa, d)
    line = smoothstep(w + aa, w - aa, d.abs())
    style = col(prm["style"])
    m = torch.where(style == 0, fill, torch.where(style == 1, line, glow))
    m = torch.where(style == 3, clamp01(fill + 0.7 * glow), m)
    bands = 0.5 + 0.5 * torch.cos(d * col(prm["glow_k"]) * 4.0)
    cell_v = col(prm["hue_step"]) * hash_unit(mul32(h, 0x85EBCA6B))
    # A soft gradient inside each shape (real shaders rarely fill with one flat colour).
    inner = clamp01(-d / s.clamp_min(1e-3))
    v = torch.where(style == 4, cell_v + 0.15 * d * col(prm["glow_k"]), cell_v + 0.12 * inner)
    m = torch.where(style == 4, mix(bands, torch.ones_like(bands), fill), m)
    fg = colour(prm, v, t) * (0.8 + 0.2 * inner)[:, None]
    bgk = col(prm["bg"])
    bgv = torch.where(bgk == 2, 0.5 + 0.5 * y, torch.full_like(y, 0.5))
    bg = (
        colour(prm, bgv + 0.37, t)
        * torch.where(bgk == 0, 0.0, torch.where(bgk == 1, 0.15, 0.45))[:, None]
    )
    return fg * m[:, None] + bg * (1.0 - m[:, None])


SDF2D = Family("sdf_shapes", SDF_SPECS, render_sdf2d, "2D SDF shapes, repetition, glow")

# --- 10. glow particles and metaballs

_PMAX = 12

PARTICLE_SPECS = (
    C("mode", ("glow", "metaballs", "rings")),
    I("count", 3, _PMAX),
    F("ax", 0.3, 0.9),
    F("ay", 0.3, 0.9),
    F("fx", 0.2, 1.5, _PMAX),
    F("fy", 0.2, 1.5, _PMAX),
    F("px", 0.0, TAU, _PMAX),
    F("py", 0.0, TAU, _PMAX),
    F("hue", 0.0, 1.0, _PMAX),
    L("size", 0.04, 0.18),
    F("size_j", 0.5, 1.5, _PMAX),
    L("gain", 0.5, 3.0),
    F("thresh", 0.8, 1.5),
)


def render_particles(prm: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor, px: float) -> Tensor:
    """Particles on Lissajous paths: additive glow, thresholded metaballs or glowing rings."""
    tt = t.reshape(-1, 1)
    cx = prm["ax"][:, None] * torch.sin(prm["fx"] * tt + prm["px"])  # [B, P]
    cy = prm["ay"][:, None] * torch.sin(prm["fy"] * tt + prm["py"])
    on = (torch.arange(_PMAX, device=x.device) < prm["count"][:, None]).to(x.dtype)
    r = prm["size"][:, None] * prm["size_j"] * on  # [B, P]
    pcol = colour(prm, prm["hue"], t)  # [B, 3, P]
    mode = col(prm["mode"])
    acc = torch.zeros(x.shape[0], 3, *x.shape[1:], device=x.device)
    field = torch.zeros_like(x)
    hue = torch.zeros_like(x)
    for i in range(_PMAX):
        ddx, ddy = x - col(cx[:, i]), y - col(cy[:, i])
        d2 = ddx * ddx + ddy * ddy
        ri = col(r[:, i])
        w_glow = ri * ri / (d2 + 1e-4)
        w_ring = torch.exp(-((torch.sqrt(d2) - 3.0 * ri).abs()) / (0.3 * ri + 0.01)) * col(on[:, i])
        w = torch.where(mode == 2, w_ring, w_glow)
        acc = acc + pcol[:, :, i, None, None] * w[:, None]
        field = field + w_glow
        hue = hue + w_glow * col(prm["hue"][:, i])
    gain = col(prm["gain"])
    glow = 1.0 - torch.exp(-acc * gain[:, None] * 2.0)
    f = field * 25.0  # size^2 / d^2 summed: 1 at 5 radii from a single particle
    thr = col(prm["thresh"])
    inside = smoothstep(thr * 0.95, thr * 1.05, f)
    ball = colour(prm, hue / field.clamp_min(1e-9) + 0.2 * clamp01(f - thr), t)
    halo = 1.0 - torch.exp(-f * gain * 0.3)
    meta = ball * inside[:, None] + 0.35 * ball * (halo * (1 - inside))[:, None]
    return torch.where((mode == 1)[:, None], meta, glow)


PARTICLES = Family("particles", PARTICLE_SPECS, render_particles, "glow particles and metaballs")

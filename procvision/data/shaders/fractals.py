"""Fractal families: kaleidoscopic inversion folds, volumetric fold raymarchers, escape-time sets."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from procvision.data.shaders.colour import colour
from procvision.data.shaders.family import Family
from procvision.data.shaders.ops import (
    TAU,
    col,
    count_range,
    dispatch,
    image_mean,
    length,
    present,
    rotate,
    sel,
    sel_dict,
)
from procvision.data.shaders.spec import C, F, I, L

# --- 1. kaleidoscopic inversion fold: p = abs(p) / dot(p, p) - c(t) (TwiGL's canonical shader)

_FOLD_MAX = 12
_PATTERNS = ((0, 0, 1), (0, 1, 0), (1, 0, 0), (1, 1, 0), (1, 0, 1), (0, 1, 1))  # xxy, xyx, ...

KALEIDO_SPECS = (
    I("iters", 4, _FOLD_MAX),
    F("c0", 0.35, 1.1, 2),
    C("c_mode", ("equal", "free")),
    F("amp", 0.0, 0.35, 2),
    F("omega", 0.1, 0.8, 2),
    F("phase", 0.0, TAU, 2),
    L("zoom", 0.5, 1.8),
    C("colouring", ("direct", "length", "trap"), (1.2, 1.0, 1.0)),
    I("pattern", 0, 5),
    L("gain", 0.6, 2.0),
)


def render_kaleido(prm: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor, px: float) -> Tensor:
    """Iterated abs-inversion fold; colour from the final point, its length or an orbit trap."""
    del px
    c0 = prm["c0"]
    c0y = torch.where(prm["c_mode"] == 0, c0[:, 0], c0[:, 1])
    ph = prm["omega"] * t.reshape(-1, 1) + prm["phase"]
    cx = col(c0[:, 0] + prm["amp"][:, 0] * torch.cos(ph[:, 0]))
    cy = col(c0y + prm["amp"][:, 1] * torch.cos(ph[:, 1]))
    z = col(prm["zoom"])
    x, y = x * z, y * z
    iters = col(prm["iters"])
    trap = torch.full_like(x, 1e4)
    for i in range(_FOLD_MAX):
        d = (x * x + y * y).clamp_min(1e-8)
        nx, ny = x.abs() / d - cx, y.abs() / d - cy
        on = iters > i
        x, y = torch.where(on, nx, x), torch.where(on, ny, y)
        trap = torch.where(on, torch.minimum(trap, nx * nx + ny * ny), trap)
    gain = col(prm["gain"])

    def shade(k: int, idx: Tensor | None) -> Tensor:
        xs, ys, g = sel(x, idx), sel(y, idx), sel(gain, idx)
        sub = sel_dict(prm, idx)
        ts = sel(t, idx)
        if k == 0:
            pat = torch.tensor(_PATTERNS, device=x.device)[sub["pattern"]]  # [m, 3]
            xy = torch.stack([xs, ys], 1) * g[:, None]
            return torch.gather(xy, 1, pat.reshape(-1, 3, 1, 1).expand(-1, -1, *xs.shape[1:]))
        if k == 1:
            return colour(sub, 0.5 * g * length(xs, ys), ts)
        v = torch.exp(-2.0 * g * torch.sqrt(sel(trap, idx)))
        return colour(sub, v, ts) * v[:, None]

    return dispatch(prm["colouring"], 3, shade)


KALEIDO = Family("kaleido_fold", KALEIDO_SPECS, render_kaleido, "abs(p)/dot(p,p) - c(t) folds")

# --- 2. volumetric fold raymarcher (the TwiGL "for(float i,g,e,s;++i<N.;)" idiom)

_STEPS_MAX, _INNER_MAX = 18, 6

VOLUME_SPECS = (
    I("steps", 12, _STEPS_MAX),
    I("folds", 4, _INNER_MAX),
    F("C", 0.5, 3.0, 3),
    F("D", 0.5, 4.0, 3),
    L("k", 1.0, 10.0),
    F("emin", 0.5, 1.0),
    L("s0", 1.0, 4.0),
    C("f", ("modlen", "y2", "dist")),
    L("zoom", 0.5, 1.5),
    F("z0", -3.0, -0.5),
    F("g0", 0.2, 1.0),
    C("plane", ("xz", "yz", "xy")),
    F("spin", -0.8, 0.8),
    F("hue_g", -2.0, 2.0),
    F("hue_i", -0.1, 0.1),
    L("glow", 0.5, 2.0),
    L("exposure", 0.5, 3.0),
)


def render_volume(prm: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor, px: float) -> Tensor:
    """March rays through an abs-fold fractal, accumulating glow where the fold distance is small.

    Loops run to the largest step / fold count of the batch; a row past its own count keeps its
    values exactly (masked with `where`), so an image does not depend on its batch.
    """
    del px
    c = [col(prm["C"][:, j]) for j in range(3)]
    d = [col(prm["D"][:, j]) for j in range(3)]
    k, emin, s0 = col(prm["k"]), col(prm["emin"]), col(prm["s0"])
    zoom, z0, plane = col(prm["zoom"]), col(prm["z0"]), col(prm["plane"])
    steps, folds, f = col(prm["steps"]), col(prm["folds"]), col(prm["f"])
    ang = col(prm["spin"]) * t
    # The ray point q = (x g zoom, y g zoom, g + z0) rotated in the program's plane (0: xz,
    # 1: yz, 2: xy) is linear in g: p = g * A + B with per-pixel A and per-program B.
    cs, sn = torch.cos(ang), torch.sin(ang)
    one, zero = torch.ones_like(cs), torch.zeros_like(cs)
    rows = {  # rotation matrix rows (as [B, 1, 1] entries) per plane
        0: ((cs, zero, -sn), (zero, one, zero), (sn, zero, cs)),
        1: ((one, zero, zero), (zero, cs, -sn), (zero, sn, cs)),
        2: ((cs, -sn, zero), (sn, cs, zero), (zero, zero, one)),
    }
    m = [
        [torch.where(plane == 1, rows[1][r][q], torch.where(plane == 2, rows[2][r][q], rows[0][r][q]))
         for q in range(3)]
        for r in range(3)
    ]  # fmt: skip
    xz, yz = x * zoom, y * zoom
    a_ = [torch.addcmul(torch.addcmul(m[r][2], xz, m[r][0]), yz, m[r][1]) for r in range(3)]
    b_ = [m[r][2] * z0 for r in range(3)]
    nd = [-dq for dq in d]
    glow2, hue_g, hue_i = 2.0 * col(prm["glow"]), col(prm["hue_g"]), col(prm["hue_i"])
    s_lo, s_hi = count_range(prm["steps"])
    f_lo, f_hi = count_range(prm["folds"])
    kinds = present(f, 3)
    # Rays start a little way out so that pixels differ from the first step.
    g = col(prm["g0"]).expand_as(x).contiguous()
    acc = torch.zeros_like(x)  # sum of glow weights
    hue = torch.zeros_like(x)  # glow-weighted sum of hues
    for i in range(s_hi):
        p = [torch.addcmul(b_[q], g, a_[q]) for q in range(3)]
        s = s0.expand_as(x).contiguous()
        for j in range(f_hi):
            e = torch.addcmul(p[1] * p[1], p[0], p[0]).addcmul_(p[2], p[2]).clamp_min_(1e-6)
            e = torch.div(k, e, out=e)
            e = torch.maximum(e, emin, out=e)
            new = []
            for q in range(3):
                v = torch.addcmul(nd[q], p[q].abs(), e).abs_()
                new.append(torch.sub(c[q], v, out=v))
            if j < f_lo:
                s, p = s.mul_(e), new
            else:
                on = folds > j
                s = torch.where(on, s * e, s)
                p = [torch.where(on, new[q], p[q]) for q in range(3)]
        dist = []
        if 0 in kinds:
            py = torch.where(p[1].abs() < 1e-3, 1e-3, p[1])
            dist.append(torch.remainder(length(p[0], p[2]), py.abs()))
        if 1 in kinds:
            dist.append(p[1] * p[1])
        if 2 in kinds:
            dist.append(length(p[0] - p[1], p[2] - p[0]))
        dd = dist[-1]
        for kk, v in zip(reversed(kinds[:-1]), reversed(dist[:-1]), strict=True):
            dd = torch.where(f == kk, v, dd)
        dd = dd.div_(s) if len(kinds) > 1 or dd is not p[1] else dd / s
        # Distances relative to the image's mean: fold scales vary over orders of magnitude
        # between programs, and this keeps every program's glow and step sizes in range.
        rel = dd.div_(image_mean(dd).clamp_min(1e-30))
        gn = (0.1 * rel).clamp_(0.01, 0.5).add_(g)
        w = (rel * glow2).square_().add_(1.0).reciprocal_()
        if i >= s_lo:
            on = steps > i
            gn = torch.where(on, gn, g)
            w = torch.where(on, w, 0.0)
        g = gn
        acc.add_(w)
        hue.addcmul_(w, torch.addcmul(i * hue_i, g, hue_g))
    v = hue / acc.clamp_min(1e-6)
    # Exposure relative to the image's mean glow: structure stays visible however dense the fold.
    a = acc / image_mean(acc).clamp_min(1e-6)
    light = 1.0 - torch.exp(-a * a * col(prm["exposure"]) * 0.5)
    return colour(prm, v, t) * light[:, None]


VOLUME = Family("fold_volume", VOLUME_SPECS, render_volume, "TwiGL volumetric fold raymarcher")

# --- 8. escape-time fractals

_ESC_MAX = 64

ESCAPE_SPECS = (
    C("set", ("mandelbrot", "julia", "burning_ship", "multibrot3", "tricorn"), (3, 3, 1, 1.5, 1)),
    I("iters", 32, _ESC_MAX),
    F("theta", 0.0, TAU),
    C("bulb", ("cardioid", "period2")),
    L("width", 0.02, 1.2),
    L("jwidth", 0.6, 1.6),
    F("off", -0.5, 0.5, 2),
    F("eps", -0.04, 0.04),
    F("spin", -0.2, 0.2),
    F("breathe", 0.0, 0.4),
    F("omega", 0.1, 1.0),
    L("cfreq", 0.05, 0.3),
    C("interior", ("black", "trap")),
)

_SHIP_ANCHORS = ((-1.7625, -0.028), (-1.94, -0.002), (-0.45, -0.6), (-1.25, -0.45))


def _boundary(theta: Tensor, bulb: Tensor) -> tuple[Tensor, Tensor]:
    """A point on the Mandelbrot set's main cardioid or period-2 bulb boundary."""
    cx = 0.5 * torch.cos(theta) - 0.25 * torch.cos(2 * theta)
    cy = 0.5 * torch.sin(theta) - 0.25 * torch.sin(2 * theta)
    return torch.where(bulb == 0, cx, -1.0 + 0.25 * torch.cos(theta)), torch.where(
        bulb == 0, cy, 0.25 * torch.sin(theta)
    )


def _start(kind: int, p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> Tensor:
    """Starting point and constant of set kind k for m programs -> [m, 4, H, W] (cx, cy, zx, zy)."""
    bx, by = _boundary(p["theta"], p["bulb"])
    zoom = p["width"] * torch.exp(p["breathe"] * torch.sin(p["omega"] * t.reshape(-1)))
    x, y = rotate(x, y, col(p["spin"]) * t)
    if kind == 1:  # Julia: c near the boundary, the view around the origin
        jz = p["jwidth"] * torch.exp(0.3 * p["breathe"] * torch.sin(p["omega"] * t.reshape(-1)))
        a = p["omega"] * t.reshape(-1)
        cx = col(bx * (1 + p["eps"]) + 0.02 * torch.cos(a))
        cy = col(by * (1 + p["eps"]) + 0.02 * torch.sin(a))
        zx, zy = x * col(jz) + col(p["off"][:, 0]) * 0.3, y * col(jz) + col(p["off"][:, 1]) * 0.3
    else:
        if kind == 3:  # multibrot-3: c = z - z^3 with 3 z^2 = e^(i theta)
            r = 1.0 / math.sqrt(3.0)
            zr, zi = r * torch.cos(p["theta"] / 2), r * torch.sin(p["theta"] / 2)
            bx = zr - (zr * zr * zr - 3 * zr * zi * zi)
            by = zi - (3 * zr * zr * zi - zi * zi * zi)
        elif kind == 2:
            anchors = torch.tensor(_SHIP_ANCHORS, device=x.device)
            a = anchors[(p["theta"] / TAU * len(_SHIP_ANCHORS)).long().clamp(0, 3)]
            bx, by = a[:, 0], a[:, 1]
        elif kind == 4:
            bx, by = -0.3 + 0.0 * bx, 0.0 * by
            zoom = zoom.clamp_min(0.3)
        cx = x * col(zoom) + col(bx + p["off"][:, 0] * zoom)
        cy = y * col(zoom) + col(by + p["off"][:, 1] * zoom)
        zx, zy = torch.zeros_like(cx), torch.zeros_like(cy)
    return torch.stack(torch.broadcast_tensors(cx, cy, zx, zy), 1)


def _escape(prm: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> Tensor:
    """Iterate m programs of any set kinds; returns RGB [m, 3, H, W].

    The sets differ only in their start and in small changes to z -> z^2 + c, so one loop can
    serve several, each row taking its own step with `where` (render_escape calls it per kind,
    so that each kind's loop stops as early as its own pixels allow).
    """

    def start(k: int, idx: Tensor | None) -> Tensor:
        return _start(k, sel_dict(prm, idx), sel(x, idx), sel(y, idx), sel(t, idx))

    cx, cy, zx, zy = dispatch(prm["set"], 5, start).unbind(1)
    kset = col(prm["set"])
    kinds = present(prm["set"], 5)
    ship, tri, cubic = kset == 2, kset == 4, kset == 3
    iters = col(prm["iters"])
    it_lo, it_hi = count_range(prm["iters"])
    n = torch.zeros_like(zx)
    alive = torch.ones_like(zx, dtype=torch.bool)
    trap = torch.full_like(zx, 1e4)
    # A pixel stops changing once it escapes or its program's iteration count is reached, so
    # the loop may stop at the batch's largest count or once every pixel has escaped.
    for i in range(it_hi):
        if i % 8 == 7 and not bool(alive.any()):
            break
        if 2 in kinds:
            ax, ay = zx.abs(), zy.abs()
            zx, zy = (
                (ax, ay) if kinds == [2] else (torch.where(ship, ax, zx), torch.where(ship, ay, zy))
            )
        if 4 in kinds:
            zy = -zy if kinds == [4] else torch.where(tri, -zy, zy)
        if 3 in kinds:
            zx2, zy2 = zx * zx, zy * zy
            nx3 = torch.addcmul(cx, zx, zx2 - 3 * zy2)
            ny3 = torch.addcmul(cy, zy, 3 * zx2 - zy2)
        if kinds != [3]:
            nx = torch.addcmul(cx, zx, zx).sub_(zy * zy)
            ny = torch.addcmul(cy, zx, zy, value=2.0)
            if 3 in kinds:
                nx, ny = torch.where(cubic, nx3, nx), torch.where(cubic, ny3, ny)
        else:
            nx, ny = nx3, ny3
        r2 = torch.addcmul(ny * ny, nx, nx)
        on = alive if i < it_lo else alive & (iters > i)
        zx, zy = torch.where(on, nx, zx), torch.where(on, ny, zy)
        n.add_(on)
        trap = torch.where(on, torch.minimum(trap, r2), trap)
        esc = r2 > 65536.0
        alive = alive & ~esc if i < it_lo else alive & ~(esc & on)
    r2 = (zx * zx + zy * zy).clamp_min(1.0001)
    log_deg = torch.where(cubic, math.log(3.0), math.log(2.0))
    nu = n + 1.0 - torch.log(torch.log(r2) * 0.5).clamp_min(-10) / log_deg
    v = nu * col(prm["cfreq"])
    rgb = colour(prm, v, t)
    if present(prm["interior"], 2)[-1] == 1:
        inner = torch.where(
            col(prm["interior"]) == 1, torch.exp(-3.0 * torch.sqrt(trap)), torch.zeros_like(trap)
        )
        inner_rgb = colour(prm, torch.sqrt(trap), t) * inner[:, None]
    else:  # no program of the batch colours its interior: colour * 0 would be (+-)0 anyway
        inner_rgb = torch.zeros_like(rgb)
    return torch.where(alive[:, None], inner_rgb, rgb)


def render_escape(prm: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor, px: float) -> Tensor:
    """Mandelbrot, Julia, burning ship, multibrot-3 and tricorn with smooth iteration counts."""
    del px

    def run(k: int, idx: Tensor | None) -> Tensor:
        return _escape(sel_dict(prm, idx), sel(x, idx), sel(y, idx), sel(t, idx))

    return dispatch(prm["set"], 5, run)


ESCAPE = Family("escape_time", ESCAPE_SPECS, render_escape, "escape-time fractals")

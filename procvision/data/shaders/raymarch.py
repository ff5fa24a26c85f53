"""3D sphere tracing of SDF primitives with Phong shading, fog and an orbiting camera."""

from __future__ import annotations

import torch
from torch import Tensor

from procvision.data.shaders.colour import colour
from procvision.data.shaders.family import Family
from procvision.data.shaders.ops import (
    TAU,
    col,
    dispatch,
    length,
    modp,
    powp,
    rotate,
    sel,
    sel_dict,
)
from procvision.data.shaders.spec import C, F, L

PRIMS = ("sphere", "box", "torus", "capsule", "gyroid", "octahedron", "roundbox")
_MARCH = 32

SPHERE_SPECS = (
    C("prim", PRIMS),
    C("repeat", ("no", "yes"), (0.65, 0.35)),
    L("period", 2.2, 4.0),
    C("twist_on", ("no", "yes"), (0.7, 0.3)),
    F("twist", -1.5, 1.5),
    F("size", 0.6, 1.0),
    F("ratio", 0.2, 0.45),
    L("dist", 2.2, 3.4),
    F("az0", 0.0, TAU),
    F("orbit", -0.8, 0.8),
    F("elev", -0.7, 0.7),
    L("fov", 1.1, 1.9),
    F("light", -1.0, 1.0, 3),
    L("shine", 4.0, 64.0),
    F("spec", 0.0, 1.0),
    L("fog", 0.01, 0.12),
    C("bg", ("black", "gradient", "colour"), (1.5, 1.0, 0.7)),
    C("paint", ("normal", "position", "depth", "flat")),
    F("hue", 0.0, 1.0),
    L("gyro_k", 2.0, 6.0),
)


def _consts(k: int, p: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-program [m, 1, 1] constants of primitive k's distance (computed once per batch)."""
    s, ratio = col(p["size"]), col(p["ratio"])
    per = col(p["period"])
    c = {"s": s, "per": per, "hper": 0.5 * per, "rep": col(p["repeat"]) == 1}
    c |= {"tw": col(p["twist"]), "twon": col(p["twist_on"]) == 1}
    if k in (1, 6):
        c["b"] = s * (0.75 if k == 1 else 0.55)
        c["by"] = c["b"] * (0.6 + ratio)
        c["s4"] = 0.25 * s
    elif k == 2:
        c["sr"] = s * ratio
    elif k == 3:
        c["ns"], c["sr"] = -s, s * ratio * 1.5
    elif k == 4:
        c["g"], c["s13"] = col(p["gyro_k"]), 1.3 * s
    elif k == 5:
        c["s12"] = 1.2 * s
    return c


def _sdf3(
    k: int, c: dict[str, Tensor], x: Tensor, y: Tensor, z: Tensor, use: tuple[int, int] = (1, 1)
) -> Tensor:
    """Signed distance of primitive k at points (x, y, z) [m, H, W]; c from `_consts`.

    use: (repeat, twist) flags of the batch, each 0 (no row uses it), 2 (every row) or 1 (some);
    rows that do not repeat / twist keep their coordinates exactly in every case.
    """
    s = c["s"]
    if use[0]:
        per, hper = c["per"], c["hper"]
        rx = modp(x + hper, per) - hper
        rz = modp(z + hper, per) - hper
        if use[0] == 2:
            x, z = rx, rz
        else:
            x, z = torch.where(c["rep"], rx, x), torch.where(c["rep"], rz, z)
    if use[1]:
        tx, tz = rotate(x, z, c["tw"] * y)
        if use[1] == 2:
            x, z = tx, tz
        else:
            x, z = torch.where(c["twon"], tx, x), torch.where(c["twon"], tz, z)
    if k == 0:
        return torch.sqrt(x * x + y * y + z * z) - s
    if k in (1, 6):
        b = c["b"]
        qx, qy, qz = x.abs() - b, y.abs() - c["by"], z.abs() - b
        out = torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2 + qz.clamp_min(0) ** 2)
        out = out + torch.maximum(qx, torch.maximum(qy, qz)).clamp_max(0)
        return out if k == 1 else out - c["s4"]
    if k == 2:
        return length(length(x, z) - s, y) - c["sr"]
    if k == 3:
        return torch.sqrt(x * x + (y - y.clamp(c["ns"], s)) ** 2 + z * z) - c["sr"]
    if k == 4:
        g = c["g"]
        gx, gy, gz = x * g, y * g, z * g
        gyr = (
            torch.sin(gx) * torch.cos(gy)
            + torch.sin(gy) * torch.cos(gz)
            + torch.sin(gz) * torch.cos(gx)
        )
        d = (gyr.abs() - 0.3) / g * 0.6
        return torch.maximum(d, torch.sqrt(x * x + y * y + z * z) - c["s13"])
    return (x.abs() + y.abs() + z.abs() - c["s12"]) * 0.577


def _trace(k: int, p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> Tensor:
    """Sphere-trace primitive k for m programs; returns RGB [m, 3, H, W]."""
    az = col(p["az0"]) + col(p["orbit"]) * t
    el, dist = col(p["elev"]), col(p["dist"])
    ox, oy, oz = (
        dist * torch.cos(el) * torch.sin(az),
        dist * torch.sin(el),
        dist * torch.cos(el) * torch.cos(az),
    )
    # Repeated objects fill the layer |y| < 1.5: keep the camera above or below it.
    rep = col(p["repeat"]) == 1
    oy = torch.where(rep & (oy.abs() < 1.5), torch.where(oy >= 0, 1.5, -1.5), oy)
    dist = torch.sqrt(ox * ox + oy * oy + oz * oz)
    # camera basis looking at the origin
    fx, fy, fz = -ox / dist, -oy / dist, -oz / dist
    rl = torch.sqrt(fz * fz + fx * fx).clamp_min(1e-6)
    rx, rz = -fz / rl, fx / rl  # right = normalize(cross(f, up))
    ux, uy, uz = -fy * rz, fz * rx - fx * rz, fy * rx  # up = cross(right, f)
    fov = col(p["fov"])
    dx, dy, dz = fx * fov + x * rx + y * ux, fy * fov + y * uy, fz * fov + x * rz + y * uz
    n = torch.sqrt(dx * dx + dy * dy + dz * dz)
    dx, dy, dz = dx / n, dy / n, dz / n
    use = tuple(
        0 if not bool(v.any()) else 2 if bool(v.all()) else 1
        for v in (p["repeat"] == 1, p["twist_on"] == 1)
    )
    c = _consts(k, p)
    depth = torch.zeros_like(x)
    for _ in range(_MARCH):
        d = _sdf3(
            k, c, torch.addcmul(ox, dx, depth), torch.addcmul(oy, dy, depth),
            torch.addcmul(oz, dz, depth), use,
        )  # fmt: skip
        depth = depth.add_(d, alpha=0.8).clamp_(0.0, 20.0)
    px, py, pz = ox + dx * depth, oy + dy * depth, oz + dz * depth
    d = _sdf3(k, c, px, py, pz, use)
    hit = (d.abs() < 0.02 + 0.005 * depth) & (depth < 19.0)
    e = 1e-3
    taps = ((1, -1, -1), (-1, -1, 1), (-1, 1, -1), (1, 1, 1))
    nx = ny = nz = torch.zeros_like(x)
    for a, b, cc in taps:
        v = _sdf3(k, c, px + a * e, py + b * e, pz + cc * e, use)
        nx, ny, nz = nx + a * v, ny + b * v, nz + cc * v
    nl = torch.sqrt(nx * nx + ny * ny + nz * nz).clamp_min(1e-9)
    nx, ny, nz = nx / nl, ny / nl, nz / nl
    lv = p["light"] + torch.tensor([0.3, 0.8, 0.5], device=x.device)
    lv = lv / lv.norm(dim=1, keepdim=True).clamp_min(1e-6)
    lx, ly, lz = col(lv[:, 0]), col(lv[:, 1]), col(lv[:, 2])
    diff = (nx * lx + ny * ly + nz * lz).clamp_min(0)
    hx, hy, hz = lx - dx, ly - dy, lz - dz
    hn = torch.sqrt(hx * hx + hy * hy + hz * hz).clamp_min(1e-6)
    spec = powp(((nx * hx + ny * hy + nz * hz) / hn).clamp_min(0), col(p["shine"])) * col(p["spec"])
    paint = col(p["paint"])
    v = torch.where(
        paint == 0,
        0.5 + 0.35 * (nx + 0.5 * ny),
        torch.where(
            paint == 1, 0.3 * (px + py + pz), torch.where(paint == 2, 0.2 * depth, col(p["hue"]))
        ),
    )
    base = colour(p, v + col(p["hue"]), t)
    rim = (1.0 + nx * dx + ny * dy + nz * dz).clamp(0.0, 1.0) ** 3
    lit = base * (0.3 + 0.7 * diff + 0.4 * rim)[:, None] + spec[:, None]
    lit = lit * torch.exp(-col(p["fog"]) * depth)[:, None]
    bgk = col(p["bg"])
    bg = (
        colour(p, 0.5 + 0.5 * y + col(p["hue"]), t)
        * torch.where(bgk == 0, 0.0, torch.where(bgk == 1, 0.3, 0.8))[:, None]
    )
    return torch.where(hit[:, None], lit, bg)


def render_sphere(prm: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor, px: float) -> Tensor:
    """Sphere tracing of one primitive (optionally repeated and twisted) with Phong shading."""
    del px

    def run(k: int, idx: Tensor | None) -> Tensor:
        return _trace(k, sel_dict(prm, idx), sel(x, idx), sel(y, idx), sel(t, idx))

    return dispatch(prm["prim"], len(PRIMS), run)


SPHERE = Family("sphere_trace", SPHERE_SPECS, render_sphere, "3D sphere tracing with shading")

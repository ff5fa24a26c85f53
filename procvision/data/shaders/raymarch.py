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


def _sdf3(k: int, p: dict[str, Tensor], x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    """Signed distance of primitive k at points (x, y, z) [m, H, W]."""
    s, ratio = col(p["size"]), col(p["ratio"])
    per = col(p["period"])
    rep = col(p["repeat"]) == 1
    x = torch.where(rep, modp(x + 0.5 * per, per) - 0.5 * per, x)
    z = torch.where(rep, modp(z + 0.5 * per, per) - 0.5 * per, z)
    tw = torch.where(col(p["twist_on"]) == 1, col(p["twist"]), torch.zeros_like(s))
    x, z = rotate(x, z, tw * y)
    if k == 0:
        return torch.sqrt(x * x + y * y + z * z) - s
    if k in (1, 6):
        b = s * (0.75 if k == 1 else 0.55)
        qx, qy, qz = x.abs() - b, y.abs() - b * (0.6 + ratio), z.abs() - b
        out = torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2 + qz.clamp_min(0) ** 2)
        out = out + torch.maximum(qx, torch.maximum(qy, qz)).clamp_max(0)
        return out if k == 1 else out - 0.25 * s
    if k == 2:
        return length(length(x, z) - s, y) - s * ratio
    if k == 3:
        return torch.sqrt(x * x + (y - y.clamp(-s, s)) ** 2 + z * z) - s * ratio * 1.5
    if k == 4:
        g = col(p["gyro_k"])
        gx, gy, gz = x * g, y * g, z * g
        gyr = (
            torch.sin(gx) * torch.cos(gy)
            + torch.sin(gy) * torch.cos(gz)
            + torch.sin(gz) * torch.cos(gx)
        )
        d = (gyr.abs() - 0.3) / g * 0.6
        return torch.maximum(d, torch.sqrt(x * x + y * y + z * z) - 1.3 * s)
    return (x.abs() + y.abs() + z.abs() - 1.2 * s) * 0.577


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
    depth = torch.zeros_like(x)
    for _ in range(_MARCH):
        d = _sdf3(k, p, ox + dx * depth, oy + dy * depth, oz + dz * depth)
        depth = (depth + 0.8 * d).clamp(0.0, 20.0)
    px, py, pz = ox + dx * depth, oy + dy * depth, oz + dz * depth
    d = _sdf3(k, p, px, py, pz)
    hit = (d.abs() < 0.02 + 0.005 * depth) & (depth < 19.0)
    e = 1e-3
    taps = ((1, -1, -1), (-1, -1, 1), (-1, 1, -1), (1, 1, 1))
    nx = ny = nz = torch.zeros_like(x)
    for a, b, c in taps:
        v = _sdf3(k, p, px + a * e, py + b * e, pz + c * e)
        nx, ny, nz = nx + a * v, ny + b * v, nz + c * v
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

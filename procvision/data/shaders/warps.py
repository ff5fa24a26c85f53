"""Composable coordinate warps: 0-3 per program, applied to the pixel grid before the family.

Each warp maps (x, y) [m, H, W] to new coordinates; t is [m, 1, 1]. Parameters of slot j live
under "w{j}.{kind}.{param}" (see `spec.Switch`), the number of warps under "w.count".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from procvision.data.shaders.ops import (
    TAU,
    atan2,
    col,
    dispatch,
    fract,
    length,
    rotate,
    sel,
    tri,
)
from procvision.data.shaders.spec import C, F, I, L, Spec, Switch

MAX_WARPS = 3

WARP = Switch(
    kinds=(
        ("affine", (F("angle", 0.0, TAU), F("spin", -0.5, 0.5), L("scale", 0.5, 2.0), F("tx", -0.5, 0.5), F("ty", -0.5, 0.5))),
        ("mirror", (C("axes", ("x", "y", "xy")), F("offset", -0.3, 0.5))),
        ("kaleido", (I("folds", 3, 12), F("spin", -0.3, 0.3), F("offset", 0.0, 0.5))),
        ("sinwarp", (L("amp", 0.03, 0.4), L("freq", 1.0, 8.0), F("speed", -2.0, 2.0), F("phase", 0.0, TAU))),
        ("swirl", (F("k", -4.0, 4.0), F("speed", -1.0, 1.0))),
        ("inversion", (L("scale", 0.3, 1.5), F("cx", -0.3, 0.3), F("cy", -0.3, 0.3), F("speed", -0.5, 0.5))),
        ("polar", (I("m", 1, 4), C("radial", ("linear", "log")), L("k", 0.5, 3.0))),
        ("repeat", (L("cells", 1.2, 3.0), F("ox", 0.0, 1.0), F("oy", 0.0, 1.0), F("speed", -0.3, 0.3))),
    ),
    weights=(1.5, 1.2, 1.5, 1.0, 1.0, 0.6, 0.7, 1.0),
)  # fmt: skip

COUNT: Spec = C("count", ("0", "1", "2", "3"), (0.3, 0.35, 0.23, 0.12))


def _affine(p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    x, y = rotate(x, y, col(p["angle"]) + col(p["spin"]) * t)
    s = col(p["scale"])
    return x * s + col(p["tx"]), y * s + col(p["ty"])


def _mirror(p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    axes, off = col(p["axes"]), col(p["offset"])
    mx = torch.where(axes != 1, x.abs() - off, x)
    my = torch.where(axes != 0, y.abs() - off, y)
    return mx, my


def _kaleido(p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    sector = TAU / col(p["folds"]).to(x.dtype)
    a = atan2(y, x) + col(p["spin"]) * t
    a = (fract(a / sector) - 0.5).abs() * sector  # fold into half a sector: mirror symmetry
    r = length(x, y) - col(p["offset"])
    return r * torch.cos(a), r * torch.sin(a)


def _sinwarp(p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    a, f = col(p["amp"]), col(p["freq"])
    ph = col(p["speed"]) * t + col(p["phase"])
    return x + a * torch.sin(f * y + ph), y + a * torch.sin(f * x + 1.3 * ph)


def _swirl(p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    r = length(x, y)
    return rotate(x, y, col(p["k"]) * r * (1.0 + 0.3 * torch.sin(col(p["speed"]) * t)))


def _inversion(p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    w = col(p["speed"]) * t
    x = x - col(p["cx"]) - 0.2 * torch.cos(w)
    y = y - col(p["cy"]) - 0.2 * torch.sin(w)
    k = col(p["scale"]) / (x * x + y * y).clamp_min(1e-3)
    return (x * k).clamp(-50.0, 50.0), (y * k).clamp(-50.0, 50.0)


def _polar(p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    r = length(x, y)
    u = atan2(y, x) / math.pi * col(p["m"]).to(x.dtype)
    log_r = torch.log(r.clamp_min(1e-4))
    v = torch.where(col(p["radial"]) == 1, log_r, r * 2.0 - 1.0) * col(p["k"])
    return u, v


def _repeat(p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    n = col(p["cells"])
    s = col(p["speed"]) * t
    # Mirrored tiling (triangle wave) keeps the pattern continuous across tile borders.
    return 2.0 * tri(0.5 * (x * n + col(p["ox"]) + s)) - 1.0, 2.0 * tri(
        0.5 * (y * n + col(p["oy"]))
    ) - 1.0


_WARPS = (_affine, _mirror, _kaleido, _sinwarp, _swirl, _inversion, _polar, _repeat)


def apply_warps(prm: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Apply the active warps of every program, slot by slot.

    Args:
        prm: decoded parameters of B programs.
        x, y: coordinates [B or 1, H, W].
        t: times [B].
    Returns:
        (x, y), each [B, H, W].
    """
    b = t.shape[0]
    x, y = x.expand(b, -1, -1), y.expand(b, -1, -1)
    t3 = col(t)
    identity = len(_WARPS)
    for j in range(MAX_WARPS):
        kind = torch.where(prm["w.count"] > j, prm[f"w{j}.kind"], identity)

        def run(k: int, idx: Tensor | None, j: int = j, x: Tensor = x, y: Tensor = y) -> Tensor:
            xs, ys = sel(x, idx), sel(y, idx)
            if k == identity:
                return torch.stack([xs, ys], 1)
            pre = f"w{j}.{WARP.names[k]}."
            sub = {key[len(pre) :]: sel(v, idx) for key, v in prm.items() if key.startswith(pre)}
            return torch.stack(_WARPS[k](sub, xs, ys, sel(t3, idx)), 1)

        xy = dispatch(kind, identity + 1, run)
        x, y = xy[:, 0], xy[:, 1]
    return x, y

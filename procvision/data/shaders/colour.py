"""Colour maps (scalar field -> RGB) and the final tone step, one of each per program.

Families call `colour(prm, v, t)` with a scalar field v ([B, ...]) that is "about [0, 1]"
(palettes are periodic, so larger ranges wrap); the result is [B, 3, ...]. `post` applies the
program's tone curve, inversion and vignette to the finished image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from procvision.data.shaders.ops import TAU, clamp01, dispatch, hsv, mix, powp, sel, tri
from procvision.data.shaders.spec import C, F, I, L, Spec, Switch

COLOUR = Switch(
    kinds=(
        (
            "cosine",
            (
                F("a", 0.3, 0.7, 3),
                F("b", 0.3, 0.7, 3),
                C("c_mode", ("unit", "free")),
                F("c", 0.5, 2.0, 3),
                F("d", 0.0, 1.0, 3),
                L("freq", 0.5, 3.0),
                F("speed", -0.3, 0.3),
            ),
        ),
        (
            "hsv",
            (F("h0", 0.0, 1.0), L("freq", 0.3, 3.0), F("sat", 0.5, 1.0), F("speed", -0.3, 0.3)),
        ),
        (
            "ramp",
            (
                I("stops", 2, 4),
                F("hue", 0.0, 1.0, 4),
                F("sat", 0.3, 1.0, 4),
                F("val", 0.0, 1.0, 4),
                L("freq", 0.7, 2.0),
                C("wrap", ("clamp", "mirror")),
            ),
        ),
        ("direct", (I("perm", 0, 5), L("gain", 0.7, 2.5))),
        ("grey", (L("gain", 0.7, 2.0),)),
    ),
    weights=(4.0, 3.0, 2.0, 1.5, 0.5),
)

POST: tuple[Spec, ...] = (
    C("tone", ("none", "gamma", "tanh", "expo", "posterise"), (4.0, 2.0, 1.5, 1.5, 0.6)),
    L("gamma", 0.5, 2.0),
    L("tanh_k", 0.8, 3.0),
    L("expo_k", 0.8, 4.0),
    I("levels", 4, 8),
    C("invert", ("no", "yes"), (0.92, 0.08)),
    C("vignette", ("no", "yes"), (0.75, 0.25)),
    F("vignette_k", 0.2, 0.9),
)

_PERMS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def _bc(p: Tensor, v: Tensor) -> Tensor:
    """Per-program [B] -> [B, 1, ...] broadcastable against field v [B, ...]."""
    return p.reshape((-1,) + (1,) * (v.dim() - 1))


def _bc3(p: Tensor, v: Tensor) -> Tensor:
    """Per-program [B, 3] (or [B]) -> [B, 3|1, 1, ...] broadcastable against RGB of field v."""
    return p.reshape((p.shape[0], p.shape[1] if p.dim() > 1 else 1) + (1,) * (v.dim() - 1))


def _cosine(prm: dict[str, Tensor], v: Tensor, t: Tensor) -> Tensor:
    a, b, d = (_bc3(prm[k], v) for k in ("a", "b", "d"))
    c = torch.where(_bc3(prm["c_mode"], v) == 0, 1.0, _bc3(prm["c"], v))
    x = (v * _bc(prm["freq"], v) + _bc(prm["speed"] * t, v))[:, None]
    return a + b * torch.cos(TAU * (c * x + d))


def _hsv(prm: dict[str, Tensor], v: Tensor, t: Tensor) -> Tensor:
    h = _bc(prm["h0"] + prm["speed"] * t, v) + _bc(prm["freq"], v) * v
    return hsv(h, _bc(prm["sat"], v).expand_as(h), torch.ones_like(h))


def _ramp(prm: dict[str, Tensor], v: Tensor, t: Tensor) -> Tensor:
    del t
    n = prm["stops"].to(v.dtype)
    x = v * _bc(prm["freq"], v)
    x = torch.where(_bc(prm["wrap"], v) == 1, tri(0.5 * x), clamp01(x))
    # Stop values climb from dark to bright so that a ramp always has contrast.
    k = torch.arange(4, device=v.device, dtype=v.dtype)
    val = clamp01(mix(k / (n[:, None] - 1.0), prm["val"], 0.3))
    stops = hsv(prm["hue"][..., None], prm["sat"][..., None], val[..., None])[..., 0]  # [B,3,4]
    pos = (x * _bc(n - 1.0, v))[:, None]
    out = _bc3(stops[..., 0], v).expand((v.shape[0], 3) + tuple(v.shape[1:]))
    for j in range(1, 4):
        w = clamp01(pos - (j - 1))
        on = _bc3(n > j, v)
        out = torch.where(on, mix(out, _bc3(stops[..., j], v), w), out)
    return out


def _direct(prm: dict[str, Tensor], v: Tensor, t: Tensor) -> Tensor:
    del t
    x = clamp01(v * _bc(prm["gain"], v))
    chans = torch.stack([x, x * x, x * x * x], 1)
    perm = torch.tensor(_PERMS, device=v.device)[prm["perm"]]  # [B, 3]
    return torch.gather(chans, 1, _bc3(perm, v).expand_as(chans))


def _grey(prm: dict[str, Tensor], v: Tensor, t: Tensor) -> Tensor:
    del t
    x = v * _bc(prm["gain"], v)
    return x[:, None].expand((-1, 3) + tuple(v.shape[1:]))


_MAPS = (_cosine, _hsv, _ramp, _direct, _grey)


def colour(prm: dict[str, Tensor], v: Tensor, t: Tensor) -> Tensor:
    """Apply each program's colour map.

    Args:
        prm: decoded parameters of B programs (keys "c.kind", "c.cosine.a", ...).
        v: scalar field [B, ...] (e.g. [B, H, W] or [B, 1, 1]).
        t: times [B] (or [B, 1, 1]).
    Returns:
        RGB [B, 3, ...] (not clamped).
    """
    t = t.reshape(-1)

    def run(k: int, idx: Tensor | None) -> Tensor:
        pre = f"c.{COLOUR.names[k]}."
        sub = {key[len(pre) :]: sel(val, idx) for key, val in prm.items() if key.startswith(pre)}
        return _MAPS[k](sub, sel(v, idx), sel(t, idx))

    return dispatch(prm["c.kind"], len(_MAPS), run)


def post(prm: dict[str, Tensor], rgb: Tensor, x0: Tensor, y0: Tensor) -> Tensor:
    """Tone curve, inversion and vignette.

    Args:
        prm: decoded parameters of B programs (keys "post.tone", ...).
        rgb: [B, 3, H, W] colours, any range.
        x0, y0: original pixel coordinates [1, H, W] (for the vignette).
    Returns:
        [B, 3, H, W] colours, mostly in [0, 1] (clamped later).
    """
    p = lambda k: prm["post." + k].reshape(-1, 1, 1, 1)  # noqa: E731
    x = rgb.clamp(0.0, 1e4)
    tone = p("tone")
    x = torch.where(tone == 1, powp(clamp01(x), p("gamma")), x)
    x = torch.where(tone == 2, torch.tanh(x * p("tanh_k")), x)
    x = torch.where(tone == 3, 1.0 - torch.exp(-x * p("expo_k")), x)
    lv = p("levels").to(x.dtype)
    x = torch.where(tone == 4, torch.floor(clamp01(x) * lv * 0.999) / (lv - 1.0), x)
    x = torch.where(p("invert") == 1, 1.0 - clamp01(x), x)
    r2 = (x0 * x0 + y0 * y0)[:, None]
    vig = clamp01(1.0 - p("vignette_k") * 0.5 * r2)
    return torch.where(p("vignette") == 1, x * vig, x)

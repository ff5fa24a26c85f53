"""Shader programs: the family registry, parameter sampling, the `Program` view and rendering.

Program p of seed s is a pure function of (s, p): its family, its family parameters, its warps
and its colour map are decoded from `rng.uniform(s, p, stream, n)` draws (see `spec`). Batches
keep them as tensors; `Program` is the same numbers as readable, JSON-friendly values.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as Fn
from torch import Tensor

from procvision.data import rng
from procvision.data.shaders.colour import COLOUR, POST, post
from procvision.data.shaders.family import Family
from procvision.data.shaders.fractals import ESCAPE, KALEIDO, VOLUME
from procvision.data.shaders.geometry import PARTICLES, SDF2D
from procvision.data.shaders.ops import split_by
from procvision.data.shaders.raymarch import SPHERE
from procvision.data.shaders.spec import block_width, decode_block
from procvision.data.shaders.textures import NOISE, PERIODIC, TUNNEL, VORONOI
from procvision.data.shaders.warps import COUNT, MAX_WARPS, WARP, apply_warps
from procvision.data.source import pixel_grid

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (KALEIDO, VOLUME, SDF2D, SPHERE, NOISE, VORONOI, PERIODIC, ESCAPE, TUNNEL, PARTICLES)
}
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)

STREAM_FAMILY, STREAM_WARPS, STREAM_COLOUR = 11, 1, 2  # the last two: offsets from a family stream


def resolve_families(families: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Validate a family subset (None = all); raises ValueError naming the valid families."""
    if families is None:
        return FAMILY_NAMES
    families = tuple(families)
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise ValueError(
            f"unknown shader famil{'ies' if len(bad) > 1 else 'y'} {bad or '(empty list)'}; "
            f"valid families: {', '.join(FAMILY_NAMES)}"
        )
    return families


def family_stream(name: str) -> int:
    """Stable stream of a family's parameter block (independent of the registry order)."""
    return 1000 + 8 * (zlib.crc32(name.encode()) % 100_000)  # < 2**22: stream * 1024 fits 32 bits


def family_of(seed: int, pids: Tensor, families: tuple[str, ...]) -> Tensor:
    """Index into `families` of each program id [B] -> int64 [B]."""
    return rng.randint(seed, pids, STREAM_FAMILY, len(families))


def sample_params(seed: int, pids: Tensor, family: str) -> dict[str, Tensor]:
    """Decoded parameters of programs `pids` [B] (all of `family`): family, warp, colour keys."""
    specs, stream = FAMILIES[family].specs, family_stream(family)
    prm = decode_block(specs, rng.uniform(seed, pids, stream, block_width(specs)))
    # Warps and colours are drawn per family so that one id means unrelated programs in
    # different family subsets.
    u = rng.uniform(seed, pids, stream + STREAM_WARPS, 1 + MAX_WARPS * WARP.width)
    prm["w.count"] = COUNT.decode(u[:, :1])
    for j in range(MAX_WARPS):
        prm.update(WARP.decode(u[:, 1 + j * WARP.width :], f"w{j}."))
    u = rng.uniform(seed, pids, stream + STREAM_COLOUR, COLOUR.width + block_width(POST))
    prm.update(COLOUR.decode(u, "c."))
    prm.update(decode_block(POST, u[:, COLOUR.width :], "post."))
    return prm


def render_params(family: str, prm: dict[str, Tensor], t: Tensor, size: int) -> Tensor:
    """Render B programs of one family at times t [B] -> raw RGB [B, 3, size, size] (any range)."""
    grid = pixel_grid(size, t.device)
    x0, y0 = grid[..., 0], grid[..., 1]
    x, y = apply_warps(prm, x0, y0, t)
    rgb = FAMILIES[family].render(
        prm, x.contiguous(), y.contiguous(), t.reshape(-1, 1, 1), 2.0 / size
    )
    return post(prm, rgb, x0, y0)


def finish(rgb: Tensor, supersample: int) -> Tensor:
    """Average supersampled pixels, then map NaN/inf and clamp into [0, 1]."""
    if supersample > 1:
        rgb = Fn.avg_pool2d(torch.nan_to_num(rgb, 0.0, 1.0, 0.0).clamp(0, 1), supersample)
    return torch.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)


def render_ids(
    seed: int,
    pids: Tensor,
    t: Tensor,
    size: int,
    families: tuple[str, ...] | list[str] = FAMILY_NAMES,
    supersample: int = 1,
    sanitize: bool = True,
) -> Tensor:
    """Render program ids [B] at times t [B] -> [B, 3, size, size].

    Args:
        seed: program seed.
        pids: int64 program ids [B].
        t: float32 times [B].
        size: output side in pixels.
        families: the family subset the ids draw from.
        supersample: render at size * supersample and average-pool.
        sanitize: map NaN/inf and clamp to [0, 1] (False returns the raw values, for the filter).
    """
    families = resolve_families(families)
    pids = torch.as_tensor(pids, dtype=torch.int64).reshape(-1)
    t = torch.as_tensor(t, dtype=torch.float32).to(pids.device).reshape(-1)
    if t.shape != pids.shape:
        raise ValueError(f"{pids.shape[0]} program ids but {t.shape[0]} times")
    s = size * supersample
    out = torch.empty(pids.shape[0], 3, s, s, device=pids.device)
    for k, idx in split_by(family_of(seed, pids, families), len(families)):
        prm = sample_params(seed, pids.index_select(0, idx), families[k])
        out.index_copy_(0, idx, render_params(families[k], prm, t.index_select(0, idx), s).float())
    return finish(out, supersample) if sanitize else out


@dataclass
class Program:
    """Readable view of one program: the numbers its images are made from.

    structure: discrete parameters (iteration counts, shape kinds, ...);
    constants: continuous parameters; warps: the active warps in order, each {"kind", params};
    colour: {"kind", params of the colour map, "post": tone/invert/vignette parameters}.
    """

    family: str
    structure: dict = field(default_factory=dict)
    constants: dict = field(default_factory=dict)
    warps: list = field(default_factory=list)
    colour: dict = field(default_factory=dict)
    seed: int | None = None
    id: int | None = None

    def to_dict(self) -> dict:
        """JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Program:
        """Inverse of `to_dict`; validates the family name."""
        resolve_families([d["family"]])
        return cls(**{k: d[k] for k in ("family", "structure", "constants", "warps", "colour")},
                   seed=d.get("seed"), id=d.get("id"))  # fmt: skip


def view(prm: dict[str, Tensor], family: str, b: int) -> Program:
    """Row b of decoded parameters -> Program."""
    specs = FAMILIES[family].specs
    structure = {s.name: s.value(prm[s.name][b]) for s in specs if s.discrete}
    constants = {s.name: s.value(prm[s.name][b]) for s in specs if not s.discrete}
    count = int(prm["w.count"][b])
    warps = [WARP.value(prm, b, f"w{j}.") for j in range(count)]
    col = COLOUR.value(prm, b, "c.")
    col["post"] = {s.name: s.value(prm["post." + s.name][b]) for s in POST}
    return Program(family, structure, constants, warps, col)


def programs(
    seed: int, pids: list[int] | Tensor, families: list[str] | None = None
) -> list[Program]:
    """Programs of ids `pids` (pure in (seed, id, family subset))."""
    fams = resolve_families(families)
    pids = torch.as_tensor(pids, dtype=torch.int64).reshape(-1)
    fam = family_of(seed, pids, fams)
    out: list[Program | None] = [None] * len(pids)
    for k, idx in split_by(fam, len(fams)):
        prm = sample_params(seed, pids[idx], fams[k])
        for j, b in enumerate(idx.tolist()):
            p = view(prm, fams[k], j)
            p.seed, p.id = seed, int(pids[b])
            out[b] = p
    return out  # type: ignore[return-value]


def program(seed: int, p: int, families: list[str] | None = None) -> Program:
    """Program p of a pool with this seed (and family subset)."""
    return programs(seed, [p], families)[0]


def params_of(progs: list[Program], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Programs of one family -> decoded parameter tensors (the inverse of `view`)."""
    fams = {p.family for p in progs}
    if len(fams) != 1:
        raise ValueError(f"params_of needs programs of one family, got {sorted(fams)}")
    specs = FAMILIES[progs[0].family].specs
    rows: list[dict[str, Tensor]] = []
    for p in progs:
        if len(p.warps) > MAX_WARPS:
            raise ValueError(f"at most {MAX_WARPS} warps, got {len(p.warps)}")
        r = {s.name: s.tensor((p.structure | p.constants)[s.name], device) for s in specs}
        r["w.count"] = COUNT.tensor(str(len(p.warps)), device)
        for j in range(MAX_WARPS):
            pre = f"w{j}."
            r.update(
                WARP.rows(p.warps[j], pre, device) if j < len(p.warps) else WARP.filler(pre, device)
            )
        r.update(COLOUR.rows({k: v for k, v in p.colour.items() if k != "post"}, "c.", device))
        r.update({"post." + s.name: s.tensor(p.colour["post"][s.name], device) for s in POST})
        rows.append(r)
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def render_programs(
    progs: list[Program],
    t: Tensor | list[float],
    size: int,
    device: torch.device | str = "cpu",
    supersample: int = 1,
) -> Tensor:
    """Render Program objects at times t [B] -> [B, 3, size, size] in [0, 1]."""
    t = torch.as_tensor(t, dtype=torch.float32, device=device).reshape(-1)
    if t.shape[0] != len(progs):
        raise ValueError(f"{len(progs)} programs but {t.shape[0]} times")
    s = size * supersample
    out = torch.empty(len(progs), 3, s, s, device=device)
    names = sorted({p.family for p in progs})
    for name in names:
        idx = [i for i, p in enumerate(progs) if p.family == name]
        it = torch.tensor(idx, device=device)
        prm = params_of([progs[i] for i in idx], device)
        out.index_copy_(0, it, render_params(name, prm, t[it], s).float())
    return finish(out, supersample)

"""Parameter specs: how uniform draws become named program parameters, and back to readable values.

A *block* is a tuple of `Spec`s. Sampling a block for a batch of program ids is one call to
`rng.uniform(seed, ids, stream, n)` whose columns are cut into the specs in order, so every
parameter is a pure function of (seed, program id). Decoded tensors are float32 [B] / [B, n] for
continuous parameters and int64 for discrete ones; `Spec.value` / `Spec.tensor` convert one row
to a JSON value and back exactly (float32 survives a round trip through a Python float).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from procvision.data import rng


@dataclass(frozen=True)
class Spec:
    """One named parameter.

    kind: "float" (uniform in [lo, hi]), "log" (log-uniform in [lo, hi]), "int" (uniform integer in
    [lo, hi] inclusive) or "choice" (an index into `choices`, with optional `weights`).
    n: vector length (n > 1 gives a [B, n] tensor).
    """

    name: str
    kind: str = "float"
    lo: float = 0.0
    hi: float = 1.0
    n: int = 1
    choices: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()

    @property
    def discrete(self) -> bool:
        return self.kind in ("int", "choice")

    def decode(self, u: Tensor) -> Tensor:
        """Uniforms [B, n] in [0, 1) -> parameter tensor [B] (n == 1) or [B, n]."""
        if self.kind == "float":
            v = self.lo + (self.hi - self.lo) * u
        elif self.kind == "log":
            v = torch.exp(math.log(self.lo) + (math.log(self.hi) - math.log(self.lo)) * u)
        elif self.kind == "int":
            span = int(self.hi) - int(self.lo) + 1
            v = int(self.lo) + torch.floor(u * span).to(torch.int64).clamp_(max=span - 1)
        elif self.kind == "choice":
            edges = _choice_edges(self.weights or (1.0,) * len(self.choices), u.device)
            v = (u[..., None] >= edges).sum(-1).to(torch.int64)
        else:
            raise ValueError(f"unknown spec kind {self.kind!r}")
        return v[:, 0] if self.n == 1 else v

    def value(self, row: Tensor) -> float | int | str | list:
        """One decoded row (0-d or [n]) -> JSON value (choices become their names)."""
        vals = row.reshape(-1).tolist()
        if self.kind == "choice":
            vals = [self.choices[int(i)] for i in vals]
        elif self.kind == "int":
            vals = [int(i) for i in vals]
        return vals[0] if self.n == 1 else vals

    def tensor(self, value, device: torch.device | str = "cpu") -> Tensor:
        """JSON value -> one decoded row ([] or [n]), the inverse of `value`."""
        vals = value if isinstance(value, list) else [value]
        if len(vals) != self.n:
            raise ValueError(f"parameter {self.name!r} needs {self.n} values, got {len(vals)}")
        if self.kind == "choice":
            unknown = [v for v in vals if v not in self.choices]
            if unknown:
                raise ValueError(f"{self.name!r}: {unknown} not in {list(self.choices)}")
            vals = [self.choices.index(v) for v in vals]
        dtype = torch.int64 if self.discrete else torch.float32
        t = torch.tensor(vals, dtype=dtype, device=device)
        return t[0] if self.n == 1 else t

    def default(self, device: torch.device | str = "cpu") -> Tensor:
        """A filler row for parameters a program does not use."""
        dtype = torch.int64 if self.discrete else torch.float32
        lo = int(self.lo) if self.kind == "int" else (0 if self.discrete else self.lo)
        t = torch.full((self.n,), lo, dtype=dtype, device=device)
        return t[0] if self.n == 1 else t


_EDGES: dict[tuple, Tensor] = {}


def _choice_edges(w: tuple[float, ...], device: torch.device) -> Tensor:
    """float32 bin edges of a weighted choice (cached: decoding runs for every batch)."""
    key = (w, device)
    if key not in _EDGES:
        cum = torch.tensor(w, dtype=torch.float64).cumsum(0) / sum(w)
        _EDGES[key] = cum[:-1].to(torch.float32).to(device)
    return _EDGES[key]


def F(name: str, lo: float, hi: float, n: int = 1) -> Spec:
    """Uniform float parameter."""
    return Spec(name, "float", lo, hi, n)


def L(name: str, lo: float, hi: float, n: int = 1) -> Spec:
    """Log-uniform float parameter (lo > 0)."""
    return Spec(name, "log", lo, hi, n)


def I(name: str, lo: int, hi: int, n: int = 1) -> Spec:  # noqa: E743 - reads like the others
    """Uniform integer parameter in [lo, hi] inclusive."""
    return Spec(name, "int", lo, hi, n)


def C(name: str, choices: tuple[str, ...] | list[str], weights: tuple[float, ...] = ()) -> Spec:
    """Categorical parameter, optionally weighted."""
    if weights and len(weights) != len(choices):
        raise ValueError(f"{name}: {len(weights)} weights for {len(choices)} choices")
    return Spec(name, "choice", 0, len(choices) - 1, 1, tuple(choices), tuple(weights))


def block_width(specs: tuple[Spec, ...]) -> int:
    """Number of uniform columns a block consumes."""
    return sum(s.n for s in specs)


def decode_block(specs: tuple[Spec, ...], u: Tensor, prefix: str = "") -> dict[str, Tensor]:
    """Cut uniforms [B, >= width] into named decoded parameters {prefix + name: tensor}."""
    out, j = {}, 0
    for s in specs:
        out[prefix + s.name] = s.decode(u[:, j : j + s.n])
        j += s.n
    return out


def sample_block(
    seed: int, ids: Tensor, stream: int, specs: tuple[Spec, ...], prefix: str = ""
) -> dict[str, Tensor]:
    """Decoded parameters of a block for program ids [B]: pure in (seed, id, stream)."""
    u = rng.uniform(seed, ids, stream, block_width(specs))
    return decode_block(specs, u, prefix)


@dataclass(frozen=True)
class Switch:
    """A categorical parameter whose value selects which further parameters mean something.

    All kinds share the same uniform columns after the selector, so adding a kind changes no draw
    of another. Decoded keys: "{prefix}kind" (int64 [B]) and "{prefix}{kind}.{param}".
    """

    kinds: tuple[tuple[str, tuple[Spec, ...]], ...]
    weights: tuple[float, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.kinds)

    @property
    def selector(self) -> Spec:
        return C("kind", self.names, self.weights)

    @property
    def width(self) -> int:
        return 1 + max(block_width(s) for _, s in self.kinds)

    def decode(self, u: Tensor, prefix: str) -> dict[str, Tensor]:
        """Uniforms [B, >= width] -> {prefix + "kind": [B], prefix + kind.param: ...}."""
        out = {prefix + "kind": self.selector.decode(u[:, :1])}
        for name, specs in self.kinds:
            out.update(decode_block(specs, u[:, 1:], f"{prefix}{name}."))
        return out

    def value(self, prm: dict[str, Tensor], b: int, prefix: str) -> dict:
        """Readable view of row b: {"kind": name, param: value, ...} (only the chosen kind)."""
        name = self.names[int(prm[prefix + "kind"][b])]
        out = {"kind": name}
        for s in dict(self.kinds)[name]:
            out[s.name] = s.value(prm[f"{prefix}{name}.{s.name}"][b])
        return out

    def rows(self, value: dict, prefix: str, device: torch.device | str) -> dict[str, Tensor]:
        """Inverse of `value`: decoded rows for every key (unused kinds get filler values)."""
        if value.get("kind") not in self.names:
            raise ValueError(f"kind {value.get('kind')!r} not in {list(self.names)}")
        out = {prefix + "kind": self.selector.tensor(value["kind"], device)}
        for name, specs in self.kinds:
            for s in specs:
                v = value[s.name] if name == value["kind"] else None
                out[f"{prefix}{name}.{s.name}"] = (
                    s.default(device) if v is None else s.tensor(v, device)
                )
        return out

    def filler(self, prefix: str, device: torch.device | str) -> dict[str, Tensor]:
        """Rows for an unused switch: first kind, every parameter at its filler value."""
        out = {prefix + "kind": self.selector.default(device)}
        for name, specs in self.kinds:
            for s in specs:
                out[f"{prefix}{name}.{s.name}"] = s.default(device)
        return out

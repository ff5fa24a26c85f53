"""The `Family` record: a name, its parameter block and its batched render function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from procvision.data.shaders.spec import Spec

# render(prm, x, y, t, px) -> RGB [B, 3, H, W]: prm holds the decoded parameters of B programs
# of this family (plus colour and warp keys), x and y are warped coordinates [B, H, W], t is
# [B, 1, 1] and px is the pixel size in unwarped uv units (for antialiasing).
RenderFn = Callable[[dict[str, Tensor], Tensor, Tensor, Tensor, float], Tensor]


@dataclass(frozen=True)
class Family:
    """One family of shader programs."""

    name: str
    specs: tuple[Spec, ...]
    render: RenderFn
    doc: str = ""

"""Every procedural family by name: `make_source("kml_mixup", seed=0)`.

Compositions (shaders_mixup, kml, kml_mixup) sit on a base family, "shaders" by default; any
other base works too (`base="folder", root=...` mixes a folder of images, `base="glsl"` real
shaders). Base sources are imported lazily, so optional dependencies (moderngl) are only needed
by the families that use them.
"""

from __future__ import annotations

import inspect
from typing import Any

from procvision.constants import SHADERS21K_POOL_SIZE
from procvision.data.source import Source
from procvision.errors import UserError


class FamilyError(UserError, ValueError):
    """An unknown family, base or option, or options a family refuses; the message lists the
    valid ones."""


FAMILIES = (
    "shaders",
    "shaders_mixup",
    "kml",
    "kml_mixup",
    "stylegan",
    "dead_leaves",
    "folder",
    "glsl",
)
BASES = ("shaders", "folder", "glsl", "stylegan", "dead_leaves")
COMPOSITIONS = ("shaders_mixup", "kml", "kml_mixup")


def _base_class(family: str) -> type:
    if family == "shaders":
        from procvision.data.shaders import ShaderSource

        return ShaderSource
    if family == "folder":
        from procvision.data.folder import ImageFolderSource

        return ImageFolderSource
    if family == "glsl":
        from procvision.data.glsl import GLSLSource

        return GLSLSource
    if family == "stylegan":
        from procvision.data.stylegan import StyleGANRandomSource

        return StyleGANRandomSource
    from procvision.data.dead_leaves import DeadLeavesSource

    return DeadLeavesSource


def _composition_class(family: str) -> type:
    from procvision.data import compose

    return {
        "shaders_mixup": compose.MixupSource,
        "kml": compose.KMLSource,
        "kml_mixup": compose.KMLMixupSource,
    }[family]


def _accepted(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def _build(cls: type, family: str, kwargs: dict[str, Any]) -> Source:
    unknown = set(kwargs) - _accepted(cls)
    if unknown:
        raise FamilyError(
            f"family {family!r} does not take option(s) {sorted(unknown)}; "
            f"it takes {sorted(_accepted(cls) - {'seed', 'base'})}"
        )
    return cls(**kwargs)


def make_base(
    family: str,
    seed: int = 0,
    pool_size: int = SHADERS21K_POOL_SIZE,
    root: str | None = None,
    **kwargs: Any,
) -> Source:
    """A base (non-composite) source by family name; kwargs go to its constructor."""
    if family not in BASES:
        raise FamilyError(f"unknown base family {family!r}; valid bases: {', '.join(BASES)}")
    cls = _base_class(family)
    kw: dict[str, Any] = {"seed": seed, **kwargs}
    if family == "shaders":
        kw["pool_size"] = pool_size
    if family in ("folder", "glsl"):
        if root is None:
            what = "images" if family == "folder" else "GLSL shaders"
            raise FamilyError(f"family {family!r} needs root=<a folder of {what}>")
        kw["root"] = root
    return _build(cls, family, kw)


def make_source(
    family: str,
    seed: int = 0,
    pool_size: int = SHADERS21K_POOL_SIZE,
    root: str | None = None,
    **kwargs: Any,
) -> Source:
    """Build the source of a family.

    Args:
        family: one of FAMILIES.
        seed: seed of the source (compositions and their base share it).
        pool_size: number of shader programs (base "shaders").
        root: folder of images ("folder") or shaders ("glsl"), also for such a base.
        **kwargs: options of the family; for compositions, `base` (one of BASES, default
            "shaders") and the composition's own options (Mixup: n, alpha; KML: mask_size); all
            others go to the base (e.g. ShaderSource's families, filter_degenerate, supersample).
            `bank_size=N` (any family) keeps N base images rendered once (`BankSource`): a
            composition then mixes a fixed bank of base images on the fly, like the paper's
            pre-rendered Shaders21k; a base family becomes a fixed set of N images.
    Returns:
        the Source.
    Raises:
        FamilyError: unknown family, base or option (the message lists the valid ones).
    """
    if family not in FAMILIES:
        raise FamilyError(f"unknown family {family!r}; valid families: {', '.join(FAMILIES)}")
    bank_size = kwargs.pop("bank_size", None)
    if family not in COMPOSITIONS:
        if "base" in kwargs:
            raise FamilyError(f"family {family!r} is not a composition and takes no base")
        return _banked(
            make_base(family, seed=seed, pool_size=pool_size, root=root, **kwargs), bank_size
        )
    base_family = kwargs.pop("base", "shaders")
    cls = _composition_class(family)
    own = {k: kwargs.pop(k) for k in list(kwargs) if k in _accepted(cls) - {"base", "seed"}}
    base = make_base(base_family, seed=seed, pool_size=pool_size, root=root, **kwargs)
    return _build(cls, family, {"base": _banked(base, bank_size), "seed": seed, **own})


def _banked(source: Source, bank_size: int | None) -> Source:
    """`source`, or a BankSource of `bank_size` of its images."""
    if bank_size is None:
        return source
    from procvision.data.bank import BankSource

    return BankSource(source, bank_size)

"""Shader programs, natively in torch: a seeded pool of procedural fragment "shaders".

Ten families (spec section 6.3) with composable coordinate warps and colour maps; every program
is a pure function of (seed, program id) and every image of (seed, image index). See
`ShaderSource` for the Shaders21k-like source and `Program` for the readable program view.
"""

from procvision.data.shaders.core import (
    FAMILY_NAMES,
    Program,
    program,
    programs,
    render_ids,
    render_programs,
)
from procvision.data.shaders.filter import (
    degenerate_mask,
    is_degenerate_image,
    rejection_rate,
    valid_programs,
)
from procvision.data.shaders.source import ShaderSource

__all__ = [
    "FAMILY_NAMES",
    "Program",
    "ShaderSource",
    "degenerate_mask",
    "is_degenerate_image",
    "program",
    "programs",
    "rejection_rate",
    "render_ids",
    "render_programs",
    "valid_programs",
]

"""A memory's recipe: how its items are embedded, and the vote its users get by default.

One recipe per memory, recorded in the manifest when the memory is built and kept when it is
emptied. Plain JSON data (the memory knows no backbone, only these records):

    {"backbone": {"spec": "/abs/export", "fingerprint": "vit_tiny:..."},
     "transform": {"size": 224, "policy": "crop", "crop_ratio": 0.875,
                   "interpolation": "bicubic", "normalize": "imagenet"},
     "features": {"kind": "cls", "precision": "fp32"},
     "vote": {"k": 20, "method": "weighted", "T": 0.07}}

Items embedded with another backbone fingerprint, transform or feature kind/precision do not
belong in the memory (`recipe_differences`); the backbone's path and the vote may change freely.
"""

from __future__ import annotations

import copy
from typing import Any

from procvision.constants import PAPER_K, PAPER_T
from procvision.memory.errors import InvalidArgument
from procvision.memory.vote import METHODS

TRANSFORM_KEYS = ("size", "policy", "crop_ratio", "interpolation", "normalize")
FEATURE_KINDS = ("cls",)
PRECISIONS = ("fp32", "bf16")


def default_vote(k: int = PAPER_K, method: str = "weighted", T: float = PAPER_T) -> dict:
    """{"k", "method", "T"}, checked: k >= 1, a known method, T > 0."""
    if int(k) < 1:
        raise InvalidArgument(f"--k: expected a positive neighbour count, got {k}")
    if method not in METHODS:
        raise InvalidArgument(f"--method: expected one of {', '.join(METHODS)}, got {method!r}")
    if not float(T) > 0:
        raise InvalidArgument(f"--T: expected a positive temperature, got {T}")
    return {"k": int(k), "method": str(method), "T": float(T)}


def make_recipe(
    backbone_spec: str | None,
    fingerprint: str | None,
    transform: dict[str, Any],
    feature_kind: str = "cls",
    precision: str = "fp32",
    vote: dict | None = None,
) -> dict:
    """A recipe dict (see the module docstring); `transform` holds TRANSFORM_KEYS."""
    missing = [k for k in TRANSFORM_KEYS if k not in transform]
    if missing:
        raise InvalidArgument(f"recipe transform: lacks {missing}")
    if feature_kind not in FEATURE_KINDS:
        raise InvalidArgument(f"recipe features: kind must be one of {FEATURE_KINDS}")
    if precision not in PRECISIONS:
        raise InvalidArgument(f"recipe features: precision must be one of {PRECISIONS}")
    return {
        "backbone": {"spec": backbone_spec, "fingerprint": fingerprint},
        "transform": {k: transform[k] for k in TRANSFORM_KEYS},
        "features": {"kind": feature_kind, "precision": precision},
        "vote": copy.deepcopy(vote) if vote is not None else default_vote(),
    }


def recipe_differences(memory_recipe: dict, other: dict) -> list[str]:
    """Human lines naming what differs in how items are embedded ("transform.size: 16 -> 48").

    Compares the backbone fingerprint, the transform and the features; not the backbone path
    (a moved export is the same model) nor the vote."""
    out = []
    a_fp = (memory_recipe.get("backbone") or {}).get("fingerprint")
    b_fp = (other.get("backbone") or {}).get("fingerprint")
    if a_fp is not None and b_fp is not None and a_fp != b_fp:
        out.append(f"backbone fingerprint: {a_fp[:16]}… -> {b_fp[:16]}…")
    for part in ("transform", "features"):
        a, b = memory_recipe.get(part) or {}, other.get(part) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{part}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


def recipe_vote(recipe: dict | None) -> dict:
    """The recipe's default vote, or the paper's (k=20, weighted, T=0.07) if none is recorded."""
    vote = (recipe or {}).get("vote")
    return default_vote(**vote) if vote else default_vote()

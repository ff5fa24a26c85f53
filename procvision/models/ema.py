"""Exponential moving average of the student into the teacher (DINO's momentum encoder)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def ema_update_(
    teacher: Iterable[torch.Tensor], student: Iterable[torch.Tensor], momentum: float
) -> None:
    """In place: teacher <- momentum * teacher + (1 - momentum) * student, for every pair.

    Uses fused `torch._foreach_*` ops (one kernel launch per op instead of one per tensor).
    m = 1 leaves the teacher unchanged; m = 0 copies the student.

    Args:
        teacher: floating tensors updated in place (parameters or buffers).
        student: tensors of the same shapes, in the same order.
        momentum: m in [0, 1].
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    t, s = list(teacher), list(student)
    if len(t) != len(s):
        raise ValueError(f"teacher has {len(t)} tensors but student has {len(s)}")
    if not t:
        return
    torch._foreach_mul_(t, momentum)
    torch._foreach_add_(
        t, [x.detach().to(y.dtype) for x, y in zip(s, t, strict=True)], alpha=1.0 - momentum
    )

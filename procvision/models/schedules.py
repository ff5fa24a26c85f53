"""Schedules as pure functions of the global optimiser step, so a resumed run restores them exactly.

DINO (Caron et al. 2021) schedules the learning rate, weight decay, teacher momentum and teacher
temperature per iteration. Here each is `f(step, ...)` with no precomputed arrays, so a warm-up longer
than the run or a changed step count cannot index out of range.
"""

from __future__ import annotations

import math


def cosine_schedule(step: int, total: int, start: float, end: float) -> float:
    """Half-cosine from `start` (step 0) to `end` (step >= total).

    Args:
        step: current step (clamped to [0, total]).
        total: number of steps of the schedule; `total <= 0` returns `end`.
        start: value at step 0.
        end: value at and after step `total`.
    """
    if total <= 0:
        return float(end)
    t = min(max(step, 0), total) / total
    return float(end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t)))


def warmup_cosine(step: int, total: int, warmup: int, peak: float, final: float) -> float:
    """Linear warm-up from 0 to `peak` over `warmup` steps, then cosine from `peak` to `final`.

    The value is 0 at step 0, `peak` at step `warmup` and `final` at step `total`.
    """
    warmup = max(0, min(warmup, total))
    if step < warmup:
        return float(peak * step / warmup)
    return cosine_schedule(step - warmup, total - warmup, peak, final)


def linear_warmup(step: int, warmup: int, start: float, end: float) -> float:
    """Linear from `start` (step 0) to `end` (step >= warmup), constant after: the teacher
    temperature warm-up of DINO (paper: start = end = 0.04, so constant)."""
    if warmup <= 0 or step >= warmup:
        return float(end)
    return float(start + (end - start) * max(step, 0) / warmup)

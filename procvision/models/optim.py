"""Optimiser helpers for DINO: weight-decay parameter groups and per-tensor gradient clipping."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn


def param_groups(named_params: Iterable[tuple[str, nn.Parameter]]) -> list[dict]:
    """Two AdamW groups: "decay" (weights, >= 2-D) and "no_decay" (biases and 1-D: norms, gains).

    Frozen parameters (requires_grad False, e.g. the fixed weight-norm magnitude) are left out.
    Each group carries a "name" key; its "weight_decay" is set per step by the module.
    """
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "name": "decay", "weight_decay": 0.0},
        {"params": no_decay, "name": "no_decay", "weight_decay": 0.0},
    ]


@torch.no_grad()
def clip_grad_per_param_(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor | None:
    """DINO's clipping: scale each parameter's gradient so its own L2 norm is at most `max_norm`.

    (Unlike `clip_grad_norm_`, which scales all gradients by one global factor.) Call after
    unscaling under fp16 AMP.

    Returns:
        the pre-clipping norms [N] of the parameters with a gradient, or None if there are none.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    norms = torch._foreach_norm(grads, 2.0)
    scales = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, scales)
    return torch.stack(norms)

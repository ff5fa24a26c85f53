"""The DINO loss as pure fp32 functions, and the teacher-centre update (Caron et al. 2021, Alg. 1).

Notation: V_s student views (globals first, then locals), V_t teacher views (the globals), batch B,
prototypes K. The loss is the mean over every pair (teacher view q, student view v != q) of
    CE(q, v) = mean_b sum_k -softmax((t_q - c) / tau_t)_k * log_softmax(s_v / tau_s)_k.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _stack_views(views: torch.Tensor | Sequence[torch.Tensor], what: str) -> torch.Tensor:
    """Views as one fp32 tensor [V, B, K] from a list of [B, K] or a [V, B, K] tensor."""
    x = views if isinstance(views, torch.Tensor) else torch.stack(list(views))
    if x.dim() != 3:
        raise ValueError(
            f"{what} must be [V, B, K] or a list of [B, K], got shape {tuple(x.shape)}"
        )
    return x.float()


def teacher_probs(
    teacher_out: torch.Tensor, center: torch.Tensor, teacher_temp: float
) -> torch.Tensor:
    """Centred, sharpened teacher distributions softmax((t - c) / tau_t), fp32, no gradient.

    Args:
        teacher_out: [V_t, B, K] (or a list of [B, K]) teacher head outputs.
        center: [1, K] running centre.
        teacher_temp: tau_t > 0.
    Returns:
        [V_t, B, K] probabilities.
    """
    t = _stack_views(teacher_out, "teacher_out").detach()
    return F.softmax((t - center.float()) / teacher_temp, dim=-1)


def student_log_probs(student_out: torch.Tensor, student_temp: float) -> torch.Tensor:
    """log_softmax(s / tau_s) in fp32; [V_s, B, K] (or a list of [B, K]) -> [V_s, B, K]."""
    return F.log_softmax(_stack_views(student_out, "student_out") / student_temp, dim=-1)


def pairwise_cross_entropy(t_probs: torch.Tensor, s_log_probs: torch.Tensor) -> torch.Tensor:
    """Mean over pairs (q < V_t, v < V_s, v != q) of mean_b sum_k -t[q] * log s[v].

    Teacher view q is the same image crop as student view q, so that pair is skipped.

    Args:
        t_probs: [V_t, B, K].
        s_log_probs: [V_s, B, K].
    Returns:
        scalar.
    """
    n_t, n_s = t_probs.shape[0], s_log_probs.shape[0]
    if n_s < 2:
        raise ValueError(f"the DINO loss needs at least 2 student views, got {n_s}")
    if n_t < 1 or n_t > n_s:
        raise ValueError(f"need 1 <= teacher views <= student views, got {n_t} and {n_s}")
    if t_probs.shape[1:] != s_log_probs.shape[1:]:
        raise ValueError(
            f"shape mismatch: teacher {tuple(t_probs.shape)}, student {tuple(s_log_probs.shape)}"
        )
    # sum over all v of CE(q, v), minus the v = q term.
    all_v = -(t_probs * s_log_probs.sum(0, keepdim=True)).sum(-1).mean(-1)  # [V_t]
    same = -(t_probs * s_log_probs[:n_t]).sum(-1).mean(-1)  # [V_t]
    n_pairs = n_t * n_s - n_t
    return (all_v - same).sum() / n_pairs


def dino_loss(
    student_out: torch.Tensor | Sequence[torch.Tensor],
    teacher_out: torch.Tensor | Sequence[torch.Tensor],
    center: torch.Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> torch.Tensor:
    """The DINO cross-entropy in fp32.

    Args:
        student_out: [V_s, B, K] or a list of V_s tensors [B, K]; globals first.
        teacher_out: [V_t, B, K] or a list; teacher outputs of the first V_t (global) views.
        center: [1, K].
        student_temp: tau_s (paper 0.1).
        teacher_temp: tau_t (paper 0.04).
    Returns:
        scalar loss; raises ValueError with fewer than 2 student views.
    """
    s = student_log_probs(student_out, student_temp)
    t = teacher_probs(teacher_out, center, teacher_temp)
    return pairwise_cross_entropy(t, s)


@torch.no_grad()
def batch_center(teacher_out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean teacher output over views and batch, all-reduced over ranks when torch.distributed is
    initialised (sum and count are reduced, so unequal batch sizes are weighted correctly).

    Args:
        teacher_out: [V_t, B, K] or a list of [B, K].
    Returns:
        [1, K] fp32.
    """
    t = _stack_views(teacher_out, "teacher_out").detach()
    total = t.sum(dim=(0, 1)).unsqueeze(0)
    count = torch.tensor([float(t.shape[0] * t.shape[1])], device=t.device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        dist.all_reduce(count)
    return total / count


def update_center(
    center: torch.Tensor, batch_mean: torch.Tensor, momentum: float = 0.9
) -> torch.Tensor:
    """EMA of the centre: momentum * center + (1 - momentum) * batch_mean; [1, K] -> [1, K]."""
    return center * momentum + batch_mean.to(center.dtype) * (1.0 - momentum)

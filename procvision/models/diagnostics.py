"""Collapse diagnostics for DINO, as pure functions (the raw loss alone is not a progress signal).

Collapse to a constant: cls_std -> 0 and effective_rank -> 1. Collapse to uniform: teacher entropy
-> log K and KL(teacher || student) -> 0 with the loss stuck near log K.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def entropy(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the distributions in `probs` [..., K] along `dim`."""
    p = probs.float()
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim).mean()


def marginal_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of the batch-mean distribution; probs [..., K] -> scalar. Low: all samples
    pick the same few prototypes."""
    return entropy(probs.reshape(-1, probs.shape[-1]).float().mean(0))


def kl_divergence(probs: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Mean KL(p || q) over leading dims; probs and log_q [..., K] -> scalar."""
    p = probs.float()
    return (p * (torch.log(p.clamp_min(1e-12)) - log_q.float())).sum(-1).mean()


def cls_std(features: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std of L2-normalised features [N, D] -> scalar.

    About 1/sqrt(D) for well-spread features, 0 under collapse.
    """
    z = F.normalize(features.float(), dim=-1)
    return z.std(dim=0).mean()


def effective_rank(features: torch.Tensor) -> torch.Tensor:
    """exp(entropy of the normalised singular values) of the L2-normalised features [N, D].

    Roy & Vetterli (2007); no centring, so identical rows give rank 1. Range [1, min(N, D)].
    """
    z = F.normalize(features.float(), dim=-1)
    s = torch.linalg.svdvals(z)
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())

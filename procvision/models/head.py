"""The DINO projection head: MLP -> L2 normalisation -> weight-normalised linear layer."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """MLP (n_layers Linear, GELU between) to a bottleneck, L2-normalise, then a weight-normalised
    Linear(bottleneck, out_dim, bias=False): the prototypes.

    With `norm_last_layer` the weight-norm magnitude g is fixed at 1 (not trained), so the last layer
    is a cosine similarity to `out_dim` unit prototypes (DINO's stability default).

    Attributes:
        mlp: the projector [B, in_dim] -> [B, bottleneck_dim].
        last_layer: the prototypes; `last_layer.parametrizations.weight.original0` is g [out_dim, 1],
            `...original1` is v [out_dim, bottleneck_dim]. Frozen during the first epoch by the module.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        g = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        g.requires_grad_(not norm_last_layer)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_dim] -> logits [B, out_dim]."""
        x = self.mlp(x)
        # The logits are cosines that the loss divides by a temperature of ~0.04: computed in bf16
        # they would carry ~0.05 of rounding error into the teacher targets, so stay in fp32.
        with torch.autocast(x.device.type, enabled=False):
            x = F.normalize(x.float(), dim=-1, p=2, eps=1e-6)
            return self.last_layer(x)

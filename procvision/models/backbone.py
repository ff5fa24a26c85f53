"""Backbones from timm: CLS embedding and patch tokens for images of any size the model accepts.

ViTs are built with `dynamic_img_size=True`, so positional embeddings are interpolated for every crop
size (224 global and 96 local crops use one model). Any other timm model (a ResNet or ConvNeXt) also
works: its patches are the last feature map and its "CLS" is the global average of that map.
Weights are never downloaded (`pretrained=False`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import timm
import torch
import torch.nn as nn

_VIT_KWARGS = ("img_size", "patch_size", "dynamic_img_size")


class Backbone(nn.Module):
    """A timm model with a fixed feature API.

    Args:
        arch: any timm model name, e.g. "vit_small_patch16_224", "vit_tiny_patch16_224", "resnet18".
        img_size: the size of the positional-embedding grid (ViTs; other sizes are interpolated).
        patch_size: override the arch's patch size (ViTs), e.g. 4 for 32-px images.
        drop_path_rate: stochastic depth (DINO: 0.1 for the student, 0 for the teacher).
        **timm_kwargs: passed to `timm.create_model` (e.g. depth=4, embed_dim=192, num_heads=3).

    Attributes:
        arch: the timm name.
        embed_dim: D, the width of `cls` and `patches`.
        config: the keyword arguments that rebuild this backbone: `Backbone(**config)`.
        is_vit: whether the model has patch tokens with prefix (CLS) tokens.
        model: the timm model.
    """

    def __init__(
        self,
        arch: str = "vit_small_patch16_224",
        img_size: int = 224,
        patch_size: int | None = None,
        drop_path_rate: float = 0.0,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        vit_kwargs: dict[str, Any] = {"img_size": img_size, "dynamic_img_size": True}
        if patch_size is not None:
            vit_kwargs["patch_size"] = patch_size
        common = {
            "pretrained": False,
            "num_classes": 0,
            "drop_path_rate": drop_path_rate,
            **timm_kwargs,
        }
        try:
            model = timm.create_model(arch, **common, **vit_kwargs)
        except TypeError as vit_error:  # not a ViT: no img_size/patch_size/dynamic_img_size
            if patch_size is not None:
                raise TypeError(f"{arch!r} does not take patch_size: {vit_error}") from vit_error
            try:
                model = timm.create_model(arch, **common)
            except TypeError as error:
                raise TypeError(
                    f"cannot build timm model {arch!r} with {common}: {error}"
                ) from error
        self.model = model
        self.arch = arch
        self.is_vit = hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens")
        self.embed_dim = int(model.num_features)
        self.config: dict[str, Any] = {
            "arch": arch,
            "img_size": int(img_size),
            "patch_size": None if patch_size is None else int(patch_size),
            "drop_path_rate": float(drop_path_rate),
            **timm_kwargs,
        }

    @property
    def patch_size(self) -> int | None:
        """Side of a patch in pixels (ViTs), else None."""
        if not self.is_vit:
            return None
        return int(self.model.patch_embed.patch_size[0])

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images [B, 3, H, W] (ImageNet-normalised) -> {"cls": [B, D], "patches": [B, h, w, D]}.

        ViT: tokens of the last block after the final norm; cls is token 0, patches the grid
        (h, w) = (H // p, W // p). Other models: patches = last feature map, cls = its mean.
        """
        if self.is_vit:
            tokens = self.model.forward_features(x)
            n_prefix = int(self.model.num_prefix_tokens)
            p = self.model.patch_embed.patch_size
            h, w = x.shape[-2] // p[0], x.shape[-1] // p[1]
            patches = tokens[:, n_prefix:]
            if patches.shape[1] != h * w:
                raise RuntimeError(f"expected {h}x{w} patch tokens, got {patches.shape[1]}")
            return {"cls": tokens[:, 0], "patches": patches.reshape(x.shape[0], h, w, -1)}
        fmap = self.model.forward_features(x)
        if fmap.dim() != 4:
            raise RuntimeError(
                f"{self.arch}: expected a [B, C, h, w] feature map, got {tuple(fmap.shape)}"
            )
        return {"cls": fmap.mean(dim=(-2, -1)), "patches": fmap.permute(0, 2, 3, 1)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] -> CLS embedding [B, D] (after the final norm, not L2-normalised)."""
        if self.is_vit:
            return self.model.forward_features(x)[:, 0]
        return self.forward_features(x)["cls"]

    def fingerprint(self) -> str:
        """sha256 hex of the config and every state tensor (name, dtype, shape, bytes)."""
        h = hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode())
        for name, t in sorted(self.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


def random_backbone(
    arch: str = "vit_small_patch16_224",
    img_size: int = 224,
    patch_size: int | None = None,
    seed: int = 0,
    **timm_kwargs: Any,
) -> Backbone:
    """A randomly initialised backbone (timm's init), reproducible from `seed`, in eval mode."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        backbone = Backbone(arch, img_size=img_size, patch_size=patch_size, **timm_kwargs)
    finally:
        torch.random.set_rng_state(state)
    return backbone.eval()

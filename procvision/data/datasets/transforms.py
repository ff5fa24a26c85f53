"""Evaluation transforms for real images: any PIL mode -> RGB -> resize policy -> normalised tensor.

The paper's k-NN pre-processing (spec §4.1) is `Resize(256, bicubic) -> CenterCrop(224) -> ToTensor
-> Normalize(ImageNet)`: policy "crop" with `crop_ratio = 224/256 = 0.875`. Small images such as
Fashion-MNIST (28 px) are better resized straight to the model's size: policy "resize".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from procvision.errors import UserError


class TransformError(UserError, ValueError):
    """An evaluation transform setting out of range (size, policy, interpolation, ...)."""


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ResizePolicy = Literal["crop", "resize", "none"]
_INTERPOLATIONS = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (L, P, LA, RGBA, CMYK, I;16, I, F, 1) -> 8-bit RGB.

    Palette images are expanded through their palette; alpha is dropped (as torchvision does);
    16-bit and 32-bit images are scaled to 8 bits instead of being clipped.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    return img.convert("RGB")


@dataclass(frozen=True)
class EvalTransform:
    """PIL image -> float tensor [3, size, size] (or the image's own size with policy "none").

    Args:
        size: output side length in pixels.
        policy: "crop" = resize the short side to round(size / crop_ratio), then centre-crop `size`
            (the paper, 256 -> 224); "resize" = resize straight to size x size (28-px data);
            "none" = keep the image as it is.
        crop_ratio: size / resize length for policy "crop".
        interpolation: "bicubic" (paper), "bilinear" or "nearest".
        normalize: "imagenet" (paper) or "none" (values stay in [0, 1]).
    """

    size: int = 224
    policy: ResizePolicy = "crop"
    crop_ratio: float = 0.875
    interpolation: str = "bicubic"
    normalize: Literal["imagenet", "none"] = "imagenet"

    def __post_init__(self) -> None:
        if self.policy not in ("crop", "resize", "none"):
            raise TransformError(
                f"resize policy must be 'crop', 'resize' or 'none', got {self.policy!r}"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise TransformError(
                f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        if self.normalize not in ("imagenet", "none"):
            raise TransformError(f"normalize must be 'imagenet' or 'none', got {self.normalize!r}")
        if self.size < 1 or not 0.0 < self.crop_ratio <= 1.0:
            raise TransformError(
                f"need size >= 1 and 0 < crop_ratio <= 1, got {self.size}, {self.crop_ratio}"
            )

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = to_rgb(img)
        mode = _INTERPOLATIONS[self.interpolation]
        if self.policy == "crop":
            img = TF.resize(img, round(self.size / self.crop_ratio), interpolation=mode)
            img = TF.center_crop(img, [self.size, self.size])
        elif self.policy == "resize":
            img = TF.resize(img, [self.size, self.size], interpolation=mode)
        x = TF.pil_to_tensor(img).float().div_(255.0)
        if self.normalize == "imagenet":
            x = TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
        return x

    def describe(self) -> dict:
        return asdict(self)

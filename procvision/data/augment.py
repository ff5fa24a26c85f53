"""DINO multi-crop augmentation as batched tensor code on the training device.

Each op is a pure function of (images, per-sample parameters); `MultiCropAugment` draws all
parameters for a view on the CPU from one `torch.Generator` (so the crops are the same on any
device), moves them to the images' device in one copy, and applies:
    RandomResizedCrop -> flip -> colour jitter (p 0.8) -> grayscale (p 0.2) -> Gaussian blur
    -> solarise (second global crop only) -> ImageNet normalisation.
Blur probabilities are 1.0 / 0.1 / 0.5 for global 1 / global 2 / locals (DINO, Caron et al. 2021).
Images are float [B, 3, H, W] in [0, 1]. Colour-jitter factors are applied in a fixed order
(brightness, contrast, saturation, hue) rather than torchvision's random order.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from procvision.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY = (0.2989, 0.587, 0.114)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of [B, 3, H, W] images in [0, 1]."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize`, clamped to [0, 1]."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed` (mod 2**63)."""
    return torch.Generator().manual_seed(int(seed) % (2**63))


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    attempts: int = 10,
) -> torch.Tensor:
    """RandomResizedCrop boxes: area fraction ~ U(scale), log aspect ~ U(log ratio), position uniform.

    Like torchvision, up to `attempts` draws per sample; the first that fits is kept, and samples
    with none fall back to the largest centred box with the aspect clamped to `ratio`.

    Returns:
        float32 [n, 4] boxes (x0, y0, x1, y1) in pixel units, inside [0, width] x [0, height].
    """
    area = height * width * torch.empty(n, attempts).uniform_(*scale, generator=generator)
    log_r = torch.empty(n, attempts).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect)
    h = torch.sqrt(area / aspect)
    ok = (w <= width) & (h <= height)
    first = torch.argmax(ok.to(torch.int8), dim=1)  # index of the first fitting attempt
    rows = torch.arange(n)
    w, h, any_ok = w[rows, first], h[rows, first], ok.any(dim=1)
    # fallback: whole image, aspect clamped to the ratio range
    img_r = width / height
    fw = width if img_r <= ratio[1] else height * ratio[1]
    fh = height if img_r >= ratio[0] else width / ratio[0]
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))
    u = torch.rand(n, 2, generator=generator)
    x0 = u[:, 0] * (width - w)
    y0 = u[:, 1] * (height - h)
    x0 = torch.where(any_ok, x0, (width - w) / 2)
    y0 = torch.where(any_ok, y0, (height - h) / 2)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box and resize to size x size (bilinear; area-averaged when shrinking).

    Args:
        images: [B, C, H, W] float.
        boxes: [B, 4] (x0, y0, x1, y1) pixels, one box per image.
    Returns:
        [B, C, size, size].
    """
    idx = torch.arange(images.shape[0], device=images.device, dtype=images.dtype)[:, None]
    rois = torch.cat([idx, boxes.to(images.dtype)], dim=1)
    return roi_align(
        images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )


def hflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flip horizontally the images where mask [B] (bool) is set."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma [B, 1, H, W] of RGB images (ITU-R 601 weights)."""
    w = x.new_tensor(_GRAY).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    mn, _ = x.min(1)
    c = v - mn
    safe_c = torch.where(c > 0, c, torch.ones_like(c))
    s = torch.where(v > 0, c / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    h = torch.where(
        v == r,
        ((g - b) / safe_c) % 6.0,
        torch.where(v == g, (b - r) / safe_c + 2.0, (r - g) / safe_c + 4.0),
    )
    h = torch.where(c > 0, h / 6.0, torch.zeros_like(h)) % 1.0
    return torch.stack([h, s, v], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] HSV (hue in [0, 1)) -> RGB: f(n) = v - v s max(0, min(k, 4 - k, 1)),
    k = (n + 6 h) mod 6 for n = 5, 3, 1."""
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = x.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    k = (n + 6.0 * h) % 6.0
    return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def color_jitter(
    x: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    hue: torch.Tensor,
) -> torch.Tensor:
    """Per-sample colour jitter with factors [B] each (brightness/contrast/saturation multiply,
    1 = identity; hue shift in turns, 0 = identity), in that order, clamping to [0, 1] after each."""

    def blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return (f.view(-1, 1, 1, 1) * a + (1 - f.view(-1, 1, 1, 1)) * b).clamp(0, 1)

    x = (x * brightness.view(-1, 1, 1, 1)).clamp(0, 1)
    x = blend(x, to_gray(x).mean(dim=(1, 2, 3), keepdim=True), contrast)
    x = blend(x, to_gray(x), saturation)
    hsv = rgb_to_hsv(x)
    hsv = torch.cat([(hsv[:, :1] + hue.view(-1, 1, 1, 1)) % 1.0, hsv[:, 1:]], dim=1)
    return hsv_to_rgb(hsv).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float = 2.0) -> torch.Tensor:
    """Separable Gaussian blur with one sigma [B] (pixels) per image; reflect padding.

    The kernel radius is ceil(3 * max_sigma), at most side - 1.
    """
    b, c, hgt, wid = x.shape
    radius = max(1, min(math.ceil(3 * max_sigma), hgt - 1, wid - 1))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma.to(x.dtype).view(-1, 1) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*C, 2r+1]
    y = x.reshape(1, b * c, hgt, wid)
    y = F.conv2d(
        F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=b * c
    )
    y = F.conv2d(
        F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=b * c
    )
    return y.reshape(b, c, hgt, wid)


def solarize(x: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert pixels >= threshold in the images where mask [B] is set."""
    return torch.where(mask.view(-1, 1, 1, 1) & (x >= threshold), 1.0 - x, x)


@dataclass(frozen=True)
class ViewSpec:
    """Settings of one crop type (size, scale range, blur and solarise probabilities)."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float = 0.0


class DataConfigError(UserError, ValueError):
    """A training-data setting out of range (batch size, crop sizes, augmentation strengths)."""


@dataclass(frozen=True)
class AugmentSettings:
    """Every setting of `MultiCropAugment` but the crop geometry (sizes, scales, local count),
    as one typed value that YAML configs can set field by field (`data.init_args.augmentation`).
    Defaults are DINO's (Caron et al. 2021); see `MultiCropAugment` for each field."""

    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)
    solarize_p: float = 0.2
    normalize: bool = True

    def __post_init__(self) -> None:
        probs = {"flip_p": self.flip_p, "jitter_p": self.jitter_p, "gray_p": self.gray_p}
        probs |= {
            "solarize_p": self.solarize_p,
            **{f"blur_p[{i}]": p for i, p in enumerate(self.blur_p)},
        }
        bad = [f"{k}={v}" for k, v in probs.items() if not 0.0 <= v <= 1.0]
        if bad:
            raise DataConfigError(
                f"augmentation probabilities must lie in [0, 1], got {', '.join(bad)}"
            )
        if min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise DataConfigError(f"jitter strengths must be >= 0 (hue <= 0.5), got {self.jitter}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise DataConfigError(f"blur_sigma must be 0 < low <= high, got {self.blur_sigma}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise DataConfigError(f"ratio must be 0 < low <= high, got {self.ratio}")


class MultiCropAugment:
    """DINO multi-crop: [global 1, global 2, local 1 .. local N], globals first.

    Args:
        global_size: side of the 2 global crops (paper 224).
        local_size: side of the local crops (paper 96).
        n_local: number of local crops (paper 8; 0 allowed).
        global_scale: area fraction range of global crops (paper (0.4, 1)).
        local_scale: area fraction range of local crops (paper (0.05, 0.4)).
        ratio: aspect-ratio range (3/4, 4/3).
        flip_p: horizontal flip probability.
        jitter: (brightness, contrast, saturation, hue) strengths (0.4, 0.4, 0.2, 0.1).
        jitter_p: probability of colour jitter (0.8).
        gray_p: probability of grayscale (0.2).
        blur_sigma: range of the blur sigma in pixels (0.1, 2.0).
        blur_p: blur probability for (global 1, global 2, locals) = (1.0, 0.1, 0.5).
        solarize_p: solarisation probability of global 2 (0.2).
        normalize: apply ImageNet normalisation at the end.
    """

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        n_local: int = 8,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5),
        solarize_p: float = 0.2,
        normalize: bool = True,
    ) -> None:
        if n_local < 0:
            raise ValueError(f"n_local must be >= 0, got {n_local}")
        self.views = [
            ViewSpec(global_size, tuple(global_scale), blur_p[0]),
            ViewSpec(global_size, tuple(global_scale), blur_p[1], solarize_p),
        ] + [ViewSpec(local_size, tuple(local_scale), blur_p[2])] * n_local
        self.ratio = tuple(ratio)
        self.flip_p, self.jitter, self.jitter_p, self.gray_p = (
            flip_p,
            tuple(jitter),
            jitter_p,
            gray_p,
        )
        self.blur_sigma, self.normalize = tuple(blur_sigma), normalize

    @classmethod
    def from_settings(
        cls,
        global_size: int,
        local_size: int,
        n_local: int,
        global_scale: tuple[float, float],
        local_scale: tuple[float, float],
        settings: AugmentSettings | None = None,
    ) -> MultiCropAugment:
        """The augmentation of a crop geometry and `settings` (default: DINO's)."""
        return cls(
            global_size=global_size,
            local_size=local_size,
            n_local=n_local,
            global_scale=global_scale,
            local_scale=local_scale,
            **asdict(settings or AugmentSettings()),
        )

    @property
    def sizes(self) -> tuple[int, ...]:
        """The side of every view, globals first."""
        return tuple(v.size for v in self.views)

    @property
    def n_views(self) -> int:
        return len(self.views)

    def _draw(self, n: int, h: int, w: int, view: ViewSpec, g: torch.Generator) -> torch.Tensor:
        """All random parameters of one view as a CPU float tensor [n, 14]."""
        boxes = sample_crop_boxes(n, h, w, view.scale, self.ratio, g)
        u = torch.rand(n, 5, generator=g)  # flip, jitter, gray, blur, solarise
        b, c, s, hue = self.jitter
        factors = torch.stack(
            [
                torch.empty(n).uniform_(max(0.0, 1 - b), 1 + b, generator=g),
                torch.empty(n).uniform_(max(0.0, 1 - c), 1 + c, generator=g),
                torch.empty(n).uniform_(max(0.0, 1 - s), 1 + s, generator=g),
                torch.empty(n).uniform_(-hue, hue, generator=g),
            ],
            dim=1,
        )
        sigma = torch.empty(n, 1).uniform_(*self.blur_sigma, generator=g)
        return torch.cat([boxes, u[:, :5], factors, sigma], dim=1)

    def view(self, images: torch.Tensor, view: ViewSpec, params: torch.Tensor) -> torch.Tensor:
        """Apply one view with parameters from `_draw` (already on the images' device)."""
        boxes, u, f, sigma = params[:, :4], params[:, 4:9], params[:, 9:13], params[:, 13]
        x = resized_crop(images, boxes, view.size)
        x = hflip(x, u[:, 0] < self.flip_p)
        jit = u[:, 1] < self.jitter_p
        x = torch.where(jit.view(-1, 1, 1, 1), color_jitter(x, *f.unbind(1)), x)
        x = torch.where((u[:, 2] < self.gray_p).view(-1, 1, 1, 1), to_gray(x).expand_as(x), x)
        blur = u[:, 3] < view.blur_p
        if view.blur_p > 0:
            x = torch.where(blur.view(-1, 1, 1, 1), gaussian_blur(x, sigma, self.blur_sigma[1]), x)
        if view.solarize_p > 0:
            x = solarize(x, u[:, 4] < view.solarize_p)
        return normalize(x) if self.normalize else x

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """images [B, 3, H, W] in [0, 1] -> list of n_views tensors [B, 3, size, size] (float32)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        images = images.float()
        n, _, h, w = images.shape
        params = torch.stack([self._draw(n, h, w, v, generator) for v in self.views])
        params = params.to(images.device, non_blocking=True)
        return [self.view(images, v, p) for v, p in zip(self.views, params, strict=True)]

"""The paper's compositions over any base source: Mixup (spec §2.2), KML (§2.4), KML Mixup (§2.5).

Every random choice is drawn from `procvision.data.rng` keyed by (seed, output index), and the base
images a composite uses are drawn over a 2**32 index range, so they are independent images of the
base source. All work is batched on the device of the indices: one base `render` call per batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from procvision.data.bank import BankSource
from procvision.data.rng import hash_coords, normal, uniform
from procvision.data.source import Source

# Stream ids of this module; distinct so no two draws of a composite share random numbers.
_S_MIX_INDEX = 11
_S_MIX_EXP = 12
_S_MIX_BOOST = 13
_S_MIX_NORMAL = 20  # 20 .. 20 + _GAMMA_TRIES - 1
_S_MIX_ACCEPT = 40  # 40 .. 40 + _GAMMA_TRIES - 1
_S_KML_INDEX = 61
_S_KMLMIX_INDEX = 71

_GAMMA_TRIES = 12  # Marsaglia-Tsang accepts with p >= 0.95 per try, so 12 tries fail with p < 1e-15
KML_WORK_SIZE = 256  # the paper's 2-means runs on a 256x256 bilinear resize of s1


def draw_indices(seed: int, indices: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """Base-image indices for composites: `n` independent draws in [0, 2**32) per output index.

    Args:
        seed: seed of the composition.
        indices: int64 [B] output indices.
        stream: stream id naming the draw.
        n: draws per index.
    Returns:
        int64 [B, n] on indices' device.
    """
    j = torch.arange(n, device=indices.device, dtype=torch.int64) + stream * 1024
    return hash_coords(seed, indices[:, None], j[None, :])


def _log_gamma(seed: int, indices: torch.Tensor, n: int, alpha: float) -> torch.Tensor:
    """log of Gamma(alpha, 1) samples [B, n], pure in (seed, index).

    alpha == 1 is the exponential -log(1 - u). Otherwise Marsaglia-Tsang on shape a = alpha (or
    alpha + 1 with the U**(1/alpha) boost when alpha < 1), with a fixed number of tries drawn from
    separate streams; the first accepted try wins, and the (never seen in practice) all-rejected
    case falls back to the mode d. Working in log space keeps tiny alphas from underflowing to 0.
    """
    if alpha == 1.0:
        u = uniform(seed, indices, _S_MIX_EXP, n).double()
        return torch.log((-torch.log1p(-u)).clamp_min(1e-300))
    a = alpha + 1.0 if alpha < 1.0 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.full((indices.numel(), n), d, dtype=torch.float64, device=indices.device)
    done = torch.zeros_like(out, dtype=torch.bool)
    for k in range(_GAMMA_TRIES):
        rows = (~done).any(1).nonzero()[:, 0]  # only rows still waiting draw again
        if rows.numel() == 0:
            break
        sub = indices[rows]
        x = normal(seed, sub, _S_MIX_NORMAL + k, n).double()
        u = uniform(seed, sub, _S_MIX_ACCEPT + k, n).double().clamp_min(1e-300)
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        take = ok & ~done[rows]
        out[rows] = torch.where(take, d * v, out[rows])
        done[rows] |= ok
    log_g = torch.log(out)
    if alpha < 1.0:
        ub = uniform(seed, indices, _S_MIX_BOOST, n).double().clamp_min(1e-300)
        log_g = log_g + torch.log(ub) / alpha
    return log_g


ALPHA_RANGE = (1e-6, 1e6)  # beyond it the gamma draws under/overflow float64 and give NaN weights


def _check_alpha(alpha: float) -> None:
    lo, hi = ALPHA_RANGE
    if not lo <= alpha <= hi:
        raise ValueError(
            f"alpha (Dirichlet concentration) must be in [{lo:g}, {hi:g}], got {alpha}"
        )


def mixup_weights(seed: int, indices: torch.Tensor, n: int, alpha: float) -> torch.Tensor:
    """Dirichlet(alpha, ..., alpha) weights for Mixup of n images.

    Args:
        seed: seed of the composition.
        indices: int64 [B] output indices.
        n: number of images mixed (>= 1).
        alpha: Dirichlet concentration (> 0); 1 gives the paper's uniform Dirichlet.
    Returns:
        float32 [B, n], non-negative, each row sums to 1 (up to rounding).
    """
    if not 1 <= n <= 1024:
        raise ValueError(f"n (images per Mixup) must be in [1, 1024], got {n}")
    _check_alpha(alpha)
    indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
    # Normalising gamma samples = softmax of their logs (stable for tiny alpha).
    return torch.softmax(_log_gamma(seed, indices, n, float(alpha)), dim=1).float()


def _box_blur3(z: torch.Tensor) -> torch.Tensor:
    """3x3 mean filter with reflect-101 borders (cv2.blur default) on [B, C, H, W].

    Separable sums: 3x faster than avg_pool2d on CPU, and the same order for every pixel.
    """
    p = F.pad(z, (1, 1, 1, 1), mode="reflect")
    h = p[..., :, :-2] + p[..., :, 1:-1] + p[..., :, 2:]
    return (h[..., :-2, :] + h[..., 1:-1, :] + h[..., 2:, :]) / 9.0


def _fixed_point_bits(n_points: int) -> int:
    """Fractional bits so that float64 sums of n_points values in [0, 1] are exact integers."""
    return min(36, 52 - math.ceil(math.log2(max(n_points, 2))))


def _lex_extreme(pts: torch.Tensor, largest: bool) -> torch.Tensor:
    """Index [B] of the first pixel whose colour is lexicographically smallest (or largest).

    Args:
        pts: float [B, 3, N] colours.
    """
    v = -pts if largest else pts
    tied = torch.ones(pts.shape[0], pts.shape[2], dtype=torch.bool, device=pts.device)
    for c in range(3):  # narrow the candidates channel by channel: R, then G, then B
        vc = torch.where(tied, v[:, c], torch.inf)
        tied &= vc == vc.min(1, keepdim=True).values
    return tied.to(torch.uint8).argmax(1)


def two_means(x: torch.Tensor, iters: int = 3) -> torch.Tensor:
    """Batched 2-means of the pixel colours, as the paper's KML (spec §2.4).

    Initial centroids are the lexicographically smallest and largest colours (R, then G, then B,
    compared as floats like the authors' `np.unique(X, axis=0)`; first such pixel). Each of `iters` Lloyd steps assigns every pixel to
    the nearer centroid (ties -> cluster 0) and moves each centroid to its cluster's mean; an empty
    cluster keeps its centroid. Distances are compared in float64; centroid sums are sums of
    fixed-point integers held in float64 (exact below 2**53), so the result depends neither on
    batch size nor on summation order.

    Args:
        x: float [B, 3, H, W] colours in [0, 1].
        iters: Lloyd iterations (paper: 3).
    Returns:
        bool [B, H*W], True where the pixel's last assignment is cluster 1.
    """
    b = x.shape[0]
    pts = x.flatten(2).float()  # [B, 3, N]
    n_pts = pts.shape[2]
    first = torch.stack([_lex_extreme(pts, False), _lex_extreme(pts, True)], 1)  # [B, 2]
    cent = pts.gather(2, first[:, None, :].expand(-1, 3, -1)).transpose(1, 2).double()  # [B, 2, 3]
    pd = pts.double()
    scale = float(2 ** _fixed_point_bits(n_pts))
    fixed = torch.floor(pd * scale)  # integers: any summation order gives the same sum
    total = fixed.sum(2)  # [B, 3]
    one = torch.zeros(b, n_pts, dtype=torch.bool, device=x.device)
    for _ in range(int(iters)):
        # |p - c1|^2 < |p - c0|^2  <=>  p . 2(c1 - c0) > |c1|^2 - |c0|^2  (strict: ties -> 0)
        wgt = 2.0 * (cent[:, 1] - cent[:, 0])  # [B, 3]
        thr = (cent[:, 1] ** 2).sum(1) - (cent[:, 0] ** 2).sum(1)  # [B]
        proj = pd[:, 0] * wgt[:, 0, None]
        proj.addcmul_(pd[:, 1], wgt[:, 1, None]).addcmul_(pd[:, 2], wgt[:, 2, None])
        one = proj > thr[:, None]
        n1 = one.sum(1, dtype=torch.int64).double()  # [B]
        s1 = torch.bmm(fixed, one.double()[..., None])[..., 0]  # [B, 3], exact
        n0 = n_pts - n1
        m0 = (total - s1) / (n0.clamp_min(1)[:, None] * scale)
        m1 = s1 / (n1.clamp_min(1)[:, None] * scale)
        cent = torch.stack(
            [
                torch.where((n0 > 0)[:, None], m0, cent[:, 0]),
                torch.where((n1 > 0)[:, None], m1, cent[:, 1]),
            ],
            1,
        )
    return one


def kml_mask(s1: torch.Tensor, work_size: int = KML_WORK_SIZE) -> torch.Tensor:
    """The K-Means-Leaves mask of spec §2.4 / §6.5, batched.

    Bilinear antialiased resize to work_size^2, 2-means (`two_means`), mask = cluster 0 (the one
    seeded by the smallest colour), 3x3 box blur, bilinear resize back to (H, W), box blur again.

    Args:
        s1: float [B, 3, H, W] shape images in [0, 1].
        work_size: side of the k-means grid (paper: 256).
    Returns:
        float32 [B, 1, H, W] soft mask in [0, 1].
    """
    if s1.ndim != 4 or s1.shape[1] != 3:
        raise ValueError(f"kml_mask expects s1 of shape [B, 3, H, W], got {tuple(s1.shape)}")
    b, _, h, w = s1.shape
    x = F.interpolate(
        s1.float(),
        size=(work_size, work_size),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    m = (~two_means(x)).float().view(b, 1, work_size, work_size)
    m = _box_blur3(m)
    m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    return _box_blur3(m)


class MixupSource(Source):
    """Shaders Mixup (spec §2.2): Dirichlet(alpha)-weighted sum of n independent base images.

    Args:
        base: the source mixed.
        n: images per mix (paper: 6).
        alpha: Dirichlet concentration (paper: 1, i.e. uniform on the simplex).
        seed: seed of the composition's draws.
    """

    name = "mixup"
    finite_by_construction = True

    def __init__(self, base: Source, n: int = 6, alpha: float = 1.0, seed: int = 0) -> None:
        super().__init__(seed)
        if not 1 <= n <= 1024:  # the counter RNG gives each draw 1024 values per index
            raise ValueError(f"n (images per Mixup) must be in [1, 1024], got {n}")
        _check_alpha(alpha)
        self.base, self.n, self.alpha = base, int(n), float(alpha)

    def _render(self, indices: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
        b = indices.numel()
        src = draw_indices(self.seed, indices, _S_MIX_INDEX, self.n)  # [B, n]
        imgs = self.base.render(src.reshape(-1), size, device).view(b, self.n, 3, size, size)
        w = mixup_weights(self.seed, indices, self.n, self.alpha).to(device)
        # An explicit sum keeps the result bit-identical for any batch size.
        out = w[:, 0, None, None, None] * imgs[:, 0]
        for k in range(1, self.n):
            out = out + w[:, k, None, None, None] * imgs[:, k]
        return out

    def describe(self) -> dict:
        return {
            **super().describe(),
            "n": self.n,
            "alpha": self.alpha,
            "base": self.base.describe(),
        }


class KMLSource(Source):
    """Shaders KML (spec §2.4): out = m * s2 + (1 - m) * s3 with m = kml_mask(s1).

    s1, s2, s3 are three independent base images drawn per output index. Over a `BankSource`
    the mask of each bank image is computed once and cached (uint8, like the bank itself).

    Args:
        base: source of shapes and textures.
        seed: seed of the composition's draws.
        mask_size: k-means grid side; None (default): min(256, image side). The paper resizes its
            384-px shapes to 256; for smaller images an upsample would add pixels, not information.
    """

    name = "kml"
    finite_by_construction = True

    def __init__(self, base: Source, seed: int = 0, mask_size: int | None = None) -> None:
        super().__init__(seed)
        if mask_size is not None and mask_size < 2:
            raise ValueError(f"mask_size must be >= 2 or None, got {mask_size}")
        self.base = base
        self.mask_size = None if mask_size is None else int(mask_size)

    def work_size(self, size: int) -> int:
        """Side of the 2-means grid for images of side `size`."""
        return min(KML_WORK_SIZE, size) if self.mask_size is None else self.mask_size

    def _render(self, indices: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
        b = indices.numel()
        src = draw_indices(self.seed, indices, _S_KML_INDEX, 3)  # [B, 3]: s1, s2, s3
        if isinstance(self.base, BankSource):
            # s1 is a bank image, so its mask is too: computed once per bank entry.
            work = self.work_size(size)
            m = self.base.derived(
                f"kml_mask/{work}", src[:, 0], size, lambda s1: kml_mask(s1, work)
            )
            tex = self.base.render(src[:, 1:].reshape(-1), size, device).view(b, 2, 3, size, size)
            return m * tex[:, 0] + (1.0 - m) * tex[:, 1]
        imgs = self.base.render(src.reshape(-1), size, device).view(b, 3, 3, size, size)
        m = kml_mask(imgs[:, 0], self.work_size(size))
        return m * imgs[:, 1] + (1.0 - m) * imgs[:, 2]

    def describe(self) -> dict:
        mask = "min(256, size)" if self.mask_size is None else self.mask_size
        return {**super().describe(), "mask_size": mask, "base": self.base.describe()}


class KMLMixupSource(Source):
    """Shaders KML Mixup (spec §2.5): 0.5 * KML[i] + 0.5 * KML[j], j drawn per i (may equal i).

    Each output uses 6 base renders (2 masks, 4 textures).

    Args:
        base: source under the KML composition.
        seed: seed of the composition (shared with its inner KMLSource).
        mask_size: k-means grid side of the inner KML (None: min(256, image side)).
    """

    name = "kml_mixup"
    finite_by_construction = True

    def __init__(self, base: Source, seed: int = 0, mask_size: int | None = None) -> None:
        super().__init__(seed)
        self.kml = KMLSource(base, seed=seed, mask_size=mask_size)

    def _render(self, indices: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
        b = indices.numel()
        j = draw_indices(self.seed, indices, _S_KMLMIX_INDEX, 1)[:, 0]
        if isinstance(self.kml.base, BankSource):
            # Over a bank the work is memory-bound: two calls of B keep the working set in cache
            # (1.7x faster on CPU than one of 2B). KML is batch-independent and halving is exact,
            # so the images are the same either way.
            first = self.kml.render(indices, size, device).mul_(0.5)
            return first.add_(self.kml.render(j, size, device), alpha=0.5)
        # Fresh renders are bound by per-op overhead: one call of 2B makes bigger family groups.
        both = self.kml.render(torch.cat([indices, j]), size, device)
        return 0.5 * both[:b] + 0.5 * both[b:]

    def describe(self) -> dict:
        return {**super().describe(), "kml": self.kml.describe()}

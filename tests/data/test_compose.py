"""Mixup, KML and KML Mixup (spec §2.2, §2.4, §2.5, §6.5) over a stand-in base source."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from procvision.data import compose
from procvision.data.compose import (
    KMLMixupSource,
    KMLSource,
    MixupSource,
    draw_indices,
    kml_mask,
    mixup_weights,
    two_means,
)
from procvision.data.rng import uniform
from procvision.data.source import Source, pixel_grid


class GradientSource(Source):
    """Stand-in base: a two-colour gradient along a random direction plus a sine ripple."""

    name = "gradient"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.calls: list[int] = []

    def _render(self, indices, size, device):
        self.calls.append(indices.numel())
        u = uniform(self.seed, indices, 1, 9).to(device)  # [B, 9]
        g = pixel_grid(size, device)[..., 0]  # [1, S, S, 2] -> x
        y = pixel_grid(size, device)[..., 1]
        ang = u[:, 6, None, None] * 6.2832
        t = 0.5 + 0.5 * torch.sin(
            3 * (torch.cos(ang) * g + torch.sin(ang) * y) + 6 * u[:, 7, None, None]
        )
        c0, c1 = u[:, 0:3, None, None], u[:, 3:6, None, None]
        return c0 * t[:, None] + c1 * (1 - t[:, None])


def _two_colour(a, b, size=64):
    img = torch.empty(1, 3, size, size)
    img[..., : size // 2] = torch.tensor(a)[:, None, None]
    img[..., size // 2 :] = torch.tensor(b)[:, None, None]
    return img


def test_kml_mask_two_colour_image():
    left, right = (0.2, 0.5, 0.9), (0.8, 0.1, 0.1)  # left is lexicographically smaller (R first)
    m = kml_mask(_two_colour(left, right))
    assert m.shape == (1, 1, 64, 64)
    # cluster 0 (seeded by the smallest colour) is the left half; only the boundary is soft
    torch.testing.assert_close(m[..., :28], torch.ones(1, 1, 64, 28), atol=1e-6, rtol=0)
    torch.testing.assert_close(m[..., 36:], torch.zeros(1, 1, 64, 28), atol=1e-6, rtol=0)
    row = m[0, 0, 10]
    assert torch.all(row[1:] <= row[:-1] + 1e-6)  # monotone transition
    assert abs(m.mean().item() - 0.5) < 0.02
    # swapping the colours swaps the mask: the rule is the colour order, not the position
    m2 = kml_mask(_two_colour(right, left))
    torch.testing.assert_close(m2, m.flip(-1), atol=1e-5, rtol=0)


def test_kml_mask_constant_image_is_all_ones():
    m = kml_mask(torch.full((2, 3, 16, 16), 0.3))
    torch.testing.assert_close(m, torch.ones(2, 1, 16, 16))


def _reference_two_means(x: np.ndarray, iters: int = 3) -> np.ndarray:
    """Spec §2.4 equations in numpy float64, one image [3, H, W] (float32 input)."""
    pts32 = x.reshape(3, -1).T
    u = np.unique(pts32, axis=0)  # rows sorted lexicographically (R, then G, then B)
    pts = pts32.astype(np.float64)
    c = u[[0, -1]].astype(np.float64)
    for _ in range(iters):
        d = ((pts[:, None, :] - c[None]) ** 2).sum(-1)
        a = (d[:, 1] < d[:, 0]).astype(np.int64)  # ties -> cluster 0
        for k in (0, 1):
            if np.any(a == k):
                c[k] = pts[a == k].mean(0)
    return a


def test_two_means_matches_numpy_reference():
    g = torch.Generator().manual_seed(0)
    low = torch.rand(4, 3, 6, 6, generator=g)
    smooth = F.interpolate(low, size=(128, 128), mode="bilinear", align_corners=False)
    quant = (torch.rand(2, 3, 128, 128, generator=g) * 4).floor() / 3  # few exact colours
    noisy = torch.rand(2, 3, 128, 128, generator=g)
    x = torch.cat([smooth, (smooth[:2] * 255).round() / 255, quant, noisy])
    got = two_means(x).numpy()
    for b in range(x.shape[0]):
        ref = _reference_two_means(x[b].numpy())
        assert np.array_equal(got[b].astype(np.int64), ref), f"image {b}"
    # batch-size independence of the assignments
    assert np.array_equal(two_means(x[3:5]).numpy(), got[3:5])


def test_box_blur_is_reflect101_mean():
    z = torch.rand(1, 1, 5, 7, generator=torch.Generator().manual_seed(1))
    p = np.pad(z[0, 0].numpy().astype(np.float64), 1, mode="reflect")  # numpy reflect = 101
    ref = sum(p[i : i + 5, j : j + 7] for i in range(3) for j in range(3)) / 9
    np.testing.assert_allclose(compose._box_blur3(z)[0, 0].numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 3.0])
def test_mixup_weights_are_dirichlet(alpha):
    n, count = 6, 40000
    w = mixup_weights(7, torch.arange(count), n, alpha)
    assert w.shape == (count, n) and w.dtype == torch.float32
    assert torch.all(w >= 0)
    torch.testing.assert_close(w.sum(1), torch.ones(count), atol=1e-5, rtol=0)
    assert abs(w.mean().item() - 1 / n) < 1e-4
    var = (n - 1) / (n * n * (n * alpha + 1))  # Dirichlet marginal variance
    assert abs(w[:, 0].var().item() / var - 1) < 0.08
    assert abs(w[:, 3].var().item() / var - 1) < 0.08


def test_mixup_weights_dirichlet1_tail_and_purity():
    w = mixup_weights(0, torch.arange(40000), 6, 1.0)
    # Dirichlet(1,...,1) marginal is Beta(1, 5): P(w > 1/2) = (1/2)^5
    assert abs((w[:, 0] > 0.5).float().mean().item() - 1 / 32) < 0.004
    torch.testing.assert_close(mixup_weights(0, torch.tensor([123]), 6, 1.0), w[123:124])
    with pytest.raises(ValueError, match="alpha"):
        mixup_weights(0, torch.arange(2), 6, 0.0)
    with pytest.raises(ValueError, match="n"):
        mixup_weights(0, torch.arange(2), 0, 1.0)


def _compositions(base):
    return {
        "mixup": MixupSource(base, n=3, alpha=1.0, seed=3),
        "kml": KMLSource(base, seed=3, mask_size=64),
        "kml_mixup": KMLMixupSource(base, seed=3, mask_size=64),
    }


@pytest.mark.parametrize("name", ["mixup", "kml", "kml_mixup"])
def test_compositions_deterministic_across_batches(name):
    src = _compositions(GradientSource(seed=1))[name]
    idx = torch.arange(10, 16)
    full = src.render(idx, 24)
    assert full.shape == (6, 3, 24, 24) and full.dtype == torch.float32
    assert torch.isfinite(full).all() and full.min() >= 0 and full.max() <= 1
    split = torch.cat([src.render(idx[:1], 24), src.render(idx[1:4], 24), src.render(idx[4:], 24)])
    assert torch.equal(full, split)
    assert not torch.equal(full[0], full[1])


def test_kml_equals_its_definition():
    base = GradientSource(seed=2)
    src = KMLSource(base, seed=5, mask_size=32)
    idx = torch.tensor([0, 9])
    s = base.render(draw_indices(5, idx, compose._S_KML_INDEX, 3).reshape(-1), 20).view(
        2, 3, 3, 20, 20
    )
    m = kml_mask(s[:, 0], 32)
    torch.testing.assert_close(src.render(idx, 20), m * s[:, 1] + (1 - m) * s[:, 2])


def test_mixup_and_kml_mixup_definitions_and_base_calls():
    base = GradientSource(seed=2)
    mix = MixupSource(base, n=6, alpha=1.0, seed=4)
    idx = torch.tensor([1, 2, 3])
    j = draw_indices(4, idx, compose._S_MIX_INDEX, 6)
    imgs = base.render(j.reshape(-1), 16).view(3, 6, 3, 16, 16)
    w = mixup_weights(4, idx, 6, 1.0)
    base.calls.clear()
    torch.testing.assert_close(mix.render(idx, 16), (w[:, :, None, None, None] * imgs).sum(1))
    assert base.calls == [18]

    km = KMLMixupSource(base, seed=4, mask_size=32)
    base.calls.clear()
    out = km.render(idx, 16)
    assert base.calls == [18]  # 6 base renders per image, in one call
    jj = draw_indices(4, idx, compose._S_KMLMIX_INDEX, 1)[:, 0]
    torch.testing.assert_close(out, 0.5 * km.kml.render(idx, 16) + 0.5 * km.kml.render(jj, 16))
    d = km.describe()
    assert d["kml"]["base"]["family"] == "gradient"


def test_kml_default_mask_size_is_the_image_side_up_to_256():
    base = GradientSource()
    default = KMLSource(base, seed=1)
    assert default.work_size(32) == 32 and default.work_size(384) == 256
    idx = torch.arange(4)
    assert torch.equal(
        default.render(idx, 32), KMLSource(base, seed=1, mask_size=32).render(idx, 32)
    )

"""Batched multi-crop augmentation: shapes, ranges, determinism and each op against a reference."""

import colorsys
import math

import pytest
import torch
import torch.nn.functional as F

from procvision.data import augment as A


def images(b=4, size=40, seed=0):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_multicrop_shapes_and_ranges():
    aug = A.MultiCropAugment(global_size=32, local_size=16, n_local=3)
    crops = aug(images(), A.make_generator(0))
    assert aug.n_views == 5 and len(crops) == 5
    assert [c.shape for c in crops] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 3
    for c in crops:
        assert torch.isfinite(c).all() and c.dtype == torch.float32
        x = A.denormalize(c)
        assert x.min() >= 0 and x.max() <= 1
    raw = A.MultiCropAugment(32, 16, 0, normalize=False)(images(), A.make_generator(0))
    assert len(raw) == 2 and all(c.min() >= 0 and c.max() <= 1 for c in raw)


def test_multicrop_is_seeded():
    aug = A.MultiCropAugment(global_size=24, local_size=12, n_local=2)
    a = aug(images(), A.make_generator(5))
    b = aug(images(), A.make_generator(5))
    c = aug(images(), A.make_generator(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1])  # two global views differ


def test_crop_boxes_follow_scale_and_ratio():
    g = A.make_generator(0)
    boxes = A.sample_crop_boxes(2000, 50, 80, (0.05, 0.4), (3 / 4, 4 / 3), g)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 80 + 1e-4).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 50 + 1e-4).all()
    area = w * h / (50 * 80)
    assert area.min() >= 0.05 - 1e-5 and area.max() <= 0.4 + 1e-5
    r = w / h
    assert r.min() >= 3 / 4 - 1e-5 and r.max() <= 4 / 3 + 1e-5
    # scale 1 with a wide image cannot fit often: falls back to the centred, ratio-clamped box
    full = A.sample_crop_boxes(50, 50, 200, (1.0, 1.0), (3 / 4, 4 / 3), g)
    fw, fh = full[:, 2] - full[:, 0], full[:, 3] - full[:, 1]
    torch.testing.assert_close(fw / fh, torch.full((50,), 4 / 3))
    torch.testing.assert_close(full[:, 0], (200 - fw) / 2)


def test_resized_crop_full_box_is_identity_and_subbox_matches_slice():
    x = images(2, 16)
    full = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2)
    torch.testing.assert_close(A.resized_crop(x, full, 16), x)
    box = torch.tensor([[4.0, 2.0, 12.0, 10.0], [0.0, 8.0, 8.0, 16.0]])  # 8x8 boxes on the grid
    out = A.resized_crop(x, box, 8)
    torch.testing.assert_close(out[0], x[0, :, 2:10, 4:12])
    torch.testing.assert_close(out[1], x[1, :, 8:16, 0:8])
    # shrinking by 2 averages 2x2 blocks (no aliasing)
    half = A.resized_crop(x, full, 8)
    torch.testing.assert_close(half, F.avg_pool2d(x, 2), atol=1e-5, rtol=1e-5)


def test_flip_gray_solarize():
    x = images(2, 8)
    m = torch.tensor([True, False])
    y = A.hflip(x, m)
    torch.testing.assert_close(y[0], x[0].flip(-1))
    torch.testing.assert_close(y[1], x[1])
    g = A.to_gray(x)
    torch.testing.assert_close(g[:, 0], 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    s = A.solarize(x, m)
    torch.testing.assert_close(s[0], torch.where(x[0] >= 0.5, 1 - x[0], x[0]))
    torch.testing.assert_close(s[1], x[1])


def test_hsv_against_colorsys():
    x = images(1, 6)
    hsv = A.rgb_to_hsv(x)
    for i in range(6):
        for j in range(6):
            want = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
            got = hsv[0, :, i, j].tolist()
            dh = abs(got[0] - want[0])
            assert min(dh, 1 - dh) < 1e-5  # hue is circular
            assert got[1:] == pytest.approx(list(want[1:]), abs=1e-5)
    torch.testing.assert_close(A.hsv_to_rgb(hsv), x, atol=1e-5, rtol=1e-5)


def test_color_jitter_factors():
    x = images(3, 8)
    ones, zero = torch.ones(3), torch.zeros(3)
    torch.testing.assert_close(A.color_jitter(x, ones, ones, ones, zero), x, atol=1e-5, rtol=1e-5)
    half = torch.full((3,), 0.5)
    torch.testing.assert_close(
        A.color_jitter(x, half, ones, ones, zero), x * 0.5, atol=1e-5, rtol=1e-5
    )
    # saturation 0 gives gray; contrast 0 gives the mean gray
    gray = A.color_jitter(x, ones, ones, zero, zero)
    torch.testing.assert_close(gray, A.to_gray(x).expand_as(x), atol=1e-5, rtol=1e-5)
    flat = A.color_jitter(x, ones, zero, ones, zero)
    mean = A.to_gray(x).mean(dim=(1, 2, 3))
    torch.testing.assert_close(flat, mean.view(3, 1, 1, 1).expand_as(x), atol=1e-5, rtol=1e-5)
    # a hue shift of one full turn is the identity; of 1/3 turn maps pure red to pure green
    torch.testing.assert_close(A.color_jitter(x, ones, ones, ones, ones), x, atol=1e-4, rtol=1e-4)
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1
    green = A.color_jitter(red, ones[:1], ones[:1], ones[:1], torch.tensor([1 / 3]))
    torch.testing.assert_close(
        green[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=1e-5
    )


def test_gaussian_blur_against_2d_reference():
    x = images(2, 20)
    sigma = torch.tensor([0.7, 1.9])
    out = A.gaussian_blur(x, sigma, max_sigma=2.0)
    r = math.ceil(3 * 2.0)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    for i in range(2):
        k1 = torch.exp(-(t**2) / (2 * sigma[i] ** 2))
        k2 = torch.outer(k1, k1)
        k2 = (k2 / k2.sum()).expand(3, 1, -1, -1)
        want = F.conv2d(F.pad(x[i : i + 1], (r, r, r, r), mode="reflect"), k2, groups=3)
        torch.testing.assert_close(out[i : i + 1], want, atol=1e-5, rtol=1e-5)
    const = torch.full((1, 3, 10, 10), 0.3)
    torch.testing.assert_close(A.gaussian_blur(const, torch.tensor([2.0])), const)


def test_blur_and_solarize_probabilities_per_view():
    aug = A.MultiCropAugment(16, 8, 2)
    assert [v.blur_p for v in aug.views] == [1.0, 0.1, 0.5, 0.5]
    assert [v.solarize_p for v in aug.views] == [0.0, 0.2, 0.0, 0.0]
    assert aug.views[0].scale == (0.4, 1.0) and aug.views[2].scale == (0.05, 0.4)
    with pytest.raises(ValueError):
        A.MultiCropAugment(n_local=-1)
    with pytest.raises(ValueError):
        aug(torch.rand(2, 1, 16, 16), A.make_generator(0))

"""Batched per-image PCA = the scikit-learn-convention reference, signs included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from procvision.eval.seg_pca import (
    batched_image_inertia,
    batched_pca_colours,
    fix_signs,
    principal_axes,
)
from procvision.eval.segmentation import image_inertia, pca_colours


def _features(b=3, n=300, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g, dtype=torch.float64) * torch.linspace(3, 0.2, d)


@pytest.mark.parametrize("solver", ["gram", "svd"])
def test_batched_pca_equals_the_per_image_reference(solver):
    x = _features()
    got = batched_pca_colours(x, solver=solver)
    for i in range(x.shape[0]):
        torch.testing.assert_close(got[i], pca_colours(x[i]), atol=1e-9, rtol=0)


def test_batched_pca_equals_scikit_learn_signs_included():
    from sklearn import decomposition as sk

    x = _features(b=2, seed=3)
    got = batched_pca_colours(x)
    for i in range(2):
        ref = sk.PCA(n_components=3, svd_solver="full").fit_transform(x[i].numpy())
        ref = (ref - ref.min(0)) / (ref.max(0) - ref.min(0))
        np.testing.assert_allclose(got[i].numpy(), ref, atol=1e-9)


def test_sign_convention_is_stable_under_a_flipped_component():
    x = _features(b=1)[0]
    x = x - x.mean(0)
    v = principal_axes(x[None])[0]
    flipped = v * torch.tensor([[-1.0], [1.0], [-1.0]], dtype=v.dtype)
    torch.testing.assert_close(fix_signs(flipped), v)
    # Flipping the data along the first axis flips that component's scores: c -> 1 - c.
    reflect = torch.eye(x.shape[1], dtype=x.dtype) - 2 * torch.outer(v[0], v[0])
    a, b = pca_colours(x), pca_colours(x @ reflect)
    # The reflected data's first axis is -v0 before fixing; after, its scores keep the fixed sign.
    torch.testing.assert_close(b[:, 1:], a[:, 1:], atol=1e-9, rtol=0)
    torch.testing.assert_close(b[:, 0], 1 - a[:, 0], atol=1e-9, rtol=0)


def test_batched_inertia_equals_image_inertia_and_keeps_nan():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 4, 4, 16, generator=g)
    labels = [torch.randint(0, 4, (20, 20), generator=g) for _ in range(3)]
    labels[2] = torch.zeros(20, 20, dtype=torch.long)  # background only: NaN
    labels[1][0, :5] = 255
    got = batched_image_inertia(feats, labels, grid=16, ignore_index=255)
    for i in range(2):
        assert got[i] == pytest.approx(image_inertia(feats[i], labels[i], 16, 255), abs=1e-9)
    assert math.isnan(got[2])


def test_batched_segmentation_r2_equals_the_per_image_loop(tmp_path):
    from procvision.data.datasets.voc import VOCSegmentation
    from procvision.eval.seg_pca import batched_segmentation_r2
    from procvision.eval.segmentation import segmentation_r2
    from procvision.models import random_backbone
    from tests.models.test_export import TINY
    from tests.test_cli_segment import _voc

    ds = VOCSegmentation(_voc(tmp_path / "VOC"), "val", 32)
    bb = random_backbone("vit_tiny_patch16_224", 32, 8, seed=0, **TINY).eval()
    ref = segmentation_r2(bb, ds, grid=16, batch_size=None, progress=False)  # per-image reference
    got = batched_segmentation_r2(bb, ds, grid=16, batch_size=2, progress=False)
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-6)


def test_batched_r2_known_answers_separated_is_100_and_constant_map_is_skipped():
    from procvision.eval.seg_pca import batched_segmentation_r2

    labels = torch.zeros(16, 16, dtype=torch.long)
    labels[:, 8:] = 1
    labels[8:, 8:] = 2
    img = torch.zeros(3, 16, 16)
    img[0, :, 8:] = 1.0  # class 1: red
    img[:, 8:, 8:] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]  # class 2: blue
    img[1, :4, :4] = 1.0  # a green corner of the background: 4 colours span 3 components
    constant = torch.full((3, 16, 16), 0.5)
    out = batched_segmentation_r2(None, [(img, labels), (constant, labels)], grid=16,
                                  progress=False)  # fmt: skip
    assert out["rgb"] == pytest.approx(100.0) and out["images"] == 1 and out["skipped"] == 1
    assert not math.isnan(out["rgb"])

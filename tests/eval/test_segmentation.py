"""The paper's zero-shot segmentation "R²" (spec §4.3): PCA colours, normalised inertia, score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from procvision.eval.segmentation import (
    backbone_inertia,
    grid_colours,
    image_inertia,
    normalised_inertia,
    pca_colours,
    r2_score,
)
from procvision.models import random_backbone
from tests.models.test_export import TINY


def test_pca_colours_match_scikit_learn_pca_then_min_max():
    from sklearn import decomposition as sk  # dev extra, >= 1.5 (signs from the components)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 12, generator=g, dtype=torch.float64) * torch.linspace(3, 0.2, 12)
    ref = sk.PCA(n_components=3, svd_solver="full").fit_transform(x.numpy())
    ref = (ref - ref.min(0)) / (ref.max(0) - ref.min(0))
    np.testing.assert_allclose(pca_colours(x).numpy(), ref, atol=1e-10)


def test_normalised_inertia_hand_computed():
    # Two tight classes: no within-class spread.
    x = torch.tensor([[0.0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]])
    assert normalised_inertia(x, torch.tensor([5, 5, 9, 9])) == 0.0
    # One class: within = sum |x - mu|^2 = 4 * 3 * 0.25 = 3; total around the scalar mean 0.5 = 3.
    assert normalised_inertia(x, torch.tensor([1, 1, 1, 1])) == pytest.approx(1.0)
    # The denominator uses the scalar mean of all entries, not per-channel means: points
    # [0, 1] and [1, 3], one class: within = 0.5 + 2 = 2.5; around the scalar mean 1.25 the
    # total is 4.75 (per-channel means would give 2.5, hence I = 1).
    y = torch.tensor([[0.0, 1.0], [1.0, 3.0]])
    assert normalised_inertia(y, torch.tensor([0, 0])) == pytest.approx(2.5 / 4.75)
    assert math.isnan(normalised_inertia(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)))
    assert math.isnan(normalised_inertia(torch.ones(3, 3), torch.tensor([0, 1, 1])))


def _two_region_image(size=16):
    """RGB [H, W, 3]: left half red with a yellow square, right half blue with a green square;
    labels to match (the red half and its yellow square are background 0).

    Four affinely independent colours, so all three principal components vary (with three
    colours the third component is constant and only rounding noise kept it from NaN)."""
    img = torch.zeros(size, size, 3)
    img[:, : size // 2, 0] = 1.0
    img[:, size // 2 :, 2] = 1.0
    img[4:8, 10:14] = torch.tensor([0.0, 1.0, 0.0])
    img[10:13, 2:5] = torch.tensor([1.0, 1.0, 0.0])
    labels = torch.zeros(size, size, dtype=torch.long)  # background: the red half
    labels[:, size // 2 :] = 3
    labels[4:8, 10:14] = 7
    return img, labels


def test_rgb_baseline_separates_colour_defined_regions():
    img, labels = _two_region_image()
    colours = grid_colours(img, 16).reshape(-1, 3)
    assert not colours.isnan().any()  # every component varies: no constant third component
    assert (colours.amax(0) - colours.amin(0)).min() == pytest.approx(1.0)
    # Labels that follow the colours: the two foreground classes are each constant -> I = 0.
    assert image_inertia(img, labels, grid=16) == pytest.approx(0.0, abs=1e-12)
    # Labels that ignore the colours mix blue and green pixels in one class -> I > 0.
    mixed = (labels > 0).long()
    assert image_inertia(img, mixed, grid=16) > 0.1


def test_background_and_ignored_pixels_are_dropped_as_in_the_authors_code():
    img, labels = _two_region_image()
    noisy = labels.clone()
    noisy[0, 12] = 255  # a blue pixel labelled "ignore" as green would break I = 0 otherwise
    noisy[1, 12] = 7
    assert image_inertia(img, noisy, grid=16, ignore_index=255) > 0  # the relabelled pixel counts
    noisy[1, 12] = 255
    assert image_inertia(img, noisy, grid=16, ignore_index=255) == pytest.approx(0.0, abs=1e-12)
    # No background label: the smallest category is dropped. Here 3 (red and blue pixels, which
    # would give I > 0) goes, leaving only the constant green class: I = 0.
    no_bg = labels.clone()
    no_bg[labels == 0] = 3
    assert image_inertia(img, no_bg, grid=16) == pytest.approx(0.0, abs=1e-12)
    mixed = labels.clone()
    mixed[labels == 0] = 2  # red is now the smallest label and is dropped;
    mixed[labels == 3] = 7  # blue and green share 7, which stays: I > 0
    assert image_inertia(img, mixed, grid=16) > 0.1
    # Only background: nothing left.
    assert math.isnan(image_inertia(img, torch.zeros_like(labels), grid=16))


def test_r2_score_skips_nan_and_needs_one_number():
    assert r2_score([0.25, math.nan, 0.75]) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="no image"):
        r2_score([math.nan])


def test_backbone_inertia_runs_on_patch_features():
    backbone = random_backbone("vit_tiny_patch16_224", 32, 8, seed=0, **TINY).eval()
    img, labels = _two_region_image(32)
    value = backbone_inertia(backbone, img.permute(2, 0, 1), labels, grid=16)
    assert 0.0 <= value <= 1.0


def test_grid_colours_resize_like_torchvision_resize():
    """The RGB baseline's 4x downsample is torchvision's tensor Resize (antialiased bilinear)."""
    from torchvision.transforms.v2 import functional as TF

    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    small = TF.resize(img, [8, 8], antialias=True)  # [3, 8, 8]
    want = pca_colours(small.reshape(3, -1).T).reshape(8, 8, 3)
    torch.testing.assert_close(grid_colours(img.permute(1, 2, 0), 8), want)
    naive = torch.nn.functional.interpolate(img[None], size=(8, 8), mode="bilinear")[0]
    assert not torch.allclose(small, naive, atol=1e-3)  # antialiasing does change the pixels


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_backbone_inertia_on_cuda_equals_cpu():
    backbone = random_backbone("vit_tiny_patch16_224", 32, 8, seed=0, **TINY).eval()
    img, labels = _two_region_image(32)
    x = img.permute(2, 0, 1)
    cpu = backbone_inertia(backbone, x, labels, grid=16)
    gpu = backbone_inertia(backbone.cuda(), x.cuda(), labels.cuda(), grid=16)
    assert gpu == pytest.approx(cpu, abs=1e-4)

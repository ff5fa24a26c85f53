"""In-context segmentation: copying prompt-mask patches on constructed tokens with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from procvision.eval.incontext import (
    class_pairs,
    fit_to_patches,
    incontext_images,
    incontext_soft_mask,
    iou_at,
    soft_iou,
    thresholded,
)
from procvision.models import random_backbone
from tests.models.test_export import TINY


def test_distinct_tokens_copy_the_matching_prompt_patch():
    # Prompt: 2 x 3 patches with one-hot tokens of norm 40 (logits 1600 / C: attention one-hot).
    c, p = 8, 4
    z1 = 40 * torch.eye(c)[:6].reshape(2, 3, c)
    g = torch.Generator().manual_seed(0)
    y1 = torch.rand(2 * p, 3 * p, generator=g)
    # Query: 3 x 2 patches, each equal to some prompt patch.
    perm = torch.tensor([5, 0, 3, 3, 1, 2])
    z2 = z1.reshape(6, c)[perm].reshape(3, 2, c)
    f2 = incontext_soft_mask(z1, y1, z2, p)
    assert f2.shape == (3 * p, 2 * p)
    tiles = y1.reshape(2, p, 3, p).permute(0, 2, 1, 3).reshape(6, p, p)
    want = tiles[perm].reshape(3, 2, p, p).permute(0, 2, 1, 3).reshape(3 * p, 2 * p)
    torch.testing.assert_close(f2, want)


def test_equal_tokens_average_the_prompt_patches_and_temperature_is_the_width():
    z1 = torch.ones(2, 2, 3)
    y1 = torch.zeros(4, 4)
    y1[:2, :2] = 1.0  # one of four 2x2 patches is foreground
    f2 = incontext_soft_mask(z1, y1, torch.ones(1, 1, 3), 2)
    torch.testing.assert_close(f2, torch.full((2, 2), 0.25))
    # Two prompt tokens with dot products 3 and 0 with the query: weights softmax([3, 0] / C=3).
    z1 = torch.tensor([[[1.0, 1, 1], [0, 0, 0]]])
    y1 = torch.tensor([[1.0, 0.0]])
    f2 = incontext_soft_mask(z1, y1, torch.ones(1, 1, 3), 1)
    assert float(f2) == pytest.approx(math.e / (math.e + 1))
    with pytest.raises(ValueError, match="prompt mask"):
        incontext_soft_mask(z1, torch.ones(2, 2), torch.ones(1, 1, 3), 1)


def test_soft_iou_iou_and_display_threshold():
    pred = torch.tensor([0.0, 0.5, 1.0, 0.2])
    target = torch.tensor([0.0, 1.0, 1.0, 0.0])
    assert soft_iou(pred, target) == pytest.approx((0.5 + 1.0) / (1 + 1 + 0.2))
    assert iou_at(pred, target, 0.4) == pytest.approx(1.0)
    assert iou_at(pred, target, 0.6) == pytest.approx(0.5)
    torch.testing.assert_close(thresholded(pred), torch.tensor([0.0, 0.375, 1.0, 0.0]))
    assert math.isnan(soft_iou(torch.zeros(3), torch.zeros(3)))


def test_fit_to_patches_and_a_backbone_run():
    x = torch.rand(3, 30, 50)
    y = fit_to_patches(x, 20, 8)
    assert y.shape == (3, 16, 32)  # 20 x 33 cropped to multiples of 8
    bb = random_backbone("vit_tiny_patch16_224", 32, 8, seed=0, **TINY)
    mask = torch.zeros(30, 50)
    mask[:, :25] = 1
    f2 = incontext_images(bb, x, mask, torch.rand(3, 24, 24), short_side=32)
    assert f2.shape == (24, 24) and 0 <= float(f2.min()) and float(f2.max()) <= 1


def test_class_pairs_are_consecutive_holders():
    lab = [torch.zeros(4, 4, dtype=torch.long) for _ in range(4)]
    lab[0][0, 0] = lab[2][0, 0] = lab[3][0, 0] = 5
    lab[1][:, :] = 255
    items = [(None, x) for x in lab]
    assert class_pairs(items) == {5: [(0, 2), (2, 3)]}
    assert class_pairs(items, max_pairs=1) == {5: [(0, 2)]}

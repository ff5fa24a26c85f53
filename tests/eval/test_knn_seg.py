"""k-NN segmentation metrics on hand cases, and the memory pipeline on a toy backbone."""

from __future__ import annotations

import math

import pytest
import torch

from procvision.eval.knn_seg import (
    build_patch_memory,
    confusion_matrix,
    knn_segment,
    patch_labels,
    segmentation_metrics,
)


def test_metrics_hand_computed():
    target = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    pred = torch.tensor([0, 0, 1, 1, 1, 2, 0, 0])
    m = segmentation_metrics(confusion_matrix(pred, target, 3))
    assert m["pixel_acc"] == pytest.approx(5 / 8)
    assert m["fg_pixel_acc"] == pytest.approx(3 / 5)
    # IoU: class 0: TP 2, union 2+... = |{0,1,2,6,7}| = 5 -> 2/5; class 1: 2/3; class 2: 1/3.
    assert m["miou"] == pytest.approx((2 / 5 + 2 / 3 + 1 / 3) / 3)
    empty = segmentation_metrics(torch.zeros(3, 3, dtype=torch.long))
    assert math.isnan(empty["pixel_acc"]) and math.isnan(empty["miou"])


def test_patch_labels_nearest_and_void_to_background():
    lab = torch.zeros(8, 8, dtype=torch.long)
    lab[:, 4:] = 3
    lab[:4, :4] = 255
    assert patch_labels(lab, 2, 2).tolist() == [0, 3, 0, 3]


class _ColourTokens(torch.nn.Module):
    """A 'backbone' whose tokens are the mean colour of each 8x8 patch (so segmentation is easy)."""

    def forward_features(self, x):
        p = torch.nn.functional.avg_pool2d(x, 8)  # [B, 3, h, w]
        return {"patches": p.permute(0, 2, 3, 1) * 4}


def _items(n=4, side=32):
    out = []
    for i in range(n):
        img = torch.zeros(3, side, side)
        img[2] = 1.0  # blue background
        lab = torch.zeros(side, side, dtype=torch.long)
        c = 1 + i % 2  # red object = class 1, green object = class 2
        img[:, 8 : 8 + 16, 8 * (i % 2) : 8 * (i % 2) + 16] = 0
        img[c - 1, 8:24, 8 * (i % 2) : 8 * (i % 2) + 16] = 1.0
        lab[8:24, 8 * (i % 2) : 8 * (i % 2) + 16] = c
        out.append((img, lab))
    return out


@pytest.mark.parametrize("method", ["softmax", "topk"])
def test_knn_segmentation_on_a_toy_patch_memory(method):
    items = _items()
    memory = build_patch_memory(_ColourTokens(), items[:2], 3, progress=False)
    assert len(memory) == 2 * 16 and memory.group_ids.tolist() == [0, 1]
    m = knn_segment(_ColourTokens(), memory, items[2:], method, k=3, progress=False)
    assert m["pixel_acc"] == 1.0 and m["fg_pixel_acc"] == 1.0 and m["miou"] == 1.0
    # Forget the image holding the only green object: green patches can no longer be labelled 2.
    memory.forget([1])
    m = knn_segment(_ColourTokens(), memory, items[3:], method, k=3, progress=False)
    assert m["fg_pixel_acc"] == 0.0

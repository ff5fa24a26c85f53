"""K-means segmentation: seeded batched K-means, Hungarian matching on a hand case, mIoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from procvision.eval.kmeans_seg import (
    batched_kmeans,
    hungarian_match,
    kmeans_image_miou,
    kmeans_segmentation,
    matched_miou,
)


def test_hungarian_match_hand_case():
    # Overlaps (cluster: label 1, label 2): 4: 3, 0; 7: 2, 3; 9: 1, 1. The optimum (total 6) is
    # 7 -> 2, 4 -> 1; with 3 clusters and 2 labels, cluster 9 is left unmatched.
    clusters = np.array([7, 7, 7, 7, 7, 4, 4, 4, 9, 9])
    labels = np.array([2, 2, 2, 1, 1, 1, 1, 1, 2, 1])
    assert hungarian_match(clusters, labels) == {7: 2, 4: 1}
    miou, ious = matched_miou(clusters, labels)
    # label 2: pred {0,1,2,3,4} vs true {0,1,2,8}: 3 / 6; label 1: pred {5,6,7} vs {3,4,5,6,7,9}: 3/6
    assert ious == {1: pytest.approx(0.5), 2: pytest.approx(0.5)} and miou == pytest.approx(0.5)


def test_hungarian_prefers_total_overlap_to_a_greedy_choice():
    # Cluster 0 overlaps label 0 on 4 and label 1 on 3; cluster 1 overlaps label 0 on 3 only.
    # Greedy 0 -> 0 leaves 1 -> 1 (overlap 4 + 0); the optimum is 0 -> 1, 1 -> 0 (3 + 3).
    clusters = np.array([0] * 7 + [1] * 3)
    labels = np.array([0] * 4 + [1] * 3 + [0] * 3)
    assert hungarian_match(clusters, labels) == {0: 1, 1: 0}


def test_batched_kmeans_is_seeded_and_separates_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0], [10, 0], [0, 10]])
    truth = torch.arange(90) % 3
    x = torch.stack([centres[truth] + 0.3 * torch.randn(90, 2, generator=g) for _ in range(4)])
    a1, c1 = batched_kmeans(x, 3, seed=5)
    a2, _ = batched_kmeans(x, 3, seed=5)
    assert torch.equal(a1, a2) and c1.shape == (4, 3, 2)
    for b in range(4):  # each problem recovers the blobs (up to a permutation)
        assert matched_miou(a1[b].numpy(), truth.numpy())[0] == 1.0
    with pytest.raises(ValueError, match="k must"):
        batched_kmeans(x, 0)


def test_kmeans_image_miou_on_colour_regions():
    img = torch.zeros(16, 16, 3)
    img[:, :8, 0] = 1
    img[:, 8:, 2] = 1
    img[4:8, 10:14] = torch.tensor([0.0, 1, 0])
    labels = torch.zeros(16, 16, dtype=torch.long)
    labels[:, 8:] = 3
    labels[4:8, 10:14] = 7
    assert kmeans_image_miou(img, labels, grid=16) == pytest.approx(1.0)
    # A fixed K = 2 merges two regions: one label is left without a cluster.
    assert kmeans_image_miou(img, labels, grid=16, k=2) < 1.0
    out = kmeans_segmentation(None, [(img.permute(2, 0, 1), labels)], grid=16, progress=False)
    assert out["miou"] == pytest.approx(100.0) and out["images"] == 1
    assert out["miou_pooled"] == pytest.approx(100.0)


def test_pooled_miou_sums_intersections_and_unions_over_images():
    from procvision.eval.kmeans_seg import matched_counts

    # image A: label 1 matched exactly (4 px); image B: label 1 half right (2 of 4, union 6).
    a = matched_counts(np.array([0, 0, 0, 0, 1, 1]), np.array([1, 1, 1, 1, 2, 2]))
    b = matched_counts(np.array([0, 0, 1, 1, 1, 1]), np.array([1, 1, 1, 1, 2, 2]))
    assert a == {1: (4, 4), 2: (2, 2)}
    assert b == {1: (2, 4), 2: (2, 4)}

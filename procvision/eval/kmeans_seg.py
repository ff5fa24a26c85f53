"""Hard-label unsupervised segmentation with K-means (paper App. B.4).

Per image: K-means on its patch features (upsampled to the evaluation grid as for R²), K = the
number of ground-truth segments of the image (or a fixed K); clusters are matched one-to-one to
the image's labels by the Hungarian algorithm on their overlap (scipy's linear_sum_assignment),
unmatched clusters count as wrong; IoU per label present, mIoU per image and over images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from procvision.data.augment import normalize
from procvision.eval.seg_pca import grid_labels
from procvision.eval.segmentation import image_inertia, r2_score


def _sq_dists(x: torch.Tensor, c: torch.Tensor, x_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared distances [B, N, K] between rows x [B, N, D] and centres c [B, K, D].

    x_sq: the rows' squared norms [B, N, 1], if already computed.
    """
    x_sq = (x * x).sum(-1, keepdim=True) if x_sq is None else x_sq
    d = torch.baddbmm(x_sq + (c * c).sum(-1)[:, None], x, c.transpose(1, 2), alpha=-2)
    return d.clamp_min_(0)


def kmeans_pp_init(
    x: torch.Tensor, k: int, generator: torch.Generator, x_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """k-means++ seeding for each batch element: centres [B, k, D] drawn from the rows of x."""
    b, n, _ = x.shape
    ar = torch.arange(b, device=x.device)
    first = torch.randint(0, n, (b,), generator=generator, device=x.device)
    centres = [x[ar, first]]
    d = _sq_dists(x, centres[0][:, None], x_sq)[..., 0]  # [B, N]
    for _ in range(1, k):
        p = d / d.sum(1, keepdim=True).clamp_min(1e-30)
        p = torch.where(d.sum(1, keepdim=True) > 0, p, torch.full_like(p, 1.0 / n))
        pick = torch.multinomial(p, 1, generator=generator)[:, 0]
        centres.append(x[ar, pick])
        d = torch.minimum(d, _sq_dists(x, centres[-1][:, None], x_sq)[..., 0])
    return torch.stack(centres, 1)


def batched_kmeans(
    x: torch.Tensor, k: int, iters: int = 50, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's K-means on each batch element independently, k-means++ seeded from `seed`.

    An empty cluster keeps its previous centre. Stops when no assignment changes.

    Args:
        x: float [B, N, D] rows of B problems (e.g. B images' patch features).
        k: clusters (1 <= k <= N).
        iters: maximum Lloyd iterations.
        seed: seed of the initialisation (same seed, same input -> same result).
    Returns:
        (assignments int64 [B, N], centres float [B, k, D]).
    """
    b, n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in [1, {n}] (rows per problem), got {k}")
    x = x.float()
    g = torch.Generator(device=x.device).manual_seed(int(seed))
    x_sq = (x * x).sum(-1, keepdim=True)
    centres = kmeans_pp_init(x, k, g, x_sq)
    assign = _sq_dists(x, centres, x_sq).argmin(-1)
    for _ in range(iters):
        onehot = F.one_hot(assign, k).to(x.dtype)  # [B, N, k]
        counts = onehot.sum(1)  # [B, k]
        sums = onehot.transpose(1, 2) @ x  # [B, k, D] (a matmul: faster than scatter_add)
        centres = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1)[..., None], centres)
        new = _sq_dists(x, centres, x_sq).argmin(-1)
        if torch.equal(new, assign):
            break
        assign = new
    return assign, centres


def hungarian_match(clusters: np.ndarray, labels: np.ndarray) -> dict[int, int]:
    """Cluster -> label matching that maximises the total overlap (one-to-one).

    Args:
        clusters: int [N] cluster of each pixel.
        labels: int [N] ground-truth label of each pixel.
    Returns:
        {cluster: label} for the matched clusters (min(#clusters, #labels) pairs).
    """
    cl, ci = np.unique(clusters, return_inverse=True)
    lb, li = np.unique(labels, return_inverse=True)
    overlap = np.zeros((len(cl), len(lb)), np.int64)
    np.add.at(overlap, (ci, li), 1)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return {int(cl[r]): int(lb[c]) for r, c in zip(rows, cols, strict=True)}


def matched_counts(clusters: np.ndarray, labels: np.ndarray) -> dict[int, tuple[int, int]]:
    """{label: (intersection, union)} pixels of clusters relabelled by `hungarian_match`.

    Pixels of unmatched clusters are wrong for their label.
    """
    uniq, inverse = np.unique(clusters, return_inverse=True)
    mapping = hungarian_match(clusters, labels)
    pred = np.array([mapping.get(int(c), -1) for c in uniq])[inverse]
    out = {}
    for lab in np.unique(labels):
        p, t = pred == lab, labels == lab
        out[int(lab)] = (int((p & t).sum()), int((p | t).sum()))
    return out


def matched_miou(clusters: np.ndarray, labels: np.ndarray) -> tuple[float, dict[int, float]]:
    """mIoU of clusters relabelled by `hungarian_match`, over the labels present.

    Returns (mIoU, {label: IoU}).
    """
    ious = {c: i / u for c, (i, u) in matched_counts(clusters, labels).items()}
    return float(np.mean(list(ious.values()))), ious


def kmeans_image_counts(
    features: torch.Tensor,
    label_map: torch.Tensor,
    grid: int = 112,
    k: int | None = None,
    ignore_index: int | None = None,
    seed: int = 0,
) -> dict[int, tuple[int, int]]:
    """One image's K-means segmentation as {label: (intersection, union)} after matching.

    Args:
        features: float [h, w, D] patch features (or [H, W, 3] pixels), upsampled bilinearly to
            grid x grid; K-means runs on the grid pixels.
        label_map: int [H0, W0], resized nearest to the grid.
        k: clusters; None = the number of distinct labels in the image (after `ignore_index`).
        ignore_index: label left out of matching and scoring (its pixels are still clustered).
    Returns:
        {} when no pixel is labelled.
    """
    feats = F.interpolate(
        features.permute(2, 0, 1)[None].float(), size=(grid, grid), mode="bilinear", antialias=True
    )[0]
    x = feats.reshape(feats.shape[0], -1).T[None]  # [1, N, D]
    labels = grid_labels(label_map, grid).numpy()
    keep = labels != ignore_index if ignore_index is not None else np.ones_like(labels, bool)
    if not keep.any():
        return {}
    kk = int(k) if k is not None else len(np.unique(labels[keep]))
    assign, _ = batched_kmeans(x, kk, seed=seed)
    return matched_counts(assign[0].cpu().numpy()[keep], labels[keep])


def kmeans_image_miou(
    features: torch.Tensor,
    label_map: torch.Tensor,
    grid: int = 112,
    k: int | None = None,
    ignore_index: int | None = None,
    seed: int = 0,
) -> float:
    """mIoU in [0, 1] of one image's K-means segmentation (`kmeans_image_counts`), NaN when no
    pixel is labelled."""
    counts = kmeans_image_counts(features, label_map, grid, k, ignore_index, seed)
    if not counts:
        return math.nan
    return float(np.mean([i / u for i, u in counts.values()]))


def kmeans_segmentation(
    backbone: torch.nn.Module | None,
    dataset: Sequence,
    grid: int = 112,
    k: int | None = None,
    ignore_index: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    with_r2: bool = False,
) -> dict[str, float]:
    """K-means mIoU (x 100) of a backbone's patch features, or of RGB (None): the mean of the
    per-image mIoU ("miou") and the overall one ("miou_pooled": per label, intersections and
    unions summed over images, then averaged over labels).

    With `with_r2`, the R² of the same features (spec §4.3) is computed in the same pass.

    Returns:
        {"miou", "miou_pooled", "images": scored, "skipped": unscorable} (+ "r2").
    """
    vals, inertias = [], []
    pooled: dict[int, list[int]] = {}
    for i in tqdm(range(len(dataset)), desc="K-means segmentation", disable=not progress):
        image, labels = dataset[i][:2]
        if backbone is None:
            feats = image.permute(1, 2, 0)
        else:
            feats = backbone.forward_features(normalize(image[None].to(device)))["patches"][0]
        counts = kmeans_image_counts(feats.cpu(), labels, grid, k, ignore_index, seed)
        vals.append(float(np.mean([i / u for i, u in counts.values()])) if counts else math.nan)
        for c, (inter, union) in counts.items():
            acc = pooled.setdefault(c, [0, 0])
            acc[0] += inter
            acc[1] += union
        if with_r2:
            inertias.append(image_inertia(feats.cpu(), labels, grid, ignore_index))
    ok = [v for v in vals if not math.isnan(v)]
    if not ok:
        raise ValueError("no image had labelled pixels")
    out = {
        "miou": 100.0 * sum(ok) / len(ok),
        "miou_pooled": 100.0 * float(np.mean([i / u for i, u in pooled.values()])),
        "images": float(len(ok)),
        "skipped": float(len(vals) - len(ok)),
    }
    if with_r2:
        out["r2"] = r2_score(inertias)
    return out

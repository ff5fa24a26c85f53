"""Zero-shot segmentation quality of patch features: the paper's "R²" (spec §4.3).

Per image: patch features upsampled to a label grid, a 3-component PCA fitted on that image's
tokens, each component min-max normalised, then the within-class inertia of the labelled pixels
normalised by their total inertia around the scalar mean. The score is 100 * (1 - mean inertia)
over images (images with no usable pixels are skipped). The same pipeline on RGB pixels is the
paper's "RGB" baseline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from procvision.data.augment import normalize
from procvision.errors import UserError


class NoScorableImageError(UserError, ValueError):
    """No image of the data had labelled foreground pixels and non-constant features."""


def pca_colours(features: torch.Tensor, n_components: int = 3) -> torch.Tensor:
    """Project features on their first principal components, each min-max normalised to [0, 1].

    The PCA is fitted on these rows only (one image's tokens, background included), in float64.
    Signs follow scikit-learn >= 1.5 (each component's largest-magnitude loading is positive;
    scikit-learn <= 1.4 chose them from the scores instead, and the authors' version is not
    known). The sign matters: the inertia's denominator uses the scalar mean, which a flipped
    component (c -> 1 - c) moves. A constant component gives NaN, which marks the image as
    unusable.

    Args:
        features: float [N, D] (N pixels or tokens), N >= 2.
        n_components: number of components kept (paper: 3).
    Returns:
        float64 [N, n_components].
    """
    x = features.double()
    x = x - x.mean(0, keepdim=True)
    _, _, vt = torch.linalg.svd(x, full_matrices=False)
    v = vt[:n_components]  # [k, D]
    sign = torch.sign(v.gather(1, v.abs().argmax(1, keepdim=True)))
    proj = x @ (v * sign).T  # [N, k]
    lo, hi = proj.min(0).values, proj.max(0).values
    return (proj - lo) / (hi - lo)


def normalised_inertia(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Within-class inertia over total inertia around the scalar mean (spec §4.3, step 6).

    I = sum_k sum_{p in k} |x_p - mu_k|^2 / sum_p sum_c (x_pc - xbar)^2, where mu_k are class
    centroids and xbar is the mean of all entries of x (one scalar, as in the authors' code).

    Args:
        x: float [N, C] points.
        labels: int [N] class of each point.
    Returns:
        I in [0, 1] (NaN when there are no points or the total inertia is 0).
    """
    if x.shape[0] == 0:
        return math.nan
    x = x.double()
    _, inverse = torch.unique(labels, return_inverse=True)
    k = int(inverse.max()) + 1
    counts = torch.bincount(inverse, minlength=k).double()
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
    sums.index_add_(0, inverse, x)
    within = ((x - (sums / counts[:, None])[inverse]) ** 2).sum()
    total = ((x - x.mean()) ** 2).sum()
    return float(within / total) if total > 0 else math.nan


def grid_colours(features: torch.Tensor, grid: int = 112) -> torch.Tensor:
    """Features resized to grid x grid, as PCA colours: the picture of spec §4.3.

    Bilinear with antialiasing, as torchvision's tensor `Resize` does: patch features are
    upsampled (where antialiasing changes nothing), RGB pixels for the baseline downsampled.

    Args:
        features: float [h, w, D] patch features, or [H, W, 3] pixels.
        grid: output side.
    Returns:
        float64 [grid, grid, 3] in [0, 1] (NaN where a component is constant).
    """
    feats = F.interpolate(
        features.permute(2, 0, 1)[None].float(),
        size=(grid, grid),
        mode="bilinear",
        antialias=True,
    )[0]  # [D, grid, grid]
    return pca_colours(feats.reshape(feats.shape[0], -1).T).reshape(grid, grid, 3)


def image_inertia(
    features: torch.Tensor,
    label_map: torch.Tensor,
    grid: int = 112,
    ignore_index: int | None = None,
) -> float:
    """Normalised inertia of one image: the steps 2-6 of spec §4.3.

    Features are upsampled bilinearly to grid x grid; the label map is resized nearest-neighbour
    to the same grid. Labels are re-indexed in sorted order and the first (the smallest value:
    background 0 when present) is dropped, as in the authors' code (so an image without
    background loses its first category). Pixels labelled `ignore_index` are dropped first.

    Args:
        features: float [h, w, D] patch features (or [H, W, 3] pixels for the RGB baseline).
        label_map: int [H0, W0] semantic labels.
        grid: side of the evaluation grid (paper: 112).
        ignore_index: label to leave out (e.g. 255 in Pascal VOC), or None.
    Returns:
        I in [0, 1], or NaN when no labelled pixel is left.
    """
    # The PCA of one image is small; float64 SVD is quicker on the CPU than on most GPUs.
    colours = grid_colours(features.cpu(), grid).reshape(-1, 3)
    labels = F.interpolate(label_map.cpu()[None, None].float(), size=(grid, grid), mode="nearest")
    labels = labels.reshape(-1).long()
    keep = torch.ones_like(labels, dtype=torch.bool)
    if ignore_index is not None:
        keep &= labels != ignore_index
    _, inverse = torch.unique(labels[keep], return_inverse=True)
    fg = inverse > 0
    return normalised_inertia(colours[keep][fg], inverse[fg])


def r2_summary(model: list[float] | None, rgb: list[float] | None) -> dict[str, float]:
    """{"images", "skipped", "model"?, "rgb"?} of per-image inertias (NaN = not scorable): R² of
    the model's and of RGB's inertias, counting the images of the model's list (else RGB's)."""
    counted = model if model is not None else (rgb or [])
    scored = float(sum(not math.isnan(v) for v in counted))
    out = {"images": scored, "skipped": float(len(counted)) - scored}
    if rgb is not None:
        out["rgb"] = r2_score(rgb)
    if model is not None:
        out["model"] = r2_score(model)
    return out


def r2_score(inertias: Iterable[float]) -> float:
    """100 * (1 - mean inertia) over the images whose inertia is a number (spec §4.3, step 7)."""
    vals = [v for v in inertias if not math.isnan(v)]
    if not vals:
        raise NoScorableImageError(
            "no image had labelled foreground pixels and non-constant features: check the "
            "label maps (background 0 and the ignore label are dropped) or give more images"
        )
    return 100.0 * (1.0 - sum(vals) / len(vals))


@torch.no_grad()
def backbone_inertia(
    backbone: torch.nn.Module,
    image: torch.Tensor,
    label_map: torch.Tensor,
    grid: int = 112,
    ignore_index: int | None = None,
) -> float:
    """Normalised inertia of a backbone's patch features on one image.

    Args:
        backbone: a procvision Backbone (`forward_features` -> {"patches": [B, h, w, D]}).
        image: float [3, H, W], already resized (paper: 448 x 448) and ImageNet-normalised.
        label_map: int [H0, W0] semantic labels of the image.
        grid: evaluation grid side (paper: 112).
        ignore_index: label to leave out, or None.
    Returns:
        I in [0, 1], or NaN.
    """
    patches = backbone.forward_features(image[None])["patches"][0]  # [h, w, D]
    return image_inertia(patches, label_map, grid, ignore_index)


def segmentation_r2(
    backbone: torch.nn.Module | None,
    dataset: Sequence,
    grid: int = 112,
    ignore_index: int | None = 255,
    device: str = "cpu",
    progress: bool = True,
    with_rgb: bool = True,
    batch_size: int | None = 8,
    solver: str = "gram",
) -> dict[str, float]:
    """R² (spec §4.3) of a backbone's patch features and of RGB pixels over a dataset.

    By default the per-image PCAs are batched (`seg_pca.batched_segmentation_r2`, solver "gram":
    eigh of each image's D x D scatter, about 3x faster on CPU and equal to this per-image path to
    1e-9); `batch_size=None` runs the per-image reference path (one SVD per image), which the
    tests compare against scikit-learn.

    Args:
        backbone: a procvision Backbone, or None for the RGB baseline only.
        dataset: items (image float [3, S, S] in [0, 1], labels int [H0, W0], ...), e.g.
            `VOCSegmentation`.
        grid: evaluation grid side (paper: 112).
        ignore_index: label to leave out (VOC: 255), or None.
        device: where the backbone runs.
        progress: show a progress bar.
        with_rgb: also score the RGB baseline.
        batch_size: images per batched PCA (they must share one size, as the readers make
            them), or None for the per-image reference path.
        solver: the batched PCA's solver, "gram" or "svd" (`seg_pca.principal_axes`).
    Returns:
        {"model": R², "rgb": R², "images": images scored, "skipped": images that could not be
        scored (no foreground, constant features)}; "model" only with a backbone, "rgb" only
        with `with_rgb`; the counts are the model's when there is one.
    """
    if backbone is None and not with_rgb:
        raise ValueError("nothing to score: give a backbone or with_rgb=True")
    if batch_size is not None:
        from procvision.eval.seg_pca import batched_segmentation_r2

        return batched_segmentation_r2(backbone, dataset, grid, ignore_index, device, batch_size,
                                       solver, with_rgb, progress)  # fmt: skip
    model_i, rgb_i = [], []
    for i in tqdm(range(len(dataset)), desc="segmentation R²", disable=not progress):
        image, labels = dataset[i][:2]
        if with_rgb:
            rgb_i.append(image_inertia(image.permute(1, 2, 0), labels, grid, ignore_index))
        if backbone is not None:
            x = normalize(image[None].to(device))[0]
            model_i.append(backbone_inertia(backbone, x, labels, grid, ignore_index))
    return r2_summary(model_i if backbone is not None else None, rgb_i if with_rgb else None)

"""Batched per-image PCA for the R² metric (spec §4.3 steps 2-6), equal to `segmentation.pca_colours`.

Each image keeps its own PCA (fitted on its own tokens); a batch only stacks the images so one
call does B decompositions. Two solvers, both float64:
- "gram": eigendecomposition of each image's D x D scatter matrix (cheap when N >> D, the
  paper's case: N = 112² = 12544 grid pixels, D = 384);
- "svd": thin SVD of each image's centred N x D matrix (the reference's solver).
Signs follow scikit-learn >= 1.5 (each component's largest-magnitude loading is positive), so the
colours do not depend on the sign a solver happens to return.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from procvision.eval.segmentation import normalised_inertia

SOLVERS = ("gram", "svd")


def fix_signs(components: torch.Tensor) -> torch.Tensor:
    """Flip each component so that its largest-magnitude loading is positive.

    Args:
        components: float [..., k, D] principal axes, one per row.
    Returns:
        float [..., k, D], the same axes with scikit-learn's (>= 1.5) signs.
    """
    idx = components.abs().argmax(-1, keepdim=True)
    return components * torch.sign(components.gather(-1, idx))


def principal_axes(x: torch.Tensor, n_components: int = 3, solver: str = "gram") -> torch.Tensor:
    """The first principal axes of each batch element's rows (already centred).

    Args:
        x: float64 [B, N, D] centred rows.
        n_components: k.
        solver: "gram" (eigh of x^T x) or "svd" (thin SVD of x).
    Returns:
        float64 [B, k, D], by decreasing variance, signs fixed with `fix_signs`.
    """
    if solver == "svd":
        v = torch.linalg.svd(x, full_matrices=False).Vh[:, :n_components]
    elif solver == "gram":
        _, vecs = torch.linalg.eigh(x.transpose(1, 2) @ x)  # ascending eigenvalues
        v = vecs.flip(-1)[..., :n_components].transpose(1, 2)
    else:
        raise ValueError(f"solver: expected one of {SOLVERS}, got {solver!r}")
    return fix_signs(v)


def batched_pca_colours(
    features: torch.Tensor, n_components: int = 3, solver: str = "gram"
) -> torch.Tensor:
    """Per-image PCA projections, each component min-max normalised to [0, 1] over its image.

    Args:
        features: float [B, N, D], N rows (grid pixels) of each of B images, N >= 2.
        n_components: components kept (paper: 3).
        solver: see `principal_axes`.
    Returns:
        float64 [B, N, n_components] (NaN in a component that is constant over its image).
    """
    x = features.double()
    x = x - x.mean(1, keepdim=True)
    v = principal_axes(x, n_components, solver)
    proj = x @ v.transpose(1, 2)  # [B, N, k]
    lo, hi = proj.amin(1, keepdim=True), proj.amax(1, keepdim=True)
    return (proj - lo) / (hi - lo)


def batched_grid_colours(
    features: torch.Tensor, grid: int = 112, solver: str = "gram"
) -> torch.Tensor:
    """Patch features of B images resized to grid x grid (antialiased bilinear) as PCA colours.

    Args:
        features: float [B, h, w, D].
        grid: output side (paper: 112).
        solver: see `principal_axes`.
    Returns:
        float64 [B, grid, grid, 3].
    """
    b, _, _, d = features.shape
    feats = F.interpolate(
        features.permute(0, 3, 1, 2).float(), size=(grid, grid), mode="bilinear", antialias=True
    )  # [B, D, grid, grid]
    flat = feats.reshape(b, d, grid * grid).transpose(1, 2)
    return batched_pca_colours(flat, 3, solver).reshape(b, grid, grid, 3)


def grid_labels(label_map: torch.Tensor, grid: int) -> torch.Tensor:
    """Nearest-neighbour resize of an int [H0, W0] label map to int64 [grid * grid]."""
    lab = F.interpolate(label_map.cpu()[None, None].float(), size=(grid, grid), mode="nearest")
    return lab.reshape(-1).long()


def inertia_of_colours(
    colours: torch.Tensor, labels: torch.Tensor, ignore_index: int | None = None
) -> float:
    """Steps 5-6 of spec §4.3 on one image's colours and grid labels (as `image_inertia`).

    Args:
        colours: float [N, 3] PCA colours of the grid pixels.
        labels: int64 [N] grid labels.
        ignore_index: label left out first (VOC: 255), or None.
    Returns:
        I in [0, 1], or NaN.
    """
    keep = torch.ones_like(labels, dtype=torch.bool)
    if ignore_index is not None:
        keep &= labels != ignore_index
    _, inverse = torch.unique(labels[keep], return_inverse=True)
    fg = inverse > 0
    return normalised_inertia(colours[keep][fg], inverse[fg])


def batched_image_inertia(
    features: torch.Tensor,
    label_maps: Sequence[torch.Tensor],
    grid: int = 112,
    ignore_index: int | None = None,
    solver: str = "gram",
) -> list[float]:
    """`segmentation.image_inertia` for B images at once (the PCA batched, on features' device).

    Args:
        features: float [B, h, w, D] patch features (or [B, H, W, 3] pixels for RGB).
        label_maps: B int label maps, each [H0, W0] (sizes may differ).
        grid, ignore_index: as `image_inertia`.
        solver: see `principal_axes`.
    Returns:
        B inertias (NaN where an image has no usable pixel).
    """
    if len(label_maps) != features.shape[0]:
        raise ValueError(f"{features.shape[0]} feature maps but {len(label_maps)} label maps")
    colours = batched_grid_colours(features, grid, solver).reshape(features.shape[0], -1, 3).cpu()
    out = []
    for c, lab in zip(colours, label_maps, strict=True):
        value = inertia_of_colours(c, grid_labels(lab, grid), ignore_index)
        out.append(math.nan if math.isnan(value) else value)
    return out


def label_colours(labels: torch.Tensor | Any) -> Any:
    """A fixed-palette picture float [H, W, 3] in [0, 1] of an int label map (0 = black)."""
    import numpy as np

    lab = np.asarray(labels, dtype=np.int64)
    palette = np.random.default_rng(12345).uniform(0.2, 1.0, (max(256, int(lab.max()) + 1), 3))
    palette[0] = 0.0
    return palette[lab % len(palette)]


def picture_grid(
    rows: Sequence[Sequence[Any]],
    path: str,
    col_titles: Sequence[str] = (),
    row_titles: Sequence[str] = (),
) -> str:
    """Save a grid of float [H, W, 3] pictures in [0, 1] (NaN shown black) as a PNG, atomically.

    Args:
        rows: pictures, one list per row (all rows the same length).
        path: the PNG to write.
    Returns:
        path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from procvision.atomic import atomic_write_path

    n_r, n_c = len(rows), len(rows[0])
    fig, axes = plt.subplots(n_r, n_c, figsize=(1.6 * n_c, 1.6 * n_r), squeeze=False)
    for r, row in enumerate(rows):
        for c, pic in enumerate(row):
            ax = axes[r][c]
            ax.imshow(np.nan_to_num(np.asarray(pic, dtype=np.float64)).clip(0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=7)
            if c == 0 and r < len(row_titles):
                ax.set_ylabel(row_titles[r], fontsize=7)
    fig.tight_layout()
    atomic_write_path(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return str(path)


@torch.no_grad()
def batched_segmentation_r2(
    backbone: torch.nn.Module | None,
    dataset: Sequence,
    grid: int = 112,
    ignore_index: int | None = 255,
    device: str = "cpu",
    batch_size: int = 8,
    solver: str = "gram",
    with_rgb: bool = True,
    progress: bool = True,
) -> dict[str, float]:
    """`segmentation.segmentation_r2` with the per-image PCAs batched (same scores, same keys).

    Images of the dataset must share one size (they are resized to it by the readers).
    """
    from tqdm.auto import tqdm

    from procvision.data.augment import normalize
    from procvision.eval.segmentation import r2_summary

    if backbone is None and not with_rgb:
        raise ValueError("nothing to score: give a backbone or with_rgb=True")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model_i: list[float] = []
    rgb_i: list[float] = []
    starts = range(0, len(dataset), batch_size)
    for s in tqdm(starts, desc="segmentation R² (batched)", disable=not progress):
        items = [dataset[i] for i in range(s, min(s + batch_size, len(dataset)))]
        images = torch.stack([it[0] for it in items])
        labels = [it[1] for it in items]
        if with_rgb:
            rgb_i += batched_image_inertia(images.permute(0, 2, 3, 1), labels, grid,
                                           ignore_index, solver)  # fmt: skip
        if backbone is not None:
            feats = backbone.forward_features(normalize(images.to(device)))["patches"]
            model_i += batched_image_inertia(feats, labels, grid, ignore_index, solver)
    return r2_summary(model_i if backbone is not None else None, rgb_i if with_rgb else None)

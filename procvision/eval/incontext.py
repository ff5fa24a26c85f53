"""In-context segmentation (spec §4.4, Fig. 9): a prompt image + mask segments a query image.

    A[i, j] = softmax_i(<z1_i, z2_j> / T)      T = C (feature width), over all prompt patches i
    f2_j    = Σ_i A[i, j] · Y1_i               Y1_i = the p x p pixel patch i of the prompt mask

Tokens are the last block's patch tokens after the norm, not L2-normalised. The soft mask f2 is
folded back to pixels and resized bilinearly to the query's size. Scores against a query mask:
soft IoU = Σ min(f2, y2) / Σ max(f2, y2), and the IoU of f2 > threshold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from procvision.data.augment import normalize


def incontext_soft_mask(
    prompt_tokens: torch.Tensor,
    prompt_mask: torch.Tensor,
    query_tokens: torch.Tensor,
    patch: int,
    temperature: float | None = None,
) -> torch.Tensor:
    """The query's soft mask by attention of its patches over the prompt's (spec §4.4).

    Args:
        prompt_tokens: float [h1, w1, C] raw patch tokens of the prompt image.
        prompt_mask: float [h1 * patch, w1 * patch] prompt mask in [0, 1].
        query_tokens: float [h2, w2, C] raw patch tokens of the query image.
        patch: pixels per patch side.
        temperature: softmax temperature (paper: C, the default).
    Returns:
        float [h2 * patch, w2 * patch] soft mask in [0, 1].
    """
    h1, w1, c = prompt_tokens.shape
    h2, w2, _ = query_tokens.shape
    if tuple(prompt_mask.shape) != (h1 * patch, w1 * patch):
        raise ValueError(
            f"prompt mask is {tuple(prompt_mask.shape)}, expected {(h1 * patch, w1 * patch)} "
            f"({h1}x{w1} patches of {patch} px)"
        )
    t = float(c) if temperature is None else float(temperature)
    z1 = prompt_tokens.reshape(-1, c).float()
    z2 = query_tokens.reshape(-1, c).float()
    attn = torch.softmax(z1 @ z2.T / t, dim=0)  # [n1, n2], columns sum to 1
    y1 = F.unfold(prompt_mask.float()[None, None], patch, stride=patch)[0].T  # [n1, p*p]
    f2 = attn.T @ y1  # [n2, p*p]
    out = F.fold(f2.T[None], (h2 * patch, w2 * patch), patch, stride=patch)
    return out[0, 0]


def thresholded(mask: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """The displayed map relu(f - th) / (1 - th) (spec §4.4, th = 0.2)."""
    return F.relu(mask - threshold) / (1.0 - threshold)


def soft_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Σ min(pred, target) / Σ max(pred, target) (NaN when both are empty)."""
    p, t = pred.double(), target.double()
    den = torch.maximum(p, t).sum()
    return float(torch.minimum(p, t).sum() / den) if den > 0 else float("nan")


def iou_at(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> float:
    """IoU of pred > threshold against target > 0.5 (NaN when both are empty)."""
    p, t = pred > threshold, target > 0.5
    union = (p | t).sum()
    return float((p & t).sum() / union) if union > 0 else float("nan")


def fit_to_patches(image: torch.Tensor, short_side: int, patch: int) -> torch.Tensor:
    """Resize so the shorter side is `short_side` (bicubic, antialiased), crop to multiples of
    `patch` (top-left), as the notebook does. image: float [C, H, W] -> [C, H', W']."""
    _, h, w = image.shape
    s = short_side / min(h, w)
    nh, nw = max(patch, round(h * s)), max(patch, round(w * s))
    out = F.interpolate(image[None].float(), size=(nh, nw), mode="bicubic", antialias=True)[0]
    return out[:, : nh // patch * patch, : nw // patch * patch]


@torch.no_grad()
def incontext_images(
    backbone: torch.nn.Module,
    prompt: torch.Tensor,
    prompt_mask: torch.Tensor,
    query: torch.Tensor,
    short_side: int,
    device: str = "cpu",
    temperature: float | None = None,
) -> torch.Tensor:
    """Soft mask of a query image [3, H2, W2] in [0, 1], at its own size, from a prompt.

    Args:
        prompt: float [3, H1, W1] in [0, 1]; prompt_mask: float [H1, W1] in [0, 1].
        short_side: the side images are resized to before the backbone (paper: 448).
        temperature: of the attention softmax (None: the feature width C, the paper's).
    Returns:
        float [H2, W2].
    """
    p = int(backbone.patch_size or 1)
    x1 = fit_to_patches(prompt, short_side, p).clamp(0, 1)
    m1 = fit_to_patches(prompt_mask[None], short_side, p)[0].clamp(0, 1)
    x2 = fit_to_patches(query, short_side, p).clamp(0, 1)
    z1 = backbone.forward_features(normalize(x1[None].to(device)))["patches"][0]
    z2 = backbone.forward_features(normalize(x2[None].to(device)))["patches"][0]
    f2 = incontext_soft_mask(z1, m1.to(z1.device), z2, p, temperature).cpu()
    return F.interpolate(f2[None, None], size=query.shape[1:], mode="bilinear")[0, 0].clamp(0, 1)


def class_pairs(
    dataset: Sequence, min_fraction: float = 0.01, max_pairs: int | None = None
) -> dict[int, list[tuple[int, int]]]:
    """(prompt, query) index pairs per class: consecutive items that both hold the class.

    Args:
        dataset: items (image, labels int [H0, W0], ...); label 0 (background) and 255 (void)
            are not classes.
        min_fraction: a class counts in an item only if it covers at least this share of pixels.
        max_pairs: pairs per class at most.
    """
    holders: dict[int, list[int]] = defaultdict(list)
    for i in range(len(dataset)):
        labels = dataset[i][1]
        values, counts = torch.unique(labels, return_counts=True)
        for v, n in zip(values.tolist(), counts.tolist(), strict=True):
            if v not in (0, 255) and n >= min_fraction * labels.numel():
                holders[v].append(i)
    pairs = {}
    for c, items in sorted(holders.items()):
        ps = list(zip(items[:-1], items[1:], strict=True))[:max_pairs]
        if ps:
            pairs[c] = ps
    return pairs


def incontext_benchmark(
    backbone: torch.nn.Module,
    dataset: Sequence,
    short_side: int,
    threshold: float = 0.5,
    max_pairs: int | None = 10,
    device: str = "cpu",
    progress: bool = True,
    temperature: float | None = None,
) -> dict[str, dict[str, float]]:
    """Mean soft IoU and IoU@threshold per class over (prompt, query) pairs of a labelled set.

    Masks are label == class; images are scored at the dataset's image size (labels resized
    nearest to it). Returns {class: {"soft_iou", "iou", "pairs"}} plus "mean" over classes.
    """
    pairs = class_pairs(dataset, max_pairs=max_pairs)
    jobs = [(c, a, b) for c, ps in pairs.items() for a, b in ps]
    per: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for c, a, b in tqdm(jobs, desc="in-context pairs", disable=not progress):
        (x1, l1), (x2, l2) = dataset[a][:2], dataset[b][:2]
        m1 = _mask_at(l1, c, x1.shape[1:])
        m2 = _mask_at(l2, c, x2.shape[1:])
        f2 = incontext_images(backbone, x1, m1, x2, short_side, device, temperature)
        per[c].append((soft_iou(f2, m2), iou_at(f2, m2, threshold)))
    out: dict[str, dict[str, float]] = {}
    for c, vals in per.items():
        t = torch.tensor(vals, dtype=torch.float64)
        out[str(c)] = {
            "soft_iou": float(t[:, 0].nanmean()),
            "iou": float(t[:, 1].nanmean()),
            "pairs": float(len(vals)),
        }
    if out:
        out["mean"] = {
            k: sum(v[k] for v in out.values()) / len(out) for k in ("soft_iou", "iou")
        } | {"pairs": float(len(jobs))}
    return out


def _mask_at(labels: torch.Tensor, c: int, size: Sequence[int]) -> torch.Tensor:
    m = (labels == c).float()[None, None]
    return F.interpolate(m, size=tuple(size), mode="nearest")[0, 0]


def overlay(image: torch.Tensor, mask: torch.Tensor, alpha: float = 0.6) -> torch.Tensor:
    """uint8 [H, W, 3] picture of an image float [3, H, W] with a soft mask [H, W] in red."""
    red = torch.tensor([1.0, 0.1, 0.1])[:, None, None]
    a = alpha * mask.clamp(0, 1)[None]
    out = image.float() * (1 - a) + red * a
    return (out.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)

"""k-NN semantic segmentation with a patch memory (spec §4.5, Fig. 10) and its metrics.

Memory: every patch token of the labelled memory images with the label of its patch (label maps
resized nearest to the token grid, void -> background 0 as in the authors' notebook) and its image
index as group. Query patches are labelled by the memory's vote ("softmax": the paper's
softmax(q·Kᵀ/√C) over all patches; "topk": top-k cosine, exp(cos / T)). Metrics on the token
grid: pixel accuracy over all pixels and over foreground (label > 0), and mIoU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from procvision.constants import PAPER_K, PAPER_T
from procvision.data.augment import normalize
from procvision.memory.patch_memory import PatchMemory

VOTES = ("softmax", "topk")


def patch_labels(
    label_map: torch.Tensor, h: int, w: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """Labels of an h x w token grid: nearest resize, `ignore_index` -> 0 (the notebook's 255 -> 0).

    Args:
        label_map: int [H0, W0].
    Returns:
        int64 [h * w].
    """
    lab = F.interpolate(label_map.cpu()[None, None].float(), size=(h, w), mode="nearest")
    lab = lab.reshape(-1).long()
    if ignore_index is not None:
        lab[lab == ignore_index] = 0
    return lab


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [K, K] counts, rows = target class, columns = predicted class."""
    idx = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, -1)


def segmentation_metrics(confusion: torch.Tensor) -> dict[str, float]:
    """Pixel accuracy (all and foreground = target class > 0) and mIoU from a confusion matrix.

    mIoU averages IoU_c = TP / (TP + FP + FN) over the classes present in the targets or the
    predictions (a class absent from both has no IoU).

    Args:
        confusion: int [K, K], rows = target, columns = prediction; class 0 is background.
    Returns:
        {"pixel_acc", "fg_pixel_acc", "miou", "pixels", "fg_pixels"} (NaN where undefined).
    """
    c = confusion.double()
    tp = c.diag()
    total, fg = c.sum(), c[1:].sum()
    union = c.sum(0) + c.sum(1) - tp
    present = union > 0
    nan = float("nan")
    return {
        "pixel_acc": float(tp.sum() / total) if total > 0 else nan,
        "fg_pixel_acc": float(tp[1:].sum() / fg) if fg > 0 else nan,
        "miou": float((tp[present] / union[present]).mean()) if present.any() else nan,
        "pixels": float(total),
        "fg_pixels": float(fg),
    }


def vote(
    memory: PatchMemory,
    queries: torch.Tensor,
    method: str = "softmax",
    k: int = PAPER_K,
    T: float = PAPER_T,
) -> torch.Tensor:
    """Class probabilities [Q, K] of raw query tokens [Q, C] by the memory's vote `method`."""
    if method == "softmax":
        return memory.softmax_vote(queries)
    if method == "topk":
        return memory.topk_vote(queries, k, T)
    raise ValueError(f"vote: expected one of {VOTES}, got {method!r}")


@torch.no_grad()
def patch_tokens(backbone: torch.nn.Module, image: torch.Tensor, device: str = "cpu"):
    """Raw last-block patch tokens [h, w, C] of one image float [3, S, S] in [0, 1]."""
    x = normalize(image[None].to(device))
    return backbone.forward_features(x)["patches"][0]


def build_patch_memory(
    backbone: torch.nn.Module,
    dataset: Sequence,
    num_classes: int,
    ignore_index: int | None = 255,
    device: str = "cpu",
    progress: bool = True,
) -> PatchMemory:
    """A patch memory of every token of every item (image [3, S, S], labels [H0, W0], ...).

    Group of each patch = the item's index in `dataset`.
    """
    memory: PatchMemory | None = None
    for i in tqdm(range(len(dataset)), desc="patch memory", disable=not progress):
        image, labels = dataset[i][:2]
        tok = patch_tokens(backbone, image, device)
        h, w, c = tok.shape
        if memory is None:
            memory = PatchMemory(c, num_classes, device)
        memory.add(tok.reshape(-1, c), patch_labels(labels, h, w, ignore_index), i)
    if memory is None:
        raise ValueError("the memory dataset is empty")
    return memory


def knn_segment(
    backbone: torch.nn.Module,
    memory: PatchMemory,
    dataset: Sequence,
    method: str = "softmax",
    k: int = PAPER_K,
    T: float = PAPER_T,
    ignore_index: int | None = 255,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, float]:
    """Label every query image's tokens by the memory's vote; metrics on the token grid.

    Returns:
        `segmentation_metrics` of the summed confusion matrix, plus "images" and the mean of the
        per-image mIoU ("miou_per_image").
    """
    total = torch.zeros(memory.num_classes, memory.num_classes, dtype=torch.int64)
    per_image = []
    for i in tqdm(range(len(dataset)), desc=f"k-NN segmentation ({method})", disable=not progress):
        image, labels = dataset[i][:2]
        tok = patch_tokens(backbone, image, device)
        h, w, c = tok.shape
        pred = vote(memory, tok.reshape(-1, c), method, k, T).argmax(1).cpu()
        target = patch_labels(labels, h, w, ignore_index).clamp_max(memory.num_classes - 1)
        conf = confusion_matrix(pred, target, memory.num_classes)
        per_image.append(segmentation_metrics(conf)["miou"])
        total += conf
    out = segmentation_metrics(total)
    out["images"] = float(len(per_image))
    out["miou_per_image"] = float(torch.tensor(per_image).nanmean()) if per_image else float("nan")
    return out

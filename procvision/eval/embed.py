"""Embed a dataset with a backbone: batched, under `torch.inference_mode`, L2-normalised float32.

Memory stays bounded: only the [N, D] result and one batch are held at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from procvision.data.datasets.base import collate_skip

Embedder = nn.Module | Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Embedded:
    """Result of `embed_dataset(..., return_indices=True)`.

    Attributes:
        embeddings: float32 [M, D], rows of unit L2 norm.
        labels: int64 [M].
        indices: int64 [M], dataset index of each row (M < len(dataset) when corrupt items were skipped).
        skipped: dataset indices that were skipped as corrupt.
    """

    embeddings: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: list[int] = field(default_factory=list)


def _unpack(batch: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return (
            batch[0],
            torch.as_tensor(batch[1]),
            torch.as_tensor(batch[2]) if len(batch) > 2 else None,
        )
    raise TypeError(f"expected batches (images, labels[, indices]), got {type(batch).__name__}")


def embed_dataset(
    model: Embedder,
    dataset: Dataset,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = True,
    num_workers: int = 0,
    return_indices: bool = False,
    desc: str = "embed",
) -> tuple[torch.Tensor, torch.Tensor] | Embedded:
    """Embed every item of `dataset` (items `(image, label[, index])` or `None` for skipped).

    Args:
        model: a module or callable mapping images [B, 3, H, W] to features [B, D] (a Backbone gives
            the CLS token after the final norm). A module is put in eval mode and restored after.
        dataset: a map-style dataset, e.g. a `RealDataset`.
        batch_size: images per forward pass.
        device: where the model runs; results are returned on the CPU.
        progress: show a tqdm bar.
        num_workers: DataLoader workers.
        return_indices: return an `Embedded` (with dataset indices and skipped items) instead of a pair.
        desc: progress bar label.
    Returns:
        (embeddings float32 [N, D] with unit rows, labels int64 [N]) or an `Embedded`.
    """
    device = torch.device(device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_skip,
    )
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    n = len(dataset)
    out: torch.Tensor | None = None
    labels = torch.empty(n, dtype=torch.int64)
    indices = torch.empty(n, dtype=torch.int64)
    filled, seen = 0, 0
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc=desc, disable=not progress, unit="batch", leave=False):
                if batch is None:  # every item of this batch was skipped
                    seen += batch_size
                    continue
                x, y, idx = _unpack(batch)
                if idx is None:
                    idx = torch.arange(seen, seen + len(x))
                feats = model(x.to(device, non_blocking=True))
                if isinstance(feats, dict):
                    feats = feats["cls"]
                feats = F.normalize(feats.float().flatten(1), dim=1).cpu()
                if out is None:
                    out = torch.empty(n, feats.shape[1], dtype=torch.float32)
                out[filled : filled + len(feats)] = feats
                labels[filled : filled + len(feats)] = y.to(torch.int64)
                indices[filled : filled + len(feats)] = idx.to(torch.int64)
                filled += len(feats)
                seen += batch_size
    finally:
        if was_training:
            model.train()
    if out is None:
        out = torch.empty(0, 0, dtype=torch.float32)
    emb, lab, ind = out[:filled], labels[:filled], indices[:filled]
    if not return_indices:
        return emb, lab
    skipped = sorted(set(range(n)) - set(ind.tolist())) if filled < n else []
    return Embedded(emb, lab, ind, skipped)


def flatten_pixels(x: torch.Tensor) -> torch.Tensor:
    """The raw-pixel "embedder": images [B, C, H, W] -> [B, C*H*W]."""
    return x.flatten(1)


def pixel_embeddings(
    dataset: Dataset, batch_size: int = 1024, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw-pixel baseline features, L2-normalised: the stored uint8 pixels of array datasets
    (784-d for Fashion-MNIST), else the transformed images flattened."""
    raw = getattr(dataset, "raw_pixels", None)
    if raw is not None:
        try:
            pixels = torch.from_numpy(np.asarray(raw(), dtype=np.float32))
        except AttributeError:  # a subset of a dataset without raw pixels
            pixels = None
        if pixels is not None:
            labels = torch.as_tensor(np.asarray(dataset.labels), dtype=torch.int64)
            return F.normalize(pixels, dim=1), labels
    return embed_dataset(flatten_pixels, dataset, batch_size, progress=progress, desc="pixels")

"""Embed a dataset with a backbone: batched, under `torch.inference_mode`, L2-normalised float32.

Memory stays bounded: only the [N, D] result and one batch are held at a time. Every evaluation
embeds through `embed_batch`: the feature kind ("cls": CLS after the final norm, the paper's k-NN
feature; "cls_prenorm": CLS before it; "patches": patch tokens [B, h, w, D]) under a precision
("fp32", or "bf16": bfloat16 autocast with the features cast back to float32 and L2-normalised in
float32). `resolve_precision("auto", device)` is the default of the evaluator and the demo: bf16 on
CUDA; on CPUs, bf16 where it is measured faster (native bf16 dot products: avx512_bf16 or
amx_bf16), fp32 elsewhere (see docs_eval.md / BENCHMARKS.md for the measurement).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from procvision.data.datasets.base import collate_skip

Embedder = nn.Module | Callable[[torch.Tensor], torch.Tensor]
FeatureKind = Literal["cls", "cls_prenorm", "patches"]
Precision = Literal["fp32", "bf16"]
FEATURE_KINDS = ("cls", "cls_prenorm", "patches")
PRECISIONS = ("fp32", "bf16")


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 dot products (avx512_bf16 or amx_bf16 in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> Precision:
    """ "auto" -> "bf16" on CUDA and on CPUs with native bf16, else "fp32"; "fp32"/"bf16" as given."""
    if precision in PRECISIONS:
        return precision  # type: ignore[return-value]
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16"
    return "bf16" if kind == "cpu" and cpu_has_fast_bf16() else "fp32"


def _autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _vit_tokens_prenorm(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Tokens of a timm ViT's last block before the final norm."""
    x = model.patch_embed(x)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    x = model.norm_pre(x)
    return model.blocks(x)


def raw_features(model: Embedder, x: torch.Tensor, feature: FeatureKind = "cls") -> torch.Tensor:
    """Un-normalised features of images [B, 3, H, W]: [B, D] ("cls", "cls_prenorm") or
    [B, h, w, D] ("patches"). A plain callable (not a `Backbone`) only gives "cls": its output."""
    if feature not in FEATURE_KINDS:
        raise ValueError(f"feature must be one of {FEATURE_KINDS}, got {feature!r}")
    if feature == "cls":
        out = model(x)
        return out["cls"] if isinstance(out, dict) else out
    if not hasattr(model, "forward_features"):
        raise TypeError(f"feature {feature!r} needs a Backbone, got {type(model).__name__}")
    if feature == "patches":
        return model.forward_features(x)["patches"]
    if not getattr(model, "is_vit", False):
        raise TypeError(f"feature 'cls_prenorm' needs a ViT backbone, got {model.arch}")
    return _vit_tokens_prenorm(model.model, x)[:, 0]


def embed_batch(
    model: Embedder,
    x: torch.Tensor,
    feature: FeatureKind = "cls",
    precision: Precision = "fp32",
) -> torch.Tensor:
    """Features of a batch, float32 and L2-normalised along the last axis (in float32).

    Args:
        model: a `Backbone` (any feature kind) or a callable images -> [B, D] ("cls" only).
        x: images [B, 3, H, W], already on the model's device.
        feature: "cls", "cls_prenorm" or "patches".
        precision: "fp32", or "bf16" (autocast; the output is cast to float32 before normalising).
    Returns:
        [B, D] (or [B, h, w, D] for "patches"), float32, unit L2 norm over D.
    """
    with _autocast(x.device, precision):
        feats = raw_features(model, x, feature)
    feats = feats.float()
    if feature != "patches":
        feats = feats.flatten(1)
    return F.normalize(feats, dim=-1)


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
    feature: FeatureKind = "cls",
    precision: Precision = "fp32",
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
        feature, precision: see `embed_batch`.
    Returns:
        (embeddings float32 [N, D] with unit rows, labels int64 [N]) or an `Embedded`
        ([N, h, w, D] for feature "patches").
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
                feats = embed_batch(model, x.to(device, non_blocking=True), feature, precision)
                feats = feats.cpu()
                if out is None:
                    out = torch.empty(n, *feats.shape[1:], dtype=torch.float32)
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

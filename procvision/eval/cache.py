"""One embedding pass per evaluation set and backbone state, shared by every evaluation callback.

`KNNCallback`, `PrivacyCallback` and `UnlearningCallback` (and later segmentation and NIGHTS) ask
`shared_cache(trainer).embed(...)` for the embeddings of an `EvalSet`; the first asks embeds (with
a progress bar), the others get the stored result. The key is (the set's prepared images:
dataset, split, transform, subset; the feature kind; the precision; the backbone state: the
trainer's global step and a cheap hash of the weights). Entries of an older backbone state are
dropped when a new state is embedded, so the cache holds at most one state's sets.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from procvision.data.datasets.datamodule import EvalSet
from procvision.eval.embed import Embedded, FeatureKind, Precision, embed_dataset


def weights_hash(model: nn.Module) -> str:
    """A cheap fingerprint of a module's state: per tensor its name, shape, sum and sum of
    absolute values (float64). Not cryptographic; with the global step it tells states apart."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t = t.detach()
            if t.is_floating_point() or t.is_complex():
                d = t.double()
                stats = (float(d.sum()), float(d.abs().sum()))
            else:
                stats = (float(t.sum()), 0.0)
            h.update(f"{name}|{tuple(t.shape)}|{stats[0]!r}|{stats[1]!r};".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class CacheKey:
    """What decides an embedding: the prepared images, the feature, the precision, the model."""

    images: str
    feature: str
    precision: str
    state: str


class EmbeddingCache:
    """Embeddings of evaluation sets for the current backbone state.

    Attributes:
        passes: how many embedding passes were run (one per set, feature and state).
        hits: how many requests were answered from the cache.
    """

    def __init__(self) -> None:
        self._store: dict[CacheKey, tuple[object, Embedded]] = {}
        self._state: str | None = None
        self.passes = 0
        self.hits = 0

    def clear(self) -> None:
        self._store.clear()
        self._state = None

    def embed(
        self,
        backbone: nn.Module,
        evalset: EvalSet,
        device: str | torch.device = "cpu",
        feature: FeatureKind = "cls",
        precision: Precision = "fp32",
        step: int | None = None,
        progress: bool = True,
        desc: str = "embed",
    ) -> tuple[object, Embedded]:
        """(the opened dataset, its `Embedded`) for `evalset` under `backbone` at `step`.

        The dataset is opened at the set's `image_size`, else the backbone's `img_size`.
        """
        size = evalset.size_for(getattr(backbone, "config", {}).get("img_size"))
        state = f"{step}:{weights_hash(backbone)}"
        key = CacheKey(evalset.key(size), feature, precision, state)
        if key in self._store:
            self.hits += 1
            return self._store[key]
        if state != self._state:  # a new backbone state: the old embeddings are stale
            self._store.clear()
            self._state = state
        dataset = evalset.open(size)
        out = embed_dataset(
            backbone, dataset, evalset.batch_size, device, progress, evalset.num_workers,
            return_indices=True, desc=desc, feature=feature, precision=precision,
        )  # fmt: skip
        self.passes += 1
        self._store[key] = (dataset, out)
        return dataset, out


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_cache(owner: object) -> EmbeddingCache:
    """The cache shared by everything that evaluates for `owner` (a Trainer): one per owner."""
    cache = _CACHES.get(owner)
    if cache is None:
        cache = _CACHES[owner] = EmbeddingCache()
    return cache

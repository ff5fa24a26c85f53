"""One embedding pass per evaluation set and backbone state, shared by every evaluation.

`KNNCallback`, `PrivacyCallback` and `UnlearningCallback` (and later segmentation and NIGHTS) ask
`shared_cache(trainer).embed(...)` for the embeddings of an `EvalSet`; the first asks embeds (with
a progress bar), the others get the stored result. The key (`cache_key`) is (the set's prepared
images: dataset URI with its path made absolute, split, transform, subset; the feature kind; the
precision; the backbone state). Entries of an older backbone state are dropped when a new state is
embedded, so the in-memory cache holds at most one state's sets.

The backbone state is, during a fit, the trainer's global step and a cheap hash of the weights
(`weights_hash`: the teacher changes every epoch, and hashing all its bytes every epoch end would
be wasted work); for a fixed backbone (`procvision linear`, `procvision medmnist`) it is the
backbone's sha256 fingerprint (`Backbone.fingerprint()`).

With a `DiskStore` (`EmbeddingCache(store="DIR")`), entries keyed by a fingerprint are also kept
on disk, with the same key: `DIR/<fingerprint>/<sha256 of the key>.safetensors` (embeddings,
labels, dataset indices) and a `.json` beside it (the full key, the tensors' sha256, the rows, the
skipped items), both written atomically, tensors first and the JSON last. On read the JSON's key
must equal the request, the tensors' sha256 must match and the labels must equal the opened
dataset's labels at the stored indices; anything else is a miss (with a warning) and the set is
embedded again and the entry rewritten. A fingerprint only ever reads its own folder, so entries
are never shared across backbones; step-and-hash states are never written to disk.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import weakref
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from procvision.atomic import write_bytes_atomic, write_json_atomic
from procvision.data.datasets.datamodule import EvalSet
from procvision.errors import UserError
from procvision.eval.embed import Embedded, FeatureKind, Precision, embed_dataset

STORE_VERSION = 1
FINGERPRINT_STATE = "fingerprint:"


class CacheEntryWarning(UserWarning):
    """An on-disk cache entry was unreadable, corrupt or stale: the set is embedded again."""


class CacheStoreError(UserError):
    """The on-disk embedding cache cannot be used as asked (no fingerprint, bad folder)."""


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

    def digest(self) -> str:
        """sha256 hex of the key's canonical JSON (the on-disk entry's file name)."""
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def fingerprint(self) -> str | None:
        """The backbone fingerprint of a fingerprint state, else None (a step-and-hash state)."""
        if self.state.startswith(FINGERPRINT_STATE):
            return self.state[len(FINGERPRINT_STATE) :]
        return None


def images_key(evalset: EvalSet, size: int) -> str:
    """`evalset.key(size)` with the dataset URI's path made absolute and the split it opens
    written out, so one set of images has one key whatever the working directory or spelling."""
    fields = json.loads(evalset.key(size))
    try:
        from procvision.data.datasets.registry import parse_dataset_uri

        uri = parse_dataset_uri(fields["dataset"])
    except (UserError, ValueError):
        return evalset.key(size)  # opening it will raise the user's error
    path = str(Path(uri.path).expanduser().absolute()) if uri.path else ""
    fields["dataset"] = f"{uri.kind}:{path}" if path else uri.kind
    fields["split"] = uri.split or fields.get("split")
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def backbone_state(
    backbone: nn.Module, step: int | None = None, fingerprint: str | None = None
) -> str:
    """The state part of a key: `fingerprint:<sha256>` when a fingerprint is given, else
    `<step>:<weights_hash>` (cheap; during a fit)."""
    if fingerprint:
        return FINGERPRINT_STATE + fingerprint
    return f"{step}:{weights_hash(backbone)}"


def cache_key(evalset: EvalSet, size: int, feature: str, precision: str, state: str) -> CacheKey:
    """The one key function of the in-memory cache and of its on-disk store."""
    return CacheKey(images_key(evalset, size), feature, precision, state)


def backbone_fingerprint(backbone: object) -> str:
    """`backbone.fingerprint()` (the sha256 of a procvision `Backbone`'s config and weights)."""
    fp = getattr(backbone, "fingerprint", None)
    if not callable(fp):
        raise CacheStoreError(
            f"the on-disk embedding cache needs a backbone with a fingerprint, got "
            f"{type(backbone).__name__}; run without --cache-dir"
        )
    return str(fp())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DiskStore:
    """Embeddings on disk under `root/<fingerprint>/`, keyed by `CacheKey.digest()`.

    Attributes:
        reads: entries served from disk; writes: entries written; rejected: entries found but
            refused (corrupt, stale or of another key), each with a `CacheEntryWarning`.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise CacheStoreError(f"--cache-dir {root}: exists and is not a folder")
        self.reads = self.writes = self.rejected = 0

    def paths(self, key: CacheKey) -> tuple[Path, Path]:
        """(tensors file, JSON key file) of `key`; only fingerprint states have a place on disk."""
        fp = key.fingerprint
        if not fp or not all(c in "0123456789abcdefABCDEF" for c in fp):
            raise CacheStoreError(
                f"on-disk cache entries are keyed by a backbone's sha256 fingerprint, got state "
                f"{key.state!r}"
            )
        stem = self.root / fp / key.digest()[:32]
        return stem.with_suffix(".safetensors"), stem.with_suffix(".json")

    def _reject(self, path: Path, why: str) -> None:
        self.rejected += 1
        warnings.warn(f"embedding cache {path}: {why}; embedding again", CacheEntryWarning,
                      stacklevel=3)  # fmt: skip

    def load(self, key: CacheKey, dataset: Any) -> Embedded | None:
        """The stored `Embedded` of `key`, checked against the opened `dataset`, or None."""
        tensors_path, meta_path = self.paths(key)
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            self._reject(meta_path, f"unreadable key file ({err})")
            return None
        if meta.get("version") != STORE_VERSION or meta.get("key") != asdict(key):
            self._reject(meta_path, "its key is not the one asked for")
            return None
        try:
            data = tensors_path.read_bytes()
        except OSError as err:
            self._reject(tensors_path, f"unreadable ({err})")
            return None
        if _sha256(data) != meta.get("sha256"):
            self._reject(tensors_path, "sha256 does not match its key file (corrupt or partial)")
            return None
        from safetensors.torch import load

        try:
            t = load(data)
            emb, lab, idx = t["embeddings"], t["labels"].long(), t["indices"].long()
        except Exception as err:  # noqa: BLE001 - any decoding failure is a miss
            self._reject(tensors_path, f"not a valid tensors file ({err})")
            return None
        skipped = [int(i) for i in meta.get("skipped", [])]
        why = _mismatch(emb, lab, idx, skipped, dataset)
        if why:
            self._reject(tensors_path, why)
            return None
        self.reads += 1
        return Embedded(emb, lab, idx, skipped)

    def save(self, key: CacheKey, out: Embedded, info: dict[str, Any] | None = None) -> Path:
        """Write `out` under `key`: the tensors, then the JSON key file (the commit)."""
        from safetensors.torch import save

        tensors_path, meta_path = self.paths(key)
        data = save({"embeddings": out.embeddings.contiguous(), "labels": out.labels.contiguous(),
                     "indices": out.indices.contiguous()})  # fmt: skip
        write_bytes_atomic(tensors_path, data)
        meta = {
            "version": STORE_VERSION, "key": asdict(key), "images": json.loads(key.images),
            "fingerprint": key.fingerprint, "file": tensors_path.name, "sha256": _sha256(data),
            "rows": len(out.labels), "shape": list(out.embeddings.shape),
            "skipped": list(out.skipped), "created": datetime.now(timezone.utc).isoformat(),
            **(info or {}),
        }  # fmt: skip
        write_json_atomic(meta_path, meta)
        self.writes += 1
        return meta_path


def _mismatch(
    emb: torch.Tensor, lab: torch.Tensor, idx: torch.Tensor, skipped: list[int], dataset: Any
) -> str | None:
    """Why stored rows do not belong to `dataset` (row counts, index range, labels), or None."""
    n = len(dataset)
    if not len(emb) == len(lab) == len(idx):
        return "embeddings, labels and indices have different lengths"
    if len(idx) + len(skipped) != n:
        return f"{len(idx)} rows + {len(skipped)} skipped, but the dataset has {n} items (stale)"
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
        return "dataset indices out of range (stale)"
    labels = getattr(dataset, "labels", None)
    if labels is not None and len(idx):
        want = torch.as_tensor(np.asarray(labels, dtype=np.int64)[idx.numpy()])
        if not torch.equal(want, lab):
            return "labels differ from the dataset's (the data changed: stale)"
    return None


class EmbeddingCache:
    """Embeddings of evaluation sets for the current backbone state, optionally kept on disk.

    Args:
        store: a `DiskStore` or a folder for one (None: in memory only). With a store, `embed`
            keys by the backbone's fingerprint (given, or `backbone.fingerprint()`).

    Attributes:
        passes: how many embedding passes were run (one per set, feature and state).
        hits: how many requests were answered from memory.
        disk_hits: how many requests were answered from the on-disk store.
        last_source: where the last `embed` answer came from: "memory", "disk" or "embedded".
    """

    def __init__(self, store: DiskStore | str | Path | None = None) -> None:
        self._store: dict[CacheKey, tuple[object, Embedded]] = {}
        self._state: str | None = None
        self.disk = store if isinstance(store, DiskStore) or store is None else DiskStore(store)
        self.passes = 0
        self.hits = 0
        self.disk_hits = 0
        self.last_source: str | None = None

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
        fingerprint: str | None = None,
    ) -> tuple[object, Embedded]:
        """(the opened dataset, its `Embedded`) for `evalset` under `backbone`.

        The dataset is opened at the set's `image_size`, else the backbone's `img_size`. The state
        is `fingerprint` when given (or, with a disk store, `backbone.fingerprint()`), else `step`
        and `weights_hash(backbone)`.
        """
        size = evalset.size_for(getattr(backbone, "config", {}).get("img_size"))
        if self.disk is not None and not fingerprint:
            fingerprint = backbone_fingerprint(backbone)
        state = backbone_state(backbone, step, fingerprint)
        key = cache_key(evalset, size, feature, precision, state)
        if key in self._store:
            self.hits += 1
            self.last_source = "memory"
            return self._store[key]
        if state != self._state:  # a new backbone state: the old embeddings are stale
            self._store.clear()
            self._state = state
        dataset = evalset.open(size)
        out = self.disk.load(key, dataset) if self.disk is not None else None
        if out is not None:
            self.disk_hits += 1
            self.last_source = "disk"
        else:
            out = embed_dataset(
                backbone, dataset, evalset.batch_size, device, progress, evalset.num_workers,
                return_indices=True, desc=desc, feature=feature, precision=precision,
            )  # fmt: skip
            self.passes += 1
            self.last_source = "embedded"
            if self.disk is not None:
                describe = getattr(dataset, "describe", None)
                self.disk.save(key, out, {"device": str(device),
                                          "dataset": describe() if callable(describe) else None})  # fmt: skip
        self._store[key] = (dataset, out)
        return dataset, out


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_cache(owner: object) -> EmbeddingCache:
    """The cache shared by everything that evaluates for `owner` (a Trainer): one per owner,
    in memory only (during a fit the backbone changes every epoch)."""
    cache = _CACHES.get(owner)
    if cache is None:
        cache = _CACHES[owner] = EmbeddingCache()
    return cache

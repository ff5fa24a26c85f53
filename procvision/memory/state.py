"""The plain-data state of a `VisualMemory`: what persistence reads and writes, and its hash.

`store.VisualMemory` converts to and from a `MemoryState` (`_to_state`, `_from_state`); `persist`
turns a state into files and back. Neither of those two modules imports the other's internals, and
`persist` does not import `store` at all, so there is no import circle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def canonical_json(obj: Any) -> str:
    """One-line JSON with sorted keys: the stored and hashed form of metadata and records."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class MemoryState:
    """Everything a saved memory holds, as arrays and JSON-able values.

    Attributes:
        dim: embedding width D.
        embeddings: float32 [N, D] unit rows, row (insertion) order.
        ids: int64 [N]; labels: int64 [N]; metadata: N canonical JSON lines ("{}" for none).
        fingerprint: the backbone's fingerprint string, or None.
        class_names: label i is named class_names[i], or None.
        engine: resolved engine name ("faiss", "torch", "ivf").
        next_id: the id counter: every id the memory ever held is below it (never reused).
        recipe: how the items were embedded and the default vote (see `memory.recipe`), or None.
        ivf: {"nlist", "nprobe", "quantizer_source"} for the IVF engine, else None.
        ivf_index: the serialised trained IVF index (bytes), or None.
        pending_audit: audit records queued by in-memory operations, written by the next save.
        content_hash: `content_hash(...)` of the arrays when already known (verified on load,
            cached by the memory), else None.
        new_blobs: {sha256: bytes} staged by `VisualMemory.add_blob`, written by the next save
            into blobs/ when an item's metadata references them ("blob": sha256).
    """

    dim: int
    embeddings: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    metadata: list[str]
    fingerprint: str | None = None
    class_names: list[str] | None = None
    engine: str = "torch"
    next_id: int = 0
    recipe: dict | None = None
    ivf: dict | None = None
    ivf_index: bytes | None = None
    pending_audit: list[dict] = field(default_factory=list)
    content_hash: str | None = None
    new_blobs: dict[str, bytes] = field(default_factory=dict)


def content_hash(
    dim: int, ids: np.ndarray, labels: np.ndarray, emb: np.ndarray, meta: list[str]
) -> str:
    """sha256 hex over dim, count, then ids, labels, embeddings and metadata, all in id order.

    Args:
        ids, labels: int64 [N]; emb: float32 [N, D]; meta: N canonical JSON lines ("{}" for none).
    The id counter, recipe, class names and audit log are not part of it, so a memory from which
    items were removed hashes exactly like one that never held them.
    """
    n = len(ids)
    in_order = n < 2 or bool(np.all(ids[1:] > ids[:-1]))  # the usual case: rows already by id
    order = None if in_order else np.argsort(ids, kind="stable")

    def rows(a: np.ndarray, start: int, stop: int) -> np.ndarray:
        return a[start:stop] if order is None else a[order[start:stop]]

    h = hashlib.sha256(b"procvision-visual-memory-content-v1\n")
    h.update(np.array([dim, n], "<i8").tobytes())
    h.update(np.ascontiguousarray(rows(ids, 0, n), "<i8").data)
    h.update(np.ascontiguousarray(rows(labels, 0, n), "<i8").data)
    step = max(1, (64 << 20) // (4 * dim))
    for s in range(0, n, step):
        h.update(np.ascontiguousarray(rows(emb, s, s + step), "<f4").data)
    for s in range(0, n, 4096):
        part = (
            meta[s : s + 4096] if order is None else [meta[r] for r in order[s : s + 4096].tolist()]
        )
        h.update(("\n".join(part) + "\n").encode())
    return h.hexdigest()

"""Every access of the service to the memory on disk: snapshots, reloads, locked writes, recipe.

The service holds one immutable `Snapshot` (a loaded `VisualMemory` plus the manifest it was loaded
from) and answers every read from it. Before each answer it compares the manifest's hash on disk
with the snapshot's (`manifest_hash`, a cheap sha256 of manifest.json): when another process wrote
the memory (e.g. a CLI `memory forget`), the snapshot is reloaded before the answer, so a forgotten
item is never served again from RAM. The service's own writes run under the memory's writer lock
(`update_memory`) on a fresh copy loaded from disk and then publish the written memory as the new
snapshot before they return; reads in flight meanwhile keep the previous snapshot (they began
before the write was acknowledged), so a write blocks readers only for the pointer swap.

The recipe comes from `procvision.eval.recipe` (MEM's manifest record, kept when the memory is
emptied): the backbone (`memory_backbone`), the default vote (`default_vote_of`) and the precision
queries are embedded in (`recipe_precision`, the one `memory build` recorded). Uploaded images keep
their bytes in the memory's blobs/ (`VisualMemory.add_blob` / `read_blob`: checksummed, hard-linked
between versions, shredded once a forget leaves no item referencing them).

Nothing else in `procvision.serve` imports the memory's persistence or lock functions.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from procvision.data.datasets import EvalTransform
from procvision.eval.embed import embed_batch
from procvision.eval.recipe import (
    class_table,
    default_vote_of,
    memory_backbone,
    recipe_precision,
    set_class_names,
    transform_to_str,
)
from procvision.memory import (
    CorruptMemory,
    MemoryLocked,
    VisualMemory,
    VisualMemoryError,
    forget,
    lock_path,
    manifest_hash,
    read_audit,
    read_blob,
    read_memory,
    update_memory,
    writer_lock,
)

UPLOAD_SCHEME = "upload:"
BLOB_KEY = "blob"  # metadata key naming an uploaded image's bytes in the memory's blobs/


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def vote_defaults(memory: VisualMemory) -> dict[str, Any]:
    """The memory's default vote {k, method, T}: its recipe's (`eval.recipe.default_vote_of`,
    kept when the memory is emptied), else the paper's (k=20, weighted, T=0.07)."""
    return default_vote_of(memory)


@dataclass(frozen=True)
class Snapshot:
    """One consistent state of the memory: never mutated once published."""

    memory: VisualMemory
    manifest_hash: str
    manifest: dict
    directory: Path | None = None
    loaded_utc: str = field(default_factory=_utc_now)

    @property
    def content_hash(self) -> str:
        return str(self.manifest.get("content_hash", ""))

    def class_name(self, label: int) -> str:
        names = self.memory.class_names
        return names[label] if names and 0 <= label < len(names) else str(label)

    def id_order(self) -> np.ndarray:
        """Row indices in ascending id order (computed once per snapshot)."""
        cached = self.__dict__.get("_id_order")
        if cached is None:
            cached = np.argsort(self.memory.ids, kind="stable")
            object.__setattr__(self, "_id_order", cached)
        return cached

    def item(self, item_id: int, with_bytes: bool = False) -> dict | None:
        """Public record of one item ({id, label, source, sha256, uploaded, ...}); None if absent."""
        mem = self.memory
        if mem.rows_of(np.asarray([item_id]))[0] < 0:
            return None
        meta = mem.metadata_of([item_id])[0]
        return item_record(self, item_id, int(mem.labels_of([item_id])[0]), meta, with_bytes)


def item_record(snap: Snapshot, item_id: int, label: int, meta: dict, with_bytes: bool) -> dict:
    """Public record of one item; with `with_bytes`, an uploaded item's image bytes (read from the
    memory's blobs/, verified against their sha256) under "image_bytes" ("blob_error" instead when
    they cannot be read: the item was forgotten meanwhile, or its blob is damaged)."""
    out = {
        "id": int(item_id),
        "label": snap.class_name(label),
        "label_index": int(label),
        "source": str(meta.get("source", "")),
        "sha256": meta.get("sha256"),
        "uploaded": BLOB_KEY in meta,
        "metadata": dict(meta),
    }
    if with_bytes and BLOB_KEY in meta and snap.directory is not None:
        try:
            out["image_bytes"] = read_blob(snap.directory, str(meta[BLOB_KEY]))
        except CorruptMemory as err:
            out["blob_error"] = (409, str(err))
        except (VisualMemoryError, OSError) as err:
            out["blob_error"] = (404, str(err))
    return out


def _read_manifest_bytes(directory: Path) -> tuple[str, dict]:
    raw = (directory / "manifest.json").read_bytes()
    return hashlib.sha256(raw).hexdigest(), json.loads(raw)


class MemoryState:
    """The served memory: current snapshot, backbone, transform, default vote and locked writes.

    Args:
        directory: the memory directory.
        backbone: backbone spec overriding the recorded one (its fingerprint must match).
        device: torch device for the backbone.
        write_wait: seconds a write waits for another writer's lock before a 409.
    """

    def __init__(
        self,
        directory: str | Path,
        backbone: str | None = None,
        device: str = "cpu",
        write_wait: float = 30.0,
    ) -> None:
        self.directory = Path(directory).absolute()
        if not (self.directory / "manifest.json").is_file():
            raise FileNotFoundError(
                f"memory {self.directory}: no manifest.json; build one with `procvision memory build`"
            )
        self.device = device
        self.write_wait = float(write_wait)
        self._swap = threading.Lock()  # guards the snapshot pointer and reloads
        self._writes = (
            threading.Lock()
        )  # one service writer at a time (the file lock spans processes)
        self._pending_base: str | None = (
            None  # manifest hash an in-flight service write started from
        )
        self.reloads = 0
        self._snap = self._load()
        snap = self._snap
        self.backbone, self.spec, self.transform = memory_backbone(snap.memory, backbone, device)
        self.precision = recipe_precision(snap.memory)  # queries embed as the items did
        self.fingerprint = self.backbone.fingerprint()  # once: hashing the weights is not free
        self.transform_str = transform_to_str(self.transform)

    # ------------------------------------------------------------ reads
    def _load(self) -> Snapshot:
        for _ in range(50):
            mem = read_memory(self.directory)
            h, manifest = _read_manifest_bytes(self.directory)
            if manifest.get("content_hash") == mem.content_hash():
                return Snapshot(mem, h, manifest, self.directory)
            time.sleep(0.02)  # written again between the load and the manifest read
        raise VisualMemoryError(f"memory {self.directory} keeps changing while it is read; retry")

    def snapshot(self) -> Snapshot:
        """The snapshot to answer from: reloaded first when the manifest on disk has changed."""
        snap = self._snap
        try:
            disk = manifest_hash(self.directory)
        except OSError:
            disk = None  # mid-swap of another writer: reload (read_memory waits for it)
        if disk == snap.manifest_hash:
            return snap
        if self._pending_base is not None and self._pending_base == snap.manifest_hash:
            return snap  # the change on disk is our own write in flight; it publishes before it returns
        with self._swap:
            if self._snap.manifest_hash == disk or (
                self._pending_base is not None and self._pending_base == self._snap.manifest_hash
            ):
                return self._snap
            self._snap = self._load()
            self.reloads += 1
            return self._snap

    def embed(self, x: torch.Tensor) -> np.ndarray:
        """Backbone CLS embeddings of a prepared batch [B, 3, H, W] -> float32 [B, D], unit rows,
        in the recipe's precision (`embed_batch`, as the memory's items were embedded)."""
        with torch.inference_mode():
            q = embed_batch(self.backbone, x.to(self.device), "cls", self.precision)  # type: ignore[arg-type]
            return q.cpu().numpy()

    def audit(self) -> list[dict]:
        return read_audit(self.directory)

    # ------------------------------------------------------------ writes
    def _write(self, fn: Callable[[VisualMemory], Any], reason: str | None = None) -> Any:
        """Run fn(mem) under the memory's writer lock, then publish the written memory."""
        with self._writes:
            box: dict[str, Any] = {}

            def step(mem: VisualMemory) -> Any:
                base = manifest_hash(self.directory)  # stable: we hold the writer lock
                with self._swap:
                    if base != self._snap.manifest_hash:  # someone else wrote since our snapshot
                        h, manifest = _read_manifest_bytes(self.directory)
                        self._snap = Snapshot(mem.copy(), h, manifest, self.directory)
                        self.reloads += 1
                    self._pending_base = base
                box["mem"] = mem
                r = fn(mem)
                known = r.get("content_hash_after") if isinstance(r, dict) else None
                box["expected"] = known or mem.content_hash()
                return r

            try:
                result = update_memory(self.directory, step, wait=self.write_wait, reason=reason)
            finally:
                with self._swap:
                    self._pending_base = None
                    if "expected" in box:
                        h, manifest = _read_manifest_bytes(self.directory)
                        if manifest.get("content_hash") == box["expected"]:
                            self._snap = Snapshot(box["mem"], h, manifest, self.directory)
                        else:  # another writer followed ours: read what is on disk now
                            self._snap = self._load()
                            self.reloads += 1
            return result

    def add_uploads(
        self,
        embeddings: np.ndarray,
        labels: list[str],
        metas: list[dict],
        images: list[bytes] | None = None,
    ) -> dict[str, Any]:
        """Add uploaded items (label names; new names extend the class table); returns the ids.

        `images[i]` (the uploaded bytes of item i) is stored in the memory's blobs/ with
        `VisualMemory.add_blob` (checksummed; shredded once a forget leaves no item referencing
        it); `metas[i]["blob"]` must then be its sha256 (`upload_metadata` sets it)."""

        def fn(mem: VisualMemory) -> dict[str, Any]:
            for data, meta in zip(images or [], metas, strict=False):
                if mem.add_blob(data) != meta.get(BLOB_KEY):
                    raise ValueError("upload metadata does not name the sha256 of its bytes")
            table, index = class_table(mem, labels)
            new_classes = table[len(mem.class_names or []) :]
            if new_classes:
                set_class_names(mem, table)
            ids = mem.add(embeddings, index, metadata=metas)
            return {"ids": ids.tolist(), "new_classes": new_classes, "n_after": len(mem)}

        out = self._write(fn)
        out["content_hash"] = self._snap.content_hash
        return out

    def forget(
        self, ids: list[int] | None, source_pattern: str | None, reason: str
    ) -> dict[str, Any]:
        """Forget by ids and/or source pattern; returns the audit record as stored on disk."""

        def fn(mem: VisualMemory) -> dict:
            return forget(mem, ids=ids, source_pattern=source_pattern, reason=reason)

        record = self._write(fn, reason=reason)
        if record["count"]:
            for stored in reversed(self.audit()):
                if stored.get("content_hash_after") == record["content_hash_after"]:
                    return {**stored, "not_found": record["not_found"]}
        return record

    def upload_metadata(self, data: bytes, filename: str, media_type: str) -> dict[str, Any]:
        """Metadata of an uploaded image: its source names it as an upload, "blob" the sha256 under
        which `add_uploads` keeps its bytes in the memory's blobs/ (checksummed, shredded when a
        forget leaves no item referencing them)."""
        sha = hashlib.sha256(data).hexdigest()
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(filename).name)[:80]
        return {
            "source": f"{UPLOAD_SCHEME}{sha[:16]}/{safe or 'image'}",
            "sha256": sha,
            "backbone": self.spec,
            "transform": self.transform_str,
            "media_type": media_type,
            "uploaded_utc": _utc_now(),
            BLOB_KEY: sha,
        }

    # ------------------------------------------------------------ listings
    def list_items(
        self,
        offset: int,
        limit: int,
        label: str | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        snap = self.snapshot()
        mem = snap.memory
        order = snap.id_order()
        if label is not None or source is not None:
            rows = order
            if label is not None:
                names = mem.class_names or []
                want = names.index(label) if label in names else -1
                rows = rows[mem.labels[rows] == want]
            if source is not None:
                meta = mem.metadata_of(mem.ids[rows]) if len(rows) else []
                keep = [
                    i
                    for i, d in enumerate(meta)
                    if fnmatch.fnmatchcase(str(d.get("source", "")), source)
                ]
                rows = rows[np.asarray(keep, np.int64)] if keep else rows[:0]
        else:
            rows = order
        page = rows[offset : offset + limit]
        ids = mem.ids[page]
        meta = mem.metadata_of(ids) if len(ids) else []
        items = [
            item_record(snap, int(i), int(lab), m, False)
            for i, lab, m in zip(ids.tolist(), mem.labels[page].tolist(), meta, strict=True)
        ]
        return {
            "total": int(len(rows)),
            "offset": offset,
            "limit": limit,
            "items": items,
            "content_hash": snap.content_hash,
        }

    def health(self) -> dict[str, Any]:
        snap = self.snapshot()
        mem = snap.memory
        return {
            "status": "ok",
            "memory": str(self.directory),
            "count": len(mem),
            "dim": mem.dim,
            "engine": mem.engine,
            "class_names": mem.class_names or [],
            "fingerprint": mem.fingerprint,
            "content_hash": snap.content_hash,
            "manifest_hash": snap.manifest_hash,
            "loaded_utc": snap.loaded_utc,
            "reloads": self.reloads,
            "backbone": self.spec,
            "backbone_fingerprint": self.fingerprint,
            "transform": self.transform_str,
            "precision": self.precision,
            "device": self.device,
            "vote_defaults": vote_defaults(mem),
            "lock_file": str(lock_path(self.directory)),
        }


def prepare(transform: EvalTransform, images: list) -> torch.Tensor:
    """PIL images -> the memory's transform -> one batch [B, 3, H, W]."""
    return torch.stack([transform(im) for im in images])


__all__ = [
    "MemoryLocked",
    "MemoryState",
    "Snapshot",
    "item_record",
    "lock_path",
    "manifest_hash",
    "prepare",
    "read_memory",
    "recipe_precision",
    "update_memory",
    "vote_defaults",
    "writer_lock",
]

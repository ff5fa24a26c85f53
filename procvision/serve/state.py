"""Every access of the service to the memory on disk: snapshots, reloads, locked writes, recipe.

The service holds one immutable `Snapshot` (a loaded `VisualMemory` plus the manifest it was loaded
from) and answers every read from it. Before each answer it compares the manifest's hash on disk
with the snapshot's (`manifest_hash`, a cheap sha256 of manifest.json): when another process wrote
the memory (e.g. a CLI `memory forget`), the snapshot is reloaded before the answer, so a forgotten
item is never served again from RAM. The service's own writes run under the memory's writer lock
(`update_memory`) on a fresh copy loaded from disk and then publish the written memory as the new
snapshot before they return; reads in flight meanwhile keep the previous snapshot (they began
before the write was acknowledged), so a write blocks readers only for the pointer swap.

Nothing else in `procvision.serve` imports the memory's persistence or lock functions.
"""

from __future__ import annotations

import base64
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

from procvision.constants import PAPER_K, PAPER_T
from procvision.data.datasets import EvalTransform
from procvision.eval.recipe import (
    class_table,
    memory_backbone,
    set_class_names,
    transform_to_str,
)
from procvision.memory import METHODS, VisualMemory, forget, read_audit
from procvision.memory.errors import VisualMemoryError

# ------------------------------------------------------------------------------------------------
# STAND-IN for procvision.memory.lock (MEM, issue 11; API in /work/briefs/api_lock.md).
# When MEM's module is present it is used; the `except ImportError` branch below is a minimal
# stand-in on today's load/save (a plain fcntl lock beside the memory directory, a bounded retry
# for readers). DELETE THE WHOLE except BRANCH AT MERGE.
# ------------------------------------------------------------------------------------------------
try:
    from procvision.memory.lock import (  # type: ignore[import-not-found]
        MemoryLocked,
        lock_path,
        manifest_hash,
        read_memory,
        update_memory,
        writer_lock,
    )
except ImportError:  # pragma: no cover - exercised until MEM's lock.py is merged
    import fcntl
    import os
    from contextlib import contextmanager

    from procvision.memory.persist import save_memory as _save_memory

    class MemoryLocked(VisualMemoryError):  # type: ignore[no-redef]
        """Another process holds the memory's writer lock."""

    def lock_path(directory: str | Path) -> Path:  # type: ignore[no-redef]
        d = Path(directory).absolute()
        return d.parent / f".{d.name}.lock"

    @contextmanager
    def writer_lock(directory: str | Path, wait: float | None = None):  # type: ignore[no-redef]
        path = lock_path(directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = None if wait is None else time.monotonic() + float(wait)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is None or time.monotonic() >= deadline:
                        holder = os.pread(fd, 200, 0).decode(errors="replace").split()
                        pid, since = (holder + ["?", "?"])[:2]
                        raise MemoryLocked(
                            f"memory {directory} is being written by pid {pid} since {since}; "
                            "retry or pass --wait"
                        ) from None
                    time.sleep(0.01)
            stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {stamp}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the flock

    def manifest_hash(directory: str | Path) -> str:  # type: ignore[no-redef]
        return hashlib.sha256((Path(directory) / "manifest.json").read_bytes()).hexdigest()

    def read_memory(directory: str | Path, **load_kwargs: Any) -> VisualMemory:  # type: ignore[no-redef]
        last: Exception | None = None
        for _ in range(200):
            if not Path(directory).is_dir():  # a writer is between its two renames
                time.sleep(0.02)
                continue
            try:
                before = manifest_hash(directory)
                mem = VisualMemory.load(directory, **load_kwargs)
                if manifest_hash(directory) == before:
                    return mem
            except (OSError, VisualMemoryError) as err:
                last = err
            time.sleep(0.02)
        if last is not None:
            raise last
        return VisualMemory.load(directory, **load_kwargs)

    def update_memory(  # type: ignore[no-redef]
        directory: str | Path,
        fn: Callable[[VisualMemory], Any],
        wait: float | None = None,
        reason: str | None = None,
    ) -> Any:
        with writer_lock(directory, wait):
            mem = read_memory(directory)
            before_ids, n_before, h_before = mem.ids.copy(), len(mem), mem.content_hash()
            result = fn(mem)
            removed = np.setdiff1d(before_ids, mem.ids)
            record = None
            if len(removed):
                record = {
                    "action": "forget",
                    "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "reason": reason or "",
                    "removed_ids": removed.tolist(),
                    "count": int(len(removed)),
                    "n_before": n_before,
                    "n_after": len(mem),
                    "content_hash_before": h_before,
                    "content_hash_after": mem.content_hash(),
                    "fingerprint": mem.fingerprint,
                }
            _save_memory(mem, directory, shred_old=bool(len(removed)), audit_record=record)
            return result


# ------------------------------------------------------------------------------------------------
# end of the stand-in
# ------------------------------------------------------------------------------------------------

UPLOAD_SCHEME = "upload:"
EMBEDDED_KEYS = ("image_b64",)  # metadata keys never returned by listings


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def vote_defaults(manifest: dict) -> dict[str, Any]:
    """The memory's default vote {k, method, T}: the manifest's recipe (issue 11), else the paper's."""
    recipe = manifest.get("recipe") if isinstance(manifest.get("recipe"), dict) else {}
    vote = recipe.get("vote") if isinstance(recipe.get("vote"), dict) else recipe
    out = {"k": PAPER_K, "method": "weighted", "T": PAPER_T}
    if isinstance(vote.get("k"), int) and vote["k"] >= 1:
        out["k"] = int(vote["k"])
    if vote.get("method") in METHODS:
        out["method"] = vote["method"]
    if isinstance(vote.get("T"), int | float) and vote["T"] > 0:
        out["T"] = float(vote["T"])
    return out


def recipe_backbone_spec(manifest: dict) -> str | None:
    """The backbone spec the manifest's recipe records (issue 11), or None (then item metadata)."""
    recipe = manifest.get("recipe")
    if isinstance(recipe, dict):
        b = recipe.get("backbone")
        if isinstance(b, dict) and isinstance(b.get("path") or b.get("spec"), str):
            return b.get("path") or b.get("spec")
        if isinstance(b, str):
            return b
    return None


@dataclass(frozen=True)
class Snapshot:
    """One consistent state of the memory: never mutated once published."""

    memory: VisualMemory
    manifest_hash: str
    manifest: dict
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
    public = {k: v for k, v in meta.items() if k not in EMBEDDED_KEYS}
    out = {
        "id": int(item_id),
        "label": snap.class_name(label),
        "label_index": int(label),
        "source": str(meta.get("source", "")),
        "sha256": meta.get("sha256"),
        "uploaded": "image_b64" in meta,
        "metadata": public,
    }
    if with_bytes and "image_b64" in meta:
        out["image_bytes"] = base64.b64decode(meta["image_b64"])
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
        override = backbone or (None if len(snap.memory) else recipe_backbone_spec(snap.manifest))
        self.backbone, self.spec, self.transform = memory_backbone(snap.memory, override, device)
        self.fingerprint = self.backbone.fingerprint()  # once: hashing the weights is not free
        self.transform_str = transform_to_str(self.transform)

    # ------------------------------------------------------------ reads
    def _load(self) -> Snapshot:
        for _ in range(50):
            mem = read_memory(self.directory)
            h, manifest = _read_manifest_bytes(self.directory)
            if manifest.get("content_hash") == mem.content_hash():
                return Snapshot(mem, h, manifest)
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
        """Backbone CLS embeddings of a prepared batch [B, 3, H, W] -> float32 [B, D], unit rows."""
        with torch.inference_mode():
            q = self.backbone(x.to(self.device)).float()
            return torch.nn.functional.normalize(q, dim=1).cpu().numpy()

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
                        self._snap = Snapshot(mem.copy(), h, manifest)
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
                            self._snap = Snapshot(box["mem"], h, manifest)
                        else:  # another writer followed ours: read what is on disk now
                            self._snap = self._load()
                            self.reloads += 1
            return result

    def add_uploads(
        self, embeddings: np.ndarray, labels: list[str], metas: list[dict]
    ) -> dict[str, Any]:
        """Add uploaded items (label names; new names extend the class table); returns the ids."""

        def fn(mem: VisualMemory) -> dict[str, Any]:
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
        """Metadata of an uploaded image: its bytes live inside the memory (checksummed, shredded
        on forget with the rest of metadata.jsonl), its source names it as an upload."""
        sha = hashlib.sha256(data).hexdigest()
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(filename).name)[:80]
        return {
            "source": f"{UPLOAD_SCHEME}{sha[:16]}/{safe or 'image'}",
            "sha256": sha,
            "backbone": self.spec,
            "transform": self.transform_str,
            "media_type": media_type,
            "uploaded_utc": _utc_now(),
            "image_b64": base64.b64encode(data).decode("ascii"),
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
            "device": self.device,
            "vote_defaults": vote_defaults(snap.manifest),
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
    "recipe_backbone_spec",
    "update_memory",
    "vote_defaults",
    "writer_lock",
]

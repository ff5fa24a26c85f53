"""One writer at a time, consistent readers: the API every command and the service use.

    with writer_lock("mem/", wait=5.0): ...        # exclusive, for a whole read-modify-write
    mem = read_memory("mem/")                      # a consistent snapshot; changes nothing on disk
    update_memory("mem/", lambda m: m.remove([3]), reason="typo")   # load, edit, save, audit
    if manifest_hash("mem/") != seen: reload()     # cheap change detection for long-lived readers

The lock is an advisory `fcntl.flock` on `<parent>/.<name>.lock`, beside the memory directory
(a save replaces the directory, so a lock inside it would change inode). A writer that finds it
taken fails at once with `MemoryLocked` ("memory M is being written by pid N since T; retry or
pass --wait"), or waits up to `wait` seconds. Readers take no lock: they pin the directory they
opened and retry (bounded) when a save swapped it under them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from procvision.memory.audit import removal_record
from procvision.memory.errors import MemoryLocked, MemoryNotFound
from procvision.memory.lockfile import lock_holder, lock_path, writer_active, writer_lock
from procvision.memory.persist import leftovers, manifest_hash, prepare_write
from procvision.memory.store import VisualMemory, load_memory, save_memory

R = TypeVar("R")

__all__ = [
    "MemoryLocked",
    "lock_holder",
    "lock_path",
    "manifest_hash",
    "read_memory",
    "update_memory",
    "writer_active",
    "writer_lock",
]


def read_memory(directory: str | Path, **load_kwargs: Any) -> VisualMemory:
    """A verified, consistent snapshot of the memory (`store.load_memory`'s keyword arguments:
    expect_fingerprint, engine, hmac_key, device, retry_seconds). Never recovers, renames or
    deletes anything on disk."""
    return load_memory(directory, **load_kwargs)


def update_memory(
    directory: str | Path,
    fn: Callable[[VisualMemory], R],
    wait: float | None = None,
    reason: str | None = None,
    hmac_key: bytes | None = None,
    **load_kwargs: Any,
) -> R:
    """Under the writer lock: load the memory, `r = fn(mem)` (which edits `mem` in place), save.

    Items that `fn` removed without an audit record of their own (`unlearn.forget` queues one)
    get a "remove" record (with `reason`); the old version's files are then shredded. Returns r.
    Nothing is saved if `fn` raises.
    """
    load_kwargs.pop("retry_seconds", None)
    target = Path(os.path.abspath(directory))
    if not target.exists() and not any(kind == "old" for _, kind, _ in leftovers(target)):
        raise MemoryNotFound(f"memory directory {target} does not exist; build or save one first")
    if target.exists() and not target.is_dir():
        raise MemoryNotFound(
            f"memory {target} is a file, not a memory directory: give the directory that "
            "`procvision memory build` wrote"
        )
    with writer_lock(target, wait):
        prepare_write(target)
        mem = load_memory(directory, hmac_key=hmac_key, retry_seconds=0.0, **load_kwargs)
        before = mem.ids.copy()
        hash_before = mem.content_hash()
        result = fn(mem)
        removed = np.setdiff1d(before, mem.ids)
        record = None
        uncovered = np.setdiff1d(removed, mem._queued_removed_ids())
        if len(uncovered):
            record = removal_record(
                "remove", uncovered, np.zeros(0, np.int64), reason or "", len(before),
                hash_before, mem,
            )  # fmt: skip
        save_memory(mem, directory, shred_old=len(removed) > 0, audit_record=record,
                    hmac_key=hmac_key)  # fmt: skip
        return result

"""Audit records of removals (the log itself, hash-chained, is written by `persist`)."""

from __future__ import annotations

import datetime as _dt
import hashlib

import numpy as np

from procvision.memory.store import VisualMemory


def removal_record(
    action: str,
    removed: np.ndarray,
    not_found: np.ndarray,
    reason: str,
    n_before: int,
    content_hash_before: str,
    mem: VisualMemory,
    source_pattern: str | None = None,
) -> dict:
    """The audit record of a removal from `mem` (already applied): action, time_utc, reason,
    removed_ids, count, not_found, source_pattern_sha256 (the pattern itself may identify a
    person, so it is hashed), n_before, n_after, content hashes before and after, fingerprint."""
    return {
        "action": action,
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "reason": reason,
        "removed_ids": np.asarray(removed, np.int64).tolist(),
        "count": int(len(removed)),
        "not_found": np.asarray(not_found, np.int64).tolist(),
        "source_pattern_sha256": None
        if source_pattern is None
        else hashlib.sha256(source_pattern.encode()).hexdigest(),
        "n_before": int(n_before),
        "n_after": len(mem),
        "content_hash_before": content_hash_before,
        "content_hash_after": mem.content_hash(),
        "fingerprint": mem.fingerprint,
    }

"""Unlearning: remove items for good, log it, and prove the result equals never having had them."""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from procvision.constants import PAPER_T
from procvision.memory.audit import removal_record
from procvision.memory.errors import InvalidArgument
from procvision.memory.lock import update_memory
from procvision.memory.persist import AUDIT
from procvision.memory.state import canonical_json
from procvision.memory.store import VisualMemory, as_int64
from procvision.memory.vote import METHODS, map_labels, predict, vote_scores


def ids_matching(memory: VisualMemory, source_pattern: str, key: str = "source") -> np.ndarray:
    """Ids whose metadata[key] matches the shell-style pattern (fnmatch, case-sensitive)."""
    meta = memory.metadata_of(memory.ids)
    hit = [
        i
        for i, d in zip(memory.ids.tolist(), meta, strict=True)
        if isinstance(d.get(key), str) and fnmatch.fnmatchcase(d[key], source_pattern)
    ]
    return np.asarray(sorted(hit), np.int64)


def _append_line(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(canonical_json(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def forget(
    target: str | Path | VisualMemory,
    ids: Any = None,
    source_pattern: str | None = None,
    audit_log: str | Path | None = None,
    reason: str = "",
    expect_fingerprint: str | None = None,
    wait: float | None = None,
    hmac_key: bytes | None = None,
) -> dict:
    """Remove items by id and/or by metadata source pattern, and record what was done.

    For a memory directory: under its writer lock (`wait` seconds at most for another writer),
    load (verified), remove, and rewrite every file through an atomic swap whose old copy is
    overwritten with zeros before deletion, so no embedding row, id or metadata of a removed item
    remains in the directory's files. The audit record is appended to the directory's
    hash-chained audit.jsonl in the same swap (and also to `audit_log` if given). For an
    in-memory VisualMemory the record is queued on it (its next save writes it to the log) and
    appended to `audit_log` if given.

    An IVF quantiser trained on the memory's own rows is dropped (retrained on the next search), as
    its centroids may encode removed items. Removed ids are retired: the memory never reuses them.

    Returns the record (see `removal_record`; action "forget").
    """
    if ids is None and source_pattern is None:
        raise InvalidArgument(
            "forget: give ids (--ids ID ...), a source pattern (--source), or both"
        )
    if not isinstance(target, VisualMemory):
        record = update_memory(
            target,
            lambda m: forget(m, ids, source_pattern, None, reason, expect_fingerprint),
            wait=wait,
            hmac_key=hmac_key,
            expect_fingerprint=expect_fingerprint,
        )
        if audit_log is not None and Path(audit_log).resolve() != (Path(target) / AUDIT).resolve():
            _append_line(Path(audit_log), record)
        return record
    mem = target
    mem.check_fingerprint(expect_fingerprint)
    want = np.zeros(0, np.int64) if ids is None else np.unique(as_int64(ids, "ids"))
    if source_pattern is not None:
        want = np.union1d(want, ids_matching(mem, source_pattern))
    present = want[mem.rows_of(want) >= 0]
    n_before, hash_before = len(mem), mem.content_hash()
    mem.remove(present)
    if len(present):
        mem._drop_memory_quantizer()
    record = removal_record(
        "forget", present, np.setdiff1d(want, present), reason, n_before, hash_before, mem,
        source_pattern,
    )  # fmt: skip
    mem._queue_audit(record)
    if audit_log is not None:
        _append_line(Path(audit_log), record)
    return record


def verify_unlearned(
    memory_after: VisualMemory,
    memory_rebuilt: VisualMemory | Callable[[], VisualMemory],
    queries: Any,
    k: int,
    removed_ids: Any,
    methods: tuple[str, ...] = METHODS,
    T: float = PAPER_T,
) -> dict:
    """Prove on `queries` that `memory_after` acts exactly like a memory built without the items.

    Compares, bit for bit, the top-k similarities and ids, the class scores and predictions of every
    method, and the content hashes; and checks that no removed id is stored or returned.

    Returns a JSON-able dict of booleans and counts; "ok" is True only if every check passes.
    """
    rebuilt = memory_rebuilt() if callable(memory_rebuilt) else memory_rebuilt
    removed = np.unique(as_int64(removed_ids, "removed_ids"))
    sa, ia = memory_after.search(queries, k)
    sb, ib = rebuilt.search(queries, k)
    same_neigh = bool(
        np.array_equal(ia, ib) and np.array_equal(sa.view(np.int32), sb.view(np.int32))
    )
    classes = np.union1d(memory_after.classes, rebuilt.classes)
    la = map_labels(memory_after.labels_of(ia), classes)
    lb = map_labels(rebuilt.labels_of(ib), classes)
    per_method = {}
    for m in methods:
        a = vote_scores(sa, la, len(classes), m, T)
        b = vote_scores(sb, lb, len(classes), m, T)
        per_method[m] = {
            "identical_scores": bool(np.array_equal(a.view(np.int64), b.view(np.int64))),
            "identical_predictions": bool(np.array_equal(predict(a), predict(b))),
        }
    out = {
        "k": int(k),
        "n_queries": int(len(ia)),
        "n_removed": int(len(removed)),
        "identical_neighbours": same_neigh,
        "methods": per_method,
        "identical_content_hash": memory_after.content_hash() == rebuilt.content_hash(),
        "removed_ids_in_results": int(np.isin(ia, removed).sum()),
        "removed_ids_still_stored": int(np.isin(memory_after.ids, removed).sum()),
    }
    out["ok"] = bool(
        same_neigh
        and out["identical_content_hash"]
        and out["removed_ids_in_results"] == 0
        and out["removed_ids_still_stored"] == 0
        and all(v["identical_scores"] and v["identical_predictions"] for v in per_method.values())
    )
    return out


def audit_summary(record: dict) -> str:
    """One human line for a forget record (for CLIs and logs)."""
    return json.dumps(
        {k: record[k] for k in ("time_utc", "count", "n_before", "n_after", "reason")}
    )


def forget_sample(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted ids (of 0..n-1) of a seeded random `fraction` to forget: round(fraction * n), at
    least 1 and at most n - 1, so something is removed and something stays."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"forget_fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise ValueError(f"an unlearning check needs a memory of at least 2 items, got {n}")
    count = min(max(1, round(fraction * n)), n - 1)
    return np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))


def unlearning_check(
    full: VisualMemory,
    embeddings: Any,
    labels: Any,
    queries: Any,
    query_labels: Any,
    forgotten: Any,
    k: int = 20,
    method: str = "weighted",
    T: float = PAPER_T,
) -> dict:
    """Remove `forgotten` from a copy of `full` and prove it equals a memory built without them.

    Args:
        full: the memory holding `embeddings` [N, D] with `labels` [N] under ids 0..N-1.
        embeddings, labels: what `full` was built from (the reference memory is built from the
            kept rows of these, with their original ids, so no bit is re-normalised differently).
        queries: [Q, D] query embeddings; query_labels: [Q] their true labels.
        forgotten: ids to remove (e.g. `forget_sample(N, 0.05)`).
        k, method, T: the classifier (k is capped at the number of kept items).
    Returns:
        {"metrics": {"ok" (1/0), "removed", "accuracy_before", "accuracy_after" (top-1 %),
        "predictions_changed"}, "check": the `verify_unlearned` record}.
    """
    from procvision.memory.vote import knn_predict

    emb = np.asarray(embeddings, np.float32)
    lab = np.asarray(labels, np.int64)
    forgotten = np.unique(as_int64(forgotten, "forgotten"))
    keep = np.setdiff1d(np.arange(len(lab)), forgotten)
    edited = full.copy()
    edited.remove(forgotten)

    def rebuilt() -> VisualMemory:  # the kept items added to a new memory, with their original ids
        mem = VisualMemory(emb.shape[1])
        mem.add(emb[keep], lab[keep], ids=keep)
        return mem

    q = np.asarray(queries, np.float32)
    truth = np.asarray(query_labels, np.int64)
    k = min(int(k), len(keep))
    check = verify_unlearned(edited, rebuilt, q, k, forgotten, (method,), T)
    before = knn_predict(full, q, k, method, T).labels
    after = knn_predict(edited, q, k, method, T).labels
    metrics = {
        "ok": float(check["ok"]),
        "removed": float(len(forgotten)),
        "accuracy_before": 100.0 * float((before == truth).mean()) if len(truth) else 0.0,
        "accuracy_after": 100.0 * float((after == truth).mean()) if len(truth) else 0.0,
        "predictions_changed": float((before != after).sum()),
    }
    return {"metrics": metrics, "check": check}

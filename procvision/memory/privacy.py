"""Exact privacy of a k-NN memory: which single removals change a prediction (paper §6).

A memory item is non-private when removing it changes the prediction of at least one query. With
exact search and the deterministic order (similarity desc, id asc), removing item x changes query q
only if x is among q's top-k, and then q's new neighbour list is its top-(k+1) without x (later
ranks move up one place). So one search of k+1 answers every single-removal question: for each
query the k alternative votes are computed at once, by the same `vote_scores` that a re-run would
use, so fast and brute-force results agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from procvision.constants import PAPER_T
from procvision.memory.index import to_numpy
from procvision.memory.vote import map_labels, predict, vote_scores

if TYPE_CHECKING:
    from procvision.memory.store import VisualMemory

PAPER_VARIANT_NOTE = (
    "paper's run_influence.py rule without its bug: only queries predicted wrongly whose runner-up is "
    "the target ('bad' set, the one plotted in Fig. 12); a neighbour counts when its label is the "
    "prediction and its weight exp(s/T) exceeds the margin (the (k+1)-th neighbour's label is used, "
    "not the last training image's). Removals that let a third class win are not counted."
)


@dataclass
class LOOFlips:
    """Single-removal effects for Q queries and their k neighbours.

    Attributes:
        ids: int64 [Q, k] neighbour ids (removal candidates); -1 = none.
        flips: bool [Q, k]; True where removing ids[q, j] changes q's prediction.
        base_pred: int64 [Q] class index predicted with the full memory (-1 = no votes).
        alt_pred: int64 [Q, k] class index predicted after removing ids[q, j].
    """

    ids: np.ndarray
    flips: np.ndarray
    base_pred: np.ndarray
    alt_pred: np.ndarray

    def flip_sets(self) -> list[list[int]]:
        """For each query, the sorted ids whose single removal flips it."""
        return [sorted(self.ids[q][self.flips[q]].tolist()) for q in range(len(self.ids))]

    def union(self) -> np.ndarray:
        """Sorted ids that flip at least one query (the non-private items)."""
        return np.unique(self.ids[self.flips])


def _alt_positions(k: int) -> np.ndarray:
    """[k, k]: row j lists positions 0..k of a (k+1)-list with position j deleted."""
    pos = np.arange(k + 1)
    return np.stack([np.delete(pos, j) for j in range(k)]) if k else np.zeros((0, 0), np.int64)


def exact_loo_flips(
    sims: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    k: int,
    num_classes: int,
    method: str = "weighted",
    T: float = PAPER_T,
    budget_bytes: int = 128 << 20,
) -> LOOFlips:
    """Exact leave-one-out prediction flips from one top-(k+1) search.

    Args:
        sims: float32 [Q, k+1] canonical similarities, order (sim desc, id asc); padding -inf.
        ids: int64 [Q, k+1] neighbour ids; -1 = padding.
        labels: int64 [Q, k+1] class indices in [0, num_classes); -1 = padding.
        k: the classifier's k.
        num_classes: C.
        method, T: the vote (see `vote_scores`).
        budget_bytes: bound on the [rows, C] score blocks.
    Returns:
        LOOFlips. Cost O(Q k (k + C)) after the search.
    """
    sims, ids, labels = np.asarray(sims), np.asarray(ids, np.int64), np.asarray(labels, np.int64)
    if sims.shape != ids.shape or ids.shape != labels.shape or sims.ndim != 2:
        raise ValueError("sims, ids, labels: expected equal shapes [Q, k+1]")
    if sims.shape[1] < k + 1:
        raise ValueError(f"sims: need k+1={k + 1} neighbours per query, got {sims.shape[1]}")
    q = sims.shape[0]
    sims, ids, labels = sims[:, : k + 1], ids[:, : k + 1], labels[:, : k + 1]
    base = predict(vote_scores(sims[:, :k], labels[:, :k], num_classes, method, T))
    alt = _alt_positions(k)
    alt_pred = np.empty((q, k), np.int64)
    step = max(1, budget_bytes // max(1, k * (num_classes + 2 * k) * 8))
    for s in range(0, q, step):
        a_s = sims[s : s + step][:, alt].reshape(-1, k)  # [Qc*k, k]: list without neighbour j
        a_l = labels[s : s + step][:, alt].reshape(-1, k)
        scores = vote_scores(a_s, a_l, num_classes, method, T)
        alt_pred[s : s + step] = predict(scores).reshape(-1, k)
    flips = (alt_pred != base[:, None]) & (ids[:, :k] >= 0)
    return LOOFlips(ids=ids[:, :k].copy(), flips=flips, base_pred=base, alt_pred=alt_pred)


def _flip_counts(loo: LOOFlips) -> dict:
    """{"ids": [...], "counts": [...]} of queries flipped per item, most influential first."""
    u, c = np.unique(loo.ids[loo.flips], return_counts=True)
    order = np.lexsort((u, -c))
    return {"ids": u[order].tolist(), "counts": c[order].tolist()}


def paper_variant(
    sims: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    targets: np.ndarray,
    k: int,
    num_classes: int,
    T: float = PAPER_T,
) -> dict:
    """The paper's influence count (spec §4.6), weighted vote, with the (k+1)-th label bug fixed.

    Args: as `exact_loo_flips` (class indices), plus targets int64 [Q] (-2 = not a memory class).
    Returns:
        {"bad_ids", "good_ids": sorted lists, "bad_count", "good_count", "n_bad_queries", "note"}.
    """
    if num_classes == 0:  # an empty memory: no prediction, nothing influential
        return {"bad_ids": [], "good_ids": [], "bad_count": 0, "good_count": 0, "n_bad_queries": 0,
                "bad_query_mask": np.zeros(len(ids), bool), "note": PAPER_VARIANT_NOTE}  # fmt: skip
    w = np.exp(np.where(labels >= 0, sims, -np.inf).astype(np.float64) / T)
    p_k = vote_scores(sims[:, :k], labels[:, :k], num_classes, "weighted", T)
    pred = predict(p_k)
    p_k1 = vote_scores(sims[:, : k + 1], labels[:, : k + 1], num_classes, "weighted", T)
    rows = np.arange(len(pred))
    has = pred >= 0
    p_k1[rows[has], pred[has]] = -np.inf
    second = np.argmax(p_k1, axis=1) if num_classes else np.full(len(pred), -1)
    margin = p_k[rows, np.maximum(pred, 0)] - p_k1[rows, second]
    margin = margin + np.where(labels[:, k] == pred, w[:, k], 0.0)
    infl = (labels[:, :k] == pred[:, None]) & (w[:, :k] > margin[:, None]) & (ids[:, :k] >= 0)
    infl &= has[:, None]
    good_q = pred == targets
    bad_q = (pred != targets) & (second == targets)
    return {
        "bad_ids": np.unique(ids[:, :k][infl & bad_q[:, None]]).tolist(),
        "good_ids": np.unique(ids[:, :k][infl & good_q[:, None]]).tolist(),
        "bad_count": int(len(np.unique(ids[:, :k][infl & bad_q[:, None]]))),
        "good_count": int(len(np.unique(ids[:, :k][infl & good_q[:, None]]))),
        "n_bad_queries": int(bad_q.sum()),
        "bad_query_mask": bad_q,
        "note": PAPER_VARIANT_NOTE,
    }


def _require_exact(memory: VisualMemory) -> None:
    if not memory.exact:
        raise ValueError(
            f"memory engine {memory.engine!r} is approximate; exact privacy needs exact search: "
            "load the memory with engine='faiss' or 'torch'"
        )


def privacy_audit(
    memory: VisualMemory,
    queries: Any,
    query_labels: Any = None,
    k: int = 20,
    method: str = "weighted",
    T: float = PAPER_T,
    fingerprint: str | None = None,
    per_query: bool = True,
) -> dict:
    """Exact non-private fraction of a memory for a query set, with the paper's variant beside it.

    Returns a JSON-able dict:
        k, method, T, n_memory, n_queries;
        non_private_count, non_private_fraction (= |union of flip sets| / N), non_private_ids;
        flip_counts {"ids", "counts"} (queries flipped per item, most first);
        queries_with_flips; predictions (labels; -1 = no votes); flip_sets (per query, if per_query);
        with query_labels: accuracy_top1 (%), paper_variant {bad_count, bad_fraction, bad_ids,
        good_count, n_bad_queries, note} and exact_on_paper_queries {count, fraction}: the exact
        union restricted to the paper's queries, to show what its rule misses.
    """
    _require_exact(memory)
    n = len(memory)
    classes = memory.classes
    sims, ids = memory.search(queries, k + 1, fingerprint=fingerprint)
    labels = map_labels(memory.labels_of(ids), classes)
    loo = exact_loo_flips(sims, ids, labels, k, len(classes), method, T)
    union = loo.union()
    if len(classes):
        base_labels = np.where(loo.base_pred >= 0, classes[np.maximum(loo.base_pred, 0)], -1)
    else:  # an empty memory predicts nothing and has nothing to leak
        base_labels = np.full(len(ids), -1, np.int64)
    out: dict = {
        "k": k,
        "method": method,
        "T": T,
        "n_memory": n,
        "n_queries": int(len(ids)),
        "non_private_count": int(len(union)),
        "non_private_fraction": float(len(union) / n) if n else 0.0,
        "non_private_ids": union.tolist(),
        "flip_counts": _flip_counts(loo),
        "queries_with_flips": int(loo.flips.any(axis=1).sum()),
        "predictions": base_labels.tolist(),
    }
    if per_query:
        out["flip_sets"] = loo.flip_sets()
    if query_labels is not None:
        targets = map_labels(np.asarray(query_labels).reshape(-1), classes, -2)
        if len(targets) != len(ids):
            raise ValueError(f"query_labels: expected {len(ids)} labels, got {len(targets)}")
        out["accuracy_top1"] = 100.0 * float((loo.base_pred == targets).mean()) if len(ids) else 0.0
        pv = paper_variant(sims, ids, labels, targets, k, len(classes), T)
        bad_q = pv.pop("bad_query_mask")
        pv["bad_fraction"] = pv["bad_count"] / n if n else 0.0
        out["paper_variant"] = pv
        exact_bad = np.unique(loo.ids[loo.flips & bad_q[:, None]])
        out["exact_on_paper_queries"] = {
            "count": int(len(exact_bad)),
            "fraction": float(len(exact_bad) / n) if n else 0.0,
        }
    return out


def _restricted_lists(
    sims: np.ndarray, ids: np.ndarray, drop: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the first k entries whose ids are not in `drop` (rank order kept).

    Returns (sims [R, k], ids [R, k], enough bool [R]: at least k kept, or the row ran out of items).
    """
    gone = np.isin(ids, drop) | (ids < 0)
    order = np.argsort(gone, axis=1, kind="stable")[:, :k]
    keep_ids = np.take_along_axis(ids, order, 1)
    keep_sims = np.take_along_axis(sims, order, 1)
    dropped = np.take_along_axis(gone, order, 1)
    keep_ids[dropped], keep_sims[dropped] = -1, -np.inf
    enough = ((~gone).sum(1) >= k) | (ids[:, -1] < 0)
    return keep_sims, keep_ids, enough


def group_removal_effect(
    memory: VisualMemory,
    queries: Any,
    group_ids: Any,
    k: int = 20,
    method: str = "weighted",
    T: float = PAPER_T,
    overfetch: int = 64,
    fingerprint: str | None = None,
) -> dict:
    """Exact effect of removing a whole group of items on every query's prediction.

    One search of k + min(m, overfetch) finds, for each query, its top-k in the memory without the
    group, unless more than that many group members crowd its list; those queries are re-searched
    with k + m. Only queries whose top-k holds a group member are re-voted.

    Returns: {"group_size", "k", "method", "affected_queries", "flipped_queries" (query indices),
    "pred_before", "pred_after" (labels; -1 = no votes), "n_researched"}.
    """
    _require_exact(memory)
    g = np.unique(np.asarray(group_ids, np.int64).reshape(-1))
    missing = g[memory.rows_of(g) < 0]
    if len(missing):
        raise KeyError(f"group_ids: {missing[:5].tolist()} not in the memory")
    n, m = len(memory), len(g)
    classes = memory.classes
    c = len(classes)
    width = min(n, k + min(m, overfetch)) if n else k
    sims, ids = memory.search(queries, max(width, k), fingerprint=fingerprint)
    lab = map_labels(memory.labels_of(ids[:, :k]), classes)
    before = predict(vote_scores(sims[:, :k], lab, c, method, T))
    after = before.copy()
    affected = np.flatnonzero(np.isin(ids[:, :k], g).any(axis=1))
    n_re = 0
    if len(affected):
        s2, i2, enough = _restricted_lists(sims[affected], ids[affected], g, k)
        if not enough.all():
            redo = affected[~enough]
            n_re = len(redo)
            rs, ri = memory.search(
                to_numpy(queries, "queries")[redo], min(n, k + m), fingerprint=fingerprint
            )
            s2[~enough], i2[~enough], _ = _restricted_lists(rs, ri, g, k)
        l2 = map_labels(memory.labels_of(i2), classes)
        after[affected] = predict(vote_scores(s2, l2, c, method, T))
    to_label = lambda p: np.where(p >= 0, classes[np.maximum(p, 0)], -1).tolist()  # noqa: E731
    return {
        "group_size": int(m),
        "k": k,
        "method": method,
        "affected_queries": affected.tolist(),
        "flipped_queries": np.flatnonzero(after != before).tolist(),
        "pred_before": to_label(before),
        "pred_after": to_label(after),
        "n_researched": int(n_re),
    }


def brute_force_loo(
    memory: VisualMemory,
    queries: Any,
    k: int = 20,
    method: str = "weighted",
    T: float = PAPER_T,
    candidate_ids: Any = None,
) -> dict:
    """Reference: for each candidate id (default: all), remove it from a copy and re-classify.

    Classes stay those of the full memory. Cost: one copy and one search per candidate.
    Returns {"flip_sets": per query sorted ids, "non_private_ids", "n_candidates", "base_pred"}.
    """
    classes = memory.classes
    c = len(classes)
    sims, ids = memory.search(queries, k)
    base = predict(vote_scores(sims, map_labels(memory.labels_of(ids), classes), c, method, T))
    cands = memory.ids if candidate_ids is None else np.asarray(candidate_ids, np.int64).reshape(-1)
    flip_sets: list[list[int]] = [[] for _ in range(len(ids))]
    for x in np.unique(cands).tolist():
        reduced = memory.copy()
        if reduced.remove([x]) == 0:
            continue
        s, i = reduced.search(queries, k)
        lab = map_labels(memory.labels_of(i), classes)
        pred = predict(vote_scores(s, lab, c, method, T))
        for qi in np.flatnonzero(pred != base).tolist():
            flip_sets[qi].append(x)
    union = sorted({x for fs in flip_sets for x in fs})
    return {
        "flip_sets": flip_sets,
        "non_private_ids": union,
        "n_candidates": int(len(np.unique(cands))),
        "base_pred": base,
    }


def privacy_metrics(audit: dict) -> dict[str, float]:
    """The loggable numbers of a `privacy_audit` result (fractions in percent of the memory).

    Returns {"non_private_fraction" (%), "non_private_count", "queries_with_flips"} and, when the
    audit had query labels, "accuracy_top1" (%), "paper_variant_fraction" (%) and
    "paper_variant_count".
    """
    out = {
        "non_private_fraction": 100.0 * audit["non_private_fraction"],
        "non_private_count": float(audit["non_private_count"]),
        "queries_with_flips": float(audit["queries_with_flips"]),
    }
    if "accuracy_top1" in audit:
        out["accuracy_top1"] = float(audit["accuracy_top1"])
        out["paper_variant_fraction"] = 100.0 * audit["paper_variant"]["bad_fraction"]
        out["paper_variant_count"] = float(audit["paper_variant"]["bad_count"])
    return out

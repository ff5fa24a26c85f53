"""k-NN votes as pure functions over search results, and the k sweep of the paper's tables.

Aggregations (weight of the neighbour at 0-based rank i with similarity s_i):
- "weighted": exp(s_i / T), T = 0.07 (DINO's eval_knn; the paper's);
- "plurality": 1 (majority vote);
- "rank": 1 / (i + 2) (Geirhos et al. 2024, RankVoting with offset 2).

Class scores are sums of weights accumulated in rank order (np.bincount), so the same neighbour list
always gives bit-identical scores. Ties: the prediction is the lowest class index with the maximum
score (class indices follow the sorted label values, so the lowest label wins); a query with no
neighbours (all scores 0) predicts -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from procvision.constants import PAPER_KS, PAPER_T
from procvision.memory.index import to_numpy

if TYPE_CHECKING:
    from procvision.memory.store import VisualMemory

METHODS = ("weighted", "plurality", "rank")


def neighbour_weights(
    sims: np.ndarray, labels: np.ndarray, method: str = "weighted", T: float = PAPER_T
) -> np.ndarray:
    """Vote weight of each neighbour.

    Args:
        sims: float [Q, k] similarities, rank order.
        labels: int [Q, k] class indices; -1 = padding (weight 0).
        method: one of METHODS.
        T: temperature of "weighted".
    Returns:
        float64 [Q, k].
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    valid = np.asarray(labels) >= 0
    if method == "weighted":
        if not T > 0:
            raise ValueError(f"T: expected a positive temperature, got {T}")
        s = np.ascontiguousarray(np.where(valid, sims, -np.inf), dtype=np.float64)
        w = np.exp(s / T)
    elif method == "plurality":
        w = valid.astype(np.float64)
    else:
        k = valid.shape[1]
        w = np.broadcast_to(1.0 / (np.arange(k, dtype=np.float64) + 2.0), valid.shape) * valid
    return np.ascontiguousarray(w, dtype=np.float64)


def vote_scores(
    sims: Any, labels: Any, num_classes: int, method: str = "weighted", T: float = PAPER_T
) -> np.ndarray:
    """Class scores of each query.

    Args:
        sims: [Q, k] neighbour similarities in rank order.
        labels: [Q, k] class indices in [0, num_classes); -1 = padding.
        num_classes: C.
        method: "weighted" (sum exp(s/T)), "plurality" (counts) or "rank" (sum 1/(rank+2)).
        T: temperature of "weighted".
    Returns:
        float64 [Q, C].
    """
    sims = to_numpy(sims, "sims")
    labels = to_numpy(labels, "labels").astype(np.int64)
    if sims.shape != labels.shape or sims.ndim != 2:
        raise ValueError(
            f"sims {list(sims.shape)} and labels {list(labels.shape)}: expected equal [Q, k]"
        )
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"labels: class index {int(labels.max())} >= num_classes={num_classes}")
    if labels.size and labels.min() < -1:
        raise ValueError("labels: class indices must be >= 0, or -1 for padding")
    q = labels.shape[0]
    w = neighbour_weights(sims, labels, method, T)
    valid = labels >= 0
    flat = (np.arange(q, dtype=np.int64)[:, None] * num_classes + labels)[valid]
    scores = np.bincount(flat, weights=w[valid], minlength=q * num_classes)
    return scores.reshape(q, num_classes)


def predict(scores: np.ndarray) -> np.ndarray:
    """Argmax class index [Q]; ties go to the lowest index; rows without votes give -1."""
    scores = np.asarray(scores)
    if scores.shape[1] == 0:
        return np.full(scores.shape[0], -1, np.int64)
    pred = np.argmax(scores, axis=1).astype(np.int64)  # first maximum = lowest class index
    pred[scores.max(axis=1) <= 0] = -1
    return pred


def topk_classes(scores: np.ndarray, n: int) -> np.ndarray:
    """The n best class indices [Q, n] by (score desc, class index asc)."""
    return np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :n]


def map_labels(labels: Any, classes: np.ndarray, unknown: int | None = None) -> np.ndarray:
    """Map label values to indices into sorted `classes` (any shape).

    -1 stays -1 (padding). Values not in classes become `unknown`, or raise when it is None.
    """
    a = np.asarray(to_numpy(labels, "labels"), np.int64)
    if len(classes) == 0:
        pos = np.zeros(a.shape, np.int64)
        hit = np.zeros(a.shape, bool)
    else:
        pos = np.clip(np.searchsorted(classes, a), 0, len(classes) - 1)
        hit = classes[pos] == a
    out = np.where(hit, pos, -1)
    bad = ~hit & (a != -1)
    if bad.any():
        if unknown is None:
            raise ValueError(
                f"labels: {np.unique(a[bad])[:5].tolist()} are not classes of the memory"
            )
        out[bad] = unknown
    return out


def knn_sweep(
    memory: VisualMemory,
    queries: Any,
    query_labels: Any,
    ks: tuple[int, ...] | list[int] = PAPER_KS,
    methods: tuple[str, ...] | list[str] = METHODS,
    T: float = PAPER_T,
    fingerprint: str | None = None,
) -> dict:
    """k-NN accuracy for every k and method from ONE search of max(ks) (capped at the memory size).

    Classes are the distinct labels of the memory (any integers); a query label absent from the
    memory counts as wrong. top-5 means top-min(5, C).

    Returns:
        {method: {str(k): {"top1": %, "top5": %}, ..., "best": {"k", "top1", "top5"}}, ...,
         "info": {"n_memory", "n_queries", "num_classes", "T", "k_searched", "top5_n"}}
        Keys keep the requested k; a k above the memory size is evaluated at the memory size.
    """
    n = len(memory)
    if n == 0:
        raise ValueError("memory: is empty; add items before evaluating")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods: {m!r} is not one of {METHODS}")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks: expected positive neighbour counts, got {ks}")
    classes = memory.classes
    c = len(classes)
    targets = map_labels(
        np.asarray(to_numpy(query_labels, "query_labels")).reshape(-1), classes, -2
    )
    kmax = min(max(ks), n)
    sims, ids = memory.search(queries, kmax, fingerprint=fingerprint)
    if len(targets) != len(sims):
        raise ValueError(
            f"query_labels: expected {len(sims)} labels (one per query), got {len(targets)}"
        )
    labels = map_labels(memory.labels_of(ids), classes)
    n5 = min(5, c)
    hits = {(m, k): [0, 0] for m in methods for k in ks}
    step = max(1, (64 << 20) // (8 * c * 2))
    for s in range(0, len(sims), step):
        t = targets[s : s + step]
        for m in methods:
            for k in ks:
                kk = min(k, n)
                sc = vote_scores(sims[s : s + step, :kk], labels[s : s + step, :kk], c, m, T)
                top = topk_classes(sc, n5)
                top1 = predict(sc) == t
                in5 = (top == t[:, None]) & (np.take_along_axis(sc, top, 1) > 0)
                hits[m, k][0] += int(top1.sum())
                hits[m, k][1] += int(in5.any(axis=1).sum())
    q = max(len(sims), 1)
    out: dict = {}
    for m in methods:
        table = {
            str(k): {"top1": 100.0 * hits[m, k][0] / q, "top5": 100.0 * hits[m, k][1] / q}
            for k in ks
        }
        best_k = max(ks, key=lambda k: (table[str(k)]["top1"], -k))
        table["best"] = {"k": best_k, **table[str(best_k)]}
        out[m] = table
    out["info"] = {
        "n_memory": n,
        "n_queries": len(sims),
        "num_classes": c,
        "T": T,
        "k_searched": kmax,
        "top5_n": n5,
    }
    return out


@dataclass(frozen=True)
class KNNPrediction:
    """The k-NN decision for Q queries, with everything that explains it.

    Attributes:
        sims: float32 [Q, k] neighbour similarities in rank order (padding -inf where the memory
            has fewer than k items).
        ids: int64 [Q, k] neighbour ids (-1 for padding).
        label_index: int64 [Q, k] index of each neighbour's label into `classes` (-1 padding).
        classes: int64 [C] the memory's sorted label values.
        scores: float64 [Q, C] class scores (sums of neighbour weights).
        labels: int64 [Q] predicted label value (-1 when a query got no votes, e.g. empty memory).
    """

    sims: np.ndarray
    ids: np.ndarray
    label_index: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def knn_predict(
    memory: VisualMemory,
    queries: Any,
    k: int,
    method: str = "weighted",
    T: float = PAPER_T,
    fingerprint: str | None = None,
) -> KNNPrediction:
    """The one search -> labels -> vote -> predict chain of procvision.

    Args:
        memory: the visual memory (may be empty: every query then predicts -1).
        queries: [Q, D] embeddings (normalised by the memory).
        k: neighbours per query (>= 1; more than the memory holds gives padding).
        method: "weighted" (exp(s/T)), "plurality" or "rank".
        T: temperature of "weighted".
        fingerprint: the queries' backbone fingerprint, checked against the memory's.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    classes = memory.classes
    if len(memory) == 0:
        q = np.asarray(to_numpy(queries, "queries"))
        n = q.shape[0] if q.ndim == 2 else 0
        memory.check_fingerprint(fingerprint)
        sims = np.full((n, k), -np.inf, np.float32)
        ids = np.full((n, k), -1, np.int64)
        label_index = ids.copy()
    else:
        sims, ids = memory.search(queries, k, fingerprint=fingerprint)
        label_index = map_labels(memory.labels_of(ids), classes)
    scores = vote_scores(sims, label_index, len(classes), method, T)
    pred = predict(scores)
    labels = np.where(pred >= 0, classes[np.clip(pred, 0, None)] if len(classes) else -1, -1)
    return KNNPrediction(sims, ids, label_index, classes, scores, labels.astype(np.int64))

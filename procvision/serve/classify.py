"""Classification for the service: one forward and one k-NN chain per batch, explained per image."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from procvision.memory import KNNPrediction, knn_predict, neighbour_weights
from procvision.serve.batching import Job
from procvision.serve.state import MemoryState, Snapshot


def _rows(pred: KNNPrediction, rows: slice | np.ndarray) -> KNNPrediction:
    return KNNPrediction(
        pred.sims[rows], pred.ids[rows], pred.label_index[rows], pred.classes,
        pred.scores[rows], pred.labels[rows],
    )  # fmt: skip


def run_jobs(state: MemoryState, jobs: list[Job]) -> list[tuple[Snapshot, KNNPrediction]]:
    """Embed every job's images in one forward, then run `knn_predict` once per distinct
    (k, method, T) on the snapshot current at that moment; one (snapshot, prediction) per job."""
    snap = state.snapshot()
    q = state.embed(torch.cat([j.x for j in jobs]))
    starts = np.cumsum([0] + [j.n for j in jobs])
    groups: dict[tuple[int, str, float], list[int]] = {}
    for i, j in enumerate(jobs):
        groups.setdefault((j.k, j.method, j.T), []).append(i)
    out: list[Any] = [None] * len(jobs)
    for (k, method, T), members in groups.items():
        rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in members])
        pred = knn_predict(snap.memory, q[rows], k, method, T, fingerprint=state.fingerprint)
        at = 0
        for i in members:
            n = jobs[i].n
            out[i] = (snap, _rows(pred, slice(at, at + n)))
            at += n
    return out


def explain(
    snap: Snapshot, pred: KNNPrediction, names: list[str], method: str, T: float
) -> list[dict[str, Any]]:
    """Per image: prediction, vote shares and the neighbours (rank, id, label, source, similarity,
    weight), in rank order (similarity desc, id asc)."""
    mem = snap.memory
    weights = neighbour_weights(pred.sims, pred.label_index, method, T)
    results = []
    for r, name in enumerate(names):
        valid = pred.ids[r] >= 0
        nb_ids = pred.ids[r][valid]
        meta = mem.metadata_of(nb_ids) if len(nb_ids) else []
        labels = mem.labels_of(nb_ids) if len(nb_ids) else np.zeros(0, np.int64)
        total = float(pred.scores[r].sum()) or 1.0
        ranked = np.argsort(-pred.scores[r], kind="stable")
        label = int(pred.labels[r])
        results.append({
            "filename": name,
            "prediction": snap.class_name(label) if label >= 0 else None,
            "label_index": label,
            "scores": {snap.class_name(int(pred.classes[c])): float(pred.scores[r, c] / total)
                       for c in ranked if pred.scores[r, c] > 0},
            "neighbours": [
                {"rank": int(j) + 1, "id": int(pred.ids[r, j]), "label": snap.class_name(int(lab)),
                 "source": str(m.get("source", "")), "similarity": float(pred.sims[r, j]),
                 "weight": float(weights[r, j] / total), "uploaded": "image_b64" in m}
                for j, lab, m in zip(np.flatnonzero(valid), labels.tolist(), meta, strict=True)
            ],
        })  # fmt: skip
    return results

"""Classification for the service: one forward and one k-NN chain per batch, explained per image."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from procvision.memory import KNNPrediction, knn_predict, neighbour_weights
from procvision.serve.batching import Job
from procvision.serve.images import ImageRejected, UploadLimits, decode_upload
from procvision.serve.state import MemoryState, Snapshot, prepare


def _rows(pred: KNNPrediction, rows: slice | np.ndarray) -> KNNPrediction:
    return KNNPrediction(
        pred.sims[rows], pred.ids[rows], pred.label_index[rows], pred.classes,
        pred.scores[rows], pred.labels[rows],
    )  # fmt: skip


def run_jobs(
    state: MemoryState, jobs: list[Job], limits: UploadLimits
) -> list[dict[str, Any] | ImageRejected]:
    """Decode every job's uploads (payload: (bytes, content type, file name) triples), embed all
    images in one forward, run `knn_predict` once per distinct (k, method, T) on the snapshot
    current at that moment, and explain; one answer per job, or the ImageRejected of a job whose
    upload was refused (the others are answered)."""
    out: list[Any] = [None] * len(jobs)
    xs, ok = [], []
    for i, job in enumerate(jobs):
        try:
            images = [decode_upload(data, ctype, name, limits) for data, ctype, name in job.payload]
            xs.append(prepare(state.transform, images))
            ok.append(i)
        except ImageRejected as err:
            out[i] = err
    if not ok:
        return out
    snap = state.snapshot()
    q = state.embed(torch.cat(xs))
    starts = np.cumsum([0] + [jobs[i].n for i in ok])
    groups: dict[tuple[int, str, float], list[int]] = {}
    for pos, i in enumerate(ok):
        groups.setdefault((jobs[i].k, jobs[i].method, jobs[i].T), []).append(pos)
    for (k, method, T), members in groups.items():
        rows = np.concatenate([np.arange(starts[p], starts[p + 1]) for p in members])
        pred = knn_predict(snap.memory, q[rows], k, method, T, fingerprint=state.fingerprint)
        at = 0
        for p in members:
            job = jobs[ok[p]]
            names = [name for _, _, name in job.payload]
            part = _rows(pred, slice(at, at + job.n))
            out[ok[p]] = {"k": k, "method": method, "T": T, "count": len(snap.memory),
                          "content_hash": snap.content_hash,
                          "results": explain(snap, part, names, method, T)}  # fmt: skip
            at += job.n
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
                 "weight": float(weights[r, j] / total), "uploaded": "blob" in m}
                for j, lab, m in zip(np.flatnonzero(valid), labels.tolist(), meta, strict=True)
            ],
        })  # fmt: skip
    return results

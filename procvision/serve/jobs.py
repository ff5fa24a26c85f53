"""Privacy audits as background jobs: POST starts one (202), GET /jobs/{id} reports it.

A job embeds its queries (uploaded images, or a dataset the operator named at start), runs the exact
leave-one-out audit on the snapshot current when it starts, and keeps the non-private fraction and
the most influential items. One job runs at a time; finished jobs are kept (the newest
`keep` of them) in RAM only. When a job is read after the memory changed, items that are no longer
in it are dropped from its answer and the answer says that the memory changed since.
"""

from __future__ import annotations

import datetime as _dt
import threading
import uuid
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from procvision.data.datasets import CorruptImageWarning, open_dataset, seeded_subset
from procvision.eval.embed import embed_dataset
from procvision.memory import privacy_audit
from procvision.serve.state import MemoryState, Snapshot


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def query_label_index(class_names: list[str] | None, names: list[str]) -> np.ndarray:
    """Query labels given as class names -> the memory's label indices (-5: a class it lacks)."""
    index = {n: i for i, n in enumerate(class_names or [])}
    return np.asarray([index.get(n, -5) for n in names], dtype=np.int64)


@dataclass
class QuerySet:
    """Either prepared images with class-name labels, or an operator dataset URI."""

    x: torch.Tensor | None = None
    labels: list[str] | None = None
    dataset: str | None = None
    max_queries: int | None = None
    description: str = ""


def influential(audit: dict, snap: Snapshot, top: int) -> list[dict[str, Any]]:
    """The `top` items whose removal flips most queries, with label and source."""
    ids, counts = audit["flip_counts"]["ids"][:top], audit["flip_counts"]["counts"][:top]
    mem = snap.memory
    out = []
    if ids:
        meta = mem.metadata_of(ids)
        labels = mem.labels_of(ids)
        for i, c, m, lab in zip(ids, counts, meta, labels.tolist(), strict=True):
            out.append({"id": int(i), "label": snap.class_name(int(lab)),
                        "source": str(m.get("source", "")), "queries_flipped": int(c)})  # fmt: skip
    return out


class PrivacyJobs:
    """Runs privacy audits one at a time on a worker thread."""

    def __init__(
        self, state: MemoryState, datasets: dict[str, str], keep: int = 32, top: int = 20
    ) -> None:
        self.state, self.datasets, self.keep, self.top = state, dict(datasets), keep, top
        self._jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._busy = threading.Semaphore(1)

    def start(self, queries: QuerySet, k: int, method: str, T: float) -> dict[str, Any] | None:
        """Start a job; None when one is already running (the caller answers 429)."""
        if not self._busy.acquire(blocking=False):
            return None
        job_id = uuid.uuid4().hex[:16]
        job = {"id": job_id, "status": "queued", "created_utc": _now(), "queries": queries.description,
               "k": k, "method": method, "T": T}  # fmt: skip
        with self._lock:
            self._jobs[job_id] = job
            while len(self._jobs) > self.keep:
                self._jobs.popitem(last=False)
        threading.Thread(target=self._run, args=(job, queries), daemon=True).start()
        return dict(job)

    def _run(self, job: dict, queries: QuerySet) -> None:
        try:
            job["status"] = "running"
            snap = self.state.snapshot()
            if queries.dataset is not None:
                ds = open_dataset(self.datasets[queries.dataset], None, self.state.transform)
                ds = seeded_subset(ds, queries.max_queries, 0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", CorruptImageWarning)
                    emb = embed_dataset(self.state.backbone, ds, 64, self.state.device, False)
                q = emb[0].numpy()
                names = [ds.class_names[int(i)] for i in emb[1].tolist()]
            else:
                q = np.concatenate(
                    [self.state.embed(queries.x[s : s + 64]) for s in range(0, len(queries.x), 64)]
                )
                names = list(queries.labels or [])
            labels = query_label_index(snap.memory.class_names, names)
            audit = privacy_audit(snap.memory, q, labels, job["k"], job["method"], job["T"],
                                  fingerprint=self.state.fingerprint, per_query=False)  # fmt: skip
            job["result"] = {
                "n_memory": audit["n_memory"],
                "n_queries": audit["n_queries"],
                "non_private_count": audit["non_private_count"],
                "non_private_fraction": audit["non_private_fraction"],
                "queries_with_flips": audit["queries_with_flips"],
                "accuracy_top1": audit.get("accuracy_top1"),
                "paper_variant": audit.get("paper_variant"),
                "influential": influential(audit, snap, self.top),
                "content_hash": snap.content_hash,
            }
            job["status"] = "done"
        except Exception as err:  # reported through GET /jobs/{id}
            job["status"] = "failed"
            job["error"] = f"{type(err).__name__}: {err}"
        finally:
            job["finished_utc"] = _now()
            self._busy.release()

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return None
        out = {k: v for k, v in job.items() if k != "result"}
        res = job.get("result")
        if res is not None:
            snap = self.state.snapshot()
            present = snap.memory.rows_of(
                np.asarray([i["id"] for i in res["influential"]], np.int64)
            )
            kept = [i for i, r in zip(res["influential"], present.tolist(), strict=True) if r >= 0]
            out["result"] = {**res, "influential": kept,
                             "memory_changed_since": res["content_hash"] != snap.content_hash}  # fmt: skip
        return out

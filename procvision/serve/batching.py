"""Micro-batching: concurrent requests share one backbone forward and one memory search.

A worker thread takes the first waiting job, then keeps collecting jobs until the batch holds
`max_batch` images or `max_wait_s` has passed since the first one (the bounded wait of model
servers), and runs them together. Each job gets its own future; a result that is an exception fails
only its job, an exception raised by the run fails the batch it was in. All the work of a batch
(decoding included) happens on this one thread, so concurrent requests do not fight over the GIL
in a thread pool.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """One request: its images (any payload, e.g. undecoded uploads) and vote parameters."""

    payload: list[Any]
    k: int
    method: str
    T: float
    future: Future = field(default_factory=Future)

    @property
    def n(self) -> int:
        return len(self.payload)


# processes a batch; returns one result per job, or an exception for a job that failed alone
RunBatch = Callable[[list[Job]], list[Any]]


class MicroBatcher:
    """Collects jobs into batches for `run(jobs) -> one result per job` on one worker thread.

    Args:
        run: processes a list of jobs, returning their results in order.
        max_batch: most images per batch (a single larger job runs alone).
        max_wait_s: longest a job waits for company after the first job of a batch arrived.
    """

    def __init__(self, run: RunBatch, max_batch: int = 64, max_wait_s: float = 0.005) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(
                f"need max_batch >= 1 and max_wait_s >= 0, got {max_batch}, {max_wait_s}"
            )
        self.run, self.max_batch, self.max_wait_s = run, int(max_batch), float(max_wait_s)
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._carry: Job | None = None
        self.batches = 0
        self.images = 0
        self.largest = 0
        self._thread = threading.Thread(target=self._loop, name="procvision-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future:
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def stats(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "images": self.images,
            "largest_batch": self.largest,
            "mean_batch": self.images / self.batches if self.batches else 0.0,
            "max_batch": self.max_batch,
            "max_wait_ms": 1000 * self.max_wait_s,
        }

    def _collect(self) -> tuple[list[Job], bool]:
        first = self._carry if self._carry is not None else self._queue.get()
        self._carry = None
        if first is None:
            return [], True
        batch, n = [first], first.n
        deadline = time.monotonic() + self.max_wait_s
        while n < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            if n + job.n > self.max_batch:
                self._carry = job  # starts the next batch
                break
            batch.append(job)
            n += job.n
        return batch, False

    def _loop(self) -> None:
        while True:
            batch, stop = self._collect()
            if stop:
                return
            n = sum(j.n for j in batch)
            self.batches += 1
            self.images += n
            self.largest = max(self.largest, n)
            try:
                results = self.run(batch)
                for job, res in zip(batch, results, strict=True):
                    if isinstance(res, BaseException):
                        job.future.set_exception(res)
                    else:
                        job.future.set_result(res)
            except BaseException as err:  # every waiting request gets the error
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)

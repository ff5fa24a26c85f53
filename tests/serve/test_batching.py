"""MicroBatcher: concurrent jobs share batches, bounded by size and wait; errors stay in their batch."""

from __future__ import annotations

import threading
import time

import pytest

from procvision.serve.batching import Job, MicroBatcher


def _job(n: int, tag: float = 0.0) -> Job:
    return Job([tag] * n, 1, "weighted", 0.07)


def test_concurrent_jobs_are_batched_and_each_gets_its_result() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def run(jobs: list[Job]) -> list[float]:
        gate.wait(5)  # the first batch holds the worker so that the rest queue up
        sizes.append(sum(j.n for j in jobs))
        return [float(sum(j.payload)) for j in jobs]

    b = MicroBatcher(run, max_batch=8, max_wait_s=0.05)
    first = b.submit(_job(1, 100.0))
    time.sleep(0.1)
    futures = [b.submit(_job(2, float(i))) for i in range(6)]  # 12 images wait
    gate.set()
    assert first.result(5) == 100.0
    assert [f.result(5) for f in futures] == [2.0 * i for i in range(6)]
    assert sizes[0] == 1 and sizes[1:] == [8, 4]  # max_batch respected; the 5th job starts the next
    assert b.stats()["largest_batch"] == 8 and b.stats()["images"] == 13
    b.close()


def test_wait_is_bounded_and_a_big_job_runs_alone() -> None:
    sizes: list[int] = []
    b = MicroBatcher(lambda jobs: sizes.append(sum(j.n for j in jobs)) or [None] * len(jobs),
                     max_batch=4, max_wait_s=0.002)  # fmt: skip
    t0 = time.monotonic()
    b.submit(_job(1)).result(5)
    assert time.monotonic() - t0 < 1.0
    b.submit(_job(10)).result(5)
    assert sizes == [1, 10]
    b.close()


def test_a_returned_exception_fails_only_its_job() -> None:
    b = MicroBatcher(lambda jobs: [ValueError("bad") if j.payload[0] < 0 else 1 for j in jobs],
                     max_batch=8, max_wait_s=0.05)  # fmt: skip
    bad, good = b.submit(_job(1, -1.0)), b.submit(_job(1, 1.0))
    assert good.result(5) == 1
    with pytest.raises(ValueError, match="bad"):
        bad.result(5)
    b.close()


def test_an_error_fails_only_its_batch() -> None:
    def run(jobs: list[Job]) -> list[int]:
        if any(float(sum(j.payload)) < 0 for j in jobs):
            raise RuntimeError("bad batch")
        return [1] * len(jobs)

    b = MicroBatcher(run, max_batch=1, max_wait_s=0)
    bad = b.submit(_job(1, -1.0))
    good = b.submit(_job(1, 1.0))
    with pytest.raises(RuntimeError, match="bad batch"):
        bad.result(5)
    assert good.result(5) == 1
    b.close()


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(lambda j: j, max_batch=0)

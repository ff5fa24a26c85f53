"""One writer at a time: the lock file, its message and wait, and races between real processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time

import numpy as np
import pytest

from procvision.memory import (
    MemoryChanged,
    MemoryLocked,
    VisualMemory,
    build_memory,
    forget,
    lock_path,
    manifest_hash,
    read_audit,
    read_memory,
    update_memory,
    writer_lock,
)

DIM = 8


def _new_memory(path, n=6):
    x = np.random.default_rng(0).normal(size=(n, DIM))
    meta = [{"source": f"seed/{i}"} for i in range(n)]
    return build_memory(x, np.arange(n) % 3, metadata=meta, engine="torch").save(path)


def test_lock_file_beside_the_memory_and_message(tmp_path):
    path = _new_memory(tmp_path / "mem")
    assert lock_path(path) == tmp_path / ".mem.lock"
    assert lock_path(str(path) + "/") == tmp_path / ".mem.lock"
    with writer_lock(path):
        with writer_lock(path):  # re-entrant within a thread (a save inside update_memory)
            pass
        ctx = mp.get_context("spawn")
        with ctx.Pool(1) as pool:
            err = pool.apply(_try_lock, (str(path), None))
            assert err.startswith(f"memory {path} is being written by pid {os.getpid()} since ")
            assert err.endswith("retry or pass --wait SECONDS")
            t0 = time.monotonic()
            err = pool.apply(_try_lock, (str(path), 0.3))
            assert "waited 0.3 s" in err and time.monotonic() - t0 >= 0.3
    assert (tmp_path / ".mem.lock").read_bytes() == b""  # emptied on release, not deleted
    with ctx.Pool(1) as pool:
        assert pool.apply(_try_lock, (str(path), None)) == "ok"


def _try_lock(path: str, wait: float | None) -> str:
    try:
        with writer_lock(path, wait):
            return "ok"
    except MemoryLocked as err:
        return str(err)


def test_stale_copy_cannot_undo_a_forget(tmp_path):
    path = _new_memory(tmp_path / "mem")
    stale = VisualMemory.load(path)
    forget(path, ids=[1, 2], reason="request")
    stale.add(np.ones((1, DIM)), [0])
    with pytest.raises(MemoryChanged, match="changed on disk since this copy was loaded"):
        stale.save(path)
    assert 1 not in read_memory(path).ids


def test_update_memory_audits_removals_and_saves_nothing_on_error(tmp_path):
    path = _new_memory(tmp_path / "mem")
    h = manifest_hash(path)

    def boom(mem):
        mem.remove([0])
        raise RuntimeError("bug in fn")

    with pytest.raises(RuntimeError):
        update_memory(path, boom)
    assert manifest_hash(path) == h and 0 in read_memory(path).ids
    assert update_memory(path, lambda m: m.remove([0, 5]), reason="typo") == 2
    [rec] = read_audit(path)
    assert rec["action"] == "remove" and rec["removed_ids"] == [0, 5] and rec["reason"] == "typo"
    assert manifest_hash(path) != h


# ---------------------------------------------------------------- races between processes
def _racer(args: tuple) -> dict:
    """One worker: rounds of adds and forgets through the writer functions, random timings."""
    path, worker, rounds, seed = args
    rng = random.Random(seed)
    mine: list[int] = []
    added, forgotten = [], []
    for r in range(rounds):
        time.sleep(rng.random() * 0.01)
        if mine and rng.random() < 0.4:
            pick = rng.sample(mine, min(len(mine), rng.randint(1, 3)))
            rec = forget(path, ids=pick, reason=f"w{worker}r{r}", wait=60)
            assert sorted(rec["removed_ids"]) == sorted(pick), rec
            forgotten += pick
            mine = [i for i in mine if i not in pick]
        else:
            m = rng.randint(1, 4)
            x = np.random.default_rng(seed * 1000 + r).normal(size=(m, DIM))
            meta = [{"source": f"w{worker}/r{r}/{j}"} for j in range(m)]
            ids = update_memory(path, lambda mem, x=x, m=m, meta=meta: mem.add(x, [worker % 3] * m, metadata=meta), wait=60)  # fmt: skip
            added += ids.tolist()
            mine += ids.tolist()
    return {"added": added, "forgotten": forgotten}


def _reader(args: tuple) -> dict:
    """Reads snapshots until told to stop; every one must verify."""
    path, stop_file = args
    n, errors = 0, []
    while not os.path.exists(stop_file):
        try:
            mem = read_memory(path)
            assert len(np.unique(mem.ids)) == len(mem)
            n += 1
        except Exception as err:  # noqa: BLE001 - reported to the test
            import traceback

            errors.append(repr(err) + traceback.format_exc())
    return {"reads": n, "errors": errors}


def test_racing_adds_and_forgets_lose_nothing(tmp_path):
    path = _new_memory(tmp_path / "mem")
    stop = tmp_path / "stop"
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        reader = pool.apply_async(_reader, ((str(path), str(stop)),))
        jobs = [(str(path), w, 20, 100 + w) for w in range(3)]
        results = pool.map(_racer, jobs)
        stop.write_text("")
        reads = reader.get(timeout=120)
    assert reads["errors"] == [] and reads["reads"] > 0
    added = [i for r in results for i in r["added"]]
    forgotten = [i for r in results for i in r["forgotten"]]
    assert len(added) == len(set(added)), "an id was handed out twice"
    mem = read_memory(path)
    expected = (set(range(6)) | set(added)) - set(forgotten)
    assert set(mem.ids.tolist()) == expected  # no add lost, every forget holds
    log = read_audit(path)
    assert sorted(i for r in log for i in r["removed_ids"]) == sorted(forgotten)
    assert all(r["action"] == "forget" for r in log)
    assert mem.next_id == max(added) + 1
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_writers_of_a_missing_memory_create_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        update_memory(tmp_path / "none", lambda m: None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        forget(tmp_path / "a" / "b", ids=[1])
    assert list(tmp_path.iterdir()) == []


def test_writers_delete_only_leftovers_of_dead_writers(tmp_path):
    import subprocess
    import sys

    path = _new_memory(tmp_path / "mem")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        theirs = tmp_path / f".mem.tmp-{live.pid}-aaaaaaaaaaaa"
        crashed = tmp_path / f".mem.tmp-{dead.pid}-bbbbbbbbbbbb"
        crashed_old = tmp_path / f".mem.old-{dead.pid}-cccccccccccc"
        for d in (theirs, crashed, crashed_old):
            d.mkdir()
            (d / "embeddings.npy").write_bytes(b"x" * 64)
        read_memory(path)  # a reader touches none of them
        assert theirs.exists() and crashed.exists() and crashed_old.exists()
        update_memory(path, lambda m: m.remove([0]))
        assert theirs.exists()  # not ours, and its writer is alive
        assert not crashed.exists() and not crashed_old.exists()
    finally:
        live.kill()
        live.wait()


def test_threads_of_one_process_write_one_at_a_time_and_read_snapshots(tmp_path):
    """The service's case: writer threads and reader threads in one process."""
    import threading

    path = _new_memory(tmp_path / "mem")
    errors: list[str] = []

    def writer(w: int) -> None:
        for r in range(8):
            try:
                update_memory(path, lambda m, r=r: m.add(np.ones((1, DIM)) + r, [w]), wait=30)
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(repr(err))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    reads = 0
    while any(t.is_alive() for t in threads):
        mem = read_memory(path)
        assert len(np.unique(mem.ids)) == len(mem)
        reads += 1
    for t in threads:
        t.join()
    assert errors == [] and reads > 0
    assert len(read_memory(path)) == 6 + 16

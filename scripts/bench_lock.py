"""Benchmark the writer lock: its overhead on add / remove / forget beside the rewrite it guards.

For memories of --sizes items of width --dims (random unit vectors, saved once), times each write
operation as the commands run it, through `procvision.memory.update_memory` / `forget` (lock,
leftover check, stale-copy check, load, edit, save, audit record), and the same load -> edit ->
save with the lock and its checks replaced by no-ops, in one run, alternating. Also times a bare
acquire/release of the lock. Every operation rewrites the whole memory (and a forget or remove
also overwrites the old copy with zeros), so the lock's cost should vanish beside it.

    python scripts/bench_lock.py [--sizes 10000 1000000] [--dims 192 384] [--repeats 2] [--json F]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from procvision.memory import build_memory, forget, lock, persist, update_memory, writer_lock


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 1 << 17):
        out[s : s + (1 << 17)] = rng.standard_normal((min(1 << 17, n - s), dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


@contextlib.contextmanager
def no_lock():
    """Replace the lock and its checks by no-ops (the baseline: same load, edit and save)."""
    saved = (persist.writer_lock, persist.prepare_write, lock.writer_lock, lock.prepare_write)
    null = lambda *a, **k: contextlib.nullcontext()  # noqa: E731
    persist.writer_lock, lock.writer_lock = null, null
    persist.prepare_write = lock.prepare_write = lambda *a, **k: None
    try:
        yield
    finally:
        persist.writer_lock, persist.prepare_write, lock.writer_lock, lock.prepare_write = saved


def operations(path: Path, n: int, dim: int, rng: np.random.Generator):
    """(name, fn) of the three writes; each picks fresh ids so every call does real work."""
    new = unit_vectors(1000, dim, int(rng.integers(1 << 30)))
    left = {"ids": rng.permutation(n)}

    def pick(m: int) -> np.ndarray:
        out, left["ids"] = left["ids"][:m], left["ids"][m:]
        return out

    def add() -> None:
        update_memory(path, lambda m: m.add(new, np.zeros(1000, np.int64)))

    def remove() -> None:
        update_memory(path, lambda m: m.remove(pick(10)), reason="bench")

    def forget_() -> None:
        forget(path, ids=pick(10))

    return [("add 1000", add), ("remove 10", remove), ("forget 10", forget_)]


def lock_and_checks(path: Path, rounds: int = 20) -> float:
    """Seconds for what the lock adds to one write of this memory: take and release the lock,
    look for leftovers of dead writers, hash the manifest (stale-copy check) and read the old
    manifest and audit log (to continue the chain)."""
    t = time.perf_counter()
    for _ in range(rounds):
        with writer_lock(path):
            persist.prepare_write(path)
            persist.manifest_hash_of(path)
            persist._existing(path)
    return (time.perf_counter() - t) / rounds


def bench_size(n: int, dim: int, repeats: int, root: Path) -> list[dict]:
    path = root / f"mem_{n}_{dim}"
    t0 = time.perf_counter()
    build_memory(unit_vectors(n, dim, 0), np.arange(n) % 10, engine="torch").save(path)
    print(f"  built {n:,} x {dim} in {time.perf_counter() - t0:.1f} s "
          f"({sum(p.stat().st_size for p in path.iterdir()) / 1e9:.2f} GB on disk)", flush=True)  # fmt: skip
    rng = np.random.default_rng(1)
    checks = lock_and_checks(path)
    print(f"  lock + its checks alone: {1000 * checks:.2f} ms per write", flush=True)
    rows = []
    for name, fn in operations(path, n, dim, rng):
        locked, plain = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            locked.append(time.perf_counter() - t)
            with no_lock():
                t = time.perf_counter()
                fn()
                plain.append(time.perf_counter() - t)
        row = {"n": n, "dim": dim, "op": name, "with_lock_s": min(locked),
               "without_lock_s": min(plain)}  # fmt: skip
        row["overhead_s"] = row["with_lock_s"] - row["without_lock_s"]
        row["lock_and_checks_s"] = checks
        rows.append(row)
        print(f"  {name:10s} with lock {row['with_lock_s']:8.3f} s   without {row['without_lock_s']:8.3f} s"
              f"   difference {1000 * row['overhead_s']:+9.1f} ms   lock share "
              f"{100 * checks / row['with_lock_s']:.3f}%", flush=True)  # fmt: skip
    shutil.rmtree(path)
    return rows


def bare_lock(root: Path, rounds: int = 2000) -> float:
    path = root / "bare"
    t = time.perf_counter()
    for _ in range(rounds):
        with writer_lock(path):
            pass
    return (time.perf_counter() - t) / rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--dims", type=int, nargs="+", default=[192, 384])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dir", type=str, default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench_lock_"))
    root.mkdir(parents=True, exist_ok=True)
    per_lock = bare_lock(root)
    print(f"bare writer_lock acquire + release: {1e6 * per_lock:.1f} µs")
    rows = []
    for n in args.sizes:
        for dim in args.dims:
            print(f"{n:,} items x {dim}:", flush=True)
            rows += bench_size(n, dim, args.repeats if n < 500_000 else 1, root)
    if args.json:
        Path(args.json).write_text(json.dumps({"bare_lock_s": per_lock, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

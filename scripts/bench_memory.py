"""Benchmark the visual memory: build, search, removal, and a Fashion-MNIST-sized k-NN evaluation.

Prints two tables:
1. for memories of --sizes random unit vectors (d = --dim): build time, search throughput at k=20,
   and removal latency (one id; a batch of 1000 ids);
2. a 60k-memory / 10k-query k-NN evaluation (clustered random data with 10 classes, or real
   embeddings from --embeddings file.npz with train_x, train_y, test_x, test_y) against
   scikit-learn's KNeighborsClassifier(algorithm="brute", metric="cosine"): agreement of the k=20
   plurality predictions and of the neighbour sets, and the speed ratio.

    python scripts/bench_memory.py [--sizes 10000 100000 1000000] [--dim 192] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from procvision.memory import VisualMemory, knn_sweep, map_labels, predict, vote_scores


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """float32 [n, dim] random directions (generated in blocks to bound memory)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 1 << 17):
        out[s : s + (1 << 17)] = rng.standard_normal((min(1 << 17, n - s), dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def clustered(n: int, dim: int, classes: int, seed: int, noise: float = 1.0):
    """Class centres plus Gaussian noise: a crude stand-in for real embeddings."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((classes, dim), dtype=np.float32)
    y = rng.integers(0, classes, n)
    x = centres[y] + noise * rng.standard_normal((n, dim), dtype=np.float32)
    return x.astype(np.float32), y


def set_threads(n: int) -> None:
    """Same thread count for faiss (OpenMP), torch and BLAS (numpy, scikit-learn)."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)
    threadpool_limits(limits=n)


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t, out


def bench_sizes(sizes: list[int], dim: int, n_queries: int, engine: str) -> list[dict]:
    rows = []
    for n in sizes:
        x = unit_vectors(n, dim, seed=n)
        y = np.random.default_rng(1).integers(0, 100, n)
        mem = VisualMemory(dim, engine=engine)
        t_build, _ = timed(mem.add, x, y)
        del x
        q = unit_vectors(n_queries, dim, seed=7)
        mem.search(q[:10], 20)  # warm-up
        t_search, _ = timed(mem.search, q, 20)
        rng = np.random.default_rng(2)
        singles = [timed(mem.remove, [int(rng.choice(mem.ids))])[0] for _ in range(5)]
        t_batch, removed = timed(mem.remove, rng.choice(mem.ids, 1000, replace=False))
        rows.append(
            {
                "n": n,
                "dim": dim,
                "engine": mem.engine,
                "build_s": t_build,
                "search_qps_k20": n_queries / t_search,
                "remove_1_ms": 1e3 * float(np.median(singles)),
                "remove_1000_ms": 1e3 * t_batch,
            }
        )
        print(
            f"{n:>9,d}  {dim:>4d}  {mem.engine:>6s}  {t_build:8.2f}  {n_queries / t_search:10.0f}"
            f"  {rows[-1]['remove_1_ms']:9.1f}  {rows[-1]['remove_1000_ms']:11.1f}",
            flush=True,
        )
        del mem
    return rows


def bench_fashion(args) -> dict:
    if args.embeddings:
        z = np.load(args.embeddings)
        xm, ym, xq, yq = z["train_x"], z["train_y"], z["test_x"], z["test_y"]
        source = args.embeddings
    else:
        xm, ym = clustered(60_000, args.dim, 10, seed=1, noise=args.noise)
        xq, yq = clustered(10_000, args.dim, 10, seed=2, noise=args.noise)
        source = f"clustered random, d={args.dim}, 10 classes, noise={args.noise}"
    k = 20
    mem = VisualMemory(xm.shape[1], engine=args.engine)
    t_build, _ = timed(mem.add, xm, ym)
    t_search, (sims, ids) = timed(mem.search, xq, k)
    classes = mem.classes
    t_vote, pred = timed(
        lambda: classes[
            predict(
                vote_scores(
                    sims, map_labels(mem.labels_of(ids), classes), len(classes), "plurality"
                )
            )
        ]
    )
    ours = t_search + t_vote
    t_sweep, sweep = timed(knn_sweep, mem, xq, yq)
    out = {
        "source": source,
        "n_memory": len(xm),
        "n_queries": len(xq),
        "build_s": t_build,
        "ours_k20_plurality_s": ours,
        "ours_full_sweep_s": t_sweep,
        "weighted_k20_top1": sweep["weighted"]["20"]["top1"],
        "plurality_k20_top1": sweep["plurality"]["20"]["top1"],
    }
    print(f"\nFashion-MNIST-sized k-NN ({source}): memory {len(xm):,}, queries {len(xq):,}, k=20")
    print(f"  ours: build {t_build:.2f} s; search + plurality vote {ours:.2f} s")
    print(f"  ours: full sweep (k in 1..200, 3 methods, one search of 200) {t_sweep:.2f} s")
    print(
        f"  top-1 at k=20: weighted {out['weighted_k20_top1']:.2f}%, plurality {out['plurality_k20_top1']:.2f}%"
    )
    if not args.skip_sklearn:
        from sklearn.neighbors import KNeighborsClassifier

        clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine")
        t_fit, _ = timed(clf.fit, xm, ym)
        t_pred, sk_pred = timed(clf.predict, xq)
        sub = min(1000, len(xq))
        _, sk_nb = clf.kneighbors(xq[:sub])
        same_sets = np.mean(
            [set(a) == set(b) for a, b in zip(sk_nb.tolist(), ids[:sub].tolist(), strict=True)]
        )
        out.update(
            {
                "sklearn_s": t_fit + t_pred,
                "speedup_vs_sklearn": (t_fit + t_pred) / ours,
                "same_predictions": float(np.mean(sk_pred == pred)),
                "same_neighbour_sets_first_1000": float(same_sets),
            }
        )
        print(
            f"  sklearn KNeighborsClassifier(brute, cosine): fit + predict {t_fit + t_pred:.2f} s"
        )
        print(
            f"  same predictions: {100 * out['same_predictions']:.2f}%; same neighbour sets "
            f"(first {sub}): {100 * same_sets:.2f}%; speed-up {out['speedup_vs_sklearn']:.1f}x"
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--queries", type=int, default=1000, help="queries for the throughput column")
    p.add_argument("--engine", default="auto")
    p.add_argument("--embeddings", help="npz with train_x, train_y, test_x, test_y")
    p.add_argument("--noise", type=float, default=4.0, help="noise of the clustered stand-in data")
    p.add_argument(
        "--threads", type=int, help="limit faiss, torch and BLAS threads (all engines alike)"
    )
    p.add_argument("--skip-fashion", action="store_true")
    p.add_argument("--skip-sklearn", action="store_true")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()
    if args.threads:
        set_threads(args.threads)
    print(
        f"{'memory':>9s}  {'dim':>4s}  {'engine':>6s}  {'build s':>8s}  {'q/s @k20':>10s}  {'rm 1 ms':>9s}  {'rm 1000 ms':>11s}"
    )
    result = {"sizes": bench_sizes(args.sizes, args.dim, args.queries, args.engine)}
    if not args.skip_fashion:
        result["fashion"] = bench_fashion(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

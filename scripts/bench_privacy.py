"""Benchmark the exact privacy audit against brute-force leave-one-out, and against a k-NN pass.

1. Memories of --sizes items (clustered random data, d = --dim, 10 classes), --queries queries:
   the exact audit (one top-(k+1) search) vs brute force (remove an item, re-run the classifier).
   Up to --full-brute items brute force covers every item; above it, --candidates items (half from
   the exact non-private set, half random others) are run and the time is extrapolated linearly to
   all N items (each removal costs the same search). Flip sets are checked equal on the candidates.
2. A Fashion-MNIST-sized memory (60k) and 10k queries: exact audit time vs the plain k-NN
   evaluation (search of k + weighted vote).

    python scripts/bench_privacy.py [--sizes 1000 5000] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import clustered, set_threads, timed  # noqa: E402

from procvision.memory import (  # noqa: E402
    VisualMemory,
    brute_force_loo,
    map_labels,
    predict,
    privacy_audit,
    vote_scores,
)


def bench_vs_brute(n: int, args) -> dict:
    xm, ym = clustered(n, args.dim, 10, seed=n, noise=args.noise)
    xq, yq = clustered(args.queries, args.dim, 10, seed=n + 1, noise=args.noise)
    mem = VisualMemory(args.dim, engine=args.engine)
    mem.add(xm, ym)
    t_exact, audit = timed(privacy_audit, mem, xq, yq, k=args.k, method=args.method)
    rng = np.random.default_rng(0)
    if n <= args.full_brute:
        cands = mem.ids.copy()
    else:
        half = args.candidates // 2
        hot = np.asarray(audit["non_private_ids"], np.int64)
        hot = rng.choice(hot, min(half, len(hot)), replace=False)
        cold = rng.choice(np.setdiff1d(mem.ids, hot), args.candidates - len(hot), replace=False)
        cands = np.union1d(hot, cold)
    t_brute, brute = timed(
        brute_force_loo, mem, xq, k=args.k, method=args.method, candidate_ids=cands
    )
    keep = set(cands.tolist())
    restricted = [[x for x in fs if x in keep] for fs in audit["flip_sets"]]
    full = t_brute * n / len(cands)
    row = {
        "n_memory": n,
        "n_queries": args.queries,
        "exact_s": t_exact,
        "brute_candidates": int(len(cands)),
        "brute_s": t_brute,
        "brute_full_s": full,
        "brute_extrapolated": bool(len(cands) < n),
        "speedup": full / t_exact,
        "agree": restricted == brute["flip_sets"],
        "non_private_fraction": audit["non_private_fraction"],
        "paper_bad_fraction": audit["paper_variant"]["bad_fraction"],
    }
    est = "~" if row["brute_extrapolated"] else " "
    print(
        f"{n:>7,d}  {args.queries:>6,d}  {t_exact:8.3f}  {len(cands):>6d}  {t_brute:8.1f}  "
        f"{est}{full:9.1f}  {row['speedup']:8.0f}x  {str(row['agree']):>5s}  "
        f"{100 * row['non_private_fraction']:6.2f}%  {100 * row['paper_bad_fraction']:6.2f}%",
        flush=True,
    )
    return row


def bench_large(args) -> dict:
    xm, ym = clustered(60_000, args.dim, 10, seed=1, noise=args.noise)
    xq, yq = clustered(10_000, args.dim, 10, seed=2, noise=args.noise)
    mem = VisualMemory(args.dim, engine=args.engine)
    mem.add(xm, ym)
    mem.search(xq[:100], args.k)  # warm-up
    classes = mem.classes

    def knn_eval():
        sims, ids = mem.search(xq, args.k)
        lab = map_labels(mem.labels_of(ids), classes)
        return predict(vote_scores(sims, lab, len(classes), args.method))

    t_knn, _ = timed(knn_eval)
    t_audit, audit = timed(privacy_audit, mem, xq, yq, k=args.k, method=args.method)
    out = {
        "n_memory": 60_000,
        "n_queries": 10_000,
        "knn_eval_s": t_knn,
        "audit_s": t_audit,
        "ratio": t_audit / t_knn,
        "non_private_fraction": audit["non_private_fraction"],
        "paper_bad_fraction": audit["paper_variant"]["bad_fraction"],
        "accuracy_top1": audit["accuracy_top1"],
    }
    print(
        f"\n60k memory x 10k queries, k={args.k}, {args.method}: k-NN evaluation {t_knn:.2f} s, "
        f"exact audit {t_audit:.2f} s ({out['ratio']:.2f}x); accuracy {out['accuracy_top1']:.2f}%, "
        f"non-private {100 * out['non_private_fraction']:.2f}% "
        f"(paper's variant {100 * out['paper_bad_fraction']:.2f}%)"
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--method", default="weighted")
    p.add_argument("--engine", default="auto")
    p.add_argument("--noise", type=float, default=4.0)
    p.add_argument(
        "--full-brute", type=int, default=1000, help="largest N brute-forced over every item"
    )
    p.add_argument(
        "--candidates", type=int, default=200, help="brute-force items above --full-brute"
    )
    p.add_argument("--skip-large", action="store_true")
    p.add_argument("--threads", type=int)
    p.add_argument("--json")
    args = p.parse_args()
    if args.threads:
        set_threads(args.threads)
    print(
        f"{'memory':>7s}  {'queries':>6s}  {'exact s':>8s}  {'cands':>6s}  {'brute s':>8s}  "
        f"{'brute(N) s':>10s}  {'speed-up':>9s}  {'agree':>5s}  {'non-priv':>7s}  {'paper':>7s}"
    )
    result = {"vs_brute": [bench_vs_brute(n, args) for n in args.sizes]}
    if not args.skip_large:
        result["large"] = bench_large(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

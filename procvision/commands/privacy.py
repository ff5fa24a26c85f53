"""`procvision privacy`: exact privacy audit of a visual memory against a query set (paper §6).

    procvision privacy --memory mem/ --queries fashion_mnist:test --k 20 --csv influence.csv

A memory item is non-private when removing it changes the prediction of at least one query. The
audit is exact (one search of the top-(k+1) neighbours per query) and prints, side by side, the
paper's variant (only wrongly predicted queries whose runner-up is the target). The queries are
embedded with the backbone and transform recorded in the memory.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
from jsonargparse import ArgumentParser, Namespace

from procvision.atomic import check_output_file, write_csv_atomic, write_json_atomic
from procvision.commands._common import run_reporting
from procvision.commands.memory import (
    _common_args,
    _override_transform,
    _transform_override_args,
    hmac_key_of,
    open_memory,
    parse_dataset_uri_checked,
    require_items,
)
from procvision.constants import PAPER_T
from procvision.data.datasets import CorruptImageWarning, open_dataset, seeded_subset
from procvision.eval.embed import embed_dataset
from procvision.eval.recipe import default_vote_of, memory_backbone, recipe_precision
from procvision.memory import METHODS, InvalidArgument, brute_force_loo, privacy_audit
from procvision.memory.recipe import default_vote

BRUTE_FORCE_LIMIT = 5000


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="procvision privacy", description=__doc__.split("\n\n")[0])
    p.add_argument("--memory", type=str, required=True, help="memory directory")
    p.add_argument(
        "--queries",
        type=str,
        required=True,
        help="dataset URI, e.g. fashion_mnist:test or imagefolder:DIR",
    )
    p.add_argument("--split", type=str, default="test", help="split when the URI names none")
    p.add_argument("--max-queries", type=int | None, default=None, help="seeded random subset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int | None, default=None, help="default: the memory recipe's vote")
    p.add_argument("--method", type=str | None, default=None,
                   help=f"one of {', '.join(METHODS)}; default: the recipe's")  # fmt: skip
    p.add_argument(
        "--T", type=float | None, default=None, help=f"default: the recipe's ({PAPER_T})"
    )
    p.add_argument("--top", type=int, default=10, help="most influential items to print")
    p.add_argument("--brute-force-check", action="store_true",
                   help=f"also remove each item and re-classify (N <= {BRUTE_FORCE_LIMIT}); must agree exactly")  # fmt: skip
    p.add_argument(
        "--csv",
        type=str | None,
        default=None,
        help="write memory_id,label,source,queries_flipped,query_indices",
    )
    p.add_argument("--json", type=str | None, default=None, help="write the full audit as JSON")
    p.add_argument(
        "--backbone", type=str | None, default=None, help="default: the memory's recorded backbone"
    )
    _transform_override_args(p)
    p.add_argument("--device", type=str, default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--skip-corrupt", action="store_true")
    _common_args(p, False)
    return p


def _query_labels(memory_names: list[str] | None, dataset) -> np.ndarray:
    """Query labels in the memory's label space, matched by class name (-5: a class the memory lacks)."""
    labels = np.asarray(dataset.labels, dtype=np.int64)
    if not memory_names or list(dataset.class_names) == list(memory_names):
        return labels
    index = {n: i for i, n in enumerate(memory_names)}
    lut = np.asarray([index.get(n, -5) for n in dataset.class_names], dtype=np.int64)
    return lut[labels]


def influence_rows(audit: dict, memory) -> list[list]:
    """CSV rows (memory_id, label, source, queries_flipped, query_indices), most influential first."""
    flipped_by: dict[int, list[int]] = {}
    for q, ids in enumerate(audit["flip_sets"]):
        for i in ids:
            flipped_by.setdefault(int(i), []).append(q)
    ids = audit["flip_counts"]["ids"]
    meta = memory.metadata_of(ids) if ids else []
    labels = memory.labels_of(ids) if ids else []
    names = memory.class_names
    rows = []
    for i, m, lab in zip(ids, meta, labels, strict=True):
        name = names[int(lab)] if names else str(int(lab))
        qs = flipped_by[int(i)]
        rows.append([int(i), name, m.get("source", ""), len(qs), " ".join(map(str, qs))])
    return rows


def run(cfg: Namespace) -> int:
    return run_reporting("procvision privacy", _run, cfg)


def _run(cfg: Namespace) -> int:
    for flag in ("csv", "json"):
        if cfg[flag]:
            check_output_file(cfg[flag])  # a folder, device or `.` is refused before any work
    parse_dataset_uri_checked(cfg.queries)
    if cfg.max_queries is not None and cfg.max_queries < 1:
        raise InvalidArgument(f"--max-queries: expected a positive count, got {cfg.max_queries}")
    mem = open_memory(cfg.memory, hmac_key_of(cfg, cfg.memory))
    vote = default_vote_of(mem)
    vote = default_vote(cfg.k if cfg.k is not None else vote["k"], cfg.method or vote["method"],
                        cfg.T if cfg.T is not None else vote["T"])  # fmt: skip
    cfg.k, cfg.method, cfg.T = vote["k"], vote["method"], vote["T"]
    require_items(mem, cfg.memory, "audit")
    backbone, _spec, recorded = memory_backbone(mem, cfg.backbone, cfg.device)
    transform = _override_transform(cfg, recorded)
    if transform != recorded:
        print("procvision privacy: warning: --image-size/--resize-policy override the memory's "
              "recipe; queries are prepared unlike the memory's items", file=sys.stderr)  # fmt: skip
    precision = recipe_precision(mem)  # queries embed as the memory's items did
    ds = open_dataset(cfg.queries, cfg.split, transform, cfg.skip_corrupt)
    ds = seeded_subset(ds, cfg.max_queries, cfg.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptImageWarning)
        out = embed_dataset(backbone, ds, cfg.batch_size, cfg.device, True, cfg.num_workers,
                            True, "queries", precision=precision)  # type: ignore[arg-type]  # fmt: skip
    labels = _query_labels(mem.class_names, ds)[out.indices.numpy()]
    queries = out.embeddings.numpy()
    t0 = time.perf_counter()
    audit = privacy_audit(
        mem, queries, labels, cfg.k, cfg.method, cfg.T, fingerprint=backbone.fingerprint()
    )
    seconds = time.perf_counter() - t0
    pv = audit["paper_variant"]
    print(f"memory {audit['n_memory']} items, queries {audit['n_queries']}, k={cfg.k}, {cfg.method} vote"
          f"{f' (T={cfg.T})' if cfg.method == 'weighted' else ''}; audit took {seconds:.2f} s")  # fmt: skip
    print(f"k-NN top-1 accuracy: {audit['accuracy_top1']:.2f}%")
    print(f"non-private (exact leave-one-out): {audit['non_private_count']} items = "
          f"{100 * audit['non_private_fraction']:.4f}% of the memory; {audit['queries_with_flips']} queries can flip")  # fmt: skip
    print(f"paper's variant (wrong queries whose runner-up is the target): {pv['bad_count']} items = "
          f"{100 * pv['bad_fraction']:.4f}%; exact count on those queries: {audit['exact_on_paper_queries']['count']}")  # fmt: skip
    rows = influence_rows(audit, mem)
    if rows:
        print("most influential items (queries whose prediction flips when the item is removed):")
        for r in rows[: cfg.top]:
            print(f"  id {r[0]:>8}  flips {r[3]:>5}  {r[1]}  {r[2]}")
    status = 0
    if cfg.brute_force_check:
        status = _brute_force_check(cfg, mem, queries, audit)
    if cfg.csv:
        write_csv_atomic(
            cfg.csv, ["memory_id", "label", "source", "queries_flipped", "query_indices"], rows
        )
        print(f"wrote {cfg.csv}")
    if cfg.json:
        write_json_atomic(cfg.json, {**audit, "precision": precision, "query_sources": [ds.source(int(i)) for i in out.indices],
                                     "skipped_queries": [ds.source(i) for i in out.skipped]})  # fmt: skip
        print(f"wrote {cfg.json}")
    if out.skipped:
        print(
            f"skipped {len(out.skipped)} corrupt query image(s): "
            + ", ".join(ds.source(i) for i in out.skipped)
        )
    return status


def _brute_force_check(cfg: Namespace, mem, queries: np.ndarray, audit: dict) -> int:
    if len(mem) > BRUTE_FORCE_LIMIT:
        raise InvalidArgument(f"--brute-force-check removes each of the {len(mem)} items in turn; "
                         f"it is meant for memories of at most {BRUTE_FORCE_LIMIT} items")  # fmt: skip
    t0 = time.perf_counter()
    brute = brute_force_loo(mem, queries, cfg.k, cfg.method, cfg.T)
    agree = brute["flip_sets"] == audit["flip_sets"]
    print(f"brute force ({brute['n_candidates']} removals, {time.perf_counter() - t0:.2f} s): "
          f"{'agrees exactly' if agree else 'DISAGREES'} with the exact audit")  # fmt: skip
    return 0 if agree else 1

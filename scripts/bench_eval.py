"""Benchmark of the evaluation layer: embedding images/s in fp32 and bf16, and the three memory
callbacks (KNN, privacy, unlearning) at one epoch end before (each embeds its sets) and after (one
shared embedding pass per set).

    python scripts/bench_eval.py [--backbone demo_out/train/lightning_logs/version_0/export]
        [--images 4096] [--rounds 3] [--memory 10000] [--queries 2000] [--out bench_eval.json]

Without --backbone: the demo architecture at random init. Rounds are interleaved (fp32, bf16,
fp32, ...) and the best and median of each are reported, since a shared machine is noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from procvision.atomic import write_json_atomic
from procvision.data.datasets.datamodule import EvalSet
from procvision.eval.embed import cpu_has_fast_bf16, embed_batch, embed_dataset

DEMO_ARCH = {"arch": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "depth": 4,
             "embed_dim": 192, "num_heads": 3}  # fmt: skip


def _backbone(spec: str | None):
    from procvision.eval.recipe import load_backbone_spec, random_spec

    return load_backbone_spec(spec or random_spec(**DEMO_ARCH))


def bench_embedding(backbone, n_images: int, rounds: int) -> dict:
    """images/s of embed_dataset (Fashion-MNIST test images through the eval transform) and of the
    forward pass alone (pre-made batches of 256), per precision."""
    size = int(backbone.config["img_size"])
    ds = EvalSet("fashion_mnist:test", resize_policy="resize", max_items=n_images).open(size)
    batch = torch.stack([ds[i][0] for i in range(256)])
    pipeline: dict[str, list[float]] = {"fp32": [], "bf16": []}
    forward: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with torch.inference_mode():
        for p in ("fp32", "bf16"):  # warm-up
            embed_batch(backbone, batch, precision=p)
        for _ in range(rounds):
            for p in ("fp32", "bf16"):
                t0 = time.perf_counter()
                for _ in range(4):
                    embed_batch(backbone, batch, precision=p)
                forward[p].append(4 * 256 / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                embed_dataset(backbone, ds, 256, progress=False, precision=p)
                pipeline[p].append(len(ds) / (time.perf_counter() - t0))
        a = embed_dataset(backbone, ds, 256, progress=False, precision="fp32")[0]
        b = embed_dataset(backbone, ds, 256, progress=False, precision="bf16")[0]
    cos = (a * b).sum(1)

    def stats(xs: list[float]) -> dict:
        return {"best": max(xs), "median": statistics.median(xs), "all": xs}

    return {
        "images": len(ds),
        "image_size": size,
        "forward_only_images_per_s": {p: stats(v) for p, v in forward.items()},
        "embed_dataset_images_per_s": {p: stats(v) for p, v in pipeline.items()},
        "cosine_fp32_vs_bf16": {"min": float(cos.min()), "mean": float(cos.mean())},
    }


class _Trainer:
    """The little of a Trainer that the callbacks' epoch-end hook reads (one process, no logger)."""

    def __init__(self, root: str) -> None:
        self.current_epoch, self.global_step, self.is_global_zero = 0, 1, True
        self.loggers, self.log_dir, self.default_root_dir = [], None, root
        self.datamodule, self.ckpt_path = None, None
        self.strategy = self

    @staticmethod
    def broadcast(obj, src: int = 0):
        return obj


class _Module:
    def __init__(self, backbone) -> None:
        self.teacher_backbone, self.device = backbone, torch.device("cpu")

    def log_dict(self, *args, **kwargs) -> None:
        pass


def bench_callbacks(backbone, n_memory: int, n_queries: int, precision: str) -> dict:
    """Seconds of KNN + Privacy + Unlearning epoch ends on the same sets, without and with the
    shared cache, and how many embedding passes each ran."""
    import procvision.eval.callbacks as cbs
    from procvision.eval.cache import EmbeddingCache

    mem = EvalSet("fashion_mnist:train", resize_policy="resize", max_items=n_memory)
    qry = EvalSet("fashion_mnist:test", resize_policy="resize", max_items=n_queries, subset_seed=1)
    kw = {"memory": mem, "queries": qry, "precision": precision, "progress": False}
    out = {}
    for mode in ("before (one pass per callback)", "after (shared cache)"):
        made: list[EmbeddingCache] = []
        shared = EmbeddingCache()

        def cache(owner, shared=shared, made=made, mode=mode):
            if mode.startswith("after"):
                return shared
            made.append(EmbeddingCache())  # what every callback did before: its own pass
            return made[-1]

        original = cbs.shared_cache
        cbs.shared_cache = cache
        try:
            callbacks = [
                cbs.KNNCallback(ks=[20], log_images=False, **kw),
                cbs.PrivacyCallback(k=20, **kw),
                cbs.UnlearningCallback(k=20, **kw),
            ]
            trainer, module = _Trainer("/tmp"), _Module(backbone)
            t0 = time.perf_counter()
            for cb in callbacks:
                cb.on_train_epoch_end(trainer, module)
            seconds = time.perf_counter() - t0
        finally:
            cbs.shared_cache = original
        passes = shared.passes if mode.startswith("after") else sum(c.passes for c in made)
        out[mode] = {"seconds": seconds, "embedding_passes": passes,
                     "knn_top1": callbacks[0].last_results["weighted/k20/top1"]}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backbone", default=None, help="a backbone spec (default: demo arch, random)")
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory", type=int, default=10000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--precision", default="fp32", help="precision of the callback benchmark")
    ap.add_argument("--out", type=Path, default=Path("bench_eval.json"))
    args = ap.parse_args(argv)
    backbone = _backbone(args.backbone)
    report = {
        "backbone": args.backbone or f"random demo arch {DEMO_ARCH}",
        "threads": torch.get_num_threads(),
        "cpu_has_native_bf16": cpu_has_fast_bf16(),
        "note": "measured on a shared 2-core machine (other jobs running)",
        "embedding": bench_embedding(backbone, args.images, args.rounds),
        "callbacks": bench_callbacks(backbone, args.memory, args.queries, args.precision),
    }
    write_json_atomic(args.out, report)
    emb = report["embedding"]
    for what in ("forward_only_images_per_s", "embed_dataset_images_per_s"):
        cells = ", ".join(
            f"{p} best {v['best']:.0f} median {v['median']:.0f}" for p, v in emb[what].items()
        )
        print(f"{what}: {cells}")
    print(f"cosine fp32 vs bf16: {emb['cosine_fp32_vs_bf16']}")
    for mode, v in report["callbacks"].items():
        print(f"3 callbacks, {mode}: {v['seconds']:.1f} s, {v['embedding_passes']} passes")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

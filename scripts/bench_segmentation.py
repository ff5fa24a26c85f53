"""Benchmark segmentation on the CPU: per-image R² cost (per-image vs batched PCA) and k-NN
segmentation with a patch memory at the paper's scale (512 images x 784 patches = 401k items).

Prints markdown tables (and writes --json):
1. PCA colours + inertia per image, paper shape (28 x 28 tokens, D = 384, 112² grid) and demo
   shape (8 x 8 tokens, D = 192): the reference loop (`segmentation.image_inertia`, one float64
   SVD per image) vs `seg_pca.batched_image_inertia` (gram and svd solvers, B images per call);
2. backbone forward per image (random ViT-S/16 at 448 px; the demo-shaped ViT at 64 px);
3. the patch memory: memory bytes, softmax vote (all patches, streaming log-sum-exp) and top-k
   cosine vote for one query image (784 tokens), at --memory-scales x 401,408 patches.

    python scripts/bench_segmentation.py [--threads 1] [--scales 0.1 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from procvision.eval.seg_pca import batched_image_inertia
from procvision.eval.segmentation import image_inertia
from procvision.memory.patch_memory import PatchMemory

PAPER_PATCHES = 512 * 784


def _time(fn, repeat: int = 1) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def bench_pca(h: int, d: int, grid: int, batch: int) -> dict:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(batch, h, h, d, generator=g)
    labels = [torch.randint(0, 5, (448, 448), generator=g) for _ in range(batch)]
    loop = _time(lambda: [image_inertia(feats[i], labels[i], grid) for i in range(batch)])
    out = {"tokens": f"{h}x{h}", "dim": d, "grid": grid, "batch": batch,
           "loop_s_per_image": loop / batch}  # fmt: skip
    for solver in ("gram", "svd"):
        t = _time(lambda s=solver: batched_image_inertia(feats, labels, grid, solver=s))
        out[f"batched_{solver}_s_per_image"] = t / batch
    return out


@torch.no_grad()
def bench_forward() -> list[dict]:
    from procvision.models import random_backbone

    rows = []
    for name, arch, size, patch, kw in (
        ("ViT-S/16 @448", "vit_small_patch16_224", 448, 16, {}),
        ("demo ViT (32 px, p8) @64", "vit_tiny_patch16_224", 32, 8,
         {"depth": 4, "embed_dim": 192, "num_heads": 3}),
    ):  # fmt: skip
        bb = random_backbone(arch, size, patch, seed=0, **kw).eval()
        s = 448 if size == 448 else 64
        x = torch.randn(1, 3, s, s)
        rows.append(
            {"model": name, "s_per_image": _time(lambda bb=bb, x=x: bb.forward_features(x))}
        )
    return rows


def bench_knn(scale: float, dim: int = 384, classes: int = 21) -> dict:
    n = int(PAPER_PATCHES * scale)
    g = torch.Generator().manual_seed(0)
    mem = PatchMemory(dim, classes)
    mem.reserve(n)
    t0 = time.perf_counter()
    per_image = 784
    for s in range(0, n, per_image):  # added image by image, as a build would
        m = min(per_image, n - s)
        mem.add(torch.randn(m, dim, generator=g), torch.randint(0, classes, (m,), generator=g),
                s // per_image)  # fmt: skip
    build = time.perf_counter() - t0
    nbytes = mem.nbytes
    q = torch.randn(784, dim, generator=g)
    soft = _time(lambda: mem.softmax_vote(q))
    topk = _time(lambda: mem.topk_vote(q, k=20))
    t0 = time.perf_counter()
    mem.forget(list(range(0, n // per_image, 2)))  # half the images
    forget = time.perf_counter() - t0
    return {"patches": n, "memory_MiB": nbytes / 2**20, "add_s": build,
            "softmax_vote_s_per_image": soft, "topk_vote_s_per_image": topk,
            "forget_half_s": forget,
            "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--knn-only", action="store_true", help="only the patch-memory table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {"threads": args.threads, "pca": [], "forward": [], "knn": []}
    for h, d in ((28, 384), (8, 192)) if not args.knn_only else ():
        res["pca"].append(bench_pca(h, d, 112, args.batch))
        print(res["pca"][-1], flush=True)
    if not args.knn_only:
        res["forward"] = bench_forward()
        print(res["forward"], flush=True)
    for s in args.scales:
        res["knn"].append(bench_knn(s))
        print(res["knn"][-1], flush=True)

    print(f"\nCPU, {args.threads} thread(s)\n")
    print("| tokens x D | loop (ms/img) | batched gram (ms/img) | batched svd (ms/img) |")
    print("|---|---|---|---|")
    for r in res["pca"]:
        print(f"| {r['tokens']} x {r['dim']} | {1e3 * r['loop_s_per_image']:.1f} | "
              f"{1e3 * r['batched_gram_s_per_image']:.1f} | {1e3 * r['batched_svd_s_per_image']:.1f} |")  # fmt: skip
    print("\n| model | forward (ms/img) |\n|---|---|")
    for r in res["forward"]:
        print(f"| {r['model']} | {1e3 * r['s_per_image']:.1f} |")
    print(
        "\n| patches | memory (MiB) | softmax vote (s/img) | top-20 vote (s/img) | forget half (s) |"
    )
    print("|---|---|---|---|---|")
    for r in res["knn"]:
        print(f"| {r['patches']:,} | {r['memory_MiB']:.0f} | {r['softmax_vote_s_per_image']:.2f} | "
              f"{r['topk_vote_s_per_image']:.2f} | {r['forget_half_s']:.2f} |")  # fmt: skip
    if args.json:
        from procvision.atomic import write_json_atomic

        write_json_atomic(args.json, res)


if __name__ == "__main__":
    main()

"""`make demo`: the paper's claim on one small machine, end to end.

1. Preview grids of every procedural family (`<out>/previews/*.png`).
2. DINO on KML Mixup with `configs/demo.yaml` (TensorBoard logs, checkpoints, teacher export
   under `<out>/train/`).
3. The exported teacher used through a visual memory: Fashion-MNIST k-NN (memory 60k train,
   queries 10k test, k=20, weighted vote) next to the same architecture at random init and raw
   pixels. The table is printed and written to `<out>/knn_fashion_mnist.json`; the model's memory
   is saved to `<out>/memory/` for `procvision memory classify|forget` and `procvision privacy`.

    python scripts/demo.py --out demo_out [--skip-train] [--max-memory N --max-queries N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PREVIEW_FAMILIES = ["shaders", "shaders_mixup", "kml", "kml_mixup", "stylegan", "dead_leaves"]


def previews(out: Path) -> None:
    from procvision.cli import main as procvision

    (out / "previews").mkdir(parents=True, exist_ok=True)
    for family in PREVIEW_FAMILIES:
        png = out / "previews" / f"{family}.png"
        procvision(["generate", "preview", "--family", family, "--n", "36", "--size", "96",
                    "--out", str(png)])  # fmt: skip
        print(f"  preview: {png}")
    png = out / "previews" / "glsl.png"
    glsl_dir = REPO / "tests" / "data" / "glsl"
    try:
        procvision(["generate", "preview", "--family", "glsl", "--root", str(glsl_dir),
                    "--n", "16", "--size", "96", "--out", str(png)])  # fmt: skip
        print(f"  preview: {png}")
    except Exception as err:  # EGL missing: the rest of the demo does not need GLSL
        print(f"  (GLSL preview skipped: {err})")


def train(out: Path, config: Path, extra: list[str]) -> Path:
    """Run `procvision fit` and return the teacher export directory."""
    from procvision.cli import main as procvision

    root = out / "train"
    t0 = time.perf_counter()
    procvision(["fit", "--config", str(config), f"--trainer.default_root_dir={root}", *extra])
    print(f"  training took {time.perf_counter() - t0:.0f} s")
    return latest_export(root)


def latest_export(root: Path) -> Path:
    exports = sorted(root.glob("lightning_logs/version_*/export/config.json"), key=os.path.getmtime)
    if not exports:
        raise SystemExit(f"no teacher export under {root}/lightning_logs/*/export: did fit finish?")
    return exports[-1].parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo_out"))
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    ap.add_argument("--skip-train", action="store_true", help="reuse the latest export in --out")
    ap.add_argument("--max-memory", type=int, default=None, help="subset of the 60k memory")
    ap.add_argument("--max-queries", type=int, default=None, help="subset of the 10k queries")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("fit_overrides", nargs="*", help="extra `procvision fit` arguments")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    print("[1/3] previews of every procedural family")
    previews(args.out)
    print(f"[2/3] DINO on procedural data: {args.config}")
    export = (
        latest_export(args.out / "train")
        if args.skip_train
        else train(args.out, args.config, args.fit_overrides)
    )
    print(f"  teacher export: {export}")

    print("[3/3] Fashion-MNIST k-NN through the visual memory")
    from procvision.eval.report import fashion_mnist_knn_report, knn_table

    report = fashion_mnist_knn_report(
        export, k=20, max_memory=args.max_memory, max_queries=args.max_queries,
        device=args.device, memory_dir=args.out / "memory",
    )  # fmt: skip
    (args.out / "knn_fashion_mnist.json").write_text(json.dumps(report, indent=2))
    print()
    print(knn_table(report["results"]))
    print()
    print(f"memory: {args.out / 'memory'}   logs: tensorboard --logdir {args.out / 'train'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

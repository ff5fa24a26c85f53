"""`make demo`: the paper's claim on one small machine, end to end.

1. Preview grids of every procedural family (`<out>/previews/*.png`).
2. DINO on KML Mixup with `configs/demo.yaml` (TensorBoard logs, checkpoints, teacher export
   under `<out>/train/`).
3. The exported teacher used through a visual memory: Fashion-MNIST k-NN (memory 60k train,
   queries 10k test, k=20, weighted vote) next to the same architecture at random init and raw
   pixels. The table is printed and written to `<out>/knn_fashion_mnist.json`; the model's memory
   is saved to `<out>/memory/` for `procvision memory classify|forget` and `procvision privacy`.

    python scripts/demo.py --out demo_out [--skip-train] [--max-memory N --max-queries N]
        [any `procvision fit` option, e.g. --trainer.max_epochs=1]
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


def previews(out: Path, n: int, size: int) -> None:
    from procvision.cli import main as procvision

    (out / "previews").mkdir(parents=True, exist_ok=True)
    for family in PREVIEW_FAMILIES:
        png = out / "previews" / f"{family}.png"
        args = ["generate", "preview", "--family", family, "--n", str(n), "--size", str(size)]
        if procvision([*args, "--out", str(png)]) != 0:
            raise SystemExit(f"preview of {family} failed")
        print(f"  preview: {png}")
    png = out / "previews" / "glsl.png"
    args = ["generate", "preview", "--family", "glsl", "--root", str(REPO / "tests/data/glsl")]
    try:  # EGL may be missing: the rest of the demo does not need GLSL
        ok = procvision([*args, "--n", "16", "--size", str(size), "--out", str(png)]) == 0
    except Exception as err:
        ok = False
        print(f"  ({err})")
    print(f"  preview: {png}" if ok else "  (GLSL preview skipped: no headless OpenGL here)")


def train(out: Path, config: Path, extra: list[str]) -> Path:
    """Run `procvision fit` and return the teacher export directory."""
    from procvision.cli import main as procvision

    root = out / "train"
    t0 = time.perf_counter()
    procvision(["fit", "--config", str(config), f"--trainer.default_root_dir={root}", *extra])
    print(f"  training took {time.perf_counter() - t0:.0f} s")
    return latest_export(root)


def latest_export(root: Path) -> Path:
    exports = sorted(root.glob("**/export/config.json"), key=os.path.getmtime)
    if not exports:
        raise SystemExit(f"no teacher export under {root}: did fit finish?")
    return exports[-1].parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo_out"))
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    ap.add_argument("--skip-train", action="store_true", help="reuse the latest export in --out")
    ap.add_argument("--max-memory", type=int, default=None, help="subset of the 60k memory")
    ap.add_argument("--max-queries", type=int, default=None, help="subset of the 10k queries")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preview-n", type=int, default=36, help="images per preview grid")
    ap.add_argument("--preview-size", type=int, default=96, help="preview image side")
    args, fit_overrides = ap.parse_known_args(argv)  # the rest goes to `procvision fit`
    args.out.mkdir(parents=True, exist_ok=True)

    print("[1/3] previews of every procedural family")
    previews(args.out, args.preview_n, args.preview_size)
    print(f"[2/3] DINO on procedural data: {args.config}")
    export = (
        latest_export(args.out / "train")
        if args.skip_train
        else train(args.out, args.config, fit_overrides)
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

"""Images per second of every procedural family and composition on the current device.

    python scripts/bench_generate.py                      # 64 and 224 px on CPU
    python scripts/bench_generate.py --device cuda --batch-size 256 --sizes 224

Each row renders batches of consecutive indices for about --seconds (at least one batch) after
one untimed warm-up batch (which also builds caches, e.g. the shader pool's degeneracy filter).

Rows "... (bank N)" compose over a bank of N shader images (`bank_size=N`, the paper's form: a
fixed set of rendered shaders, composites drawn on the fly). The bank's images are rendered first,
untimed, and that one-off fill time is printed on its own line; the timed window still includes
computing each bank image's KML mask on its first use.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from procvision.data.compose import kml_mask
from procvision.data.registry import make_source
from procvision.data.source import Source

ROOT = Path(__file__).resolve().parents[1]
TEST_SHADERS = ROOT / "tests" / "data" / "glsl"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(render, batch: int, seconds: float, device: str) -> float:
    """Images/s of render(indices) over about `seconds` after one warm-up call."""
    render(torch.arange(batch))
    _sync(device)
    done, start, k = 0, time.perf_counter(), 1
    while True:
        render(torch.arange(k * batch, (k + 1) * batch))
        _sync(device)
        done, k = done + batch, k + 1
        if time.perf_counter() - start >= seconds:
            return done / (time.perf_counter() - start)


def _image_folder(n: int = 32, side: int = 256) -> str:
    """A temporary folder of noise JPEGs (decode + resize cost of the folder source)."""
    d = Path(tempfile.mkdtemp(prefix="bench-folder-"))
    rng = np.random.default_rng(0)
    for i in range(n):
        img = (rng.random((side // 8, side // 8, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).resize((side, side)).save(d / f"{i}.jpg", quality=90)
    return str(d)


def rows(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """(label, make_source kwargs) per benchmark row."""
    base = {"pool_size": args.pool_size}
    out = [
        ("shaders", {"family": "shaders", **base}),
        ("shaders_mixup (6)", {"family": "shaders_mixup", **base}),
        ("kml", {"family": "kml", **base}),
        ("kml_mixup", {"family": "kml_mixup", **base}),
        ("stylegan", {"family": "stylegan"}),
        ("dead_leaves", {"family": "dead_leaves"}),
        ("folder (256px jpeg)", {"family": "folder", "root": _image_folder()}),
    ]
    if args.glsl_root:
        out.append(("glsl", {"family": "glsl", "root": args.glsl_root}))
    if args.bank_size:
        bank = {**base, "bank_size": args.bank_size}
        for fam in ("shaders_mixup", "kml", "kml_mixup"):
            out.append((f"{fam} (bank {args.bank_size})", {"family": fam, **bank}))
    return out


def _fill_banks(src: Source, size: int, device: str) -> float:
    """Fill every BankSource under `src` at `size`; returns the seconds it took (0 if none)."""
    from procvision.data.bank import BankSource

    stack, t0, found = [src], time.perf_counter(), False
    while stack:
        s = stack.pop()
        if isinstance(s, BankSource):
            s.fill(size, device, progress=False)
            found = True
        stack += [v for v in vars(s).values() if hasattr(v, "render")]
    _sync(device)
    return time.perf_counter() - t0 if found else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per row")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    p.add_argument("--pool-size", type=int, default=21083)
    p.add_argument("--bank-size", type=int, default=4096, help="bank rows' size (0: no bank rows)")
    p.add_argument("--only", nargs="*", default=None, help="row labels to run (prefix match)")
    p.add_argument(
        "--glsl-root", default=str(TEST_SHADERS) if TEST_SHADERS.is_dir() else None,
        help="GLSL shader folder (default: the test shaders)",
    )  # fmt: skip
    args = p.parse_args(argv)
    dev = args.device
    print(f"device={dev} torch_threads={torch.get_num_threads()} batch={args.batch_size}")
    print(f"{'family':<22}" + "".join(f"{f'{s}px img/s':>14}" for s in args.sizes))
    table = rows(args)
    table.append(("kml_mask alone", {}))
    for label, kwargs in table:
        if args.only and not any(label.startswith(o) for o in args.only):
            continue
        cells = []
        for size in args.sizes:
            try:
                if label == "kml_mask alone":
                    x = torch.rand(args.batch_size, 3, size, size, device=dev)
                    rate = measure(lambda idx, x=x: kml_mask(x), args.batch_size, args.seconds, dev)
                else:
                    kw = dict(kwargs)
                    src = make_source(kw.pop("family"), **kw)
                    fill_s = _fill_banks(src, size, dev)
                    if fill_s:
                        print(f"  ({label} @ {size}px: bank filled in {fill_s:.1f} s)", flush=True)
                    rate = measure(
                        lambda idx, s=src, z=size: s.render(idx.to(dev), z, dev),
                        args.batch_size,
                        args.seconds,
                        dev,
                    )
                cells.append(f"{rate:14.1f}")
            except Exception as e:  # noqa: BLE001 - a broken row must not hide the others
                cells.append(f"{'error':>14}")
                print(f"  {label} @ {size}px: {type(e).__name__}: {e}", file=sys.stderr)
        print(f"{label:<22}" + "".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

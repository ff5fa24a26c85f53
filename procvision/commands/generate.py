"""`procvision generate`: preview grids and static JPEG exports of any procedural family.

    procvision generate preview --family kml_mixup --n 64 --size 128 --out grid.png
    procvision generate export --family kml_mixup --n 1300000 --size 384 --out DIR

Family options go in --options as JSON, e.g. --options '{"n": 4, "alpha": 0.5}' for Mixup or
--options '{"base": "folder"}' --root shaders21k/ to compose a folder of images.
"""

from __future__ import annotations

from jsonargparse import ArgumentParser, Namespace

from procvision.commands._common import run_reporting
from procvision.constants import SHADERS21K_POOL_SIZE
from procvision.data.registry import FAMILIES


def _common(parser: ArgumentParser, n: int, size: int) -> None:
    parser.add_argument("--family", type=str, default="kml_mixup", help=f"one of {FAMILIES}")
    parser.add_argument("--n", type=int, default=n, help="number of images (0..n-1)")
    parser.add_argument("--size", type=int, default=size, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed: image i is fixed by (seed, i)")
    parser.add_argument("--out", type=str, required=True, help="output file (preview) or folder")
    parser.add_argument("--device", type=str, default="cpu", help="render device, e.g. cuda")
    parser.add_argument(
        "--batch-size",
        "--batch_size",
        type=int,
        default=64,
        dest="batch_size",
        help="images rendered per call",
    )
    parser.add_argument(
        "--pool-size", "--pool_size", type=int, default=SHADERS21K_POOL_SIZE, dest="pool_size",
        help="shader programs in the pool (Shaders21k: 21,083)",
    )  # fmt: skip
    parser.add_argument("--root", type=str, default=None, help="folder for folder/glsl sources")
    parser.add_argument("--options", type=dict, default={}, help="family options as JSON")


def build_parser() -> ArgumentParser:
    """Parser of `procvision generate {preview,export}`."""
    parser = ArgumentParser(prog="procvision generate", description=__doc__)
    sub = parser.add_subcommands(dest="subcommand", required=True)
    preview = ArgumentParser(description="Write a grid PNG of images 0..n-1 of a family.")
    _common(preview, n=64, size=128)
    sub.add_subcommand("preview", preview, help="grid PNG of a family")
    export = ArgumentParser(description="Export images 0..n-1 as JPEGs in an ImageFolder layout.")
    _common(export, n=1_300_000, size=384)
    export.add_argument("--quality", type=int, default=95, help="JPEG quality")
    export.add_argument("--workers", type=int, default=2, help="JPEG encoding threads")
    export.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    sub.add_subcommand("export", export, help="resumable JPEG export (the paper's static form)")
    return parser


def run(cfg: Namespace) -> int:
    """Run the parsed command; bad input prints one error line and returns 2."""
    name = cfg.subcommand
    return run_reporting(f"procvision generate {name}", _run, name, cfg[name])


def _run(name: str, c: Namespace) -> int:
    from procvision.data.export import (
        check_export_output,
        check_preview_output,
        export_image_folder,
        write_preview,
    )
    from procvision.data.registry import FamilyError, make_source

    # the output first: nothing is rendered for a path that cannot take the result
    (check_preview_output if name == "preview" else check_export_output)(c.out)
    try:
        source = make_source(
            c.family, seed=c.seed, pool_size=c.pool_size, root=c.root, **dict(c.options or {})
        )
    except ValueError as e:  # a source's own check of --options
        if isinstance(e, FamilyError):
            raise
        raise FamilyError(f"family {c.family!r} with options {dict(c.options or {})}: {e}") from e
    if name == "preview":
        path = write_preview(
            source, c.out, n=c.n, size=c.size, device=c.device, batch_size=c.batch_size
        )
        print(f"wrote {path}")
        return 0
    m = export_image_folder(
        source,
        c.out,
        n=c.n,
        size=c.size,
        family=c.family,
        batch_size=c.batch_size,
        device=c.device,
        quality=c.quality,
        progress=c.progress,
        workers=c.workers,
    )
    print(f"exported {m['count']} images of {m['family']} to {c.out}")
    return 0

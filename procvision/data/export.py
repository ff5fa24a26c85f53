"""Previews and the paper's static form of a source: a folder of JPEGs (ImageFolder layout).

Exports are resumable: image i always lives at `out/train/0/{i:09d}.jpg`, every file is written
atomically (a temporary name, then a rename), and existing files are kept, never re-rendered.
Images are pure functions of (source, seed, i), so a resumed export equals a fresh one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid
from tqdm import tqdm

import procvision
from procvision.atomic import check_output_file, write_bytes_atomic
from procvision.data.source import Source
from procvision.errors import UserError

CLASS_DIR = Path("train") / "0"
MANIFEST = "manifest.json"
_NAME_DIGITS = 9


class OutputError(UserError, OSError):
    """The output location cannot be written; the message names it."""


class ExportError(UserError, ValueError):
    """Bad export or preview settings (a count, a batch size, a conflicting earlier export)."""


def _not_a_folder(path: Path) -> Path | None:
    """The first existing path among `path` and its ancestors if it is not a folder, else None."""
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return None if p.is_dir() else p
    return None


def check_output_folder(path: str | os.PathLike, kind: str = "output folder") -> Path:
    """`path` as a Path if it may be used as a folder to write into, else `OutputError`.

    Refuses a path that is (or lies inside) a file, a device or anything else that is not a
    folder. Nothing is created.
    """
    p = Path(path)
    blocker = _not_a_folder(p)
    if blocker is not None:
        what = "is a file" if blocker.is_file() else "exists and is not a folder"
        where = "" if blocker == p else f" (in the way of {str(p)!r})"
        raise OutputError(
            f"cannot write to {kind} {str(p)!r}: {str(blocker)!r} {what}{where}; "
            "give the path of a new or existing folder"
        )
    return p


def ensure_writable_dir(path: str | Path) -> Path:
    """Create `path` if needed and check that a file can be written in it."""
    path = check_output_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OutputError(f"cannot write to output folder {str(path)!r}: {e.strerror or e}") from e
    return path


def check_preview_output(out: str | os.PathLike) -> Path:
    """`out` (as the user wrote it) as a Path if a preview PNG may be written there, else
    `OutputPathError`/`OutputError`: never a folder, device, FIFO or a path inside a file."""
    text = os.fspath(out)
    parent = Path(text).parent
    # the folder first: `atomic.check_output_file` lstat()s the path, which fails inside a file
    check_output_folder(parent if str(parent) else Path("."), f"the folder of output {text!r}")
    return check_output_file(text)


def check_export_output(out: str | os.PathLike) -> Path:
    """`out` as a Path if an export may be written into it, else `OutputError`: it must be a new
    folder, an empty one, or an earlier export (it holds a manifest.json)."""
    p = check_output_folder(out)
    if p.is_dir() and not (p / MANIFEST).is_file():
        with os.scandir(p) as it:
            if any(True for _ in it):
                raise OutputError(
                    f"output folder {str(p)!r} is not empty and holds no export ({MANIFEST}); "
                    "give a new or empty folder, or the folder of the export to resume"
                )
    return p


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [0, 1] -> uint8 [B, H, W, 3] (round to nearest, as save_image)."""
    x = images.detach().float().clamp(0, 1).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def encode(image: np.ndarray, fmt: str, **params) -> bytes:
    """uint8 [H, W, 3] -> encoded bytes (fmt: 'JPEG' or 'PNG')."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **params)
    return buf.getvalue()


def preview_grid(
    source: Source, n: int = 64, size: int = 128, device: str = "cpu", batch_size: int = 64
) -> torch.Tensor:
    """Images 0..n-1 of `source` tiled in a near-square grid: float [3, H, W]."""
    if n < 1:
        raise ExportError(f"--n (number of images) must be >= 1, got {n}")
    if batch_size < 1:
        raise ExportError(f"--batch-size must be >= 1, got {batch_size}")
    imgs = torch.cat(
        [
            source.render(torch.arange(a, min(a + batch_size, n)), size, device).cpu()
            for a in range(0, n, batch_size)
        ]
    )
    return make_grid(imgs, nrow=max(1, round(n**0.5)), padding=2, pad_value=1.0)


def write_preview(
    source: Source,
    out: str | Path,
    n: int = 64,
    size: int = 128,
    device: str = "cpu",
    batch_size: int = 64,
) -> Path:
    """Render a preview grid of `source` and write it as a PNG (atomically).

    `out` is checked before anything is rendered (`check_preview_output`)."""
    out = check_preview_output(out)
    ensure_writable_dir(out.parent if str(out.parent) else ".")
    grid = preview_grid(source, n, size, device, batch_size)
    write_bytes_atomic(out, encode(to_uint8(grid[None])[0], "PNG"))
    return out


def image_path(out: str | Path, i: int) -> Path:
    """Where image i of an export lives."""
    return Path(out) / CLASS_DIR / f"{i:0{_NAME_DIGITS}d}.jpg"


def existing_indices(out: str | Path) -> set[int]:
    """Indices whose JPEG is already present in an export folder."""
    d = Path(out) / CLASS_DIR
    if not d.is_dir():
        return set()
    found = set()
    with os.scandir(d) as it:
        for e in it:
            stem, dot, ext = e.name.partition(".")
            if dot and ext == "jpg" and len(stem) >= _NAME_DIGITS and stem.isdigit():
                found.add(int(stem))
    return found


def _remove_stale_temporaries(d: Path) -> None:
    with os.scandir(d) as it:
        for e in it:
            if e.name.startswith(".") and e.name.endswith(".tmp"):
                Path(e.path).unlink(missing_ok=True)


def _batches(items: list[int], size: int) -> Iterator[list[int]]:
    for a in range(0, len(items), size):
        yield items[a : a + size]


def _conflicts(old: object, new: object, where: str) -> list[str]:
    """Fields whose values differ; keys present on one side only are extra information (e.g. a
    filter's rejection rate that becomes known once computed), not a conflict."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            c for k in old.keys() & new.keys() for c in _conflicts(old[k], new[k], f"{where}.{k}")
        ]
    return [] if old == new else [f"{where} ({old!r}, now {new!r})"]


def _check_manifest(out: Path, new: dict) -> None:
    """Refuse to resume an export made with another source, seed, size or quality."""
    path = out / MANIFEST
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except ValueError as e:
        raise ExportError(f"{str(path)!r} is not valid JSON ({e}); remove it to start over") from e
    for key in ("family", "seed", "size", "quality", "source"):
        bad = _conflicts(old.get(key), new[key], key) if key in old else []
        if bad:
            raise ExportError(
                f"{str(out)!r} holds an export with a different {'; '.join(bad)}; "
                "use another --out folder"
            )


def export_image_folder(
    source: Source,
    out: str | Path,
    n: int,
    size: int,
    family: str | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    quality: int = 95,
    progress: bool = True,
    workers: int = 2,
) -> dict:
    """Export images 0..n-1 of `source` as JPEGs in an ImageFolder layout, resumably.

    Args:
        source: the source rendered.
        out: export folder (created); images go to out/train/0/, the manifest to out/manifest.json.
        n: number of images.
        size: image side in pixels.
        family: family name recorded in the manifest (default: source.name).
        batch_size: images rendered per call.
        device: where to render.
        quality: JPEG quality (StyleGAN-oriented used 95; the KML sets PIL's default 75).
        progress: show a tqdm progress bar.
        workers: threads encoding and writing JPEGs while the next batch renders.
    Returns:
        the manifest dict (also written to out/manifest.json).
    """
    if n < 0:
        raise ExportError(f"--n (number of images) must be >= 0, got {n}")
    if batch_size < 1:
        raise ExportError(f"--batch-size must be >= 1, got {batch_size}")
    out = ensure_writable_dir(check_export_output(out))
    img_dir = ensure_writable_dir(out / CLASS_DIR)
    manifest = {
        "family": family or source.name,
        "seed": source.seed,
        "count": n,
        "size": size,
        "format": "jpeg",
        "quality": quality,
        "layout": f"{CLASS_DIR.as_posix()}/{{index:0{_NAME_DIGITS}d}}.jpg",
        "version": procvision.__version__,
        "source": json.loads(json.dumps(source.describe())),
        "complete": False,
    }
    _check_manifest(out, manifest)
    _remove_stale_temporaries(img_dir)
    have = existing_indices(out)
    todo = [i for i in range(n) if i not in have]
    write_bytes_atomic(out / MANIFEST, json.dumps(manifest, indent=2).encode())

    def write(i: int, img: np.ndarray) -> None:
        write_bytes_atomic(image_path(out, i), encode(img, "JPEG", quality=quality))

    bar = tqdm(total=n, initial=n - len(todo), unit="img", disable=not progress, desc="export")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list = []
        for batch in _batches(todo, batch_size):
            imgs = to_uint8(source.render(torch.tensor(batch), size, device))
            for f in pending:  # one batch in flight: bounded memory, errors surface early
                f.result()
            pending = [pool.submit(write, i, img) for i, img in zip(batch, imgs, strict=True)]
            bar.update(len(batch))
        for f in pending:
            f.result()
    bar.close()
    manifest["complete"] = True
    manifest["source"] = json.loads(json.dumps(source.describe()))  # may now know more
    write_bytes_atomic(out / MANIFEST, json.dumps(manifest, indent=2).encode())
    return manifest

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
from procvision.atomic import write_bytes_atomic
from procvision.data.source import Source
from procvision.errors import UserError

CLASS_DIR = Path("train") / "0"
MANIFEST = "manifest.json"
_NAME_DIGITS = 9


class OutputError(UserError, OSError):
    """The output location cannot be written; the message names it."""


def ensure_writable_dir(path: str | Path) -> Path:
    """Create `path` if needed and check that a file can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OutputError(f"cannot write to output folder {str(path)!r}: {e.strerror or e}") from e
    return path


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
        raise ValueError(f"n (number of images) must be >= 1, got {n}")
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
    """Render a preview grid of `source` and write it as a PNG (atomically)."""
    out = Path(out)
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
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); remove it to start over") from e
    for key in ("family", "seed", "size", "quality", "source"):
        bad = _conflicts(old.get(key), new[key], key) if key in old else []
        if bad:
            raise ValueError(
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
        raise ValueError(f"n (number of images) must be >= 0, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = ensure_writable_dir(out)
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

"""The one atomic-write helper of procvision: readers see the old file or the whole new one.

Every file procvision writes (exports, JSON results, CSVs, previews, manifests) goes through
`atomic_write`: a temporary file in the destination's folder (so the final rename stays on one
filesystem and is atomic), flushed and fsynced, renamed over the destination, and the folder
fsynced so that the rename itself survives a crash. A crash at any point leaves no partial file
at the destination, and the temporary file is removed on every error path.

The destination must be a regular file or absent: a directory, device, FIFO or socket at that
path is refused before anything is written (a rename would replace a device node when run as
root).
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from procvision.errors import UserError


class OutputPathError(UserError, ValueError):
    """An output path that cannot be written as a file (a directory, a device, ...)."""


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so that renames inside it are durable (best effort on odd filesystems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync directories; the file fsyncs still hold
    finally:
        os.close(fd)


def check_output_file(path: str | Path) -> Path:
    """`path` as a Path if it may be (re)written as a regular file, else `OutputPathError`.

    Refuses an existing directory, device, FIFO or socket, a path ending in a separator or `.`,
    and a parent that exists but is not a directory. Nothing is created.
    """
    text = os.fspath(path)
    p = Path(text)
    if text.endswith(("/", os.sep)) or p.name in ("", ".", ".."):
        raise OutputPathError(f"output {text!r} names a folder, not a file: give a file name")
    try:
        st = os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):  # absent, or a path inside a file (below)
        st = None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise OutputPathError(f"output {text!r} is {kind}: give a path for a new or regular file")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise OutputPathError(f"output {text!r}: {str(parent)!r} is a file, not a folder")
    return p


def atomic_write(
    path: str | Path, write: Callable[[IO[Any]], Any], mode: str = "wb", encoding: str | None = None
) -> Path:
    """Create `path` through `write(f)` on a temporary file, then rename it into place.

    Args:
        path: destination (a regular file or absent); missing parent folders are created.
        write: called with the open temporary file.
        mode: "wb" or "w".
        encoding: text encoding for mode "w" (UTF-8 by default).
    Returns:
        `path` as a Path.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    enc = (encoding or "utf-8") if mode == "w" else None

    def write_to(tmp: str) -> None:
        with open(tmp, mode, encoding=enc) as f:
            write(f)

    return atomic_write_path(path, write_to)


def atomic_write_path(path: str | Path, write_to: Callable[[str], Any]) -> Path:
    """Like `atomic_write`, for writers that want a file name (e.g. safetensors' `save_file`)."""
    p = check_output_file(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_to(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(p.parent)
    return p


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda f: f.write(data), "wb")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda f: f.write(text), "w")


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write `obj` as sorted JSON (numpy arrays and Paths allowed) to `path` atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, default=_jsonable)
    return write_text_atomic(path, text + "\n")


def write_csv_atomic(
    path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> Path:
    """Write a CSV (one header row, then `rows`) to `path` atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")

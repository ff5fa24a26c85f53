"""Crash-safe persistence of a `VisualMemory` as a directory.

Layout: `embeddings.npy` (float32 [N, D]), `ids.npy`, `labels.npy` (int64 [N]), `metadata.jsonl`
(one canonical JSON object per row, row order), `index.faiss` (trained IVF only), `manifest.json`
(format version, fingerprint, dim, count, engine, class names, content hash, sha256 + size of every
file) and `audit.jsonl` (the unlearning log, carried across saves, not checksummed).

A save writes a temp sibling directory, fsyncs it, then swaps: rename the old directory away,
rename the new one in, delete the old one. A crash before the swap leaves the old memory in place; a
crash between the two renames leaves it under `.NAME.old-*`, and `load` renames it back. One writer
at a time is assumed. The directory belongs to the memory: files other than these are not kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from procvision.memory.errors import CorruptMemory, FingerprintMismatch
from procvision.memory.index import IVFEngine, has_faiss
from procvision.memory.store import VisualMemory, canonical_json

FORMAT = "procvision-visual-memory"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
AUDIT = "audit.jsonl"
REQUIRED_FILES = ("embeddings.npy", "ids.npy", "labels.npy", "metadata.jsonl")
INDEX_FILE = "index.faiss"


class _HashingWriter:
    """File-like sink that hashes and counts what passes through to the real file."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, b: bytes | memoryview) -> int:
        self.sha.update(b)
        self.size += len(b)
        return self.f.write(b)


def _fsync_dir(path: Path) -> None:
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


def _write_file(directory: Path, name: str, write: Callable[[Any], None]) -> dict:
    """Create directory/name through `write(sink)`, fsync it; returns {"sha256", "bytes"}."""
    with open(directory / name, "wb") as f:
        sink = _HashingWriter(f)
        write(sink)
        f.flush()
        os.fsync(f.fileno())
    return {"sha256": sink.sha.hexdigest(), "bytes": sink.size}


def _file_sha256(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _siblings(target: Path, kind: str) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.{kind}-*"))


def remove_tree(path: Path, shred: bool = False) -> None:
    """Delete a directory; with shred, first overwrite every file with zeros and fsync.

    Overwriting is best effort: copy-on-write filesystems and SSD wear levelling may keep old blocks.
    """
    if shred:
        for p in path.rglob("*"):
            if p.is_file() and not p.is_symlink():
                size = p.stat().st_size
                with open(p, "r+b") as f:
                    zeros = bytes(min(size, 8 << 20))
                    for s in range(0, size, len(zeros) or 1):
                        f.write(zeros[: min(len(zeros), size - s)])
                    f.flush()
                    os.fsync(f.fileno())
    shutil.rmtree(path, ignore_errors=True)


def atomic_replace_dir(
    target: Path, write: Callable[[Path], None], shred_old: bool = False
) -> None:
    """Make `target` the directory that `write(tmp)` fills, atomically with respect to crashes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in _siblings(target, "tmp") + (_siblings(target, "old") if target.exists() else []):
        remove_tree(stale, shred_old)
    tag = uuid.uuid4().hex[:12]
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        write(tmp)
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.parent / f".{target.name}.old-{tag}"
        os.rename(target, old)
        _fsync_dir(target.parent)
        os.rename(tmp, target)
        _fsync_dir(target.parent)
        remove_tree(old, shred_old)
    else:
        os.rename(tmp, target)
        _fsync_dir(target.parent)


def save_memory(
    mem: VisualMemory,
    directory: str | Path,
    shred_old: bool = False,
    audit_record: dict | None = None,
) -> Path:
    """Write `mem` to `directory` crash-safely; optionally append `audit_record` to audit.jsonl.

    The audit line lands in the same atomic swap as the data it describes.
    """
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(
            f"{target}: exists and is not a directory; choose a directory path"
        )
    old_audit = target / AUDIT
    engine = mem._engine

    def write(tmp: Path) -> None:
        files = {
            "embeddings.npy": _write_file(
                tmp, "embeddings.npy", lambda f: np.save(f, mem.embeddings)
            ),
            "ids.npy": _write_file(tmp, "ids.npy", lambda f: np.save(f, mem.ids)),
            "labels.npy": _write_file(tmp, "labels.npy", lambda f: np.save(f, mem.labels)),
            "metadata.jsonl": _write_file(
                tmp, "metadata.jsonl", lambda f: _write_meta(f, mem._meta)
            ),
        }
        ivf = None
        if isinstance(engine, IVFEngine):
            ivf = {"nlist": engine.nlist, "nprobe": engine.nprobe, "quantizer_source": None}
            if engine.index is not None:
                import faiss

                blob = faiss.serialize_index(engine.index)
                files[INDEX_FILE] = _write_file(tmp, INDEX_FILE, lambda f: f.write(blob.tobytes()))
                ivf["quantizer_source"] = engine.quantizer_source
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fingerprint": mem.fingerprint,
            "dim": mem.dim,
            "count": len(mem),
            "engine": mem.engine,
            "class_names": mem.class_names,
            "content_hash": mem.content_hash(),
            "ivf": ivf,
            "files": files,
        }
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        _write_file(tmp, MANIFEST, lambda f: f.write(text.encode()))
        if old_audit.is_file() or audit_record is not None:

            def audit(f: Any) -> None:
                if old_audit.is_file():
                    f.write(old_audit.read_bytes())
                if audit_record is not None:
                    f.write((canonical_json(audit_record) + "\n").encode())

            _write_file(tmp, AUDIT, audit)

    atomic_replace_dir(target, write, shred_old)
    return target


def _write_meta(f: Any, meta: list[dict | None]) -> None:
    step = 4096
    for s in range(0, len(meta), step):
        f.write("".join(canonical_json(d or {}) + "\n" for d in meta[s : s + step]).encode())


def recover(target: Path) -> None:
    """If a save crashed between its two renames, put the previous memory back at `target`."""
    if target.exists():
        return
    olds = _siblings(target, "old")
    if olds:
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.rename(newest, target)
        _fsync_dir(target.parent)
        warnings.warn(
            f"{target}: restored the previous memory after an interrupted save", stacklevel=3
        )


def _corrupt(path: Path, what: str) -> CorruptMemory:
    return CorruptMemory(f"{path}: {what}; restore the memory from a backup or rebuild it")


def read_manifest(directory: str | Path) -> dict:
    """The parsed manifest of a saved memory, after crash recovery; CorruptMemory if unusable."""
    target = Path(directory)
    recover(target)
    if not target.is_dir():
        raise FileNotFoundError(
            f"memory directory {target} does not exist; build or save one first"
        )
    path = target / MANIFEST
    if not path.is_file():
        raise _corrupt(path, "missing (not a saved memory, or its write never completed)")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise _corrupt(path, f"unreadable JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _corrupt(path, f"not a {FORMAT} manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CorruptMemory(
            f"{path}: format version {manifest['format_version']} is newer than this procvision "
            f"({FORMAT_VERSION}); upgrade procvision"
        )
    for key in ("dim", "count", "engine", "files", "content_hash"):
        if key not in manifest:
            raise _corrupt(path, f"lacks the field {key!r}")
    return manifest


def _load_array(path: Path, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _corrupt(path, f"not a readable .npy file ({e})") from e
    if a.dtype != np.dtype(dtype) or a.shape != shape:
        raise _corrupt(
            path, f"holds {a.dtype} {list(a.shape)}, manifest implies {dtype} {list(shape)}"
        )
    return np.ascontiguousarray(a)


def load_memory(
    directory: str | Path, expect_fingerprint: str | None = None, engine: str | None = None
) -> VisualMemory:
    """Load and verify a saved memory.

    Every file's size and sha256 must match the manifest, the arrays must agree with each other, and
    the recomputed content hash must match. With `expect_fingerprint`, a memory made by another
    backbone raises FingerprintMismatch. `engine` overrides the stored engine name ("faiss" falls
    back to the identical "torch" when faiss is missing).
    """
    target = Path(directory)
    manifest = read_manifest(target)
    files = manifest["files"]
    for name in REQUIRED_FILES:
        if name not in files:
            raise _corrupt(target / MANIFEST, f"does not list {name}")
    for name, info in files.items():
        path = target / name
        if not path.is_file():
            raise _corrupt(path, "missing (listed in manifest.json)")
        digest, size = _file_sha256(path)
        if size != info.get("bytes"):
            raise _corrupt(
                path, f"truncated or extended: {size} bytes, manifest says {info.get('bytes')}"
            )
        if digest != info.get("sha256"):
            raise _corrupt(path, "sha256 does not match manifest.json (modified or corrupted)")
    stored_fp = manifest.get("fingerprint")
    if expect_fingerprint is not None and stored_fp is not None and stored_fp != expect_fingerprint:
        raise FingerprintMismatch(
            f"{target}: memory was built with backbone {stored_fp!r}, expected {expect_fingerprint!r}; "
            "use the matching backbone or rebuild the memory"
        )
    n, dim = int(manifest["count"]), int(manifest["dim"])
    emb = _load_array(target / "embeddings.npy", "float32", (n, dim))
    ids = _load_array(target / "ids.npy", "int64", (n,))
    labels = _load_array(target / "labels.npy", "int64", (n,))
    lines = (target / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    if len(lines) != n:
        raise _corrupt(target / "metadata.jsonl", f"has {len(lines)} lines, expected {n}")
    try:
        meta = [json.loads(s) or None for s in lines]
    except ValueError as e:
        raise _corrupt(target / "metadata.jsonl", f"unreadable JSON line ({e})") from e
    if len(np.unique(ids)) != n:
        raise _corrupt(target / "ids.npy", "contains duplicate ids")

    name = engine or manifest["engine"]
    if name == "faiss" and not has_faiss():
        name = "torch"
    ivf = manifest.get("ivf") or {}
    mem = VisualMemory(
        dim,
        engine=name,
        fingerprint=stored_fp,
        class_names=manifest.get("class_names"),
        ivf_nlist=ivf.get("nlist"),
        ivf_nprobe=ivf.get("nprobe") or 16,
    )
    # Set the arrays directly: re-normalising stored unit rows could move their last bits.
    mem._emb, mem._ids, mem._labels, mem._meta, mem._n = emb, ids, labels, meta, n
    mem._version += 1
    if isinstance(mem._engine, IVFEngine) and INDEX_FILE in files:
        import faiss

        index = faiss.deserialize_index(np.fromfile(target / INDEX_FILE, dtype=np.uint8))
        if index.ntotal != n:
            raise _corrupt(target / INDEX_FILE, f"holds {index.ntotal} vectors, expected {n}")
        mem._engine.index, mem._engine.quantizer_source = index, ivf.get("quantizer_source")
    if mem.content_hash() != manifest["content_hash"]:
        raise _corrupt(target / MANIFEST, "content hash does not match the stored arrays")
    for stale in _siblings(target, "old"):
        remove_tree(stale, shred=True)  # a leftover may hold items that were forgotten
    return mem


def read_audit(directory: str | Path) -> list[dict]:
    """The audit records of a saved memory, oldest first ([] if none)."""
    path = Path(directory) / AUDIT
    if not path.is_file():
        return []
    return [json.loads(s) for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]

"""Crash-safe, verified persistence of a memory's state (`state.MemoryState`) as a directory.

Layout: `embeddings.npy` (float32 [N, D]), `ids.npy`, `labels.npy` (int64 [N]), `metadata.jsonl`
(one canonical JSON object per row, row order), `index.faiss` (trained IVF only), `audit.jsonl`
(the hash-chained audit log) and `manifest.json`: format version, fingerprint, dim, count, engine,
class names, recipe, id counter, content hash, the audit log's length and head, the sha256 and
size of every other file, and `manifest_sha256`, a checksum of the manifest itself (plus
`hmac_sha256` when saved with a key). Every stored byte is verified on load, and an edit names
the file. Checksums stop accidents and naive edits, not someone who rewrites them too: for that,
sign with a key kept outside the memory (`hmac_key`).

A save (under the writer lock, `lockfile.writer_lock`) writes a temp sibling directory
`.NAME.tmp-PID-TAG`, fsyncs it, then swaps: rename the old directory to `.NAME.old-PID-TAG`, rename
the new one in, delete (or shred) the old one. A crash before the swap leaves the old memory in
place; a crash between the two renames leaves it under `.NAME.old-*`: readers then read it where it
is, and the next writer puts it back. Readers never rename, recover or delete anything; writers
only delete leftovers of writers that are dead. The directory belongs to the memory: only its
files are kept, and a directory that is not a memory is never replaced.

This module knows the state, not `VisualMemory` (which `store` builds from it): no import circle.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from procvision.atomic import fsync_dir
from procvision.memory.errors import (
    CorruptMemory,
    FingerprintMismatch,
    InvalidArgument,
    MemoryChanged,
    MemoryNotFound,
    VisualMemoryError,
)
from procvision.memory.lockfile import held_here, pid_alive, writer_active, writer_lock
from procvision.memory.state import MemoryState, canonical_json, content_hash

FORMAT = "procvision-visual-memory"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
AUDIT = "audit.jsonl"
REQUIRED_FILES = ("embeddings.npy", "ids.npy", "labels.npy", "metadata.jsonl")
INDEX_FILE = "index.faiss"
BLOBS = "blobs"  # blobs/<sha256>: image bytes kept inside the memory (uploads to the service)
MEMORY_FILES = frozenset((*REQUIRED_FILES, INDEX_FILE, AUDIT, MANIFEST, BLOBS))
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
GENESIS = "0" * 64  # the `prev` of the first audit record
READ_RETRY_SECONDS = 10.0
_MANIFEST_SALT = b"procvision-visual-memory-manifest-v2\n"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-f]+$")


# ---------------------------------------------------------------- small file helpers
class _HashingWriter:
    """File-like sink that hashes and counts what passes through to the real file."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, b: bytes | memoryview) -> int:
        self.sha.update(b)
        self.size += len(b)
        return self.f.write(b)


def _write_file(directory: Path, name: str, write: Callable[[Any], None]) -> dict:
    """Create directory/name through `write(sink)`, fsync it; returns {"sha256", "bytes"}."""
    with open(directory / name, "wb") as f:
        sink = _HashingWriter(f)
        write(sink)
        f.flush()
        os.fsync(f.fileno())
    return {"sha256": sink.sha.hexdigest(), "bytes": sink.size}


def _file_sha256(path: Path, dir_fd: int | None = None) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with _open_in(path, dir_fd) as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _open_in(path: Path, dir_fd: int | None) -> BinaryIO:
    """Open `path` for reading; with `dir_fd`, by name inside that (pinned) directory."""
    if dir_fd is None:
        return open(path, "rb")
    return os.fdopen(os.open(path.name, os.O_RDONLY, dir_fd=dir_fd), "rb")


def remove_tree(path: Path, shred: bool = False) -> None:
    """Delete a directory; with shred, first overwrite every file with zeros and fsync.

    Overwriting is best effort: copy-on-write filesystems and SSD wear levelling may keep old blocks.
    """
    if shred:
        for p in path.rglob("*"):
            if p.is_file() and not p.is_symlink():
                st = p.stat()
                if st.st_nlink > 1:
                    continue  # a blob still linked into the new version: not ours to zero
                size = st.st_size
                with open(p, "r+b") as f:
                    zeros = bytes(min(size, 8 << 20))
                    for s in range(0, size, len(zeros) or 1):
                        f.write(zeros[: min(len(zeros), size - s)])
                    f.flush()
                    os.fsync(f.fileno())
    shutil.rmtree(path, ignore_errors=True)


def _corrupt(path: Path, what: str) -> CorruptMemory:
    return CorruptMemory(f"{path}: {what}; restore the memory from a backup or rebuild it")


# ---------------------------------------------------------------- leftovers of interrupted saves
def leftovers(target: Path) -> list[tuple[Path, str, int | None]]:
    """(path, "tmp" | "old", writer pid or None) of every `.NAME.tmp-*` / `.NAME.old-*` sibling."""
    out = []
    for p in sorted(target.parent.glob(f".{target.name}.*-*")):
        m = _LEFTOVER.match(p.name)
        if m and m["name"] == target.name and p.is_dir():
            out.append((p, m["kind"], int(m["pid"]) if m["pid"] else None))
    return out


def _dead(pid: int | None, path: Path) -> bool:
    """A leftover's writer is gone: its pid is dead or ours (we hold the lock), or, for names
    without a pid (older procvision), it is over an hour old."""
    if pid is None:
        return time.time() - path.stat().st_mtime > 3600
    return pid == os.getpid() or not pid_alive(pid)


def prepare_write(target: Path) -> None:
    """Under the writer lock: put back a memory left under `.NAME.old-*` by a crash between the
    two renames of a swap, then delete (shredding old copies, which may hold forgotten items)
    the leftovers of dead writers. Leftovers of live processes are left alone."""
    found = [(p, k, pid) for p, k, pid in leftovers(target) if _dead(pid, p)]
    olds = [p for p, k, _ in found if k == "old"]
    if not target.exists() and olds:
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.rename(newest, target)
        fsync_dir(target.parent)
        olds.remove(newest)
        warnings.warn(
            f"{target}: restored the previous memory after an interrupted save", stacklevel=3
        )
    for p, kind, _ in found:
        if p.exists():
            remove_tree(p, shred=kind == "old")


# ---------------------------------------------------------------- target checks
def is_memory_dir(path: Path) -> bool:
    """True for a directory holding only memory files, manifest.json among them."""
    try:
        names = set(os.listdir(path))
    except OSError:
        return False
    return MANIFEST in names and names <= MEMORY_FILES


def check_memory_target(directory: str | Path) -> Path:
    """The absolute target path if a memory may be written there, else `InvalidArgument`.

    Accepted: an absent path (with no file in the way of its parent), an empty directory, or a
    directory that is a procvision memory. Refused before any work: a file, a device, FIFO or
    socket, a symbolic link, and a directory holding anything else (e.g. a dataset, or `.`).
    """
    text = os.fspath(directory)
    target = Path(os.path.abspath(text))
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise InvalidArgument(
            f"memory path {text!r}: a parent of it is a file, not a folder; choose another path"
        ) from None
    if st is None:
        for parent in target.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise InvalidArgument(
                        f"memory path {text!r}: {str(parent)!r} is a file, not a folder"
                    )
                break
        return target
    if stat.S_ISLNK(st.st_mode):
        raise InvalidArgument(
            f"memory path {text!r} is a symbolic link: give the directory's real path"
        )
    if not stat.S_ISDIR(st.st_mode):
        kind = "a file" if stat.S_ISREG(st.st_mode) else "a device or special file"
        raise InvalidArgument(
            f"memory path {text!r} is {kind}, not a memory directory: choose a new directory path"
        )
    if os.listdir(target) and not is_memory_dir(target):
        raise InvalidArgument(
            f"memory path {text!r} is a directory that is not a procvision memory (it holds other "
            "files); refusing to replace it: choose a new directory path"
        )
    return target


# ---------------------------------------------------------------- manifest and audit chain
def manifest_checksum(body: dict, key: bytes | None = None) -> str:
    """sha256 (or, with `key`, HMAC-SHA256) hex of the manifest body's canonical JSON."""
    data = _MANIFEST_SALT + canonical_json(body).encode()
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def read_key_file(path: str | Path) -> bytes:
    """The HMAC key in file `path` (its bytes, surrounding whitespace stripped)."""
    p = Path(path)
    try:
        key = p.read_bytes().strip()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
        raise InvalidArgument(f"--hmac-key {p}: cannot read the key file ({err})") from err
    if len(key) < 16:
        raise InvalidArgument(
            f"--hmac-key {p}: a key needs at least 16 bytes (e.g. `head -c 32 /dev/urandom | "
            "base64 > KEY`), got {len(key)}"
        )
    return key


def _record_hash(record: dict) -> str:
    return hashlib.sha256(canonical_json(record).encode()).hexdigest()


def chain_records(records: list[dict], head: str = GENESIS) -> list[dict]:
    """Each record with `prev` (the previous record's hash) and `hash` (sha256 of itself with
    `prev`, without `hash`), continuing a chain whose last hash is `head`."""
    out = []
    for r in records:
        body = {k: v for k, v in r.items() if k not in ("prev", "hash")}
        body["prev"] = head
        head = _record_hash(body)
        out.append({**body, "hash": head})
    return out


def parse_audit(data: bytes, path: Path, chained: bool = True) -> list[dict]:
    """Records of an audit log's bytes; with `chained`, verify the hash chain (CorruptMemory
    naming the file and the first bad record)."""
    try:
        lines = [s for s in data.decode("utf-8").splitlines() if s.strip()]
        records = [json.loads(s) for s in lines]
    except (UnicodeDecodeError, ValueError) as err:
        raise _corrupt(path, f"unreadable audit record ({err})") from err
    if chained:
        prev = GENESIS
        for i, r in enumerate(records, 1):
            if not isinstance(r, dict) or r.get("prev") != prev:
                raise _corrupt(path, f"record {i} does not follow record {i - 1} (a record was "
                                     "removed, inserted or reordered)")  # fmt: skip
            body = {k: v for k, v in r.items() if k != "hash"}
            if _record_hash(body) != r.get("hash"):
                raise _corrupt(path, f"record {i} was edited (its hash does not match)")
            prev = r["hash"]
    return records


def parse_manifest(data: bytes, path: Path, hmac_key: bytes | None = None) -> dict:
    """Parse and verify a manifest's bytes (format, version, checksum; HMAC with a key)."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _corrupt(path, f"unreadable JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _corrupt(path, f"not a {FORMAT} manifest")
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CorruptMemory(
            f"{path}: format version {version} is newer than this procvision "
            f"({FORMAT_VERSION}); upgrade procvision"
        )
    for key in ("dim", "count", "engine", "files", "content_hash"):
        if key not in manifest:
            raise _corrupt(path, f"lacks the field {key!r}")
    if version >= 2:
        body = {k: v for k, v in manifest.items() if k not in ("manifest_sha256", "hmac_sha256")}
        if manifest.get("manifest_sha256") != manifest_checksum(body):
            raise _corrupt(
                path, "manifest_sha256 does not match its contents (edited or corrupted)"
            )
        if hmac_key is not None:
            tag = manifest.get("hmac_sha256")
            if tag is None:
                raise _corrupt(path, "is not signed, but an HMAC key was given")
            if not hmac.compare_digest(str(tag), manifest_checksum(body, hmac_key)):
                raise _corrupt(path, "HMAC does not match (edited, or signed with another key)")
    elif hmac_key is not None:
        raise _corrupt(path, "is a format-1 memory, which is not signed; rewrite it with the key")
    return manifest


# ---------------------------------------------------------------- blobs
def blob_refs(meta: list[str]) -> set[str]:
    """sha256 names of the blobs that items reference (metadata key "blob")."""
    refs = set()
    for line in meta:
        if '"blob":' in line:
            ref = json.loads(line).get("blob")
            if isinstance(ref, str):
                refs.add(ref)
    return refs


def blobs_digest(sizes: dict[str, int]) -> dict:
    """The manifest's record of the blobs folder: count, total bytes, sha256 of the listing."""
    listing = "".join(f"{name} {sizes[name]}\n" for name in sorted(sizes))
    return {"count": len(sizes), "bytes": int(sum(sizes.values())),
            "listing_sha256": hashlib.sha256(listing.encode()).hexdigest()}  # fmt: skip


def _write_blobs(tmp: Path, source: Path, refs: set[str], new: dict[str, bytes]) -> dict[str, int]:
    """tmp/blobs/: new blobs written, kept ones hard-linked from the version in `source` (so the
    old version's shred skips them; copied across filesystems); returns {name: size}."""
    if not refs:
        return {}
    folder = tmp / BLOBS
    folder.mkdir()
    sizes = {}
    for name in sorted(refs):
        if name in new:
            data = new[name]
            if hashlib.sha256(data).hexdigest() != name:
                raise InvalidArgument(f"blob {name}: its bytes do not hash to its name")
            with open(folder / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        else:
            old = source / BLOBS / name
            if not old.is_file():
                raise InvalidArgument(
                    f"blob {name}: referenced by an item but neither stored nor given; "
                    "add its bytes with VisualMemory.add_blob"
                )
            try:
                os.link(old, folder / name)
            except OSError:  # another filesystem: copy
                shutil.copyfile(old, folder / name)
        sizes[name] = (folder / name).stat().st_size
    fsync_dir(folder)
    return sizes


def read_blob(directory: str | Path, name: str) -> bytes:
    """The bytes of blob `name` (a sha256 hex) of a saved memory, verified against its name."""
    if not _SHA256.match(str(name)):
        raise InvalidArgument(f"blob {name!r}: expected a sha256 hex name")
    path = Path(os.path.abspath(directory)) / BLOBS / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"blob {name}: not stored in memory {directory}") from None
    if hashlib.sha256(data).hexdigest() != name:
        raise _corrupt(path, "its bytes do not match its sha256 name (modified or corrupted)")
    return data


# ---------------------------------------------------------------- writing
def atomic_replace_dir(
    target: Path, write: Callable[[Path], None], shred_old: bool = False
) -> None:
    """Make `target` the directory that `write(tmp)` fills, atomically with respect to crashes.

    The caller holds the writer lock. Only this call's own temp and old directories are deleted.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        write(tmp)
        fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.parent / f".{target.name}.old-{tag}"
        os.rename(target, old)
        fsync_dir(target.parent)
        os.rename(tmp, target)
        fsync_dir(target.parent)
        remove_tree(old, shred_old)
    else:
        os.rename(tmp, target)
        fsync_dir(target.parent)


def _write_meta(f: Any, meta: list[str]) -> None:
    step = 1 << 16
    for s in range(0, len(meta), step):
        f.write(("\n".join(meta[s : s + step]) + "\n").encode())


def _existing(target: Path) -> tuple[dict | None, list[dict]]:
    """(manifest, audit records) of the memory at `target` (verified), or (None, []) if none."""
    if not target.exists() or not (target / MANIFEST).exists():
        return None, []
    data = (target / MANIFEST).read_bytes()
    manifest = parse_manifest(data, target / MANIFEST)
    path = target / AUDIT
    if not path.is_file():
        return manifest, []
    raw = path.read_bytes()
    v2 = manifest["format_version"] >= 2
    if v2:
        _check_bytes(path, raw, manifest["files"].get(AUDIT))
    return manifest, parse_audit(raw, path, chained=v2)


def _check_bytes(path: Path, data: bytes, info: dict | None) -> None:
    if info is None:
        raise _corrupt(path, "is not listed in manifest.json (added after the last save)")
    if len(data) != info.get("bytes") or hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise _corrupt(path, "sha256 does not match manifest.json (modified or corrupted)")


def manifest_hash_of(target: Path) -> str | None:
    """sha256 hex of target/manifest.json's bytes, or None if there is none."""
    try:
        return hashlib.sha256((target / MANIFEST).read_bytes()).hexdigest()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def write_state(
    state: MemoryState,
    directory: str | Path,
    shred_old: bool = False,
    audit_records: list[dict] | None = None,
    hmac_key: bytes | None = None,
    wait: float | None = None,
    origin: tuple[str, str] | None = None,
) -> tuple[Path, str]:
    """Write `state` to `directory` crash-safely under the writer lock.

    Args:
        state: the memory's state.
        directory: the memory directory (absent, empty, or a memory; see `check_memory_target`).
        shred_old: overwrite the previous version's files with zeros before deleting them.
        audit_records: records appended, hash-chained, to the audit log in the same swap.
        hmac_key: also sign the manifest (HMAC-SHA256); a memory saved with a key needs it for
            every later write.
        wait: seconds to wait for another writer (None: fail at once with MemoryLocked).
        origin: (directory, manifest hash) this state was loaded from or last saved to. When it is
            this directory, the memory there must not have changed since (MemoryChanged), and its
            audit log is continued; otherwise the save replaces the memory and starts a new log.
    Returns:
        (target path, sha256 of the new manifest.json's bytes).
    """
    target = check_memory_target(directory)
    with writer_lock(target, wait, create=True):
        prepare_write(target)
        target = check_memory_target(target)
        same = origin is not None and origin[0] == str(target)
        current = manifest_hash_of(target)
        if same and current is not None and current != origin[1]:
            raise MemoryChanged(
                f"memory {target} changed on disk since this copy was loaded; saving it would undo "
                "that change: load it again and redo the edit (or use lock.update_memory)"
            )
        old_manifest, old_records = _existing(target) if same else (None, [])
        if old_manifest is None and current is not None:
            try:
                old_manifest = parse_manifest((target / MANIFEST).read_bytes(), target / MANIFEST)
            except CorruptMemory:
                old_manifest = None  # a broken memory is being replaced
        if old_manifest and old_manifest.get("hmac_sha256") and hmac_key is None:
            raise VisualMemoryError(
                f"memory {target} is signed with an HMAC key: pass --hmac-key FILE to write it"
            )
        records = chain_records(old_records, GENESIS)
        records += chain_records(audit_records or [], records[-1]["hash"] if records else GENESIS)
        text_holder: dict[str, bytes] = {}

        def write(tmp: Path) -> None:
            files = {
                "embeddings.npy": _write_file(
                    tmp, "embeddings.npy", lambda f: np.save(f, state.embeddings)
                ),
                "ids.npy": _write_file(tmp, "ids.npy", lambda f: np.save(f, state.ids)),
                "labels.npy": _write_file(tmp, "labels.npy", lambda f: np.save(f, state.labels)),
                "metadata.jsonl": _write_meta_file(tmp, state.metadata),
            }
            if state.ivf_index is not None:
                blob = state.ivf_index
                files[INDEX_FILE] = _write_file(tmp, INDEX_FILE, lambda f: f.write(blob))
            source = Path(origin[0]) if origin is not None else target
            blob_sizes = _write_blobs(tmp, source, blob_refs(state.metadata), state.new_blobs)
            if records:
                data = "".join(canonical_json(r) + "\n" for r in records).encode()
                files[AUDIT] = _write_file(tmp, AUDIT, lambda f: f.write(data))
            body = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "fingerprint": state.fingerprint,
                "dim": state.dim,
                "count": int(len(state.ids)),
                "engine": state.engine,
                "class_names": state.class_names,
                "content_hash": state.content_hash
                or content_hash(
                    state.dim, state.ids, state.labels, state.embeddings, state.metadata
                ),
                "next_id": int(state.next_id),
                "recipe": state.recipe,
                "audit": {
                    "records": len(records),
                    "head": records[-1]["hash"] if records else None,
                },
                "ivf": state.ivf,
                "files": files,
                "blobs": blobs_digest(blob_sizes) if blob_sizes else None,
            }
            manifest = {**body, "manifest_sha256": manifest_checksum(body)}
            if hmac_key is not None:
                manifest["hmac_sha256"] = manifest_checksum(body, hmac_key)
            data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
            text_holder["manifest"] = data
            _write_file(tmp, MANIFEST, lambda f: f.write(data))

        atomic_replace_dir(target, write, shred_old)
    return target, hashlib.sha256(text_holder["manifest"]).hexdigest()


def _write_meta_file(tmp: Path, meta: list[str]) -> dict:
    return _write_file(tmp, "metadata.jsonl", lambda f: _write_meta(f, meta))


# ---------------------------------------------------------------- reading
def _load_array(f: BinaryIO, path: Path, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        a = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _corrupt(path, f"not a readable .npy file ({e})") from e
    if a.dtype != np.dtype(dtype) or a.shape != shape:
        raise _corrupt(
            path, f"holds {a.dtype} {list(a.shape)}, manifest implies {dtype} {list(shape)}"
        )
    return np.ascontiguousarray(a)


def _open_dir(target: Path) -> int:
    try:
        return os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise MemoryNotFound(
            f"memory directory {target} does not exist; build or save one first"
        ) from None
    except NotADirectoryError:
        raise MemoryNotFound(
            f"memory {target} is a file, not a memory directory: give the directory that "
            "`procvision memory build` wrote"
        ) from None


def _read_once(
    target: Path, expect_fingerprint: str | None, hmac_key: bytes | None, manifest_only: bool
) -> tuple[MemoryState | None, dict, str]:
    """One read of the directory, pinned by a directory fd (a concurrent swap renames it away
    but cannot mix files of two versions into this read)."""
    dfd = _open_dir(target)
    try:
        mpath = target / MANIFEST
        try:
            with _open_in(mpath, dfd) as f:
                mbytes = f.read()
        except FileNotFoundError:
            raise _corrupt(
                mpath, "missing (not a saved memory, or its write never completed)"
            ) from None
        mhash = hashlib.sha256(mbytes).hexdigest()
        manifest = parse_manifest(mbytes, mpath, hmac_key)
        stored_fp = manifest.get("fingerprint")
        if (
            expect_fingerprint is not None
            and stored_fp is not None
            and stored_fp != expect_fingerprint
        ):
            raise FingerprintMismatch(
                f"{target}: memory was built with backbone {stored_fp!r}, expected "
                f"{expect_fingerprint!r}; use the matching backbone or rebuild the memory"
            )
        if manifest_only:
            return None, manifest, mhash
        try:
            return _read_files(target, dfd, manifest), manifest, mhash
        except FileNotFoundError as err:  # deleted under us: a writer finished its swap
            raise _corrupt(
                target / str(err.filename), "missing (listed in manifest.json)"
            ) from None
    finally:
        os.close(dfd)


def _read_files(target: Path, dfd: int, manifest: dict) -> MemoryState:
    files = manifest["files"]
    v2 = manifest["format_version"] >= 2
    for name in REQUIRED_FILES:
        if name not in files:
            raise _corrupt(target / MANIFEST, f"does not list {name}")
    for name, info in files.items():
        path = target / name
        try:
            digest, size = _file_sha256(path, dfd)
        except (FileNotFoundError, IsADirectoryError):
            raise _corrupt(path, "missing (listed in manifest.json)") from None
        if size != info.get("bytes"):
            raise _corrupt(
                path, f"truncated or extended: {size} bytes, manifest says {info.get('bytes')}"
            )
        if digest != info.get("sha256"):
            raise _corrupt(path, "sha256 does not match manifest.json (modified or corrupted)")
    names = set(os.listdir(dfd))
    if v2 and AUDIT in names and AUDIT not in files:
        raise _corrupt(target / AUDIT, "is not listed in manifest.json (added after the last save)")
    _check_blob_listing(target, dfd, names, manifest.get("blobs"))
    n, dim = int(manifest["count"]), int(manifest["dim"])
    with _open_in(target / "embeddings.npy", dfd) as f:
        emb = _load_array(f, target / "embeddings.npy", "float32", (n, dim))
    with _open_in(target / "ids.npy", dfd) as f:
        ids = _load_array(f, target / "ids.npy", "int64", (n,))
    with _open_in(target / "labels.npy", dfd) as f:
        labels = _load_array(f, target / "labels.npy", "int64", (n,))
    with _open_in(target / "metadata.jsonl", dfd) as f:
        lines = f.read().decode("utf-8").splitlines()
    if len(lines) != n:
        raise _corrupt(target / "metadata.jsonl", f"has {len(lines)} lines, expected {n}")
    # the lines are the stored (canonical JSON) form: checksummed above, hashed as they are
    meta = ["{}" if s in ("null", "") else s for s in lines]
    if len(np.unique(ids)) != n:
        raise _corrupt(target / "ids.npy", "contains duplicate ids")
    if content_hash(dim, ids, labels, emb, meta) != manifest["content_hash"]:
        raise _corrupt(target / MANIFEST, "content hash does not match the stored arrays")
    if v2 and AUDIT in files:
        with _open_in(target / AUDIT, dfd) as f:
            records = parse_audit(f.read(), target / AUDIT)
        audit = manifest.get("audit") or {}
        if len(records) != audit.get("records") or records[-1]["hash"] != audit.get("head"):
            raise _corrupt(target / AUDIT, "does not end where manifest.json says (records cut)")
    next_id = manifest.get("next_id", 0)
    if v2 and (not isinstance(next_id, int) or (n and next_id <= int(ids.max()))):
        raise _corrupt(target / MANIFEST, f"id counter {next_id!r} is not above every stored id")
    blob = None
    if INDEX_FILE in files:
        with _open_in(target / INDEX_FILE, dfd) as f:
            blob = f.read()
    return MemoryState(
        dim=dim,
        embeddings=emb,
        ids=ids,
        labels=labels,
        metadata=meta,
        fingerprint=manifest.get("fingerprint"),
        class_names=manifest.get("class_names"),
        engine=manifest["engine"],
        next_id=int(next_id or 0),
        recipe=manifest.get("recipe"),
        ivf=manifest.get("ivf"),
        ivf_index=blob,
        content_hash=manifest["content_hash"],
    )


def _check_blob_listing(target: Path, dfd: int, names: set[str], record: dict | None) -> None:
    """The blobs folder holds exactly the blobs (names and sizes) the manifest records; their
    bytes are verified when read (`read_blob`)."""
    if BLOBS not in names:
        if record:
            raise _corrupt(target / BLOBS, "missing (recorded in manifest.json)")
        return
    bfd = os.open(BLOBS, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dfd)
    try:
        sizes = {n: os.stat(n, dir_fd=bfd).st_size for n in os.listdir(bfd)}
    finally:
        os.close(bfd)
    if record != (blobs_digest(sizes) if sizes else None):
        raise _corrupt(target / BLOBS, "holds other blobs than manifest.json records (added, "
                                       "removed or resized)")  # fmt: skip


def _in_flux(target: Path, seen: str | None) -> bool:
    """A writer may be mid-swap: the manifest changed, the lock names a live holder, or a
    temp/old sibling of a live writer exists."""
    if manifest_hash_of(target) != seen or writer_active(target):
        return True
    mine = held_here(target)  # our own leftovers are live only while one of our threads writes
    return any(
        pid is not None and (mine if pid == os.getpid() else pid_alive(pid))
        for _, _, pid in leftovers(target)
    )


def _snapshot(
    directory: str | Path,
    expect_fingerprint: str | None,
    hmac_key: bytes | None,
    retry_seconds: float,
    manifest_only: bool,
) -> tuple[MemoryState | None, dict, str]:
    target = Path(os.path.abspath(directory))
    deadline = time.monotonic() + retry_seconds
    delay = 0.01
    while True:
        seen = manifest_hash_of(target)
        try:
            return _read_once(target, expect_fingerprint, hmac_key, manifest_only)
        except (CorruptMemory, MemoryNotFound) as err:
            if time.monotonic() < deadline and _in_flux(target, seen):
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
                continue
            if isinstance(err, MemoryNotFound):
                olds = [p for p, kind, _ in leftovers(target) if kind == "old"]
                if olds:
                    old = max(olds, key=lambda p: p.stat().st_mtime)
                    warnings.warn(
                        f"{target}: an interrupted save left the previous memory at {old.name}; "
                        "reading it there (the next write command puts it back)",
                        stacklevel=4,
                    )
                    return _read_once(old, expect_fingerprint, hmac_key, manifest_only)
            raise


def read_state(
    directory: str | Path,
    expect_fingerprint: str | None = None,
    hmac_key: bytes | None = None,
    retry_seconds: float = READ_RETRY_SECONDS,
) -> tuple[MemoryState, str]:
    """A verified, consistent snapshot of the memory at `directory` and its manifest's hash.

    Never changes anything on disk. A read that fails while a writer is visibly mid-swap is
    retried (bounded by `retry_seconds`); a failure with no writer about is reported at once.
    """
    state, _, mhash = _snapshot(directory, expect_fingerprint, hmac_key, retry_seconds, False)
    assert state is not None
    return state, mhash


def read_manifest(
    directory: str | Path, hmac_key: bytes | None = None, retry_seconds: float = READ_RETRY_SECONDS
) -> dict:
    """The parsed, checksum-verified manifest of a saved memory; CorruptMemory if unusable."""
    return _snapshot(directory, None, hmac_key, retry_seconds, True)[1]


def read_audit(directory: str | Path) -> list[dict]:
    """The audit records of a saved memory, oldest first ([] if none), verified against the
    manifest and along their hash chain."""
    target = Path(os.path.abspath(directory))
    for _ in range(50):
        seen = manifest_hash_of(target)
        manifest = read_manifest(target)
        path = target / AUDIT
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        if manifest_hash_of(target) != seen:
            continue  # a save swapped the directory between the two reads
        if data is None:
            return []
        v2 = manifest["format_version"] >= 2
        if v2:
            _check_bytes(path, data, manifest["files"].get(AUDIT))
        return parse_audit(data, path, chained=v2)
    raise MemoryChanged(f"memory {target} kept changing while its audit log was read; retry")


def manifest_hash(directory: str | Path, retry_seconds: float = 2.0) -> str:
    """sha256 hex of the memory's manifest.json bytes: a cheap change detector (every save
    writes a new manifest; an unchanged hash means an unchanged memory)."""
    target = Path(os.path.abspath(directory))
    deadline = time.monotonic() + retry_seconds
    while True:
        h = manifest_hash_of(target)
        if h is not None:
            return h
        if time.monotonic() >= deadline:
            if not target.exists():
                raise MemoryNotFound(
                    f"memory directory {target} does not exist; build or save one first"
                )
            raise _corrupt(target / MANIFEST, "missing (not a saved memory)")
        time.sleep(0.01)


__all__ = [
    "AUDIT",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "atomic_replace_dir",
    "chain_records",
    "check_memory_target",
    "is_memory_dir",
    "manifest_hash",
    "parse_audit",
    "prepare_write",
    "read_audit",
    "read_blob",
    "read_key_file",
    "read_manifest",
    "read_state",
    "remove_tree",
    "write_state",
]

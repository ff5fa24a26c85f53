"""The writer lock of a memory directory: an advisory `fcntl.flock` on a file beside it.

The lock file is `<parent>/.<name>.lock`, beside the memory directory and not inside it: a save
replaces the directory (a new inode), so a lock inside it would not exclude anyone. The holder
writes `{"pid", "since", "command"}` into the file so that a refused writer can say who holds it;
the file is emptied on release and never deleted (deleting a lock file races with its next user).

The lock is re-entrant within a thread (a save inside `update_memory` does not deadlock) and
excludes other threads of the same process as well as other processes. The kernel drops a flock
when its holder dies, so a `kill -9` never leaves the memory locked.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from procvision.memory.errors import InvalidArgument, MemoryLocked, MemoryNotFound


def lock_path(directory: str | Path) -> Path:
    """`<parent>/.<name>.lock`: the lock file beside the memory directory `directory`."""
    target = Path(os.path.abspath(directory))
    return target.parent / f".{target.name}.lock"


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (best effort: pids can be reused)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_holder(directory: str | Path) -> dict | None:
    """What the lock file says about its holder ({"pid", "since", "command"}), or None.

    Read-only: the file is not created. A holder whose pid is dead is reported as None.
    """
    try:
        text = lock_path(directory).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None
    try:
        info = json.loads(text) if text.strip() else None
    except ValueError:
        return None
    if not isinstance(info, dict) or not pid_alive(int(info.get("pid", -1))):
        return None
    return info


class _Held:
    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.fd: int | None = None
        self.depth = 0


_REGISTRY: dict[str, _Held] = {}
_REGISTRY_LOCK = threading.Lock()


def _held(path: Path) -> _Held:
    with _REGISTRY_LOCK:
        return _REGISTRY.setdefault(str(path), _Held())


def _locked_error(directory: Path, waited: float | None) -> MemoryLocked:
    info = lock_holder(directory)
    who = f"pid {info['pid']} since {info.get('since', '?')}" if info else "another process"
    after = f" (waited {waited:g} s)" if waited else ""
    return MemoryLocked(
        f"memory {directory} is being written by {who}{after}; retry or pass --wait SECONDS"
    )


@contextmanager
def writer_lock(
    directory: str | Path, wait: float | None = None, create: bool = False
) -> Iterator[Path]:
    """Hold the exclusive writer lock of memory `directory` for the body of the `with`.

    Args:
        directory: the memory directory (it need not exist yet).
        wait: None = raise `MemoryLocked` at once if another writer holds it; else wait up to
            `wait` seconds (polling with a short randomised back-off) before raising.
        create: create missing parent folders (for a new memory); otherwise a missing parent
            raises MemoryNotFound.
    Yields:
        the lock file's path.
    """
    target = Path(os.path.abspath(directory))
    path = lock_path(target)
    held = _held(path)
    if wait is not None and wait < 0:
        raise InvalidArgument(f"--wait: expected seconds >= 0, got {wait}")
    deadline = None if wait is None else time.monotonic() + float(wait)
    if not held.rlock.acquire(blocking=wait is not None, timeout=-1 if wait is None else wait):
        raise _locked_error(target, wait)
    try:
        if held.depth == 0:
            held.fd = _acquire_flock(target, path, deadline, wait, create)
        held.depth += 1
        try:
            yield path
        finally:
            held.depth -= 1
            if held.depth == 0 and held.fd is not None:
                fd, held.fd = held.fd, None
                try:
                    os.ftruncate(fd, 0)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
    finally:
        held.rlock.release()


def _acquire_flock(
    target: Path, path: Path, deadline: float | None, wait: float | None, create: bool
) -> int:
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise MemoryNotFound(f"memory directory {target} does not exist; build or save one first")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    delay = 0.005
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if deadline is None or now >= deadline:
                    raise _locked_error(target, wait) from None
                time.sleep(min(delay * (0.5 + random.random()), deadline - now))
                delay = min(delay * 2, 0.2)
        info = {
            "pid": os.getpid(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv[:3])[:200],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        return fd
    except BaseException:
        os.close(fd)  # closing drops the flock if it was taken
        raise


def held_here(directory: str | Path) -> bool:
    """True if a thread of this process holds the writer lock of `directory` now."""
    with _REGISTRY_LOCK:
        held = _REGISTRY.get(str(lock_path(directory)))
    return held is not None and held.depth > 0


def writer_active(directory: str | Path) -> bool:
    """True if the lock file names a live holder (read-only probe: takes no lock)."""
    return lock_holder(directory) is not None

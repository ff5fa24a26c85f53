"""Errors of the visual memory; each message names the input at fault and the fix.

Every class derives from `procvision.errors.UserError` (through `VisualMemoryError`), so a command
reports them as one line with exit code 2. Some also derive from the built-in type that callers
caught before (`ValueError`, `KeyError`, `FileNotFoundError`), so library code keeps working.
"""

from __future__ import annotations

from procvision.errors import UserError


class VisualMemoryError(UserError):
    """Base class of every error raised by `procvision.memory`."""


class FingerprintMismatch(VisualMemoryError):
    """Queries (or an expected fingerprint) come from another backbone than the memory's."""


class CorruptMemory(VisualMemoryError):
    """A stored memory is missing a file, or a file is truncated, tampered with or inconsistent."""


class MemoryNotFound(VisualMemoryError, FileNotFoundError):
    """No memory directory at the path given."""


class MemoryLocked(VisualMemoryError):
    """Another process is writing the memory (it holds the writer lock)."""


class MemoryChanged(VisualMemoryError):
    """The memory on disk changed since this copy was loaded; saving it would undo that change."""


class RecipeMismatch(VisualMemoryError):
    """Items embedded another way (backbone, transform, features) than the memory's recipe."""


class InvalidArgument(VisualMemoryError, ValueError):
    """A bad value for a memory operation (k, ids, labels, a vote method, an output path)."""


class UnknownIds(VisualMemoryError, KeyError):
    """Ids that are not in the memory."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""

"""Errors of the visual memory; each message names the input at fault and the fix."""

from __future__ import annotations

from procvision.errors import UserError


class VisualMemoryError(UserError):
    """Base class of every error raised by `procvision.memory`."""


class FingerprintMismatch(VisualMemoryError):
    """Queries (or an expected fingerprint) come from another backbone than the memory's."""


class CorruptMemory(VisualMemoryError):
    """A stored memory is missing a file, or a file is truncated, tampered with or inconsistent."""

"""The user-error type: a mistake in what the user gave (a path, a flag, a file's contents).

Commands report a `UserError` as one line naming the input and the fix, and exit 2; anything else
is a bug in procvision and keeps its traceback. Error classes of the layers (data formats, the
memory, output paths) derive from it, so a command catches exactly these and nothing broader.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; the message names the input at fault and how to fix it."""

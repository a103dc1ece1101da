"""The failures a user can cause or meet, as opposed to bugs.

The CLI's one error boundary turns these into a one-line message and exit code 2;
anything else is a bug and keeps its traceback (``--debug`` shows tracebacks always).
``InputError`` is a ``ValueError`` so library callers that catch ``ValueError`` for bad
arguments keep working.
"""

from __future__ import annotations

__all__ = ["DiskFullError", "InputError", "LatentaeError", "StateError", "TrainingStopped"]


class LatentaeError(Exception):
    """Base of every expected failure: the message says what happened and what to do."""


class InputError(LatentaeError, ValueError):
    """Bad input: an argument, a file, a shape, a preset name, a config value."""


class StateError(LatentaeError):
    """Incompatible or unreadable saved state: checkpoints, run folders, shards."""


class DiskFullError(LatentaeError, OSError):
    """No space left writing a file (the message names the path and the device)."""


class TrainingStopped(LatentaeError):
    """Training stopped on purpose and cannot go on (e.g. the non-finite-step guard)."""

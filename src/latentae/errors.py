"""The failures a user can cause or meet, as opposed to bugs.

The CLI's one error boundary turns these into a one-line message and exit code 2;
anything else is a bug and keeps its traceback (``--debug`` shows tracebacks always).
``InputError`` is a ``ValueError`` so library callers that catch ``ValueError`` for bad
arguments keep working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["DiskFullError", "InputError", "LatentaeError", "StateError", "TrainingStopped",
           "unknown_choice"]


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


def unknown_choice(what: str, name: str, valid: Iterable[str]) -> InputError:
    """The error for a name not among ``valid`` (a preset, a recipe, a sampler), with
    the close matches first and then every valid name."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return InputError(f"unknown {what} {name!r}.{hint} Valid: {', '.join(valid)}")

"""The one progress bar of long commands (train, diffusion train, sample, encode/decode,
eval): tqdm with an ETA on a terminal; when stderr is not a terminal (a log file, a
pipe, CI) one plain line every :data:`LOG_SECONDS` seconds (from the first
:data:`LOG_SECONDS` on) instead of carriage-return redraws, so a log shows where a run
is and how long it has left."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG_SECONDS = 30.0  # ours: one line per 30 s in a log (a 1-hour run: 120 lines)


class _Lines:
    """A file for tqdm that turns each redraw into one line of its own."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.out.write(text + "\n")

    def flush(self) -> None:
        self.out.flush()


def bar(iterable: Any = None, *, enabled: bool = True, file: TextIO | None = None,
        **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` to ``file`` (stderr): redrawn in place on a terminal,
    else one line per :data:`LOG_SECONDS`; nothing when not ``enabled``."""
    out = file or sys.stderr
    tty = hasattr(out, "isatty") and out.isatty()
    if not tty:
        # delay: a command shorter than LOG_SECONDS prints no bar at all (its output,
        # e.g. a one-line error, stays what it was)
        kwargs = {"mininterval": LOG_SECONDS, "maxinterval": LOG_SECONDS, "ascii": True,
                  "delay": LOG_SECONDS,
                  "dynamic_ncols": False, "ncols": 100, **kwargs}
    return tqdm(iterable, file=out if tty else _Lines(out), disable=not enabled, **kwargs)


__all__ = ["LOG_SECONDS", "bar"]

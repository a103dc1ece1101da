"""Time a diffusers twin "as shipped": in a fresh child process with PyTorch's defaults.

``latentae bench`` tunes glibc's allocator for its own process (``measure.tune_allocator``)
and runs latentae models ``channels_last``; a twin measured in the same process gets the
allocator tuning too, which is not what a user's plain diffusers script gets. A
``diffusers-default:`` column therefore loads the same weights in a new interpreter (no
allocator tuning, contiguous memory unless ``--channels-last all``, the parent's thread
count) and times it there. The parent keeps the repeats interleaved:
while the child times a call the parent waits on the pipe, so the two never compete for
the cores. The child's side is ``bench/child.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

TAG = "@@latentae-bench "  # marks the child's answers among anything else it prints


class DefaultProcessTimer:
    """A child process holding one diffusers model; times calls on request."""

    def __init__(self, twin: nn.Module, settings, name: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="latentae-twin-")
        twin.save_pretrained(self._tmp.name)  # the same weights, through diffusers itself
        cfg = {k: v for k, v in vars(settings).items() if k != "extras"}
        spec = json.dumps({"path": self._tmp.name, "cls": type(twin).__name__, "cfg": cfg,
                           "name": name, "threads": torch.get_num_threads()})
        # A new interpreter (not fork): nothing of this process's malloc settings carries.
        # It imports this very latentae (a source tree or an installed one): the folder
        # that holds the loaded package goes first on its path.
        root = str(Path(sys.modules["latentae"].__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        self._proc = subprocess.Popen([sys.executable, "-m", "latentae.bench.child", spec],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, bufsize=1, env=env)
        self._ask(None)

    def _ask(self, request: list | None):
        if request is not None:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        for line in self._proc.stdout:
            if line.startswith(TAG):
                kind, value = json.loads(line[len(TAG):])
                if kind == "error":
                    raise RuntimeError(f"bench: diffusers child process: {value}")
                return value
            print(line, end="", file=sys.stderr)  # whatever else it printed
        raise RuntimeError("bench: the diffusers child process died")

    def prepare(self, mode: str, dtype: str) -> tuple:
        """Build inputs and the call for ``mode`` in ``dtype``, run the warm-up; returns
        ``(time, peak)`` callables for that call (one child serves every dtype column)."""
        self._ask(["prepare", mode, dtype])
        return (lambda: self._ask(["time", dtype])), (lambda: self._ask(["peak", dtype]))

    def output_dtype(self, dtype: str) -> str | None:
        """The dtype of what the prepared ``dtype`` call returns (``None`` for a training
        step): lets a test see which call the child really runs."""
        return self._ask(["output_dtype", dtype])

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(json.dumps(["stop"]) + "\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
        self._tmp.cleanup()

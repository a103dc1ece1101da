"""Time a diffusers twin "as shipped": in a fresh child process with PyTorch's defaults.

``latentae bench`` tunes glibc's allocator for its own process (``measure.tune_allocator``)
and runs latentae models ``channels_last``; a twin measured in the same process gets the
allocator tuning too, which is not what a user's plain diffusers script gets. A
``diffusers-default:`` column therefore loads the same weights in a new interpreter (no
allocator tuning, contiguous memory unless ``--channels-last all``, the parent's thread
count) and times it there. The parent keeps the repeats interleaved:
while the child times a call the parent waits on the pipe, so the two never compete for
the cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

_TAG = "@@latentae-bench "  # marks the child's answers among anything else it prints
_CHILD_MAIN = "import sys, json; from latentae.bench.isolated import _child; " \
              "_child(json.loads(sys.argv[1]))"


class DefaultProcessTimer:
    """A child process holding one diffusers model; times calls on request."""

    def __init__(self, twin: nn.Module, settings, name: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="latentae-twin-")
        twin.save_pretrained(self._tmp.name)  # the same weights, through diffusers itself
        cfg = {k: v for k, v in vars(settings).items() if k != "extras"}
        spec = json.dumps({"path": self._tmp.name, "cls": type(twin).__name__, "cfg": cfg,
                           "name": name, "threads": torch.get_num_threads()})
        # A new interpreter (not fork): nothing of this process's malloc settings carries.
        # It imports this very latentae, even when that is a source tree not on sys.path.
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        self._proc = subprocess.Popen([sys.executable, "-c", _CHILD_MAIN, spec],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, bufsize=1, env=env)
        self._ask(None)

    def _ask(self, request: list | None):
        if request is not None:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        for line in self._proc.stdout:
            if line.startswith(_TAG):
                kind, value = json.loads(line[len(_TAG):])
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


def _answer(kind: str, value=None) -> None:
    print(_TAG + json.dumps([kind, value]), flush=True)


def _child(spec: dict) -> None:
    """Child main loop: load the twin, then answer prepare/time/peak requests."""
    from latentae.bench import measure, runner
    from latentae.bench.subjects import diffusers_subject

    try:
        torch.set_num_threads(spec["threads"])
        import diffusers

        vae = getattr(diffusers, spec["cls"]).from_pretrained(
            spec["path"], local_files_only=True, low_cpu_mem_usage=False)
        cfg = {**spec["cfg"], "modes": tuple(spec["cfg"]["modes"]), "tune_allocator": False}
        settings = runner.BenchSettings(**cfg)
        subject = diffusers_subject(vae.eval(), spec["name"])
        device = torch.device(settings.device)
        runner.place_module(subject, settings)
    except Exception as e:  # report, do not leave the parent waiting
        _answer("error", f"{type(e).__name__}: {e}")
        return
    _answer("ok")
    fns = {}  # dtype -> the prepared call of the current mode
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg[0] == "stop":
                return
            if msg[0] == "prepare":
                s = dataclasses.replace(subject, dtype=msg[2])
                fns[msg[2]] = runner.prepared_call(s, msg[1], settings)
                _answer("ok")
            elif msg[0] == "time":
                _answer("ok", measure.time_once(fns[msg[1]], device))
            elif msg[0] == "peak":
                _answer("ok", measure.peak_memory_bytes(fns[msg[1]], device))
            elif msg[0] == "output_dtype":
                out = fns[msg[1]]()
                _answer("ok", None if out is None else str(out.dtype).removeprefix("torch."))
        except Exception as e:
            _answer("error", f"{type(e).__name__}: {e}")


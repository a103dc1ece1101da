"""Where a training step spends its time: named stages, timed only while a
:func:`collect` block is open (``latentae bench --train-step``); otherwise a stage costs
one list check.

The task and the loop mark their parts (``with stage("g_forward"): ...``); stages do not
nest, so their sum plus the unmarked rest is the measured step. On CUDA each stage
synchronises before and after, so the time is the stage's own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_OPEN: list[dict[str, float]] = []  # the innermost collect() block's seconds per stage


@contextmanager
def collect() -> Iterator[dict[str, float]]:
    """``{stage: seconds}`` of the stages run inside the block."""
    parts: dict[str, float] = {}
    _OPEN.append(parts)
    try:
        yield parts
    finally:
        _OPEN.pop()


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as ``name`` when a :func:`collect` block is open (added up over
    repeated entries, e.g. one per gradient-accumulation round)."""
    if not _OPEN:
        yield
        return
    parts = _OPEN[-1]
    _sync()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _sync()
        parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0

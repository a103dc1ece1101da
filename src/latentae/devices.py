"""One place that turns a ``--device`` string into a ``torch.device``, with a clear error
when the device is not there (instead of a traceback from deep inside torch)."""

from __future__ import annotations

import os

import torch

from latentae.errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: this process's GPU (``LOCAL_RANK``, 0 outside ``torchrun``) if CUDA is
    available, else the CPU; otherwise ``cpu``, ``cuda`` or ``cuda:N``, checked to exist.

    Raises :class:`~latentae.errors.InputError` (a ``ValueError``) for an unknown name or
    a GPU this machine does not have.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise InputError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU build" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise InputError(f"device {name!r} requested, but {why}; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} requested, but only "
                             f"{torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type != "cpu":
        raise InputError(f"device {name!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return dev

"""Random draws for training and sampling that reproduce across devices.

A ``torch.Generator`` lives on one device and can only fill tensors there, so every draw
is made on the generator's device (CPU when there is none) and then moved to the device
the tensors live on: the same seed gives the same noise on CPU and GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from latentae.errors import InputError


def _source(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def randn(shape: tuple[int, ...], generator: torch.Generator | Sequence[torch.Generator] | None,
          *, device: torch.device | str | None = None,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` drawn from ``generator``, placed on ``device``.
    A list of ``shape[0]`` generators draws row ``i`` from generator ``i`` (as diffusers
    pipelines take one generator per sample), so a sample does not depend on its batch."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise InputError(f"{len(generator)} generators for a batch of {shape[0]}: pass one "
                             "per sample")
        rows = [randn((1, *shape[1:]), g, dtype=dtype) for g in generator]
        z = torch.cat(rows)
    else:
        z = torch.randn(shape, generator=generator, device=_source(generator), dtype=dtype)
    return z.to(device) if device is not None else z


def rand(shape: tuple[int, ...], generator: torch.Generator | None, *,
         device: torch.device | str | None = None,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape`` from ``generator``, placed on ``device``."""
    u = torch.rand(shape, generator=generator, device=_source(generator), dtype=dtype)
    return u.to(device) if device is not None else u


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None, *,
            device: torch.device | str | None = None) -> torch.Tensor:
    """Integers uniform in ``0 … high-1`` (int64) from ``generator``, placed on ``device``."""
    k = torch.randint(0, high, shape, generator=generator, device=_source(generator))
    return k.to(device) if device is not None else k

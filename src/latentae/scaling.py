"""The latent scaling factor a diffusion model needs: unit-scale latents.

A diffusion model trains on ``(z - shift_factor) · scaling_factor``. For DC-AE (a plain
autoencoder) the factor is ``1 / RMS`` of the latents with no shift (DC-AE App. C,
"we compute the root mean square of the latent features and use its multiplicative
inverse"); for Gaussian families (SD-VAE, LiteVAE) it is ``1 / std`` of the posterior
means (LDM), optionally with ``shift_factor = mean`` (SD3/FLUX). Statistics are streamed
over batches in float64, so any number of images fits in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from latentae.models.distributions import DeterministicPosterior


def _batches(images: torch.Tensor | Iterable[torch.Tensor],
             batch_size: int) -> Iterator[torch.Tensor]:
    """``(N, 3, H, W)`` tensor -> chunks of ``batch_size``; an iterable passes through
    (each item a ``(B, 3, H, W)`` batch or one ``(3, H, W)`` image)."""
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images.unsqueeze(0)
        yield from images.split(batch_size)
        return
    for item in images:
        if not isinstance(item, torch.Tensor):
            raise ValueError(f"images must be tensors in [-1, 1], got {type(item).__name__}")
        yield item.unsqueeze(0) if item.ndim == 3 else item


class _Moments:
    """Running per-channel sums of z and z² in float64."""

    def __init__(self) -> None:
        self.n = 0  # elements per channel
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None

    def add(self, z: torch.Tensor) -> None:
        z = z.detach().double().transpose(0, 1).flatten(1)  # (C, B·h·w)
        s1, s2 = z.sum(dim=1).cpu(), z.square().sum(dim=1).cpu()
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += z.shape[1]


@torch.no_grad()
def latent_scaling_factor(model, images: torch.Tensor | Iterable[torch.Tensor],
                          batch_size: int = 8, use_shift: bool = False) -> dict[str, Any]:
    """Encode ``images`` (in [-1, 1]) with ``model`` and return the latent statistics.

    Returns ``scaling_factor`` and ``shift_factor`` (floats), per-channel ``mean`` and
    ``std`` (lists), global ``mean``/``std``/``rms`` as ``global_mean``, ``global_std``,
    ``rms``, ``count`` (latent elements seen) and ``images``. Without ``use_shift``:
    deterministic posteriors (DC-AE) get ``1/rms``, Gaussian ones ``1/std`` of the mode;
    with ``use_shift``: ``shift = mean`` and ``scale = 1/std`` for both.
    """
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    acc, n_images, deterministic = _Moments(), 0, True
    try:
        for x in _batches(images, batch_size):
            lo, hi = float(x.min()), float(x.max())
            if lo < -1.001 or hi > 1.001:
                raise ValueError(f"images must be in [-1, 1], got range [{lo:.3g}, {hi:.3g}]: "
                                 "map uint8 pixels with x / 127.5 - 1")
            posterior = model.encode(x.to(param.device, param.dtype))
            deterministic = isinstance(posterior, DeterministicPosterior)
            acc.add(posterior.mode())  # (B, nz, h, w)
            n_images += x.shape[0]
    finally:
        model.train(was_training)
    if acc.n == 0:
        raise ValueError("latent_scaling_factor got no images")
    return _summary(acc, n_images, deterministic, use_shift)


def _summary(acc: _Moments, n_images: int, deterministic: bool,
             use_shift: bool) -> dict[str, Any]:
    mean_c = acc.s1 / acc.n  # (C,)
    var_c = (acc.s2 / acc.n - mean_c.square()).clamp_min(0)
    total = acc.n * mean_c.numel()
    mean = float(acc.s1.sum()) / total
    ms = float(acc.s2.sum()) / total  # mean of z²
    std, rms = math.sqrt(max(ms - mean * mean, 0.0)), math.sqrt(ms)
    if (rms if deterministic and not use_shift else std) == 0.0:
        raise ValueError("the latents are constant (zero spread): no scaling factor exists; "
                         "is the model trained?")
    if use_shift:
        shift, scale = mean, 1.0 / std
    else:
        shift, scale = 0.0, 1.0 / (rms if deterministic else std)
    return {"scaling_factor": scale, "shift_factor": shift,
            "mean": mean_c.tolist(), "std": var_c.sqrt().tolist(),
            "global_mean": mean, "global_std": std, "rms": rms,
            "count": total, "images": n_images}

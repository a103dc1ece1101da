"""The latent scaling factor a diffusion model needs: unit-scale latents.

A diffusion model trains on ``(z - shift_factor) · scaling_factor``. One rule
(:func:`suggest_factors`) serves ``latentae latent-stats``, ``latentae eval`` and the
library: for DC-AE (a plain autoencoder) the factor is ``1 / RMS`` of the latents with no
shift (DC-AE App. D, "we compute the root mean square of the latent features and use its
multiplicative inverse"); for Gaussian families (SD-VAE, LiteVAE) it is ``1 / std`` of the
posterior means (LDM), with ``shift_factor = mean`` (SD3/FLUX) where the model's config
uses a shift or the caller asks for one. Statistics are streamed over batches in
float64 (:class:`LatentMoments`), so any number of images fits in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from latentae.errors import InputError
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
            raise InputError(f"images must be tensors in [-1, 1], got {type(item).__name__}")
        yield item.unsqueeze(0) if item.ndim == 3 else item


class LatentMoments:
    """Running per-channel sums of z and z² in float64 over latents ``(B, C, h, w)``:
    the statistics both ``latentae latent-stats`` and ``latentae eval`` report."""

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

    def summary(self) -> dict[str, Any]:
        """Per-channel ``mean``, ``std``, ``rms_per_channel`` (lists), global
        ``global_mean``, ``global_std``, ``rms`` and ``count`` (latent elements)."""
        if self.n == 0:
            raise InputError("no latents were accumulated (no images?)")
        mean_c = self.s1 / self.n  # (C,)
        ms_c = self.s2 / self.n
        total = self.n * mean_c.numel()
        mean = float(self.s1.sum()) / total
        ms = float(self.s2.sum()) / total  # mean of z²
        return {"mean": mean_c.tolist(), "std": (ms_c - mean_c.square()).clamp_min(0).sqrt()
                .tolist(), "rms_per_channel": ms_c.sqrt().tolist(), "global_mean": mean,
                "global_std": math.sqrt(max(ms - mean * mean, 0.0)), "rms": math.sqrt(ms),
                "count": total}


def suggest_factors(mean: float, std: float, rms: float, deterministic: bool,
                    use_shift: bool) -> tuple[float, float]:
    """The one rule for ``(scaling_factor, shift_factor)`` from global latent statistics.

    - ``use_shift``: ``(1/std, mean)``, so ``(z − shift)·scale`` has mean 0 and std 1
      (SD3/FLUX; used where the model's config has a shift);
    - a deterministic posterior (DC-AE, a plain autoencoder): ``(1/RMS, 0)`` (DC-AE
      App. D: "the multiplicative inverse" of the latents' root mean square);
    - a Gaussian posterior (SD-VAE, LiteVAE): ``(1/std, 0)`` of the posterior means (the
      LDM convention, Rombach et al. 2022: unit-variance latents, no shift).

    Constant latents (zero spread) give ``scaling_factor = inf``.
    """
    spread = rms if deterministic and not use_shift else std
    scale = 1.0 / spread if spread > 0 else math.inf  # constant latents: no factor exists
    return scale, (mean if use_shift else 0.0)


@torch.no_grad()
def latent_scaling_factor(model, images: torch.Tensor | Iterable[torch.Tensor],
                          batch_size: int = 8, use_shift: bool | None = None
                          ) -> dict[str, Any]:
    """Encode ``images`` (in [-1, 1]) with ``model`` and return the latent statistics
    and the factors of :func:`suggest_factors`.

    Returns ``scaling_factor`` and ``shift_factor`` (floats), per-channel ``mean``,
    ``std`` and ``rms_per_channel`` (lists), global ``global_mean``, ``global_std``,
    ``rms``, ``count`` (latent elements seen) and ``images``. ``use_shift=None`` uses a
    shift where the model's config has one (``shift_factor != 0``).
    """
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    acc, n_images, deterministic = LatentMoments(), 0, True
    try:
        for x in _batches(images, batch_size):
            check_range(x)
            posterior = model.encode(x.to(param.device, param.dtype))
            deterministic = isinstance(posterior, DeterministicPosterior)
            acc.add(posterior.mode())  # (B, nz, h, w)
            n_images += x.shape[0]
    finally:
        model.train(was_training)
    if acc.n == 0:
        raise InputError("latent_scaling_factor got no images")
    return factors_from_moments(acc, deterministic, _shift(model, use_shift)) | {
        "images": n_images}


def check_range(x: torch.Tensor) -> None:
    """Images must be in [-1, 1] (a uint8 or [0, 1] batch is the usual mistake)."""
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.001 or hi > 1.001:
        raise InputError(f"images must be in [-1, 1], got range [{lo:.3g}, {hi:.3g}]: "
                         "map uint8 pixels with x / 127.5 - 1")


def _shift(model, use_shift: bool | None) -> bool:
    return bool(model.shift_factor) if use_shift is None else use_shift


def factors_from_moments(acc: LatentMoments, deterministic: bool,
                         use_shift: bool) -> dict[str, Any]:
    """``acc.summary()`` plus ``scaling_factor`` and ``shift_factor`` (the one rule);
    constant latents raise."""
    stats = acc.summary()
    scale, shift = suggest_factors(stats["global_mean"], stats["global_std"], stats["rms"],
                                   deterministic, use_shift)
    if math.isinf(scale):
        raise InputError("the latents are constant (zero spread): no scaling factor "
                         "exists; is the model trained?")
    return {"scaling_factor": scale, "shift_factor": shift, **stats}

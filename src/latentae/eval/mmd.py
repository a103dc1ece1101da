"""Latent statistics and MMD² between latents and N(0, I).

A latent diffusion model assumes its latents are roughly standard normal after
``(z − shift_factor)·scaling_factor``. ``LatentStats`` streams per-channel moments and
suggests both factors by the rule of ``latentae/scaling.py``; ``mmd2_unbiased`` measures
how far the per-position latent vectors are from N(0, I).
"""

from __future__ import annotations

import math

import torch

from latentae.scaling import LatentMoments, suggest_factors

MMD_BANDWIDTHS = (0.5, 1.0, 2.0)  # RBF sigma in units of sqrt(d); ||x−y||² ≈ 2d under N(0, I)
MMD_VERSION = ("MMD² unbiased (Gretton et al. 2012), per-position latent vectors (d = "
               "latent channels) vs N(0, I) draws, RBF kernel averaged over "
               "sigma = (0.5, 1, 2)·sqrt(d)")


def rbf_kernel(x: torch.Tensor, y: torch.Tensor, sigmas: tuple[float, ...]) -> torch.Tensor:
    """Mean over ``sigmas`` of ``exp(−|x−y|²/(2σ²))``; ``(n, d), (m, d) -> (n, m)``."""
    d2 = (x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None, :] - 2 * x @ y.T).clamp_min(0)
    return torch.stack([torch.exp(-d2 / (2 * s * s)) for s in sigmas]).mean(0)


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor,
                  sigmas: tuple[float, ...] | None = None) -> float:
    """Unbiased MMD² (Gretton et al. 2012, Eq. 3) between samples ``x (n, d)``, ``y (m, d)``.

    Diagonal terms k(x_i, x_i) are excluded, so the estimate averages to 0 when both come
    from the same distribution (it can be slightly negative). ``sigmas`` default to
    ``MMD_BANDWIDTHS · sqrt(d)``. Computed in float64.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"MMD expects (n, d) and (m, d) samples, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    n, m = x.shape[0], y.shape[0]
    if min(n, m) < 2:
        raise ValueError(f"MMD needs at least 2 samples on each side, got {n} and {m}")
    x, y = x.double(), y.double()
    if sigmas is None:
        sigmas = tuple(s * math.sqrt(x.shape[1]) for s in MMD_BANDWIDTHS)
    kxx, kyy, kxy = rbf_kernel(x, x, sigmas), rbf_kernel(y, y, sigmas), rbf_kernel(x, y, sigmas)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def mmd2_to_normal(z: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """MMD² between sample vectors ``z (n, d)`` and as many draws from N(0, I)."""
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    ref = torch.randn(z.shape, generator=generator, dtype=torch.float64)
    return mmd2_unbiased(z.double().cpu(), ref)


def latent_vectors(z: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` latents -> ``(B·h·w, C)`` per-position vectors."""
    return z.detach().movedim(1, -1).reshape(-1, z.shape[1])


class LatentStats:
    """Streaming per-channel moments of latents ``(B, C, h, w)`` in float64
    (``scaling.LatentMoments``), plus a bounded random subset of per-position vectors
    for MMD."""

    def __init__(self, channels: int, max_vectors: int = 2048, seed: int = 0) -> None:
        self.c, self.max_vectors = channels, max_vectors
        self.moments = LatentMoments()
        self._gen = torch.Generator().manual_seed(seed)
        self._vectors: list[torch.Tensor] = []
        self._kept = 0

    def update(self, z: torch.Tensor) -> None:
        z = z.detach().to("cpu", torch.float64)
        self.moments.add(z)
        v = latent_vectors(z)
        # Keep a few random positions from every image so the subset spans the data set.
        k = min(v.shape[0], max(1, 256 * z.shape[0]), self.max_vectors - self._kept)
        if k > 0:
            idx = torch.randperm(v.shape[0], generator=self._gen)[:k]
            self._vectors.append(v[idx])
            self._kept += k

    def vectors(self) -> torch.Tensor:
        return torch.cat(self._vectors) if self._vectors else torch.zeros(0, self.c)

    def summary(self, deterministic: bool = False, use_shift: bool = False) -> dict:
        """Per-channel mean/std, overall mean/std/RMS and the factors that
        ``scaling.suggest_factors`` suggests (the rule ``latentae latent-stats`` uses):
        ``deterministic`` for a plain autoencoder's latents (DC-AE), ``use_shift`` where
        the model's config has a shift."""
        s = self.moments.summary()
        scale, shift = suggest_factors(s["global_mean"], s["global_std"], s["rms"],
                                       deterministic, use_shift)
        return {"channel_mean": s["mean"], "channel_std": s["std"], "mean": s["global_mean"],
                "std": s["global_std"], "rms": s["rms"], "suggested_scaling_factor": scale,
                "suggested_shift_factor": shift, "positions": self.moments.n}

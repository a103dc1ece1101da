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


def offdiagonal_mean(k: torch.Tensor) -> torch.Tensor:
    """Mean of a set-against-itself kernel matrix ``(n, n)`` without its diagonal: the
    within-set term of the unbiased MMD² (Gretton et al. 2012, Eq. 3)."""
    n = k.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def mmd2_unbiased_from_kernels(kxx: torch.Tensor, kyy: torch.Tensor,
                               kxy: torch.Tensor) -> float:
    """Unbiased MMD² (Gretton et al. 2012, Eq. 3) from kernel matrices ``(n, n)``,
    ``(m, m)``, ``(n, m)``: the diagonals of ``kxx`` and ``kyy`` are left out."""
    return float(offdiagonal_mean(kxx) + offdiagonal_mean(kyy) - 2 * kxy.mean())


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
    return mmd2_unbiased_from_kernels(rbf_kernel(x, x, sigmas), rbf_kernel(y, y, sigmas),
                                      rbf_kernel(x, y, sigmas))


def mmd2_to_normal(z: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """MMD² between sample vectors ``z (n, d)`` and as many draws from N(0, I)."""
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    ref = torch.randn(z.shape, generator=generator, dtype=torch.float64)
    return mmd2_unbiased(z.double().cpu(), ref)


def latent_vectors(z: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` latents -> ``(B·h·w, C)`` per-position vectors."""
    return z.detach().movedim(1, -1).reshape(-1, z.shape[1])


def image_keys(first: int, count: int, per_image: int, seed: int) -> torch.Tensor:
    """Uniform keys ``(count·per_image,)`` float64 for the rows of images ``first`` …
    ``first + count − 1``, ``per_image`` rows each; image ``i``'s keys come from a
    generator seeded by ``(seed, i)``, so they do not depend on how images are batched."""
    return torch.cat([torch.rand(per_image, dtype=torch.float64, generator=torch.Generator()
                                 .manual_seed((seed << 32) + first + i)) for i in range(count)])


class RandomSubset:
    """A uniform random subset of at most ``k`` rows of a stream, without replacement:
    every row carries a uniform key and the ``k`` smallest keys are kept (bottom-k
    sampling), so the subset spans the whole stream whatever its length."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.rows: torch.Tensor | None = None
        self.keys = torch.zeros(0, dtype=torch.float64)

    def update(self, rows: torch.Tensor, keys: torch.Tensor) -> None:
        """Offer ``rows (n, ...)`` with their keys ``(n,)``."""
        if self.k < 1:
            return
        if len(self.keys) >= self.k:  # only rows that beat the largest kept key can enter
            take = keys < self.keys.max()
            rows, keys = rows[take], keys[take]
            if not len(keys):
                return
        rows = rows if self.rows is None else torch.cat([self.rows, rows])
        keys = torch.cat([self.keys, keys])
        if len(keys) > self.k:
            idx = keys.topk(self.k, largest=False).indices
            rows, keys = rows[idx], keys[idx]
        self.rows, self.keys = rows, keys

    def values(self) -> torch.Tensor | None:
        """The kept rows, ordered by key (``None`` before any update)."""
        return None if self.rows is None else self.rows[self.keys.argsort()]


class LatentStats:
    """Streaming per-channel moments of latents ``(B, C, h, w)`` in float64
    (``scaling.LatentMoments``), plus a uniform random subset of at most ``max_vectors``
    per-position vectors from all images (:class:`RandomSubset`) for MMD."""

    def __init__(self, channels: int, max_vectors: int = 2048, seed: int = 0) -> None:
        self.c, self.seed = channels, seed
        self.moments = LatentMoments()
        self._subset = RandomSubset(max_vectors)
        self._images = 0

    def update(self, z: torch.Tensor) -> None:
        z = z.detach().to("cpu", torch.float64)
        self.moments.add(z)
        b, _, h, w = z.shape
        self._subset.update(latent_vectors(z), image_keys(self._images, b, h * w, self.seed))
        self._images += b

    def vectors(self) -> torch.Tensor:
        v = self._subset.values()
        return torch.zeros(0, self.c) if v is None else v

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

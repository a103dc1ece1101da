"""Posteriors returned by ``encode``: a diagonal Gaussian (SD-VAE, LiteVAE) and a
deterministic point mass (DC-AE) with the same interface, so training and evaluation
treat every family alike."""

from __future__ import annotations

import math

import torch


class DiagonalGaussian:
    """``N(mean, diag(exp(logvar)))`` from encoder moments ``(B, 2·nz, h, w)``.

    ``logvar`` is clamped to [-30, 20] (as LDM) so ``exp`` never overflows.
    """

    def __init__(self, moments: torch.Tensor) -> None:
        if moments.ndim != 4 or moments.shape[1] % 2:
            raise ValueError(f"moments must be (B, 2*nz, h, w), got {tuple(moments.shape)}")
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised draw ``mean + std·eps``, ``(B, nz, h, w)``."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device,
                          dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over latent elements, per sample: ``(B,)``, in nats."""
        return 0.5 * (self.mean.square() + self.var - 1.0 - self.logvar).sum(dim=(1, 2, 3))

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``x`` under q, summed per sample: ``(B,)``, nats."""
        return 0.5 * (math.log(2 * math.pi) + self.logvar
                      + (x - self.mean).square() / self.var).sum(dim=(1, 2, 3))


class DeterministicPosterior:
    """A point mass at ``z`` (plain autoencoders): ``sample() == mode() == z``, ``kl() == 0``."""

    def __init__(self, z: torch.Tensor) -> None:
        self.mean = z
        self.std = torch.zeros_like(z)
        self.logvar = torch.full_like(z, -math.inf)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        return self.mean.new_zeros(self.mean.shape[0])

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("a deterministic posterior has no likelihood (plain autoencoder)")

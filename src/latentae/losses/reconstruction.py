"""Reconstruction losses and the KL term. Inputs are images ``(B, C, H, W)`` in [-1, 1]
(reconstruction first, target second); every loss returns a scalar mean.

Normalisation convention: reconstruction terms are means over all values. LDM (Rombach
et al.) sums its per-pixel L1 + LPIPS over the image instead and puts KL weight 1e-6 on
the per-image KL sum; dividing that whole objective by the number of image values gives
our convention, so :func:`kl_loss` divides the per-image KL by ``C·H·W`` and the LDM
weight 1e-6 keeps its meaning.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from latentae.nn.wavelets import dwt2


def l1_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean absolute error."""
    return (x_hat - x).abs().mean()


def l2_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error."""
    return (x_hat - x).square().mean()


def charbonnier_loss(x_hat: torch.Tensor, x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of ``sqrt((x_hat - x)² + eps²)``: a smooth L1 (Charbonnier et al. 1994)."""
    return torch.sqrt((x_hat - x).square() + eps * eps).mean()


def wavelet_charbonnier_loss(x_hat: torch.Tensor, x: torch.Tensor,
                             eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier loss between the high-frequency level-1 Haar bands (LH, HL, HH) of the
    two images, each divided by 2 (LiteVAE §4.3 "Additional loss functions", App. G).

    App. G's ``decode`` returns ``wavelet_recon = dwt(x_hat, level=1) / 2`` (or, for a
    wavelet-output decoder, its output, the same quantity): level 1 only, scaled by 1/2,
    which is what this compares, against ``dwt(x, level=1) / 2``. The paper does not
    state ε; 1e-3 is ours. ``(B, C, H, W)`` with ``H, W`` even -> scalar mean.
    """
    c = x.shape[1]
    # (B, 4C, H/2, W/2) = [LL, LH, HL, HH] / 2; drop the LL block of C channels.
    return charbonnier_loss(dwt2(x_hat)[:, c:] / 2, dwt2(x)[:, c:] / 2, eps)


def gaussian_kernel1d(sigma: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``ceil(3σ)``: ``(2r+1,)``."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur per channel with reflect padding; same shape as ``x``."""
    k = gaussian_kernel1d(sigma, x.dtype, x.device)
    r, c = k.numel() // 2, x.shape[1]
    if min(x.shape[-2:]) <= r:
        raise ValueError(f"image {tuple(x.shape[-2:])} too small for a blur of sigma {sigma}")
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along W
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along H


def highpass_l1_loss(x_hat: torch.Tensor, x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """L1 between ``x - h(x)`` and ``x_hat - h(x_hat)``, ``h`` a Gaussian blur of std
    ``sigma`` pixels (LiteVAE §4; the paper does not state σ, 1.0 is our default)."""
    return l1_loss(x_hat - gaussian_blur(x_hat, sigma), x - gaussian_blur(x, sigma))


def kl_loss(posterior, image: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image (summed over latent elements), averaged over the
    batch and divided by the number of values ``C·H·W`` of one ``image`` (see the module
    docstring). A deterministic posterior gives 0."""
    return posterior.kl().mean() / image[0].numel()

"""PSNR and SSIM on uint8-quantized images, per image (then averaged by the caller).

Both take ``(B, 3, H, W)`` batches, either uint8 or floats in [-1, 1] (quantized by
``latentae.io.to_uint8`` first: metrics see what would be saved), and return ``(B,)``
float64 on the CPU.
"""

from __future__ import annotations

import math

import torch

from latentae.io import to_uint8

PSNR_VERSION = "PSNR per image on uint8, peak 255, then mean"
SSIM_VERSION = ("SSIM (Wang et al. 2004) Gaussian sigma=1.5 11x11, K=(0.01, 0.03), L=255, "
                "population statistics, per channel, borders of 5 px cropped (= scikit-image)")


def as_uint8_float64(x: torch.Tensor) -> torch.Tensor:
    """uint8 tensor, or [-1, 1] floats quantized by the protocol's rule -> float64 CPU."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(x.shape)}")
    u = x if x.dtype == torch.uint8 else to_uint8(x)
    return u.detach().to("cpu", torch.float64)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape:
        raise ValueError(f"image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    return as_uint8_float64(x), as_uint8_float64(y)


def psnr_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``10·log10(255² / MSE)`` per image over all pixels and channels; ``inf`` if equal."""
    a, b = _check_pair(x, y)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)  # 1/0 = inf for identical images


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    # scipy.ndimage's kernel: radius int(truncate·sigma + 0.5) = 5 -> 11 taps, normalized.
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def _band(n: int, w: torch.Tensor) -> torch.Tensor:
    """``(n − k + 1, n)`` matrix whose rows are the window shifted by one: a valid 1-D
    correlation as a matmul (float64 matmuls are fast; float64 depthwise convs are not)."""
    k = w.numel()
    m = torch.zeros(n - k + 1, n, dtype=w.dtype)
    for i in range(k):
        m.diagonal(i).copy_(w[i].expand(n - k + 1))
    return m


def _filter_valid(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``(B, C, H, W)``, valid part only (H−10, W−10).

    scikit-image filters with border reflection then crops 5 px; the cropped region
    never touches the border, so the valid correlation gives the same numbers.
    """
    bh, bw = _band(x.shape[-2], w), _band(x.shape[-1], w)
    return bh @ x @ bw.T


def ssim_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image (mean over channels and positions); float64 ``(B,)``."""
    a, b = _check_pair(x, y)
    w = _gaussian_window()
    if min(a.shape[-2:]) < w.numel():
        raise ValueError(f"SSIM needs images of at least {w.numel()}x{w.numel()}, "
                         f"got {tuple(a.shape[-2:])}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _filter_valid(a, w), _filter_valid(b, w)
    vx = _filter_valid(a * a, w) - mx * mx      # population (co)variances
    vy = _filter_valid(b * b, w) - my * my
    vxy = _filter_valid(a * b, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def mean_finite(values: torch.Tensor) -> float:
    """Mean of per-image values; ``inf`` stays ``inf`` (PSNR of identical images)."""
    v = values.double()
    return math.inf if torch.isinf(v).any() else float(v.mean())

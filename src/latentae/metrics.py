"""The evaluation metrics as plain functions, for use inside training loops.

Same code and protocol as ``latentae eval`` (see ``latentae.eval``): images are
``(B, 3, H, W)`` in [-1, 1] (or uint8) and are quantized to uint8 before PSNR/SSIM/LPIPS/
FID. ``reduction="none"`` returns per-image values. The LPIPS and Inception networks are
loaded once per device from the weight cache (``latentae weights fetch``).
"""

from __future__ import annotations

import torch

from latentae.eval.fid import FeatureStats, fid_from_stats, resize_for_inception
from latentae.eval.inception import load_inception
from latentae.eval.lpips import load_lpips
from latentae.eval.mmd import latent_vectors, mmd2_to_normal, mmd2_unbiased
from latentae.eval.psnr_ssim import mean_finite, psnr_per_image, ssim_per_image
from latentae.io import to_uint8

__all__ = ["fid", "inception_features", "lpips", "mmd", "psnr", "ssim"]
_NETS: dict[tuple[str, str], torch.nn.Module] = {}


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor | float:
    if reduction == "none":
        return values
    if reduction == "mean":
        return mean_finite(values)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor | float:
    """PSNR in dB per image on uint8 values (peak 255), then the mean."""
    return _reduce(psnr_per_image(x, y), reduction)


def ssim(x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor | float:
    """SSIM (Gaussian σ=1.5 11×11, K=(0.01, 0.03), L=255) per image, then the mean."""
    return _reduce(ssim_per_image(x, y), reduction)


def _net(kind: str, device: torch.device) -> torch.nn.Module:
    key = (kind, str(device))
    if key not in _NETS:
        _NETS[key] = load_inception(device) if kind == "inception" else load_lpips(kind, device)
    return _NETS[key]


@torch.no_grad()
def lpips(x: torch.Tensor, y: torch.Tensor, net: str = "alex",
          reduction: str = "mean") -> torch.Tensor | float:
    """LPIPS v0.1 on the uint8-quantized images (no gradient; for the loss use
    ``latentae.eval.lpips.load_lpips("vgg")`` directly)."""
    q = [to_uint8(t).float() / 127.5 - 1 for t in (x, y)]
    d = _net(net, x.device)(*q).cpu().double()
    return _reduce(d, reduction)


@torch.no_grad()
def inception_features(x: torch.Tensor, protocol: str = "tf1") -> torch.Tensor:
    """Images ``(B, 3, H, W)`` in [-1, 1] -> Inception pool3 features ``(B, 2048)``."""
    return _net("inception", x.device)(resize_for_inception(x, protocol))


def _stats(a: torch.Tensor | FeatureStats, protocol: str) -> FeatureStats:
    if isinstance(a, FeatureStats):
        return a
    f = inception_features(a, protocol) if a.ndim == 4 else a
    s = FeatureStats(f.shape[1])
    s.update(f)
    return s


def fid(a: torch.Tensor | FeatureStats, b: torch.Tensor | FeatureStats,
        protocol: str = "tf1") -> float:
    """Fréchet Inception distance between two sets given as images ``(N, 3, H, W)``,
    features ``(N, D)`` or accumulated ``FeatureStats``."""
    return fid_from_stats(_stats(a, protocol), _stats(b, protocol))


def mmd(z: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """Unbiased MMD² between latents (``(B, C, h, w)`` -> per-position vectors, or
    ``(n, d)`` vectors) and ``y`` (default: as many N(0, I) draws)."""
    v = latent_vectors(z) if z.ndim == 4 else z
    if y is None:
        return mmd2_to_normal(v)
    return mmd2_unbiased(v, latent_vectors(y) if y.ndim == 4 else y)

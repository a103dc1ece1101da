"""rFID: Inception pool3 features, streaming float64 statistics, Fréchet distance.

Protocol (``docs/evaluation.md``): images -> uint8 by ``round(clamp(127.5·(x+1), 0, 255))`` -> float
-> 299² with TF1-style bilinear resampling (no half-pixel centres, as the TF graph and
torch-fidelity do) -> x/128 − 1. The ``pytorch-fid`` protocol (torch bilinear,
align_corners=False, x/255·2 − 1) is available for comparison.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from latentae.io import to_uint8

PROTOCOLS = ("tf1", "pytorch-fid")
MIN_IMAGES_WARNING = 2048


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 ``resize_bilinear(align_corners=False, half_pixel_centers=False)``.

    Output pixel ``i`` samples source coordinate ``i·in/out`` (no half-pixel shift),
    interpolating along the width first, then the height, as TF's kernel does.
    ``(B, C, H, W)`` float -> ``(B, C, *size)``.
    """
    def axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(n_out, dtype=torch.float32, device=x.device) * (n_in / n_out)
        i0 = src.floor().long().clamp(max=n_in - 1)
        return i0, (i0 + 1).clamp(max=n_in - 1), (src - i0.float()).to(x.dtype)

    h0, h1, wh = axis(x.shape[-2], size[0])
    w0, w1, ww = axis(x.shape[-1], size[1])
    left, right = x[..., w0], x[..., w1]            # (B, C, H, W')
    x = left + (right - left) * ww
    top, bottom = x[..., h0, :], x[..., h1, :]       # (B, C, H', W')
    return top + (bottom - top) * wh[:, None]


def resize_for_inception(x: torch.Tensor, protocol: str = "tf1") -> torch.Tensor:
    """Images ``(B, 3, H, W)`` in [-1, 1] -> Inception input ``(B, 3, 299, 299)``.

    The images are quantized to uint8 first (metrics run on what would be saved).
    """
    u = to_uint8(x).float()  # (B, 3, H, W) in {0, …, 255}
    if protocol == "tf1":
        return resize_bilinear_tf1(u, (299, 299)) / 128.0 - 1.0  # [-1, 0.9921875]
    if protocol == "pytorch-fid":
        u = F.interpolate(u / 255.0, size=(299, 299), mode="bilinear", align_corners=False)
        return 2.0 * u - 1.0
    raise ValueError(f"unknown FID protocol {protocol!r}; choose from {PROTOCOLS}")


class FeatureStats:
    """Streaming mean and covariance of feature vectors in float64.

    Accumulates the count, the sum and the sum of outer products, so memory is
    ``O(D²)`` whatever the number of images; ``cov`` is the unbiased (n−1) estimate
    as ``numpy.cov`` (pytorch-fid, torch-fidelity). While there are at most ``D``
    vectors they are also kept, for the exact low-rank Fréchet distance (``fid_from_stats``).
    """

    def __init__(self, dim: int = 2048) -> None:
        self.dim, self.n = dim, 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.sum_outer = torch.zeros(dim, dim, dtype=torch.float64)
        self.rows: list[torch.Tensor] | None = []

    def update(self, feats: torch.Tensor) -> None:
        f = feats.detach().to("cpu", torch.float64).reshape(-1, self.dim)  # (B, D)
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.sum_outer += f.T @ f
        if self.rows is not None:
            self.rows = self.rows + [f] if self.n <= self.dim else None

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"FID needs at least 2 images, got {self.n}")
        mu = self.sum / self.n
        cov = (self.sum_outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.numpy(), cov.numpy()


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigh-based;
    eigenvalues below 0 from rounding are clipped to 0)."""
    a = (a + a.T) / 2
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray,
                     cov2: np.ndarray) -> float:
    """``|mu1−mu2|² + tr(S1) + tr(S2) − 2 tr((S1^½ S2 S1^½)^½)`` in float64.

    ``tr((S1 S2)^½) = tr((S1^½ S2 S1^½)^½)``: the symmetric form has real, non-negative
    eigenvalues, so no complex parts to discard (scipy.linalg.sqrtm's usual problem).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    s1 = sqrtm_psd(cov1)
    m = s1 @ cov2 @ s1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_covmean)


def frechet_distance_lowrank(fa: np.ndarray, fb: np.ndarray) -> float:
    """The same distance from the feature matrices ``(n, D)``, ``(m, D)`` when n, m ≤ D.

    With centred ``A``, ``B``: ``S1 = AᵀA/(n−1)``, ``S2 = BᵀB/(m−1)``, and the non-zero
    eigenvalues of ``S1·S2`` are the squared singular values of ``A·Bᵀ/√((n−1)(m−1))``,
    so ``tr((S1 S2)^½)`` is that matrix's nuclear norm: O(n²D) instead of O(D³).
    """
    fa, fb = np.asarray(fa, np.float64), np.asarray(fb, np.float64)
    n, m = fa.shape[0], fb.shape[0]
    mu1, mu2 = fa.mean(0), fb.mean(0)
    a, b = fa - mu1, fb - mu2
    tr1, tr2 = (a * a).sum() / (n - 1), (b * b).sum() / (m - 1)
    tr_covmean = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
    diff = mu1 - mu2
    return float(diff @ diff + tr1 + tr2 - 2 * tr_covmean)


def frechet_distance_onesided(fa: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """The distance between the features ``fa (n, D)``, n ≤ D, and moments ``(mu2, cov2)``
    (a reference file's): with centred ``A``, ``S1 = AᵀA/(n−1)`` and the non-zero
    eigenvalues of ``S1·S2`` are those of ``A·S2·Aᵀ/(n−1)`` (n × n), so no D × D
    square root is needed: O(n·D²) instead of O(D³)."""
    fa = np.asarray(fa, np.float64)
    mu2, cov2 = np.asarray(mu2, np.float64), np.asarray(cov2, np.float64)
    n = fa.shape[0]
    mu1 = fa.mean(0)
    a = fa - mu1
    m = a @ cov2 @ a.T / (n - 1)                                  # (n, n), symmetric PSD
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() / (n - 1) + np.trace(cov2) - 2 * tr_covmean)


def fid_from_stats(a: FeatureStats, b: FeatureStats, warn: bool = True) -> float:
    """Fréchet distance between two accumulated feature sets; warns below 2048 images."""
    if warn and min(a.n, b.n) < MIN_IMAGES_WARNING:
        warnings.warn(f"FID from {min(a.n, b.n)} images (< {MIN_IMAGES_WARNING}) is biased "
                      "upwards and not comparable with published numbers; the covariance "
                      "is rank-deficient", stacklevel=2)
    if min(a.n, b.n) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {a.n} and {b.n}")
    if a.rows is not None and b.rows is not None:  # few images: exact and fast
        return frechet_distance_lowrank(torch.cat(a.rows).numpy(), torch.cat(b.rows).numpy())
    if a.rows is not None or b.rows is not None:   # few samples vs a big reference
        few, big = (a, b) if a.rows is not None else (b, a)
        return frechet_distance_onesided(torch.cat(few.rows).numpy(), *big.mean_cov())
    return frechet_distance(*a.mean_cov(), *b.mean_cov())

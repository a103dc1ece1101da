"""Online diffusability diagnostics (eval/diagnostics.py) against a NumPy computation on
a fixed tensor, with the average-pooling / nearest-upsampling autoencoder of
test_regularisers (its latent is the block mean, so every number has a closed form)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_regularisers import PoolAE

from latentae.eval.diagnostics import PREFIX, diagnostics, logged, plot_diagnostics

F = 4


def image_batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return (torch.rand(6, 3, 32, 32, generator=g) * 2 - 1).double().float()


def pool(a: np.ndarray, s: int) -> np.ndarray:
    n, c, h, w = a.shape
    return a.reshape(n, c, h // s, s, w // s, s).mean(axis=(3, 5))


def up(a: np.ndarray, s: int) -> np.ndarray:
    return a.repeat(s, axis=-2).repeat(s, axis=-1)


def uint8(a: np.ndarray) -> np.ndarray:
    return np.round(np.clip(127.5 * (a.astype(np.float32) + 1), 0, 255))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((uint8(a) - uint8(b)) ** 2).mean(axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(255.0 ** 2 / mse)))


def hf_fraction(maps: np.ndarray) -> float:
    maps = maps - maps.mean(axis=(-2, -1), keepdims=True)
    p = (np.abs(np.fft.fft2(maps, norm="ortho")) ** 2).sum(0)          # (C, h, w)
    fy, fx = np.fft.fftfreq(maps.shape[-2]), np.fft.fftfreq(maps.shape[-1])
    high = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) > 0.25
    return float(p[:, high].sum() / p.sum())


def rbf_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * sigma ** 2))
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
                 + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def test_diagnostics_match_numpy():
    x = image_batch()
    rng_before = torch.get_rng_state()
    d = diagnostics(PoolAE(F), x, noise_levels=(0.0, 0.5), seed=3)
    assert torch.equal(rng_before, torch.get_rng_state())  # the training RNG is untouched
    a = x.double().numpy()
    z = pool(a, F)                                                       # (6, 3, 8, 8)
    # per-channel moments; a deterministic posterior: scaling factor 1 / RMS, no shift
    assert [d[f"latent_mean_c{c}"] for c in range(3)] == pytest.approx(
        z.mean(axis=(0, 2, 3)).tolist(), abs=1e-6)
    assert [d[f"latent_std_c{c}"] for c in range(3)] == pytest.approx(
        z.std(axis=(0, 2, 3)).tolist(), rel=1e-5)
    scale = 1 / math.sqrt((z ** 2).mean())
    assert d["scaling_factor"] == pytest.approx(scale, rel=1e-5)
    assert d["shift_factor"] == 0.0
    assert d["latent_hf_fraction"] == pytest.approx(hf_fraction(z * scale), rel=1e-5)
    assert d["image_hf_fraction"] == pytest.approx(hf_fraction(pool(a, F)), rel=1e-5)
    assert d["psnr"] == pytest.approx(psnr(a, up(z, F)), rel=1e-4)
    assert d["equivariance_psnr_x2"] == pytest.approx(
        psnr(pool(a, 2), up(pool(z, 2), F)), rel=1e-4)
    # σ = 0 is the plain reconstruction; noise costs PSNR
    assert d["noise_psnr_sigma0"] == pytest.approx(d["psnr"])
    assert d["noise_psnr_sigma0.5"] < d["psnr"]
    # whole-code MMD² at σ = √d against the reference draws (seeds 3, 4, 5), their mean
    codes = (z * scale).reshape(len(z), -1)
    dim = codes.shape[1]
    refs = [torch.randn(codes.shape, generator=torch.Generator().manual_seed(3 + r),
                        dtype=torch.float64).numpy() for r in range(3)]
    expected = np.mean([rbf_mmd2(codes, r, math.sqrt(dim)) for r in refs])
    assert d["mmd2"] == pytest.approx(expected, rel=1e-6)
    nulls = [rbf_mmd2(refs[i], refs[i + 1], math.sqrt(dim)) for i in range(2)]
    assert d["mmd2_null"] == pytest.approx(math.sqrt(np.mean(np.square(nulls))), rel=1e-6)


def test_logged_names_and_plot(tmp_path):
    values = {"psnr": 20.0, "mmd2": None}
    assert logged(values) == {PREFIX + "psnr": 20.0}
    records = [{"step": s, PREFIX + "psnr": 20.0 + s, PREFIX + "latent_std_c0": 1.0}
               for s in (1, 2)]
    assert plot_diagnostics(records, tmp_path / "d.png").stat().st_size > 1000
    assert plot_diagnostics([{"step": 1, "loss": 1.0}], tmp_path / "e.png") is None

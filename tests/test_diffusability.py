"""Latent diffusability diagnostics: the spectrum of white noise is flat and of a sinusoid
peaks at its frequency; the equivariance PSNR of a pooling "autoencoder" equals a direct
computation; the table-6 whole-code MMD² equals a direct NumPy computation; the report
runs on a tiny real autoencoder and plots."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentae.errors import InputError
from latentae.eval import diffusability as dm
from latentae.eval import spectrum as sp


# --- spectrum ------------------------------------------------------------------------
def test_white_noise_spectrum_is_flat():
    g = torch.Generator().manual_seed(0)
    acc = sp.SpectrumAccumulator()
    for _ in range(4):
        acc.update(2.0 * torch.randn(64, 1, 32, 32, generator=g))  # variance 4
    freq, curve = sp.radial_average(acc.mean_power())
    assert len(freq) == 17 and freq[-1] == 0.5 and curve[0, 0] == pytest.approx(0, abs=1e-20)
    # ortho FFT: E|F|² = σ² = 4 at every non-DC frequency; >= 2,048 independent values
    # per bin, so 12% is over 5 standard errors
    assert np.all(np.abs(curve[0, 1:] / 4.0 - 1) < 0.12), curve[0, 1:] / 4.0
    # a flat spectrum puts the share of frequencies above 0.25 cycles/sample above it
    r = sp.radial_frequency(32, 32)
    want = float(((r > 0.25).sum()) / (r.numel() - 1))  # the DC term carries no energy
    assert sp.high_frequency_fraction(acc.mean_power()) == pytest.approx(want, abs=0.01)


@pytest.mark.parametrize("ky,kx", [(0, 5), (3, 4), (6, 0)])
def test_sinusoid_spectrum_peaks_at_its_frequency(ky, kx):
    n = 32
    i = torch.arange(n, dtype=torch.float64)
    phase = torch.rand(16, 1, 1, 1, dtype=torch.float64) * 2 * math.pi
    x = torch.cos(2 * math.pi * (ky * i[:, None] + kx * i[None, :]) / n + phase)  # (16,1,n,n)
    freq, curve = sp.radial_average(sp.power(x.float()) / 16)
    want = math.hypot(ky, kx) / n                                    # 5/32, 5/32, 6/32
    assert freq[int(np.argmax(curve[0]))] == pytest.approx(round(want * n) / n)
    assert curve[0].max() > 100 * np.delete(curve[0], np.argmax(curve[0])).max()
    assert sp.high_frequency_fraction(sp.power(x.float())) == pytest.approx(0.0, abs=1e-9)


def test_channel_groups_cover_the_channels_in_order():
    assert sp.channel_groups(4) == [("ch 0", [0]), ("ch 1", [1]), ("ch 2", [2]), ("ch 3", [3])]
    g = sp.channel_groups(32)
    assert [n for n, _ in g] == ["ch 0-7", "ch 8-15", "ch 16-23", "ch 24-31"]
    with pytest.raises(InputError):
        sp.channel_groups(0)


# --- scale equivariance ---------------------------------------------------------------
class _Mean:
    def __init__(self, z):
        self.mean = z  # a posterior with .mean only (no mode())


class PoolAutoencoder:
    """encode = f×f average pooling, decode = f× nearest upsampling."""

    def __init__(self, f: int = 4, posterior: bool = True) -> None:
        self.f, self.posterior = f, posterior

    def encode(self, x):
        z = F.avg_pool2d(x, self.f)
        return _Mean(z) if self.posterior else z

    def decode(self, z):
        return F.interpolate(z, scale_factor=self.f, mode="nearest")


def _psnr_direct(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of 10·log10(255²/MSE) on uint8-quantized numpy arrays."""
    q = lambda t: np.round(np.clip(127.5 * (t.double().numpy() + 1), 0, 255))  # noqa: E731
    mse = ((q(a) - q(b)) ** 2).mean(axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(255.0**2 / mse)))


@pytest.mark.parametrize("posterior", [True, False])
def test_equivariance_of_a_pooling_autoencoder_is_the_direct_value(posterior):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 3, 32, 32, generator=g) * 2 - 1).clamp(-1, 1)
    ae = PoolAutoencoder(4, posterior)
    r = dm.diffusability_report(ae, x, scaling_factor=1.0, batch_size=4, repeats=2)
    for s in (1, 2, 4):  # latent 8x8: every factor divides
        target = F.avg_pool2d(x, s) if s > 1 else x
        rec = F.interpolate(F.avg_pool2d(x, 4 * s), scale_factor=4, mode="nearest")
        assert r["equivariance_psnr"][f"x{s}"] == pytest.approx(_psnr_direct(target, rec),
                                                                rel=1e-9)
    assert r["summary"]["equivariance_psnr_x2"] == r["equivariance_psnr"]["x2"]
    r6 = dm.diffusability_report(PoolAutoencoder(4), x[:, :, :24, :24], scaling_factor=1.0,
                                 repeats=1)
    assert r6["equivariance_psnr"]["x4"] is None  # a 6x6 latent: x4 does not divide


def test_posterior_latent_reads_every_encode_output():
    z = torch.randn(1, 4, 2, 2)
    from latentae.models.distributions import DeterministicPosterior, DiagonalGaussian
    assert dm.posterior_latent(DeterministicPosterior(z)) is z
    assert torch.equal(dm.posterior_latent(DiagonalGaussian(torch.cat([z, z], 1))), z)
    assert dm.posterior_latent(z) is z
    with pytest.raises(InputError, match="mode"):
        dm.posterior_latent("nope")


# --- MMD -----------------------------------------------------------------------------
def _mmd_direct(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))  # noqa: E731
    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return sxx + syy - 2 * sxy


def test_whole_code_mmd_equals_the_direct_computation():
    rng = np.random.default_rng(0)
    z = rng.normal(0.3, 1.5, size=(9, 4, 4, 4))                  # 9 codes of d = 64
    ref = rng.normal(size=(7, 64))
    sig = (5.0, 11.3, 25.0)
    got = dm.mmd2_whole_code(torch.from_numpy(z), torch.from_numpy(ref), sig)
    want = [_mmd_direct(z.reshape(9, -1), ref, s) for s in sig]
    assert np.allclose(got, want, rtol=1e-10, atol=1e-14)
    # the repeated version: mean/std over reference draws with seeds 0, 1, 2
    r = dm.mmd_whole_code(torch.from_numpy(z), sig, repeats=3, seed=0)
    draws = [torch.randn((9, 64), generator=torch.Generator().manual_seed(i),
                         dtype=torch.float64).numpy() for i in range(3)]
    runs = np.array([[_mmd_direct(z.reshape(9, -1), d, s) for s in sig] for d in draws])
    assert np.allclose(r["mmd2"], runs.mean(0), rtol=1e-10)
    assert np.allclose(r["mmd2_std"], runs.std(0), rtol=1e-8)
    assert r["dim"] == 64 and r["n_codes"] == 9 and r["sigma"] == list(sig)


def test_whole_code_mmd_separates_normal_from_shifted_codes():
    g = torch.Generator().manual_seed(5)
    normal = torch.randn(64, 4, 8, 8, generator=g, dtype=torch.float64)
    a = dm.mmd_whole_code(normal, (16.0,), repeats=3)["mmd2"][0]
    b = dm.mmd_whole_code(normal * 1.5 + 0.3, (16.0,), repeats=3)["mmd2"][0]
    assert abs(a) < 0.01 and b > 0.05


def test_the_two_mmd_variants_are_named_apart():
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    r = dm.diffusability_report(PoolAutoencoder(8), x, scaling_factor=2.0,
                                shift_factor=0.1, repeats=2)
    assert "whole flattened latent codes" in r["protocol"]["mmd_whole_code"]
    assert "per-position" in r["protocol"]["mmd_per_position"]
    assert set(r["summary"]) >= {"mmd2_whole_code_sigma25", "mmd2_whole_code_sigma500",
                                 "mmd2_per_position"}
    assert r["mmd_whole_code"]["dim"] == 3 * 4 * 4 and r["mmd_per_position"]["dim"] == 3
    assert r["mmd_per_position"]["vectors"] == 4 * 16


# --- on a tiny real autoencoder ---------------------------------------------------------
def test_report_and_plot_on_a_tiny_autoencoder(tmp_path):
    from latentae.registry import create_model

    model = create_model("sdvae-tiny").eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    r = dm.diffusability_report(model, x, scaling_factor=model.scaling_factor,
                                shift_factor=model.shift_factor, batch_size=2, repeats=2)
    c = model.latent_channels
    assert r["n_images"] == 3 and r["latent_shape"][0] == c
    assert len(r["spectrum"]["latent"]) == min(c, 4)
    assert 0 <= r["summary"]["latent_high_freq_fraction"] <= 1
    assert all(math.isfinite(v) for v in r["summary"].values() if v is not None)
    sp.plot_spectra(r["spectrum"], tmp_path / "spectrum.png", title="sdvae-tiny")
    assert (tmp_path / "spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

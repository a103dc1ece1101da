"""Radially averaged power spectra of latents and images (Skorokhodov et al. 2025,
"Improving the diffusability of autoencoders": high-frequency energy in the latents
hurts the diffusion model trained on them), and their plot.

Per map: its mean is removed (the DC term is 0), ``|FFT2|²`` with ``norm="ortho"`` (white
noise of variance σ² has power σ² at every frequency), averaged over images. Frequencies
are in cycles per sample (Nyquist = 0.5); the radial frequency ``r = √(fx² + fy²)``
falls in bins of width ``1/min(h, w)``, bin ``k`` holding ``round(r·min(h, w)) = k``, up to
``k = min(h, w)/2`` (Nyquist along the shorter side). The summary is the fraction of the
energy at ``r > 0.25`` (above half the Nyquist frequency), over all frequencies.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch

from latentae.errors import InputError
from latentae.files import atomic_write_bytes

HALF_NYQUIST = 0.25  # cycles per sample
SPECTRUM_VERSION = ("radially averaged power spectrum: per-map mean removed, |FFT2|^2 (ortho), "
                    "mean over images, radial bins of width 1/min(h, w) up to Nyquist; "
                    "high-frequency fraction = energy at radial frequency > 0.25 cycles/sample "
                    "(half Nyquist) / total energy")


def radial_frequency(h: int, w: int) -> torch.Tensor:
    """``(h, w)`` radial frequency in cycles/sample of each FFT2 coefficient."""
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    return (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt()


def power(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` -> per-coefficient power ``(C, h, w)`` summed over the N maps
    (mean of each map removed first), float64."""
    x = x.detach().to("cpu", torch.float64)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    return torch.fft.fft2(x, norm="ortho").abs().square().sum(0)


def radial_average(p: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-coefficient power ``(..., h, w)`` -> ``(frequencies (K,), power (..., K))``:
    the mean over the coefficients of each radial bin (see the module docstring)."""
    h, w = p.shape[-2:]
    n = min(h, w)
    idx = torch.round(radial_frequency(h, w) * n).long().flatten()  # (h·w,) bin per coeff
    keep = idx <= n // 2
    flat = p.reshape(-1, h * w)[:, keep]
    bins = idx[keep]
    sums = torch.zeros(flat.shape[0], n // 2 + 1, dtype=torch.float64).index_add_(1, bins, flat)
    counts = torch.bincount(bins, minlength=n // 2 + 1).clamp_min(1)
    return np.arange(n // 2 + 1) / n, (sums / counts).reshape(*p.shape[:-2], -1).numpy()


def high_frequency_fraction(p: torch.Tensor) -> float:
    """Fraction of the energy of per-coefficient power ``(..., h, w)`` at radial
    frequency above half Nyquist (0.25 cycles/sample)."""
    high = radial_frequency(*p.shape[-2:]) > HALF_NYQUIST
    total = float(p.sum())
    return float(p[..., high].sum()) / total if total > 0 else 0.0


def channel_groups(channels: int, groups: int = 4) -> list[tuple[str, list[int]]]:
    """Contiguous groups of latent channels: ``min(channels, groups)`` of them, named
    ``"ch 0"`` or ``"ch 0-7"``."""
    if channels < 1 or groups < 1:
        raise InputError(f"need at least one channel and one group, got {channels}, {groups}")
    parts = np.array_split(np.arange(channels), min(channels, groups))
    return [(f"ch {p[0]}" if len(p) == 1 else f"ch {p[0]}-{p[-1]}", p.tolist()) for p in parts]


class SpectrumAccumulator:
    """Sums per-coefficient power of batches ``(B, C, h, w)`` (streaming, float64)."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.maps_per_channel = 0

    def update(self, x: torch.Tensor) -> None:
        p = power(x)
        if self.total is not None and p.shape != self.total.shape:
            raise InputError(f"spectrum batches differ in shape: {tuple(p.shape)} vs "
                             f"{tuple(self.total.shape)}")
        self.total = p if self.total is None else self.total + p
        self.maps_per_channel += x.shape[0]

    def mean_power(self) -> torch.Tensor:
        """``(C, h, w)`` mean power per coefficient over the images."""
        if self.total is None:
            raise InputError("no maps were accumulated for the spectrum")
        return self.total / self.maps_per_channel


def spectra_summary(latent: SpectrumAccumulator, image: SpectrumAccumulator,
                    groups: int = 4) -> dict:
    """Curves per latent channel group (mean over the group's channels), over all latent
    channels and over the RGB channels of the downsampled images, and the fractions."""
    lp, ip = latent.mean_power(), image.mean_power()
    freq, lcurves = radial_average(lp)   # (K,), (C, K)
    _, icurves = radial_average(ip)
    named = channel_groups(lp.shape[0], groups)
    return {"frequency": freq.tolist(),
            "latent": {name: lcurves[ch].mean(0).tolist() for name, ch in named},
            "latent_all": lcurves.mean(0).tolist(), "image": icurves.mean(0).tolist(),
            "latent_high_freq_fraction": high_frequency_fraction(lp),
            "latent_high_freq_fraction_per_group": {
                name: high_frequency_fraction(lp[ch]) for name, ch in named},
            "image_high_freq_fraction": high_frequency_fraction(ip)}


def plot_spectra(spectrum: dict, path: str | os.PathLike, title: str = "") -> None:
    """Write a PNG of the curves of ``spectra_summary`` (each divided by its own total,
    log scale) with the half-Nyquist line, through ``latentae.files``."""
    import matplotlib  # deferred: heavy, only needed for the plot
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = np.asarray(spectrum["frequency"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    curves = [(f"latent {k}", v, "-") for k, v in spectrum["latent"].items()]
    curves += [(f"latent, all ({spectrum['latent_high_freq_fraction']:.1%} > f_N/2)",
                spectrum["latent_all"], "-"),
               (f"image at latent size ({spectrum['image_high_freq_fraction']:.1%} > f_N/2)",
                spectrum["image"], "--")]
    positive = False
    for label, c, style in curves:
        c = np.asarray(c)[1:]  # the DC bin is 0 (means removed)
        c = np.where(c > 0, c / max(c.sum(), 1e-300), np.nan)  # a log axis shows no zeros
        positive |= bool(np.isfinite(c).any())
        ax.plot(f[1:], c, style, label=label,
                lw=2 if "all" in label or "image" in label else 1)
    ax.axvline(HALF_NYQUIST, color="gray", lw=0.8, ls=":")
    ax.set(xlabel="radial frequency (cycles / latent pixel)",
           ylabel="bin mean power / sum over bins", yscale="log" if positive else "linear",
           title=title or "radially averaged power spectrum")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())

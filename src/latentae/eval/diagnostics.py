"""Online diffusability diagnostics: a few numbers, cheap enough to log while an
autoencoder trains (``latentae train --diffusability-every N``), computed on one fixed
batch of held-out images with their latents encoded once and reused.

Nothing is measured here for the first time; each number comes from the one place
that computes it:

- ``latent_hf_fraction`` / ``image_hf_fraction``: the share of power above half Nyquist
  of the model-scaled latents and of the images average-pooled to the latent size
  (``eval.spectrum``, through ``eval.diffusability.DiffusabilityStats``);
- ``equivariance_psnr_x2``: PSNR of ``decode(avgpool_2(z))`` against ``avgpool_2(x)``
  (``eval.diffusability``, EQ-VAE), and ``psnr`` the plain reconstruction (x1);
- ``latent_mean_cK`` / ``latent_std_cK`` per channel and the ``scaling_factor`` /
  ``shift_factor`` they imply (``scaling.LatentMoments`` and the one rule
  ``scaling.factors_from_moments``);
- ``mmd2`` / ``mmd2_null``: whole-code MMD² of the scaled latents to N(0, I) and its
  null floor (``eval.diffusability.mmd_whole_code``) at one bandwidth, ``σ = √d`` for
  codes of ``d = C·h·w`` values (ours: two N(0, I) codes lie ≈ √(2d) apart, so the
  kernel is ≈ e⁻¹ there, neither saturated nor vanishing; LiteVAE table 6's absolute σ
  fit only its 4·32² codes);
- ``noise_psnr_sigma{σ}``: **decoder robustness**, PSNR of ``decode(z + σ/scale·ε)``
  against the images at two noise levels σ in units of the *scaled* latent (what a
  diffusion sampler's last steps hand the decoder); ε fixed by ``seed``.

Every key is logged as ``diffusability/<name>`` (TensorBoard groups them by the prefix).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from latentae.eval.diffusability import DiffusabilityStats, posterior_latent
from latentae.eval.psnr_ssim import mean_finite, psnr_per_image
from latentae.models.distributions import DeterministicPosterior
from latentae.scaling import LatentMoments, factors_from_moments

PREFIX = "diffusability/"
NOISE_LEVELS = (0.1, 0.3)  # ours: σ of the last steps of a 50-step sampler (σ_t/α_t)
REPEATS = 3  # reference draws of the whole-code MMD (2 give the null floor)


@torch.no_grad()
def encode_batch(model, images: torch.Tensor, batch_size: int = 8
                 ) -> tuple[torch.Tensor, bool]:
    """Posterior modes ``(N, C, h, w)`` of ``images`` and whether the posterior is
    deterministic (a plain autoencoder: DC-AE)."""
    dev = next(model.parameters()).device
    out, deterministic = [], False
    for x in images.split(batch_size):
        posterior = model.encode(x.to(dev))
        deterministic = isinstance(posterior, DeterministicPosterior)
        out.append(posterior_latent(posterior).float())
    return torch.cat(out), deterministic


@torch.no_grad()
def _decode(model, z: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    return torch.cat([model.decode(b).float() for b in z.split(batch_size)])


def _noise_psnr(model, z: torch.Tensor, x: torch.Tensor, sigma: float, scale: float,
                seed: int) -> float:
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed)).to(z)
    return mean_finite(psnr_per_image(x, _decode(model, z + sigma / scale * eps).cpu()))


@torch.no_grad()
def diagnostics(model, images: torch.Tensor, *, noise_levels: Iterable[float] = NOISE_LEVELS,
                seed: int = 0, use_shift: bool | None = None) -> dict[str, float]:
    """The diagnostics of ``model`` on ``images`` ``(N, 3, H, W)`` in [-1, 1] (N ≥ 2), as
    flat ``{name: value}`` without the prefix (module docstring). Leaves the model in
    the mode it was in and the global RNG untouched."""
    was_training = model.training
    model.eval()
    try:
        x = images.float()
        z, deterministic = encode_batch(model, x)                       # (N, C, h, w)
        moments = LatentMoments()
        moments.add(z)
        shift = bool(getattr(model, "shift_factor", 0.0)) if use_shift is None else use_shift
        f = factors_from_moments(moments, deterministic, shift)
        scale = f["scaling_factor"]
        recon = _decode(model, z)
        stats = DiffusabilityStats(scale, f["shift_factor"], seed=seed)
        stats.update(x.to(z.device), z, model.decode, recon)
        d = z[0].numel()
        rep = stats.report(sigmas=(math.sqrt(d),), repeats=REPEATS, per_position=False)
        out = {"latent_hf_fraction": rep["summary"]["latent_high_freq_fraction"],
               "image_hf_fraction": rep["summary"]["image_high_freq_fraction"],
               "psnr": rep["equivariance_psnr"]["x1"],
               "equivariance_psnr_x2": rep["equivariance_psnr"]["x2"],
               "scaling_factor": scale, "shift_factor": f["shift_factor"],
               "mmd2": rep["mmd_whole_code"]["mmd2"][0],
               "mmd2_null": rep["mmd_whole_code"]["null_mmd2_rms"][0]}
        for c, (m, s) in enumerate(zip(f["mean"], f["std"])):
            out[f"latent_mean_c{c}"], out[f"latent_std_c{c}"] = m, s
        for sigma in noise_levels:
            out[f"noise_psnr_sigma{sigma:g}"] = _noise_psnr(model, z, x.to(z.device), sigma,
                                                           scale, seed)
    finally:
        model.train(was_training)
    return {k: (None if v is None else float(v)) for k, v in out.items()}


def logged(values: dict[str, float | None]) -> dict[str, float]:
    """``values`` under their logged names (``diffusability/…``), ``None`` left out."""
    return {PREFIX + k: v for k, v in values.items() if v is not None}


def timed(model, images: torch.Tensor, **kwargs) -> tuple[dict[str, float], float]:
    """:func:`diagnostics` and the seconds it took."""
    t0 = time.perf_counter()
    out = diagnostics(model, images, **kwargs)
    return out, time.perf_counter() - t0


MAIN_KEYS = ("latent_hf_fraction", "image_hf_fraction", "equivariance_psnr_x2", "psnr",
             "scaling_factor", "mmd2", "noise_psnr_sigma")


def plot_diagnostics(records: list[dict], path: str | Path) -> Path | None:
    """Draw the logged diagnostics of ``records`` (a run's metrics log) against the step
    to ``path``: one panel per quantity (the two spectra together, the noise levels
    together, MMD² with its null floor, the per-channel stds together). ``None`` when
    no record has them."""
    rows = [r for r in records if any(k.startswith(PREFIX) for k in r)]
    if not rows:
        return None
    import matplotlib  # deferred: heavy, only needed for the plot
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k[len(PREFIX):] for r in rows for k in r if k.startswith(PREFIX)})
    panels = [("high-frequency energy (> f_N/2)", ["latent_hf_fraction", "image_hf_fraction"]),
              ("PSNR (dB)", ["psnr", "equivariance_psnr_x2"]
               + [k for k in keys if k.startswith("noise_psnr")]),
              ("MMD² to N(0, I)", ["mmd2", "mmd2_null"]),
              ("scaling factor", ["scaling_factor"]),
              ("latent std per channel", [k for k in keys if k.startswith("latent_std_c")])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, names) in zip(axes, panels):
        for name in names:
            pts = [(r["step"], r[PREFIX + name]) for r in rows if PREFIX + name in r]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=name if len(names) < 6 else None)
        ax.set(xlabel="step", title=title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

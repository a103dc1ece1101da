"""Latent diffusability diagnostics, cheap and latent-only: the latent power spectrum
next to the image's, the scale-equivariance error, and MMD² to N(0, I) in two variants.

- Spectrum: ``latentae.eval.spectrum`` (Skorokhodov et al. 2025).
- Scale equivariance (EQ-VAE, Kouzelis et al. 2025): ``decode(down_s(z))`` against
  ``down_s(x)`` for s = 2 (and 4 where the latent allows), PSNR on uint8 as ``latentae
  eval``; ``down_s`` is s×s average pooling on both (for s = 2 it equals bilinear
  resizing to half size with align_corners=False).
- ``mmd_whole_code`` (LiteVAE table 6): each image's whole latent code, flattened to
  d = C·h·w, after the model's own ``(z − shift_factor)·scaling_factor``, against as many
  N(0, I_d) draws; RBF ``exp(−|x−y|²/(2σ²))`` at each of the paper's σ = 25, 50, 100, 250,
  500 separately (absolute, not scaled with d; for the paper's 4×32×32 codes |x−y| ≈
  √(2d) ≈ 90 under N(0, I)); unbiased estimator; mean ± std over ``repeats`` draws.
- ``mmd_per_position``: what ``latentae eval`` reports (``latentae.eval.mmd``): the
  C-dimensional vector at each latent position, RBF averaged over σ = (0.5, 1, 2)·√C.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from latentae.errors import InputError
from latentae.eval.generation_metrics import mmd2_unbiased_from_kernels, squared_distances
from latentae.eval.mmd import MMD_VERSION, latent_vectors, mmd2_to_normal
from latentae.eval.psnr_ssim import mean_finite, psnr_per_image
from latentae.eval.spectrum import SPECTRUM_VERSION, SpectrumAccumulator, spectra_summary

TABLE6_SIGMAS = (25.0, 50.0, 100.0, 250.0, 500.0)  # LiteVAE table 6, RBF bandwidths
EQUIVARIANCE_VERSION = ("scale equivariance (EQ-VAE): PSNR(decode(avgpool_s(z)), avgpool_s(x)) "
                        "on uint8, per image then mean, z = posterior mode, s = 2 and 4 "
                        "(where the latent divides); x1 = plain reconstruction")
WHOLE_CODE_VERSION = ("MMD^2 unbiased (Gretton et al. 2012), whole flattened latent codes "
                      "(d = C*h*w) of (z - shift_factor)*scaling_factor vs as many N(0, I_d) "
                      "draws, RBF exp(-|x-y|^2/(2 sigma^2)) at each sigma separately "
                      "(LiteVAE table 6: 25, 50, 100, 250, 500, absolute), mean and std over "
                      "{repeats} reference draws (seed {seed})")
PER_POSITION_VECTORS = 2048  # as latentae eval's LatentStats keeps


def posterior_latent(posterior) -> torch.Tensor:
    """The latent of what ``encode`` returned: a tensor as it is, else ``.latent_dist``
    (diffusers outputs) and then ``.mode()``, else ``.mean``."""
    if isinstance(posterior, torch.Tensor):  # first: a tensor has a .mode() of its own
        return posterior
    if hasattr(posterior, "latent_dist"):
        posterior = posterior.latent_dist
    if hasattr(posterior, "mode"):
        return posterior.mode()
    if hasattr(posterior, "mean") and isinstance(posterior.mean, torch.Tensor):
        return posterior.mean
    raise InputError(f"encode returned {type(posterior).__name__}, which has no mode(), "
                     "mean or latent_dist: pass an autoencoder whose encode gives a posterior")


def equivariance_factors(h: int, w: int) -> list[int]:
    """The downsampling factors (1, 2, 4) that divide the latent ``h × w``."""
    return [s for s in (1, 2, 4) if h % s == 0 and w % s == 0]


def scale_equivariance_psnr(model, x: torch.Tensor, z: torch.Tensor, s: int) -> torch.Tensor:
    """Per-image PSNR ``(B,)`` of ``decode(avgpool_s(z))`` against ``avgpool_s(x)``;
    ``x (B, 3, H, W)`` in [-1, 1], ``z (B, C, h, w)`` its raw latent (not scaled)."""
    target = F.avg_pool2d(x.float(), s) if s > 1 else x.float()       # (B, 3, H/s, W/s)
    rec = model.decode(F.avg_pool2d(z, s) if s > 1 else z).float()    # (B, 3, H/s, W/s)
    if rec.shape != target.shape:
        raise InputError(f"decode of a {s}x downsampled latent gave {tuple(rec.shape)}, "
                         f"expected {tuple(target.shape)}")
    return psnr_per_image(target, rec)


def mmd2_whole_code(codes: torch.Tensor, reference: torch.Tensor,
                    sigmas: tuple[float, ...] = TABLE6_SIGMAS) -> list[float]:
    """Unbiased MMD² per σ between flattened codes ``(n, d)`` and ``reference (m, d)``,
    RBF ``exp(−|x−y|²/(2σ²))`` (one distance computation, float64)."""
    x, y = codes.double().flatten(1), reference.double().flatten(1)
    if x.shape[1] != y.shape[1] or min(x.shape[0], y.shape[0]) < 2:
        raise InputError(f"whole-code MMD needs at least 2 codes of equal size on each "
                         f"side, got {tuple(x.shape)} and {tuple(y.shape)}")
    dxx, dyy, dxy = squared_distances(x, x), squared_distances(y, y), squared_distances(x, y)
    return [mmd2_unbiased_from_kernels(*(torch.exp(-d / (2 * s * s)) for d in (dxx, dyy, dxy)))
            for s in sigmas]


def mmd_whole_code(z_scaled: torch.Tensor, sigmas: tuple[float, ...] = TABLE6_SIGMAS,
                   repeats: int = 5, seed: int = 0) -> dict:
    """LiteVAE table 6's MMD² of model-scaled latents ``(N, C, h, w)`` to N(0, I), per σ:
    mean and population std over ``repeats`` reference draws (generator seeds
    ``seed``, ``seed + 1``, …)."""
    codes = z_scaled.detach().to("cpu", torch.float64).flatten(1)      # (N, C·h·w)
    runs = torch.tensor([mmd2_whole_code(codes, torch.randn(
        codes.shape, generator=torch.Generator().manual_seed(seed + r), dtype=torch.float64),
        sigmas) for r in range(repeats)])                               # (repeats, S)
    return {"sigma": list(sigmas), "mmd2": runs.mean(0).tolist(),
            "mmd2_std": runs.std(0, unbiased=False).tolist(), "n_codes": codes.shape[0],
            "dim": codes.shape[1], "repeats": repeats,
            "typical_distance": math.sqrt(2 * codes.shape[1])}


def mmd_per_position(z_scaled: torch.Tensor, max_vectors: int = PER_POSITION_VECTORS,
                     seed: int = 0) -> dict:
    """``latentae eval``'s per-position MMD² to N(0, I) of model-scaled latents, on a
    random subset of at most ``max_vectors`` position vectors."""
    v = latent_vectors(z_scaled.detach().cpu().double())                # (N·h·w, C)
    g = torch.Generator().manual_seed(seed)
    v = v[torch.randperm(v.shape[0], generator=g)[:max_vectors]]
    return {"mmd2": mmd2_to_normal(v, torch.Generator().manual_seed(seed)),
            "vectors": v.shape[0], "dim": v.shape[1]}


def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int):
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise InputError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        return images.split(batch_size)
    return images


@torch.no_grad()
def _encode_all(model, images, device: torch.device, batch_size: int, scale: float,
                shift: float):
    """One pass over the images: spectra, scaled latents ``(N, C, h, w)`` on the CPU and
    per-image equivariance PSNRs per factor."""
    lat_spec, img_spec, codes, psnr = SpectrumAccumulator(), SpectrumAccumulator(), [], {}
    for x in _batches(images, batch_size):
        x = x.to(device).float()
        z = posterior_latent(model.encode(x))                          # (B, C, h, w)
        f = x.shape[-1] // z.shape[-1]
        zs = (z.float() - shift) * scale
        lat_spec.update(zs)
        img_spec.update(F.avg_pool2d(x, f) if f > 1 else x)            # (B, 3, h, w)
        codes.append(zs.cpu())
        for s in equivariance_factors(*z.shape[-2:]):
            psnr.setdefault(s, []).append(scale_equivariance_psnr(model, x, z, s))
    if not codes:
        raise InputError("no images were given to the diffusability report")
    return lat_spec, img_spec, torch.cat(codes), psnr


def diffusability_report(model, images: torch.Tensor | Iterable[torch.Tensor], *,
                         scaling_factor: float, shift_factor: float | None = 0.0,
                         device: str | torch.device = "cpu", batch_size: int = 8,
                         groups: int = 4, sigmas: tuple[float, ...] = TABLE6_SIGMAS,
                         repeats: int = 5, seed: int = 0) -> dict:
    """All diagnostics for ``model`` (``encode(x)`` -> posterior, ``decode(z)``) on
    ``images`` ``(N, 3, H, W)`` in [-1, 1] (or an iterable of such batches).

    Keys: ``n_images``, ``latent_shape``, ``spectrum`` (``latentae.eval.spectrum``),
    ``equivariance_psnr`` (``x1``, ``x2``, ``x4``; None where the latent does not
    divide), ``mmd_whole_code``, ``mmd_per_position``, ``summary`` (flat numbers) and
    ``protocol`` (the strings). Plot with ``latentae.eval.spectrum.plot_spectra(
    report["spectrum"], path)``.
    """
    shift = float(shift_factor or 0.0)
    lat_spec, img_spec, z_all, psnr = _encode_all(model, images, torch.device(device),
                                                  batch_size, scaling_factor, shift)
    eq = {f"x{s}": mean_finite(torch.cat(psnr[s])) if s in psnr else None for s in (1, 2, 4)}
    whole = mmd_whole_code(z_all, sigmas, repeats, seed)
    spectrum = spectra_summary(lat_spec, img_spec, groups)
    per_pos = mmd_per_position(z_all, seed=seed)
    summary = {"latent_high_freq_fraction": spectrum["latent_high_freq_fraction"],
               "image_high_freq_fraction": spectrum["image_high_freq_fraction"],
               **{f"equivariance_psnr_{k}": v for k, v in eq.items()},
               **{f"mmd2_whole_code_sigma{s:g}": v for s, v in zip(sigmas, whole["mmd2"])},
               "mmd2_per_position": per_pos["mmd2"]}
    protocol = {"spectrum": SPECTRUM_VERSION + "; latents scaled by the model's factors, "
                                               "images average-pooled by f to the latent size",
                "equivariance": EQUIVARIANCE_VERSION,
                "mmd_whole_code": WHOLE_CODE_VERSION.format(repeats=repeats, seed=seed),
                "mmd_per_position": MMD_VERSION + "; (z - shift_factor)*scaling_factor, "
                                    f"{per_pos['vectors']} random position vectors",
                "scaling_factor": scaling_factor, "shift_factor": shift}
    return {"n_images": z_all.shape[0], "latent_shape": list(z_all.shape[1:]),
            "spectrum": spectrum, "equivariance_psnr": eq, "mmd_whole_code": whole,
            "mmd_per_position": per_pos, "summary": summary, "protocol": protocol}

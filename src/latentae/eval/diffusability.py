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
  √(2d) ≈ 90 under N(0, I)); unbiased estimator; mean ± std over ``repeats`` draws, and
  the null floor (the same estimate between two N(0, I) sets of n codes).
- ``mmd_per_position``: the C-dimensional vector at each latent position, RBF averaged
  over σ = (0.5, 1, 2)·√C (``latentae.eval.mmd``; ``latentae eval`` reports its own,
  from ``LatentStats``).

:class:`DiffusabilityStats` streams all of it from batches of (images, latents), so
``latentae eval`` computes it in its one pass; :func:`diffusability_report` runs a model
over images for use outside the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from latentae.errors import InputError
from latentae.eval.generation_metrics import squared_distances
from latentae.eval.mmd import (
    MMD_VERSION,
    RandomSubset,
    image_keys,
    latent_vectors,
    mmd2_to_normal,
    offdiagonal_mean,
)
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
                      "{repeats} reference draws (seed {seed}); at most {max_codes} codes (a "
                      "uniform random subset); null floor = RMS of MMD^2 between consecutive "
                      "reference draws")
PER_POSITION_VECTORS = 2048  # as latentae eval's LatentStats keeps
MAX_CODES = 2048  # whole codes kept for the table-6 MMD (cost ~ n² · d)
FEW_CODES = 200   # below this the report says the whole-code MMD is a wide estimate
SPECTRUM_MIN_SIDE = 8  # latents smaller than this: the report says the spectrum is coarse


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


def scale_equivariance_psnr(decode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                            z: torch.Tensor, s: int) -> torch.Tensor:
    """Per-image PSNR ``(B,)`` of ``decode(avgpool_s(z))`` against ``avgpool_s(x)``;
    ``decode`` maps latents to images (``model.decode``), ``x (B, 3, H, W)`` in [-1, 1],
    ``z (B, C, h, w)`` its raw latent (not scaled)."""
    target = F.avg_pool2d(x.float(), s) if s > 1 else x.float()       # (B, 3, H/s, W/s)
    rec = decode(F.avg_pool2d(z, s) if s > 1 else z).float()          # (B, 3, H/s, W/s)
    if rec.shape != target.shape:
        raise InputError(f"decode of a {s}x downsampled latent gave {tuple(rec.shape)}, "
                         f"expected {tuple(target.shape)}")
    return psnr_per_image(target, rec)


def _rbf_means(d2: torch.Tensor, sigmas: tuple[float, ...], off_diagonal: bool
               ) -> torch.Tensor:
    """``(S,)``: per σ the mean of ``exp(−d2/(2σ²))`` over ``d2 (n, m)``, leaving the
    diagonal out (``off_diagonal``, a set against itself: the unbiased estimator)."""
    kernels = (torch.exp(-d2 / (2 * s * s)) for s in sigmas)
    return torch.stack([offdiagonal_mean(k) if off_diagonal else k.mean() for k in kernels])


def mmd2_whole_code(codes: torch.Tensor, reference: torch.Tensor,
                    sigmas: tuple[float, ...] = TABLE6_SIGMAS) -> list[float]:
    """Unbiased MMD² per σ between flattened codes ``(n, d)`` and ``reference (m, d)``,
    RBF ``exp(−|x−y|²/(2σ²))`` (one distance computation per pair of sets, float64)."""
    x, y = codes.double().flatten(1), reference.double().flatten(1)
    _check_codes(x, y)
    return (_rbf_means(squared_distances(x, x), sigmas, True)
            + _rbf_means(squared_distances(y, y), sigmas, True)
            - 2 * _rbf_means(squared_distances(x, y), sigmas, False)).tolist()


def _check_codes(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[1] != y.shape[1] or min(x.shape[0], y.shape[0]) < 2:
        raise InputError(f"whole-code MMD needs at least 2 codes of equal size on each "
                         f"side, got {tuple(x.shape)} and {tuple(y.shape)}")


def mmd_whole_code(z_scaled: torch.Tensor, sigmas: tuple[float, ...] = TABLE6_SIGMAS,
                   repeats: int = 5, seed: int = 0,
                   device: str | torch.device = "cpu") -> dict:
    """LiteVAE table 6's MMD² of model-scaled latents ``(N, C, h, w)`` to N(0, I), per σ:
    mean and population std over ``repeats`` reference draws of N codes (generator
    seeds ``seed``, ``seed + 1``, …), and the **null floor** ``null_mmd2_rms``: the RMS
    of MMD² between consecutive reference draws — two true N(0, I) sets of N codes — the
    estimator's noise at this N (``None`` with one repeat). Distances in float64 on
    ``device``; the codes' own term is computed once."""
    codes = z_scaled.detach().to(device, torch.float64).flatten(1)      # (N, C·h·w)
    _check_codes(codes, codes)
    sxx = _rbf_means(squared_distances(codes, codes), sigmas, True)
    runs, nulls, prev = [], [], None
    for r in range(repeats):
        ref = torch.randn(codes.shape, generator=torch.Generator().manual_seed(seed + r),
                          dtype=torch.float64).to(device)
        syy = _rbf_means(squared_distances(ref, ref), sigmas, True)
        runs.append(sxx + syy - 2 * _rbf_means(squared_distances(codes, ref), sigmas, False))
        if prev is not None:
            nulls.append(prev[1] + syy - 2 * _rbf_means(squared_distances(prev[0], ref),
                                                        sigmas, False))
        prev = (ref, syy)
    runs_t = torch.stack(runs).cpu()                                     # (repeats, S)
    null = torch.stack(nulls).cpu().square().mean(0).sqrt().tolist() if nulls else None
    return {"sigma": list(sigmas), "mmd2": runs_t.mean(0).tolist(),
            "mmd2_std": runs_t.std(0, unbiased=False).tolist(), "null_mmd2_rms": null,
            "n_codes": codes.shape[0], "dim": codes.shape[1], "repeats": repeats,
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


class DiffusabilityStats:
    """Streams what the diagnostics need from batches of images and their latents, so
    ``latentae eval`` computes them in its one pass over the data: the two spectra
    (``latentae.eval.spectrum``), a uniform random subset of at most ``max_codes`` whole
    codes (``eval.mmd.RandomSubset``, keys seeded per image index) and the per-image
    equivariance PSNRs. Latents are scaled as the diffusion model sees them,
    ``(z − shift_factor)·scaling_factor``."""

    def __init__(self, scaling_factor: float, shift_factor: float | None = 0.0, *,
                 max_codes: int = MAX_CODES, seed: int = 0, groups: int = 4) -> None:
        self.scale, self.shift = float(scaling_factor), float(shift_factor or 0.0)
        self.seed, self.groups, self.images = seed, groups, 0
        self.latent_spectrum, self.image_spectrum = SpectrumAccumulator(), SpectrumAccumulator()
        self.codes = RandomSubset(max_codes)
        self.psnr: dict[int, list[torch.Tensor]] = {}
        self.equivariance_note: str | None = None

    def update(self, x: torch.Tensor, z: torch.Tensor,
               decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
               recon: torch.Tensor | None = None) -> None:
        """Images ``x (B, 3, H, W)`` in [-1, 1] and their raw latents ``z (B, C, h, w)``
        (posterior mode). ``decode`` (latents -> images) enables the equivariance PSNRs;
        ``recon`` is ``decode(z)`` when the caller has it already (the x1 value)."""
        zs = (z.detach().float() - self.shift) * self.scale              # (B, C, h, w)
        self.latent_spectrum.update(zs)
        # (B, 3, h, w): for H = f·h this is f×f average pooling
        self.image_spectrum.update(F.adaptive_avg_pool2d(x.detach().float(), z.shape[-2:]))
        self.codes.update(zs.cpu(), image_keys(self.images, len(z), 1, self.seed + 1))
        self.images += len(z)
        if decode is None:
            return
        (h, w), (hx, wx) = z.shape[-2:], x.shape[-2:]
        if hx % h or wx % w or hx // h != wx // w:
            self.equivariance_note = (f"scale equivariance not measured: images of {hx}x{wx} "
                                      f"are not an integer multiple of the {h}x{w} latent "
                                      "(--pad)")
            return
        for s in equivariance_factors(h, w):
            if s == 1 and recon is not None:
                self.psnr.setdefault(1, []).append(psnr_per_image(x.float(), recon.float()))
            else:
                self.psnr.setdefault(s, []).append(scale_equivariance_psnr(decode, x, z, s))

    def report(self, *, sigmas: tuple[float, ...] = TABLE6_SIGMAS, repeats: int = 5,
               per_position: bool = True, device: str | torch.device = "cpu") -> dict:
        """The diagnostics (keys: see :func:`diffusability_report`); ``per_position``
        False leaves ``mmd_per_position`` out (``latentae eval`` has its own)."""
        codes = self.codes.values()
        if codes is None:
            raise InputError("no images were given to the diffusability report")
        measured = not self.equivariance_note and self.psnr
        eq = {f"x{s}": mean_finite(torch.cat(self.psnr[s])) if s in self.psnr else None
              for s in (1, 2, 4)} if measured else {"x1": None, "x2": None, "x4": None}
        h, w = codes.shape[-2:]
        spectrum = (spectra_summary(self.latent_spectrum, self.image_spectrum, self.groups)
                    if min(h, w) >= 2 else None)  # a 1×1 map has no spatial frequency
        whole = (mmd_whole_code(codes, sigmas, repeats, self.seed, device)
                 if len(codes) >= 2 else None)
        out = {"n_images": self.images, "latent_shape": list(codes.shape[1:]),
               "spectrum": spectrum, "equivariance_psnr": eq, "mmd_whole_code": whole,
               "summary": self._summary(spectrum, eq, whole, sigmas),
               "protocol": self._protocol(repeats), "notes": self._notes(whole, min(h, w))}
        if per_position:
            out["mmd_per_position"] = mmd_per_position(codes, seed=self.seed)
            out["summary"]["mmd2_per_position"] = out["mmd_per_position"]["mmd2"]
            out["protocol"]["mmd_per_position"] = (
                MMD_VERSION + "; (z - shift_factor)*scaling_factor, "
                f"{out['mmd_per_position']['vectors']} random position vectors")
        return out

    @staticmethod
    def _summary(spectrum: dict | None, eq: dict, whole: dict | None,
                 sigmas: tuple[float, ...]) -> dict:
        mmd = whole["mmd2"] if whole else [None] * len(sigmas)
        sp = spectrum or {}
        return {"latent_high_freq_fraction": sp.get("latent_high_freq_fraction"),
                "image_high_freq_fraction": sp.get("image_high_freq_fraction"),
                **{f"equivariance_psnr_{k}": v for k, v in eq.items()},
                **{f"mmd2_whole_code_sigma{s:g}": v for s, v in zip(sigmas, mmd)}}

    def _protocol(self, repeats: int) -> dict:
        return {"spectrum": SPECTRUM_VERSION + "; latents scaled by the model's factors, "
                                               "images average-pooled by f to the latent size",
                "equivariance": EQUIVARIANCE_VERSION,
                "mmd_whole_code": WHOLE_CODE_VERSION.format(repeats=repeats, seed=self.seed,
                                                            max_codes=self.codes.k),
                "scaling_factor": self.scale, "shift_factor": self.shift}

    def _notes(self, whole: dict | None, side: int) -> list[str]:
        notes = [self.equivariance_note] if self.equivariance_note else []
        if side < SPECTRUM_MIN_SIDE:
            notes.append(f"latent spectrum of {side}-pixel maps: " + (
                "none (no spatial frequency)" if side < 2 else
                f"only {side // 2 + 1} radial bins, the high-frequency fraction means little"
                f" below {SPECTRUM_MIN_SIDE}x{SPECTRUM_MIN_SIDE} latents (raise --resolution)"))
        if whole is None:
            return notes + ["whole-code MMD² needs at least 2 images; not computed"]
        n, floor = whole["n_codes"], whole["null_mmd2_rms"]
        if self.images > n:
            notes.append(f"whole-code MMD² on a uniform random {n} of the {self.images} codes")
        if floor is not None:
            near = [f"{s:g}" for s, m, f in zip(whole["sigma"], whole["mmd2"], floor)
                    if abs(m) < 3 * f]
            if near:
                notes.append(f"whole-code MMD² at sigma {', '.join(near)} is within 3x the "
                             f"null floor at n = {n} codes: indistinguishable from N(0, I) "
                             "at this n (more images resolve smaller differences)")
        if n < FEW_CODES:
            notes.append(f"whole-code MMD² from only {n} codes: a wide estimator (see the "
                         "null floor); compare models at equal n, not with published tables")
        return notes


def diffusability_report(model, images: torch.Tensor | Iterable[torch.Tensor], *,
                         scaling_factor: float, shift_factor: float | None = 0.0,
                         device: str | torch.device = "cpu", batch_size: int = 8,
                         groups: int = 4, sigmas: tuple[float, ...] = TABLE6_SIGMAS,
                         repeats: int = 5, seed: int = 0, max_codes: int = MAX_CODES) -> dict:
    """All diagnostics for ``model`` (``encode(x)`` -> posterior, ``decode(z)``) on
    ``images`` ``(N, 3, H, W)`` in [-1, 1] (or an iterable of such batches).

    Keys: ``n_images``, ``latent_shape``, ``spectrum`` (``latentae.eval.spectrum``),
    ``equivariance_psnr`` (``x1``, ``x2``, ``x4``; None where the latent does not
    divide), ``mmd_whole_code``, ``mmd_per_position``, ``summary`` (flat numbers),
    ``protocol`` (the strings) and ``notes``. Plot with
    ``latentae.eval.spectrum.plot_spectra(report["spectrum"], path)``.
    """
    device = torch.device(device)
    stats = DiffusabilityStats(scaling_factor, shift_factor, max_codes=max_codes, seed=seed,
                               groups=groups)
    with torch.no_grad():
        for x in _batches(images, batch_size):
            x = x.to(device).float()
            stats.update(x, posterior_latent(model.encode(x)), model.decode)
    return stats.report(sigmas=sigmas, repeats=repeats, device=device)

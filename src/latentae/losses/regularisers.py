"""Diffusability regularisers: loss terms that make a latent space easier to diffuse.

Each term decodes a changed latent and compares it with the matching image by the
reconstruction loss ``rec`` (L1, plus LPIPS where the phase has it: EQ-VAE's and
Skorokhodov et al.'s choice), weighted in the recipe (``LossWeights``):

- ``equivariance`` (EQ-VAE, Kouzelis et al. 2025, eq. 4 and the official
  ``AutoencoderKL.training_step``): with probability ``equivariance_p`` per step, a
  spatial transform ``τ`` -- down-scaling by ``s`` then a rotation by ``k·90°`` -- is
  applied to the latent and to the image, and ``rec(D(τ·E(x)), τ·x)`` is the term.
  # paper: p = 0.5 (``p_prior``), rotations k ∈ {1, 2, 3} (π/2, π, 3π/2), scale and
  # rotation together, one transform per batch, ``z`` the posterior sample.
  # ours: s ∈ {2, 4} (where the latent divides; the official code draws s from
  # {8/32, …, 31/32}) by s×s average pooling on both sides (= bilinear with
  # align_corners=False at s = 2, the anti-aliased version at s = 4; the same down-scaling
  # as ``eval.diffusability``'s equivariance PSNR). EQ-VAE replaces the plain
  # reconstruction by this term in the steps that draw it; ours adds it (the plain term
  # stays every step, EQ-VAE's "prior preservation"), so its weight is a knob.
- ``latent_scale_equivariance`` (Skorokhodov et al. 2025, "Improving the diffusability
  of autoencoders", §4 "scale equivariance"): ``rec(D(down_s(z)), down_s(x))`` with
  ``down_s`` *bilinear* down-sampling by s ∈ {2, 4} of latent and image together, every
  step. Implemented form: one s drawn per step from the factors that divide the latent,
  ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
  antialias=False)``, no rotation, added to the loss with the recipe's weight.
  # ours: the weight and the per-step draw (the text we had does not give them).
- ``decoder_noise`` (ours, after the noise-augmented decoders of the issue: what a
  diffusion sampler's last steps hand the decoder): ``rec(D(z + σ·std(z)·ε), x)`` with
  ``σ ~ U(0, decoder_noise_sigma)`` per sample, ``std(z)`` the batch's latent std
  (detached: σ is in units of the latent's own scale, so it means the same before the
  model's ``scaling_factor`` is known) and ``z`` detached: only the decoder learns.

All randomness comes from the generator passed in (the task seeds it from (seed, phase,
image index)), so a resumed run repeats it exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from latentae.errors import InputError

Decode = Callable[[torch.Tensor], torch.Tensor]
Rec = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SCALES = (2, 4)  # ours: the down-scalings (EQ-VAE draws s ∈ [0.25, 1))
ROTATIONS = (1, 2, 3)  # paper: EQ-VAE, quarter turns π/2, π, 3π/2
NEEDS_ENCODER = ("equivariance", "latent_scale_equivariance")
NAMES = ("equivariance", "latent_scale_equivariance", "decoder_noise")


def scales_for(h: int, w: int) -> tuple[int, ...]:
    """The down-scalings of :data:`SCALES` that divide a latent of ``h × w``."""
    return tuple(s for s in SCALES if h % s == 0 and w % s == 0)


def transform(t: torch.Tensor, s: int, k: int) -> torch.Tensor:
    """EQ-VAE's ``τ``: s×s average pooling, then ``k`` quarter turns counter-clockwise
    (``torch.rot90`` over (H, W): the first row becomes the first column, bottom-up).
    The same call on a latent ``(B, C, h, w)`` and its image ``(B, 3, H, W)``."""
    t = F.avg_pool2d(t, s) if s > 1 else t
    return torch.rot90(t, k, dims=(-2, -1)) if k % 4 else t


def bilinear_down(t: torch.Tensor, s: int) -> torch.Tensor:
    """Skorokhodov et al.'s ``down_s``: bilinear resize to ``1/s`` (no anti-aliasing)."""
    return F.interpolate(t, scale_factor=1 / s, mode="bilinear", align_corners=False,
                         antialias=False)


def _pick(options: tuple[int, ...], g: torch.Generator) -> int:
    return options[int(torch.randint(len(options), (), generator=g))]


def draw_transform(h: int, w: int, g: torch.Generator) -> tuple[int, int] | None:
    """``(s, k)`` for a latent of ``h × w``, or ``None`` when no scale divides it."""
    scales = scales_for(h, w)
    return (_pick(scales, g), _pick(ROTATIONS, g)) if scales else None


def equivariance_loss(decode: Decode, z: torch.Tensor, x: torch.Tensor, s: int, k: int,
                      rec: Rec) -> torch.Tensor:
    """``rec(D(τ z), τ x)`` (EQ-VAE); ``z (B, C, h, w)``, ``x (B, 3, H, W)``."""
    return rec(decode(transform(z, s, k)).float(), transform(x.float(), s, k))


def latent_scale_equivariance_loss(decode: Decode, z: torch.Tensor, x: torch.Tensor, s: int,
                                   rec: Rec) -> torch.Tensor:
    """``rec(D(down_s z), down_s x)`` (Skorokhodov et al. 2025, bilinear ``down_s``)."""
    return rec(decode(bilinear_down(z, s)).float(), bilinear_down(x.float(), s))


def noisy_latents(z: torch.Tensor, sigma_max: float, g: torch.Generator) -> torch.Tensor:
    """``z + σ·std(z)·ε`` with ``σ ~ U(0, sigma_max)`` per sample; ``z`` and ``std(z)``
    detached; draws on the CPU generator, so every device sees the same noise."""
    z = z.detach()
    sigma = torch.rand(len(z), generator=g) * sigma_max                    # (B,)
    eps = torch.randn(z.shape, generator=g)
    scale = z.float().std().clamp_min(1e-8)
    noise = (sigma.view(-1, 1, 1, 1) * eps).to(z.device, z.dtype)
    return z + scale.to(z.dtype) * noise


def decoder_noise_loss(decode: Decode, z: torch.Tensor, x: torch.Tensor, sigma_max: float,
                       g: torch.Generator, rec: Rec) -> torch.Tensor:
    """``rec(D(z + σ·std(z)·ε), x)`` (module docstring)."""
    return rec(decode(noisy_latents(z, sigma_max, g)).float(), x.float())


def reconstruction(perceptual: Callable | None, min_side: int = 16) -> Rec:
    """The regularisers' ``rec``: L1, plus LPIPS (``perceptual``) on images of at least
    ``min_side`` pixels (LPIPS-VGG pools four times)."""
    def rec(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        loss = (a - b).abs().mean()
        if perceptual is not None and min(a.shape[-2:]) >= min_side:
            loss = loss + perceptual(a, b)
        return loss
    return rec


def regulariser_terms(weights, decode: Decode, z: torch.Tensor, x: torch.Tensor,
                      g: torch.Generator, perceptual: Callable | None
                      ) -> dict[str, torch.Tensor]:
    """The weighted regulariser terms of ``weights`` (a ``LossWeights``) for one round:
    ``z`` the posterior sample the step decoded, ``x`` its images; a term that is off
    or not drawn this step is absent. Draws in a fixed order from ``g``."""
    rec, out = reconstruction(perceptual), {}
    h, w = z.shape[-2:]
    if weights.equivariance:
        apply = float(torch.rand((), generator=g)) < weights.equivariance_p
        drawn = draw_transform(h, w, g)
        if apply and drawn is not None:
            out["equivariance"] = weights.equivariance * equivariance_loss(
                decode, z, x, *drawn, rec)
    if weights.latent_scale_equivariance:
        scales = scales_for(h, w)
        if scales:
            s = _pick(scales, g)
            out["latent_scale_equivariance"] = weights.latent_scale_equivariance * \
                latent_scale_equivariance_loss(decode, z, x, s, rec)
    if weights.decoder_noise:
        out["decoder_noise"] = weights.decoder_noise * decoder_noise_loss(
            decode, z, x, weights.decoder_noise_sigma, g, rec)
    return out


def check_regularisers(weights, trainable: set[int], encoder_params: list, where: str) -> None:
    """Refuse a term that regularises the latent space on a phase whose encoder does
    not train (``trainable``: ids of the trainable parameters)."""
    on = [n for n in NEEDS_ENCODER if getattr(weights, n)]
    if on and not any(id(p) in trainable for p in encoder_params):
        raise InputError(f"{where}: losses.{on[0]} shapes the latent space and needs a "
                         "trainable encoder, but this phase trains none (train_groups): "
                         f"train the encoder (--set train_groups=all) or set "
                         f"losses.{on[0]}=0")

"""CutMix regularisation of a U-Net discriminator (Schönfeld et al. 2020, §3.2).

A real image ``x`` and a reconstruction ``x̂`` are mixed through a binary mask ``M``
(1 = real pixel): ``mix(x, x̂, M) = M ⊙ x + (1 - M) ⊙ x̂``. Two discriminator terms use
it (both on by default, as the authors' released training scripts run them):

- **augmentation**: the per-pixel output must reproduce ``M`` (real where ``M = 1``,
  fake elsewhere) and the global output must call the mixed image fake (its global
  coherence is broken);
- **consistency**: the per-pixel logits of the mixed image must equal the mix of the
  per-pixel logits of its two sources,
  ``‖D_pix(mix(x, x̂, M)) - mix(D_pix(x), D_pix(x̂), M)‖²`` (mean over pixels; gradients
  flow through all three outputs, as in the authors' code).

Masks follow CutMix (Yun et al. 2019) as the U-Net GAN code draws them: one box per
image covering a fraction ``1 - λ`` of it, ``λ ~ U(0, 1)``, centred uniformly and
clipped at the border, the mask flipped with probability 1/2. Simplified: the
original ramps the probability of a CutMix batch from 0 to 0.5 over the first epochs;
here the term is applied at every discriminator step with a constant weight.

Under DDP, call the discriminator once on ``cat([real, fake, mixed])`` and pass the
slices to :func:`cutmix_loss` (a second forward before one backward breaks DDP);
:func:`cutmix_consistency_loss` is the one-call form for a plain module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from latentae.losses.gan import fake_term, real_term


def cutmix_mask(batch: int, height: int, width: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """CutMix masks ``(B, 1, H, W)`` of 0/1 floats (1 = take the real image), drawn on
    the CPU from ``generator`` (see the module docstring for the distribution)."""
    lam = torch.rand(batch, generator=generator)
    cy = torch.randint(height, (batch,), generator=generator)
    cx = torch.randint(width, (batch,), generator=generator)
    flip = torch.rand(batch, generator=generator) < 0.5
    r = (1 - lam).sqrt()  # the box side as a fraction of the image side
    half_h, half_w = (height * r).long() // 2, (width * r).long() // 2
    rows = torch.arange(height).view(1, -1, 1)
    cols = torch.arange(width).view(1, 1, -1)
    inside = ((rows >= (cy - half_h).clamp(min=0).view(-1, 1, 1))
              & (rows < (cy + half_h).clamp(max=height).view(-1, 1, 1))
              & (cols >= (cx - half_w).clamp(min=0).view(-1, 1, 1))
              & (cols < (cx + half_w).clamp(max=width).view(-1, 1, 1)))  # (B, H, W)
    mask = (~inside).float()  # the box takes the fake image
    mask = torch.where(flip.view(-1, 1, 1), 1 - mask, mask)
    return mask.unsqueeze(1)


def cutmix(real: torch.Tensor, fake: torch.Tensor,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each real image with the reconstruction at the same batch index.
    ``(B, C, H, W)`` twice -> ``(mixed (B, C, H, W), mask (B, 1, H, W))``, 1 = real."""
    if real.shape != fake.shape:
        raise ValueError(f"cutmix needs real and fake of one shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    b, _, h, w = real.shape
    mask = cutmix_mask(b, h, w, generator).to(device=real.device, dtype=real.dtype)
    return mask * real + (1 - mask) * fake, mask


def _split(logits: Sequence[torch.Tensor], like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(global logits (B, 1), per-pixel logits (B, 1, H, W))`` of a U-Net discriminator."""
    pixel = [t for t in logits if t.ndim == 4 and t.shape[-2:] == like.shape[-2:]]
    glob = [t for t in logits if t.ndim == 2]
    if len(pixel) != 1 or len(glob) != 1:
        raise ValueError("CutMix regularisation needs a discriminator with one global and one "
                         f"per-pixel output (the 'unet' discriminator); got shapes "
                         f"{[tuple(t.shape) for t in logits]}")
    return glob[0], pixel[0]


def cutmix_loss(mixed_logits: Sequence[torch.Tensor], real_logits: Sequence[torch.Tensor],
                fake_logits: Sequence[torch.Tensor], mask: torch.Tensor, kind: str = "hinge",
                augmentation: bool = True) -> torch.Tensor:
    """The CutMix terms from discriminator outputs already computed on the mixed, real
    and fake images (each a ``[(B, 1), (B, 1, H, W)]`` list) and the ``mask`` of
    :func:`cutmix`. ``kind`` is the GAN loss of the augmentation term; float32 scalar."""
    mix_glob, mix_pix = _split(mixed_logits, mask)
    real_pix, fake_pix = _split(real_logits, mask)[1], _split(fake_logits, mask)[1]
    m = mask.float()
    target = m * real_pix.float() + (1 - m) * fake_pix.float()
    loss = F.mse_loss(mix_pix.float(), target)  # consistency
    if augmentation:  # per-pixel: M says which pixels are real; global: fake
        per_pixel = m * real_term(mix_pix, kind) + (1 - m) * fake_term(mix_pix, kind)
        loss = loss + per_pixel.mean() + fake_term(mix_glob, kind).mean()
    return loss


def cutmix_consistency_loss(D: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                            generator: torch.Generator | None = None, kind: str = "hinge",
                            augmentation: bool = True) -> torch.Tensor:
    """Mix ``real`` with ``fake`` (:func:`cutmix`), run ``D`` once on the real, fake and
    mixed images, and return :func:`cutmix_loss` (consistency, plus the augmentation
    term unless ``augmentation=False``). Images ``(B, 3, H, W)`` in [-1, 1]."""
    mixed, mask = cutmix(real, fake, generator)
    b = real.shape[0]
    logits = D(torch.cat([real, fake, mixed]))
    parts = [[t[i * b:(i + 1) * b] for t in logits] for i in range(3)]
    return cutmix_loss(parts[2], parts[0], parts[1], mask, kind, augmentation)

"""GAN losses, the R1 penalty and the adversarial weight.

A discriminator returns a list of logit tensors (PatchGAN: one map; UNet: a global
logit and a per-pixel map); every loss here averages each tensor and sums over the list,
so both outputs of the UNet discriminator enter the loss (Schönfeld et al. 2020, eq. 4–5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

GAN_LOSSES = ("hinge", "non-saturating")


def _check(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; valid: {GAN_LOSSES}")


def real_term(logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Element-wise D loss for logits that should say "real": hinge ``relu(1 - l)``,
    non-saturating ``softplus(-l)``; float32, same shape."""
    _check(kind)
    logits = logits.float()
    return F.relu(1 - logits) if kind == "hinge" else F.softplus(-logits)


def fake_term(logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Element-wise D loss for logits that should say "fake": hinge ``relu(1 + l)``,
    non-saturating ``softplus(l)``; float32, same shape."""
    _check(kind)
    logits = logits.float()
    return F.relu(1 + logits) if kind == "hinge" else F.softplus(logits)


def discriminator_loss(real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor],
                       kind: str = "hinge") -> torch.Tensor:
    """Discriminator loss, ``0.5·(E[real_term(real)] + E[fake_term(fake)])`` per output,
    summed over outputs. The 0.5 follows taming-transformers."""
    _check(kind)
    total = 0.0
    for r, f in zip(real, fake, strict=True):
        total = total + 0.5 * (real_term(r, kind).mean() + fake_term(f, kind).mean())
    return total


def generator_loss(fake: Sequence[torch.Tensor], kind: str = "hinge") -> torch.Tensor:
    """Generator adversarial loss, summed over outputs: hinge ``-E[fake]`` (as LDM),
    non-saturating ``E[softplus(-fake)]``."""
    _check(kind)
    if kind == "hinge":
        return sum(-f.float().mean() for f in fake)
    return sum(F.softplus(-f.float()).mean() for f in fake)


def r1_penalty(real_images: torch.Tensor, real_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``E_x ||∇_x D(x)||²`` on real images, which must have
    ``requires_grad``. Multiply by ``γ/2`` outside. Builds a graph (double backward)."""
    out = sum(r.float().sum() for r in real_logits)
    (grad,) = torch.autograd.grad(out, real_images, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor,
                    last_layer: torch.Tensor, delta: float = 1e-4,
                    max_weight: float = 1e4) -> torch.Tensor:
    """Adaptive adversarial weight of Esser et al.: ``||∇_w L_rec|| / (||∇_w L_adv|| + δ)``
    with ``w`` the decoder's last layer (``model.last_layer()``), clamped to
    ``[0, max_weight]`` and detached (δ and the clamp as taming-transformers), float32.

    LiteVAE eq. 2 writes ``λ_adv = ½ · ratio``: the ½ is LDM's ``disc_weight`` 0.5, which
    multiplies this ratio as ``LossWeights.adversarial`` (0.5 in the ``sdvae`` recipe).
    """
    (g_rec,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_adv,) = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)
    w = g_rec.float().norm() / (g_adv.float().norm() + delta)
    return w.clamp(0.0, max_weight).detach()

"""Discriminator output shapes and structure; spectral norm; CutMix regularisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from latentae.losses import (
    PatchGANDiscriminator,
    StyleGANDiscriminator,
    UNetDiscriminator,
    build_discriminator,
    cutmix,
    cutmix_consistency_loss,
    cutmix_loss,
    cutmix_mask,
)


@pytest.mark.parametrize("size", [32, 64])
def test_unet_discriminator_shapes(size):
    d = UNetDiscriminator(channels=8, mult=(1, 2, 4))
    x = torch.randn(2, 3, size, size, requires_grad=True)
    global_logit, pixel = d(x)
    assert global_logit.shape == (2, 1)
    assert pixel.shape == (2, 1, size, size)
    (global_logit.sum() + pixel.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unet_discriminator_rejects_bad_size():
    with pytest.raises(ValueError, match="divisible by 8"):
        UNetDiscriminator(channels=8, mult=(1, 2, 4))(torch.randn(1, 3, 36, 36))


def test_unet_discriminator_is_per_sample():
    d = UNetDiscriminator(channels=8, mult=(1, 2)).eval()  # eval: no power iteration
    x = torch.randn(3, 3, 16, 16)
    full = d(x)
    single = d(x[1:2])
    for a, b in zip(full, single):
        torch.testing.assert_close(a[1:2], b)


def test_patchgan_matches_taming_layout():
    d = PatchGANDiscriminator()
    # taming NLayerDiscriminator(3, ndf=64, n_layers=3) with BatchNorm: conv weights
    # 3·64·16+64, 64·128·16, 128·256·16, 256·512·16, 512·16+1, plus BN 2·(128+256+512).
    want = 3 * 64 * 16 + 64 + 64 * 128 * 16 + 128 * 256 * 16 + 256 * 512 * 16 + 512 * 16 + 1
    assert sum(p.numel() for p in d.parameters()) == want + 2 * (128 + 256 + 512)
    (out,) = d(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6


def test_stylegan_discriminator_shape():
    d = StyleGANDiscriminator(channels=8, num_blocks=3)
    (out,) = d(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 1)


def test_build_discriminator_unknown_name():
    assert isinstance(build_discriminator("unet", channels=8), UNetDiscriminator)
    with pytest.raises(ValueError, match="patchgan"):
        build_discriminator("nope")


def _layers(d: nn.Module) -> list[nn.Module]:
    return [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_unet_discriminator_is_spectrally_normalised():
    d = UNetDiscriminator(channels=8, mult=(1, 2))
    assert all(parametrize.is_parametrized(m, "weight") for m in _layers(d))
    with torch.no_grad():
        for _ in range(30):  # one power iteration per training forward
            d(torch.randn(1, 3, 8, 8))
    d.eval()
    for m in _layers(d):
        sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=2e-2)
    plain = UNetDiscriminator(channels=8, mult=(1, 2), spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in _layers(plain))


def _is_box(region: torch.Tensor) -> bool:
    rows, cols = region.any(1), region.any(0)
    return bool(torch.equal(region, rows[:, None] & cols[None, :]))


def test_cutmix_masks_are_boxes_of_uniform_area_and_mix_the_images():
    g = torch.Generator().manual_seed(0)
    masks = cutmix_mask(400, 16, 12, g)
    assert masks.shape == (400, 1, 16, 12)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    for m in masks[:, 0] > 0.5:  # the real or the fake part is one axis-aligned box
        assert _is_box(m) or _is_box(~m)
    # λ ~ U(0, 1) and a fair flip: the real fraction averages 1/2 (box clipping aside).
    assert abs(masks.mean().item() - 0.5) < 0.06
    assert torch.equal(masks, cutmix_mask(400, 16, 12, torch.Generator().manual_seed(0)))
    real, fake = torch.rand(2, 4, 3, 16, 12).unbind(0)
    mixed, mask = cutmix(real, fake, torch.Generator().manual_seed(1))
    assert torch.equal(mixed, torch.where(mask.bool(), real, fake))


class PixelwiseD(nn.Module):
    """A discriminator whose per-pixel logits depend on that pixel only."""

    def __init__(self) -> None:
        super().__init__()
        self.pixel, self.glob = nn.Conv2d(3, 1, 1), nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.glob(x.mean(dim=(2, 3))), self.pixel(x)]


def test_consistency_is_zero_for_a_pixelwise_discriminator_and_not_for_a_unet():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(2, 4, 3, 16, 16, generator=g).unbind(0)
    # D_pix(mix(x, x̂, M)) = mix(D_pix(x), D_pix(x̂), M) exactly when D_pix is per pixel.
    loss = cutmix_consistency_loss(PixelwiseD(), real, fake, g, augmentation=False)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    unet = UNetDiscriminator(channels=8, mult=(1, 2))
    loss = cutmix_consistency_loss(unet, real, fake, g)
    assert loss.item() > 0
    loss.backward()
    grads = [p.grad for p in unet.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)


@pytest.mark.parametrize(("kind", "want"), [("hinge", 2.0), ("non-saturating", 2 * math.log(2))])
def test_cutmix_augmentation_term_hand_value(kind, want):
    # Zero logits everywhere: consistency 0; every per-pixel and the global term cost
    # hinge relu(1 ± 0) = 1 or softplus(0) = log 2.
    mask = cutmix_mask(2, 8, 8, torch.Generator().manual_seed(0))
    zeros = [torch.zeros(2, 1), torch.zeros(2, 1, 8, 8)]
    assert cutmix_loss(zeros, zeros, zeros, mask, kind).item() == pytest.approx(want)
    assert cutmix_loss(zeros, zeros, zeros, mask, kind, augmentation=False).item() == 0.0


def test_cutmix_needs_a_per_pixel_output():
    real = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="per-pixel"):
        cutmix_consistency_loss(PatchGANDiscriminator(channels=8, n_layers=2), real, real)

"""Discriminator output shapes and structure."""

from __future__ import annotations

import pytest
import torch

from latentae.losses import (
    PatchGANDiscriminator,
    StyleGANDiscriminator,
    UNetDiscriminator,
    build_discriminator,
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
    d = UNetDiscriminator(channels=8, mult=(1, 2))
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

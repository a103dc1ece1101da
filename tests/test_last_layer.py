"""``Autoencoder.last_layer()``: every family names the weight of the decoder's final
layer, which the adaptive GAN weight (a ratio of gradient norms there) needs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import latentae
from latentae.losses import PatchGANDiscriminator, adaptive_weight, generator_loss, l1_loss
from latentae.models.autoencoder import Autoencoder

# A SANA-like DC-AE at test size: non-empty stage 0 (plain output conv), strided-conv
# down-sampling, interpolation up-sampling, RMSNorm + SiLU everywhere in the decoder.
SANA_TINY = {"encoder_depths": (1,) * 6, "decoder_depths": (1,) * 6, "downsample": "conv",
             "upsample": "interpolate", "decoder_norms": ("rms_norm",) * 6,
             "decoder_acts": ("silu",) * 6}
VARIANTS = {
    "sdvae-tiny-smc": ("sdvae-tiny", {"decoder_norm": "smc"}),
    "litevae-tiny-smc": ("litevae-tiny", {"decoder_norm": "smc"}),
    "litevae-tiny-wavelet": ("litevae-tiny", {"output": "wavelet"}),
    "litevae-tiny-wavelet-smc": ("litevae-tiny", {"output": "wavelet", "decoder_norm": "smc"}),
    # empty stage 0: the output conv sits inside the interpolating up-sampling block
    "dcae-tiny-f32-interpolate": ("dcae-tiny-f32", {"upsample": "interpolate"}),
    "dcae-tiny-f32-sana": ("dcae-tiny-f32", SANA_TINY),
}
CASES = [(name, {}) for name in latentae.list_models("*tiny*")] + list(VARIANTS.values())
IDS = latentae.list_models("*tiny*") + list(VARIANTS)


def _latent(model: Autoencoder, size: int = 64) -> torch.Tensor:
    h = size // model.spatial_compression_ratio
    return torch.randn(2, model.latent_channels, h, h, generator=torch.Generator().manual_seed(0))


def _decode_call_order(model, z: torch.Tensor) -> list[nn.Module]:
    """Modules that own parameters directly, in the order ``decode`` calls them."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
             for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    try:
        model.decode(z)
    finally:
        for h in hooks:
            h.remove()
    return order


@pytest.mark.parametrize(("name", "overrides"), CASES, ids=IDS)
def test_last_layer_is_the_last_layer_decode_applies_and_gets_gradient(name, overrides):
    model = latentae.create_model(name, **overrides).eval()
    last = model.last_layer()
    assert isinstance(last, nn.Parameter) and last.ndim == 4  # a conv kernel (O, I, k, k)
    z = _latent(model)
    owner = _decode_call_order(model, z)[-1]
    assert any(p is last for p in owner.parameters(recurse=False)), type(owner).__name__
    model.decode(z).sum().backward()
    assert last.grad is not None and last.grad.abs().sum() > 0
    assert any(p is last for p in model.param_groups()["decoder"])


@pytest.mark.parametrize(("name", "overrides"), CASES, ids=IDS)
def test_adaptive_gan_weight_works_at_every_family_last_layer(name, overrides):
    model = latentae.create_model(name, **overrides).train()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    recon = model.decode(model.encode(x).mode())
    disc = PatchGANDiscriminator(channels=8, n_layers=2, norm="none")
    weight = adaptive_weight(l1_loss(recon, x), generator_loss(disc(recon)), model.last_layer())
    assert torch.isfinite(weight) and weight > 0


def test_default_last_layer_is_the_last_registered_decoder_kernel():
    model = latentae.create_model("sdvae-tiny")
    # The base-class rule agrees with the family's explicit choice.
    assert Autoencoder.last_layer(model) is model.last_layer()

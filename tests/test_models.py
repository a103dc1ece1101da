"""Parameter counts, posterior, SMC, model interface and its errors, registry."""

import math

import pytest
import torch

import latentae
from latentae.models.distributions import DeterministicPosterior, DiagonalGaussian
from latentae.nn.smc import SMC
from latentae.registry import create_model, list_models

# Encoder counts from the LiteVAE paper (Tables 23-24, nz=4) and the SD-VAE encoder/decoder.
ENCODER_PARAMS = {
    "litevae-s": 1_035_692, "litevae-b": 6_750_636, "litevae-m": 32_750_124,
    "litevae-l": 41_422_380,  # the paper rounds to 41.425M
    "sdvae-f8": 34_163_592,
}
SD_DECODER_PARAMS = 49_490_179


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(ENCODER_PARAMS))
def test_parameter_counts(name):
    with torch.device("meta"):
        model = create_model(name)
    assert _count(model.encoder) == ENCODER_PARAMS[name]
    assert _count(model.decoder) == SD_DECODER_PARAMS


def test_small_sdvae_baselines_match_litevae_encoders():
    with torch.device("meta"):
        for small, lite in (("sdvae-f8-enc-s", "litevae-s"), ("sdvae-f8-enc-b", "litevae-b")):
            ratio = _count(create_model(small).encoder) / _count(create_model(lite).encoder)
            assert 0.85 < ratio < 1.2, (small, ratio)


@pytest.mark.parametrize("name", list_models())
def test_every_preset_builds_with_consistent_metadata(name):
    with torch.device("meta"):
        model = create_model(name)
    assert model.preset == name
    assert model.spatial_compression_ratio in (8, 16, 32, 64, 128)
    assert model.latent_channels > 0


@pytest.mark.parametrize("name", ["litevae-tiny", "sdvae-tiny"])
@pytest.mark.parametrize("overrides", [{}, {"decoder_norm": "smc"}, {"latent_channels": 12}])
def test_forward_shapes(name, overrides):
    model = create_model(name, **overrides).eval()
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    recon, post = model(x)
    nz = model.latent_channels
    assert post.mean.shape == (2, nz, 8, 6)
    assert recon.shape == x.shape
    assert post.kl().shape == (2,)


def test_litevae_variants_shared_unet_and_wavelet_output():
    shared = create_model("litevae-tiny", shared_extractor=True)
    assert len(shared.encoder.extractors) == 1
    wav = create_model("litevae-tiny", output="wavelet").eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    z = wav.encode(x).mode()
    assert wav.decoder(z).shape == (1, 12, 16, 16)  # level-1 bands at H/2
    assert wav.decode(z).shape == (1, 3, 32, 32)
    assert wav.decode_wavelet(z).shape == (1, 12, 16, 16)


def test_kl_matches_closed_form():
    mean, logvar = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    post = DiagonalGaussian(torch.cat([mean, logvar], 1))
    # KL(N(m, s^2) || N(0,1)) = 0.5 (m^2 + s^2 - 1 - log s^2), summed per sample.
    ref = sum(0.5 * (m * m + math.exp(lv) - 1 - lv)
              for m, lv in zip(mean[0].flatten().tolist(), logvar[0].flatten().tolist()))
    assert post.kl()[0].item() == pytest.approx(ref, rel=1e-5)
    g = torch.Generator().manual_seed(1)
    assert post.sample(g).shape == mean.shape
    assert torch.equal(post.mode(), mean)
    z = torch.randn(2, 4, 3, 3)
    var = logvar.exp()
    nll = 0.5 * (math.log(2 * math.pi) + logvar + (z - mean) ** 2 / var).sum((1, 2, 3))
    assert torch.allclose(post.nll(z), nll)


def test_deterministic_posterior():
    z = torch.randn(2, 8, 2, 2)
    post = DeterministicPosterior(z)
    assert torch.equal(post.sample(), post.mode())
    assert torch.equal(post.kl(), torch.zeros(2))


def test_smc_normalises_each_output_filter_to_its_gain():
    smc = SMC(6, 5)
    with torch.no_grad():
        smc.scales.uniform_(0.2, 3.0)
        smc.gain.fill_(1.7)
    w = smc.modulated_weight()
    norms = w.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full((5,), 1.7), atol=1e-5)
    # Input scales matter only through their ratios: scaling all of them is a no-op.
    before = smc(torch.randn(1, 6, 8, 8, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        smc.scales.mul_(10)
    after = smc(torch.randn(1, 6, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(before, after, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    model = create_model("litevae-tiny")
    with pytest.raises(ValueError, match="divisible by the compression ratio 8"):
        model.encode(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ValueError, match="--pad"):
        model.encode(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ValueError, match="channels"):
        model.encode(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="decode expects latents"):
        model.decode(torch.zeros(1, 7, 8, 8))


def test_registry_errors_name_the_choices():
    with pytest.raises(ValueError, match="Did you mean litevae-b"):
        latentae.create_model("litevae-bb")
    with pytest.raises(ValueError, match="valid:"):
        latentae.create_model("litevae-tiny", no_such_field=1)
    with pytest.raises(ValueError, match="already registered"):
        from latentae.registry import register
        register("litevae-s", "litevae", None)
    with pytest.raises(ValueError, match="decoder_norm"):
        latentae.create_model("litevae-tiny", decoder_norm="batch")
    assert "litevae-b" in latentae.list_models("litevae-*")
    assert not latentae.list_models("dcae-zzz*")


@pytest.mark.parametrize("overrides", [{"extractor": "nafnet"},
                                       {"aggregator": "vit", "vit_dim": 32, "vit_heads": 2,
                                        "vit_depth": 1, "vit_grid": 4}])
def test_litevae_nafnet_extractor_and_vit_aggregator(overrides):
    model = create_model("litevae-tiny", **overrides).eval()
    for size in (32, 48):  # the ViT position grid (4) is resized for 48² inputs (6×6 latents)
        x = torch.rand(1, 3, size, size) * 2 - 1
        recon, post = model(x)
        assert post.mean.shape == (1, 4, size // 8, size // 8)
        assert recon.shape == x.shape
    with pytest.raises(ValueError, match="aggregator must be one of"):
        create_model("litevae-tiny", aggregator="mlp")


def test_vit_aggregator_is_half_the_unet_aggregator_as_table_20():
    # LiteVAE App. D.5, Table 20: UNet aggregator 1.69M, ViT aggregator 0.84M parameters
    # (litevae-b / -m aggregator widths 32, (1, 2, 3); nz = 4).
    with torch.device("meta"):
        unet = create_model("litevae-b").encoder.aggregator
        vit = create_model("litevae-b", aggregator="vit").encoder.aggregator
    assert _count(unet) == 1_691_976 and round(_count(unet) / 1e6, 2) == 1.69
    assert _count(vit) == 840_072 and round(_count(vit) / 1e6, 2) == 0.84

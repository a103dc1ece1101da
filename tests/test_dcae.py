"""DC-AE: parameter counts, parity with diffusers AutoencoderDC, shortcuts, export, freezing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import latentae
from latentae.convert.dc import (
    config_from_diffusers,
    config_to_diffusers,
    dcae_from_diffusers,
    dcae_to_diffusers,
    is_dcae_diffusers_config,
)
from latentae.models.dcae import DCAE, PRESETS, DCAEConfig
from latentae.nn.shortcuts import channel_to_space_shortcut, space_to_channel_shortcut
from latentae.runtime import fast_path

diffusers = pytest.importorskip("diffusers")
AutoencoderDC = diffusers.AutoencoderDC


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights at the scale of PyTorch's default init (std 1/sqrt(3·fan_in)), norm
    weights near 1, biases and BatchNorm running statistics away from their defaults (so a
    mis-mapped tensor shows), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * (3 * p[0].numel()) ** -0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.num_features, generator=g))
    return module.eval()


def reference(config: DCAEConfig) -> torch.nn.Module:
    """A diffusers AutoencoderDC of ``config`` with random weights (built without init)."""
    with torch.device("meta"):
        ref = AutoencoderDC(**config_to_diffusers(config))
    return randomize_(ref.to_empty(device="cpu"))


def divided(name: str, k: int) -> DCAEConfig:
    """A published preset with every width and the latent width divided by ``k``."""
    c = PRESETS[name]
    return dataclasses.replace(c, encoder_widths=tuple(w // k for w in c.encoder_widths),
                               decoder_widths=tuple(w // k for w in c.decoder_widths),
                               latent_channels=c.latent_channels // k)


def assert_parity(ref: torch.nn.Module, ours: DCAE, size: int) -> None:
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        z_ref = ref.encode(x).latent
        z = ours.encode(x).mode()
        torch.testing.assert_close(z, z_ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.decode(z_ref), ref.decode(z_ref).sample,
                                   rtol=0, atol=1e-5)
    assert z.std() > 0.1  # not a degenerate comparison


# --- structure -------------------------------------------------------------------------
@pytest.mark.parametrize("name,encoder,decoder", [
    ("dcae-f32c32", 123_172_384, 200_184_076),
    ("dcae-f64c128", 264_550_528, 412_345_612),
    ("dcae-f128c512", None, None),
    ("dcae-f32c32-sana", None, None),
    ("dcae-tiny-f32", None, None),
    ("dcae-tiny-f64", None, None),
])
def test_parameter_counts_equal_diffusers(name, encoder, decoder):
    with torch.device("meta"):
        ours = DCAE(PRESETS[name])
        ref = AutoencoderDC(**config_to_diffusers(PRESETS[name]))
    assert count(ours.encoder) == count(ref.encoder)
    assert count(ours.decoder) == count(ref.decoder)
    if encoder is not None:
        assert (count(ours.encoder), count(ours.decoder)) == (encoder, decoder)


def test_presets_registered_with_scaling_factors():
    assert latentae.list_models("dcae-*") == sorted(PRESETS)
    assert PRESETS["dcae-f32c32-in"].scaling_factor == 0.3189
    assert PRESETS["dcae-f64c128"].scaling_factor == 0.2889
    assert PRESETS["dcae-f32c32-sana"].scaling_factor == 0.41407
    for alias in ("dcae-f32c32-in", "dcae-f32c32-mix"):
        assert dataclasses.replace(PRESETS[alias], scaling_factor=1.0) == \
            dataclasses.replace(PRESETS["dcae-f32c32"], scaling_factor=1.0)
    with pytest.raises(ValueError, match="dcae-f32c32"):
        latentae.create_model("dcae-f32c23")


# --- parity with diffusers -------------------------------------------------------------
def test_f32c32_matches_diffusers():
    ref = reference(PRESETS["dcae-f32c32"])
    assert_parity(ref, dcae_from_diffusers(ref), 64)


@pytest.mark.parametrize("name,size", [("dcae-f64c128", 64), ("dcae-f128c512", 128)])
def test_reduced_width_structures_match_diffusers(name, size):
    """Full depths, block types, norms and shortcuts; widths / 8 to keep the suite fast.
    (The SANA structure is checked the same way in the export test below.)"""
    k = 8
    ref = reference(divided(name, k))
    assert_parity(ref, dcae_from_diffusers(ref), size)


def test_empty_first_stage_with_conv_down_and_interpolate_up_matches_diffusers():
    config = dataclasses.replace(PRESETS["dcae-tiny-f32"], downsample="conv",
                                 upsample="interpolate")
    ref = reference(config)
    assert_parity(ref, dcae_from_diffusers(ref), 64)


@pytest.mark.parametrize("name", ["dcae-tiny-f64", "dcae-f32c32-sana"])
def test_export_loads_in_diffusers_and_agrees(tmp_path, name):
    # SANA / 8: strided-conv down, interpolation up, multi-scale (5,) attention
    config = PRESETS[name] if "tiny" in name else divided(name, 8)
    ours = randomize_(DCAE(config), seed=3)
    dcae_to_diffusers(ours, tmp_path / "dc")
    ref = AutoencoderDC.from_pretrained(str(tmp_path / "dc")).eval()
    assert ref.config.scaling_factor == config.scaling_factor
    assert_parity(ref, ours, 64)
    back = dcae_from_diffusers(tmp_path / "dc")
    assert back.config == config
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_published_config_dicts_map_to_presets():
    vit, res = "EfficientViTBlock", "ResBlock"
    sana = {"_class_name": "AutoencoderDC", "latent_channels": 32,
            "encoder_block_types": [res] * 3 + [vit] * 3,
            "decoder_block_types": [res] * 3 + [vit] * 3,
            "encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
            "decoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
            "encoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
            "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
            "encoder_layers_per_block": [2, 2, 2, 3, 3, 3],
            "decoder_layers_per_block": [3, 3, 3, 3, 3, 3],
            "downsample_block_type": "conv", "upsample_block_type": "interpolate",
            "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu",
            "scaling_factor": 0.41407}
    assert is_dcae_diffusers_config(sana)
    assert config_from_diffusers(sana) == PRESETS["dcae-f32c32-sana"]
    for name in ("dcae-f32c32-mix", "dcae-f64c128", "dcae-f128c512"):
        assert config_from_diffusers(config_to_diffusers(PRESETS[name])) == PRESETS[name]
    with pytest.raises(ValueError, match="does not know"):
        config_from_diffusers({**sana, "new_switch": True})


# --- residual autoencoding shortcuts ---------------------------------------------------
def test_down_shortcut_of_pixel_shuffle_is_channel_group_mean():
    y = torch.randn(2, 32, 3, 5)  # 4·C channels of a (C=8)-channel image at 2× size
    for out in (4, 8, 16, 32):
        g = 32 // out
        expected = torch.stack([y[:, i * g:(i + 1) * g].mean(dim=1) for i in range(out)], 1)
        torch.testing.assert_close(space_to_channel_shortcut(F.pixel_shuffle(y, 2), out),
                                   expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("c,out", [(16, 8), (16, 16), (32, 8), (8, 32)])
def test_up_then_down_shortcut_is_identity(c, out):
    x = torch.randn(2, c, 4, 6)
    up = channel_to_space_shortcut(x, out)
    assert up.shape == (2, out, 8, 12)
    torch.testing.assert_close(space_to_channel_shortcut(up, c), x, rtol=0, atol=1e-6)


def test_shortcuts_can_be_switched_off():
    base = randomize_(latentae.create_model("dcae-tiny-f32"))
    off = DCAE(dataclasses.replace(base.config, stage_shortcuts=False,
                                   encoder_out_shortcut=False, decoder_in_shortcut=False))
    off.load_state_dict(base.state_dict())  # the shortcuts hold no parameters
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(off.encode(x).mode(), base.encode(x).mode())
    with pytest.raises(ValueError, match="stage_shortcuts"):
        config_to_diffusers(off.config)


# --- interface -------------------------------------------------------------------------
def test_deterministic_posterior_and_shapes():
    model = latentae.create_model("dcae-tiny-f64").eval()
    x = torch.rand(2, 3, 128, 64) * 2 - 1
    post = model.encode(x)
    assert post.mode().shape == (2, 128, 2, 1)
    assert torch.equal(post.sample(), post.mode())
    assert torch.equal(post.kl(), torch.zeros(2))
    recon, _ = model(x)
    assert recon.shape == x.shape


@pytest.mark.parametrize("name,size", [("dcae-tiny-f32", (48, 64)), ("dcae-tiny-f64", (96, 96))])
def test_bad_sizes_raise(name, size):
    model = latentae.create_model(name)
    f = model.spatial_compression_ratio
    with pytest.raises(ValueError, match=rf"compression ratio {f}.*--pad"):
        model.encode(torch.zeros(1, 3, *size))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="per-stage"):
        DCAE(dataclasses.replace(PRESETS["dcae-tiny-f32"], decoder_norms=("rms_norm",)))
    with pytest.raises(ValueError, match="only stage 0"):
        DCAE(dataclasses.replace(PRESETS["dcae-tiny-f32"], encoder_depths=(1, 1, 0, 1, 1, 1)))
    with pytest.raises(ValueError, match="block_types"):
        DCAE(dataclasses.replace(PRESETS["dcae-tiny-f32"], encoder_block_types=("Res",) * 6))


def test_save_and_load_roundtrip(tmp_path):
    model = randomize_(latentae.create_model("dcae-tiny-f32"))
    model.save_pretrained(str(tmp_path / "m"))
    loaded = latentae.load(str(tmp_path / "m")).eval()
    assert loaded.config == model.config and loaded.preset == "dcae-tiny-f32"
    fast_path(model.eval(), "cpu")  # latentae.load's memory format: then the same bits
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x, sample=False)[0], model(x, sample=False)[0])


# --- phased training -------------------------------------------------------------------
def test_param_groups_hold_the_documented_modules():
    model = latentae.create_model("dcae-tiny-f32")
    groups = model.param_groups()
    ids = {k: {id(p) for p in v} for k, v in groups.items()}
    assert ids["decoder.head"] == {id(p) for p in model.decoder.head.parameters()}
    assert ids["decoder.head"] == {id(model.decoder.head.norm.weight),
                                   id(model.decoder.head.norm.bias),
                                   *(id(p) for p in model.decoder.head.conv.parameters())}
    assert ids["encoder.project_out"] == {id(model.encoder.project_out.weight),
                                          id(model.encoder.project_out.bias)}
    assert ids["decoder.project_in"] == {id(model.decoder.project_in.weight),
                                         id(model.decoder.project_in.bias)}
    assert ids["encoder"] | ids["decoder"] == ids["all"]
    assert ids["encoder.project_out"] <= ids["encoder"]
    assert ids["decoder.head"] | ids["decoder.project_in"] <= ids["decoder"]


def _names(model: torch.nn.Module, params) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def _under(model: torch.nn.Module, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


def test_adaptation_groups_are_runs_of_stages_next_to_the_latent():
    # DC-AE §3.2 / App. G: phase 2 trains the encoder's head and the decoder's input
    # layers, phase 3 the decoder's head layers; K stages deep (Fig. 11).
    model = latentae.create_model("dcae-tiny-f32")  # 6 stages, stage 0 empty
    g = {k: _names(model, v) for k, v in model.param_groups().items()}
    assert g["encoder.head.1"] == _under(model, "encoder.stages.5.", "encoder.project_out.")
    assert g["encoder.head.2"] == _under(model, "encoder.stages.4.", "encoder.stages.5.",
                                         "encoder.project_out.")
    assert g["decoder.input.1"] == _under(model, "decoder.project_in.", "decoder.stages.5.")
    assert g["decoder.input.3"] == _under(model, "decoder.project_in.", "decoder.stages.5.",
                                          "decoder.stages.4.", "decoder.stages.3.")
    # The decoder runs stage 0 last, but it is empty here: the head's stages are 1, 2, ...
    assert g["decoder.head.1"] == _under(model, "decoder.stages.1.", "decoder.head.")
    assert g["decoder.head.2"] == _under(model, "decoder.stages.1.", "decoder.stages.2.",
                                         "decoder.head.")
    assert any(".up." in n for n in g["decoder.head.1"])  # a stage brings its up-sampler
    for side in ("encoder.head", "decoder.input", "decoder.head"):
        assert g[f"{side}.1"] < g[f"{side}.2"] < g[f"{side}.3"]
    assert g["encoder.project_out"] < g["encoder.head.1"] <= g["encoder"]
    assert g["decoder.project_in"] < g["decoder.input.1"] <= g["decoder"]
    assert g["decoder.head"] < g["decoder.head.1"] <= g["decoder"]
    sana = latentae.create_model("dcae-tiny-f32", encoder_depths=(1,) * 6,
                                 decoder_depths=(1,) * 6, downsample="conv",
                                 upsample="interpolate")
    head = _names(sana, sana.param_groups()["decoder.head.1"])
    assert head == _under(sana, "decoder.stages.0.", "decoder.head.")


@pytest.mark.parametrize("groups", [("decoder.head",), ("decoder.head.2",),
                                    ("encoder.head.1", "decoder.input.1")])
def test_training_a_group_leaves_other_parameters_bit_identical(groups):
    model = randomize_(latentae.create_model("dcae-tiny-f32")).train()
    chosen = [p for g in groups for p in model.param_groups()[g]]
    chosen_ids = {id(p) for p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen_ids)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.AdamW(chosen, lr=1e-3, weight_decay=0.1)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    recon, _ = model(x)
    (recon - x).abs().mean().backward()
    opt.step()
    changed = {k for k, p in model.named_parameters() if not torch.equal(p, before[k])}
    assert changed == {k for k, p in model.named_parameters() if id(p) in chosen_ids}

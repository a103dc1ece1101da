"""DiT and U-ViT backbones: parameter counts of the releases, shapes of every preset,
input checks, save/load, and the analytic FLOP count against torch's FLOP counter.
(Parity with diffusers and the official weight layouts: test_diffusion_convert.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import latentae
from latentae.diffusion import (
    DiT,
    DiTConfig,
    UViT,
    UViTConfig,
    count_params,
    create_diffusion,
    describe_presets,
    flops,
    list_diffusion,
    load,
)
from latentae.diffusion.layers import sincos_pos_embed_2d, timestep_embedding
from latentae.errors import InputError

TINY_DIT = DiTConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2,
                     num_heads=4, num_classes=5)
TINY_UVIT = UViTConfig(input_size=4, patch_size=1, in_channels=3, hidden_size=32, depth=2,
                       num_heads=4, num_classes=5)


def randomize(model: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Non-zero random weights everywhere (adaLN-Zero starts at zero, where any
    comparison would pass); DiT's fixed position embedding stays."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "pos_embed" or isinstance(model, UViT):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def inputs(config, batch: int = 3):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, config.in_channels, config.input_size, config.input_size, generator=g)
    t = torch.tensor([0.0, 411.0, 999.0][:batch])
    labels = torch.tensor([0, 4, config.num_classes][:batch])
    return x, t, labels


# --- parameter counts, presets, tokens -----------------------------------------------

def test_dit_xl2_has_the_release_parameter_count():
    # The DiT release prints 675,129,632 for DiT-XL/2 (4 latent channels, 32², 1000
    # classes, learned sigma), its frozen sin-cos position embedding included.
    with torch.device("meta"):
        model = create_diffusion("dit-xl", patch_size=2, in_channels=4, input_size=32,
                                 num_classes=1000)
    assert count_params(model) == 675_129_632
    assert not model.pos_embed.requires_grad


def test_uvit_sizes_match_the_papers():
    # U-ViT paper: U-ViT-H/2 (ImageNet 256², release with its final 3x3 conv) 501M;
    # DC-AE §appendix: UViT-2B "scaled the model up to 1.6B parameters".
    with torch.device("meta"):
        h2 = create_diffusion("uvit-h", patch_size=2, in_channels=4, input_size=32,
                              num_classes=1000, final_conv=True)
        b2 = create_diffusion("uvit-2b", patch_size=1, in_channels=32, input_size=16,
                              num_classes=1000)
    assert round(count_params(h2) / 1e6) == 501
    assert round(count_params(b2) / 1e8) == 16
    assert len(h2.in_blocks) == len(h2.out_blocks) == 14  # "depth 28" + the mid block


@pytest.mark.parametrize("name", list_diffusion())
@pytest.mark.parametrize("patch", [1, 2, 4])
def test_every_preset_maps_latents_to_predictions_of_the_same_size(name, patch):
    with torch.device("meta"):  # full-size shapes, no memory or compute
        model = create_diffusion(name, patch_size=patch, in_channels=4, input_size=16,
                                 num_classes=10)
        out = model(torch.randn(2, 4, 16, 16), torch.tensor([3, 7]), torch.tensor([1, 10]))
    sigma = 2 if name.startswith("dit") else 1  # the releases' learned-sigma choice
    assert out.shape == (2, 4 * sigma, 16, 16)
    assert model.tokens == (16 // patch) ** 2


def test_list_and_unknown_names():
    assert list_diffusion() == ["dit-b", "dit-l", "dit-s", "dit-tiny", "dit-xl", "uvit-2b",
                                "uvit-h", "uvit-s", "uvit-tiny"]
    assert latentae.create_diffusion is create_diffusion
    with pytest.raises(InputError, match="dit-xl"):
        create_diffusion("dit-xxl", patch_size=2, in_channels=4, input_size=32, num_classes=1)
    with pytest.raises(InputError, match="valid"):
        create_diffusion("dit-s", patch_size=2, in_channels=4, input_size=32, num_classes=1,
                         widht=3)


def test_describe_presets_rows():
    rows = describe_presets(resolution=512, compression=32, patch_size=1, in_channels=32)
    assert [r["name"] for r in rows] == list_diffusion()
    assert {r["tokens"] for r in rows} == {256}
    with torch.device("meta"):
        s = create_diffusion("uvit-s", patch_size=1, in_channels=32, input_size=16,
                             num_classes=1000)
    row = next(r for r in rows if r["name"] == "uvit-s")
    assert row["params"] == count_params(s) and row["gflops"] > 0


# --- embeddings ---------------------------------------------------------------------

def test_position_embedding_equals_mae_numpy_sincos():
    # MAE/DiT get_2d_sincos_pos_embed: grid = meshgrid(w, h); first half from grid[0].
    dim, g = 16, 3
    grid = np.stack(np.meshgrid(np.arange(g, dtype=np.float32),
                                np.arange(g, dtype=np.float32))).reshape(2, -1)
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))

    def one(pos):
        out = np.einsum("m,d->md", pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    ref = np.concatenate([one(grid[0]), one(grid[1])], axis=1)
    np.testing.assert_allclose(sincos_pos_embed_2d(dim, g).numpy(), ref, atol=1e-7)
    model = DiT(TINY_DIT)
    torch.testing.assert_close(model.pos_embed[0], sincos_pos_embed_2d(32, 4))


def test_timestep_embedding_is_cos_then_sin_with_frequencies_over_half():
    t = torch.tensor([0.0, 3.0, 250.5])
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    ref = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    torch.testing.assert_close(timestep_embedding(t, 8), ref)


# --- behaviour ----------------------------------------------------------------------

def test_dit_starts_as_zero_output_adaln_zero():
    x, t, labels = inputs(TINY_DIT)
    assert DiT(TINY_DIT)(x, t, labels).abs().max() == 0  # final layer zero-initialised


@pytest.mark.parametrize("config", [TINY_DIT, TINY_UVIT,
                                    UViTConfig(**{**TINY_UVIT.__dict__, "final_conv": True,
                                                  "mlp_time_embed": True,
                                                  "learn_sigma": True})])
def test_labels_none_is_the_null_class_and_labels_matter(config):
    model = randomize((DiT if isinstance(config, DiTConfig) else UViT)(config)).eval()
    x, t, _ = inputs(config)
    null = torch.full((3,), config.num_classes)
    out = model(x, t, None)
    assert out.shape == (3, model.out_channels, config.input_size, config.input_size)
    torch.testing.assert_close(out, model(x, t, null))
    assert not torch.allclose(out, model(x, t, torch.tensor([0, 1, 2])))
    assert not torch.allclose(model(x, t + 1, null), out)  # timesteps matter too
    torch.testing.assert_close(model(x, 411.0, None),  # a scalar t broadcasts
                               model(x, torch.full((3,), 411.0), None))


def test_label_dropout_only_in_training():
    config = DiTConfig(**{**TINY_DIT.__dict__, "class_dropout_prob": 1.0})
    model = randomize(DiT(config))
    x, t, labels = inputs(config)
    model.train()
    dropped = model(x, t, labels)
    model.eval()
    torch.testing.assert_close(dropped, model(x, t, None))
    assert not torch.allclose(dropped, model(x, t, labels))


def test_unconditional_uvit_has_no_label_token():
    config = UViTConfig(**{**TINY_UVIT.__dict__, "num_classes": 0})
    model = UViT(config)
    assert model.label_emb is None and model.pos_embed.shape[1] == 1 + model.tokens
    x, t, _ = inputs(config)
    assert model(x, t).shape == x.shape


@pytest.mark.parametrize("family", ["dit", "uvit"])
def test_bad_latents_and_labels_are_input_errors(family):
    model = DiT(TINY_DIT) if family == "dit" else UViT(TINY_UVIT)
    n, c = model.config.input_size, model.config.in_channels
    t = torch.zeros(2)
    with pytest.raises(InputError, match="latent channels"):
        model(torch.zeros(2, c + 1, n, n), t)
    with pytest.raises(InputError, match="input_size"):
        model(torch.zeros(2, c, 2 * n, 2 * n), t)
    with pytest.raises(InputError, match="timesteps"):
        model(torch.zeros(2, c, n, n), torch.zeros(3))
    with pytest.raises(InputError, match="labels"):
        model(torch.zeros(2, c, n, n), t, torch.tensor([0.5, 1.0]))


def test_patch_must_divide_the_latent():
    with pytest.raises(InputError, match="not divisible by patch size 2"):
        create_diffusion("dit-s", patch_size=2, in_channels=4, input_size=9, num_classes=1)
    model = DiT(TINY_DIT)
    with pytest.raises(InputError, match="not divisible by the patch size 2"):
        model(torch.zeros(1, 3, 7, 7), torch.zeros(1))
    with pytest.raises(InputError, match="even"):
        UViT(UViTConfig(**{**TINY_UVIT.__dict__, "depth": 3}))


# --- save / load --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dit-s", "uvit-s"])
def test_save_pretrained_roundtrip_rebuilds_the_same_model(name, tmp_path):
    model = randomize(create_diffusion(name, patch_size=2, in_channels=3, input_size=4,
                                       num_classes=5, depth=2, hidden_size=32,
                                       num_heads=4)).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "README.md", "config.json", "model.safetensors"]  # README.md: the model card
    assert loaded.config == model.config and loaded.preset == name
    assert type(loaded) is type(model)
    x, t, labels = inputs(model.config)
    torch.testing.assert_close(loaded.eval()(x, t, labels), model(x, t, labels),
                               rtol=0, atol=0)


def test_load_refuses_autoencoders_and_corrupt_weights(tmp_path):
    latentae.create_model("sdvae-tiny").save_pretrained(tmp_path / "ae")
    with pytest.raises(InputError, match="not a diffusion model"):
        load(tmp_path / "ae")
    DiT(TINY_DIT).save_pretrained(tmp_path / "d")
    (tmp_path / "d" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="corrupt"):
        load(tmp_path / "d")
    with pytest.raises(InputError, match="config.json"):
        load(tmp_path)


# --- FLOPs --------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    TINY_DIT, DiTConfig(**{**TINY_DIT.__dict__, "learn_sigma": False, "patch_size": 4}),
    TINY_UVIT, UViTConfig(**{**TINY_UVIT.__dict__, "final_conv": True, "mlp_time_embed": True,
                             "learn_sigma": True, "patch_size": 2, "num_classes": 0})])
def test_analytic_flops_equal_torch_flop_counter(config):
    model = (DiT if isinstance(config, DiTConfig) else UViT)(config)
    x, t, labels = inputs(config, batch=1)
    counter = FlopCounterMode(display=False)
    # The math attention kernel runs as bmm ops the counter sees (it does not count the
    # fused CPU kernel).
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(x, t, labels if config.num_classes else None)
    assert counter.get_total_flops() == flops(config)


def test_dit_flops_are_twice_the_papers_multiply_add_counts():
    # DiT paper (Peebles & Xie 2023) table 4 reports Gflops counting a multiply-add as
    # one; ours count it as two: S/2 6.06, B/2 23.01, L/2 80.71, XL/2 118.64, XL/4 29.05.
    paper = {("dit-s", 2): 6.06, ("dit-b", 2): 23.01, ("dit-l", 2): 80.71,
             ("dit-xl", 2): 118.64, ("dit-xl", 4): 29.05}
    for (name, p), gmacs in paper.items():
        with torch.device("meta"):
            model = create_diffusion(name, patch_size=p, in_channels=4, input_size=32,
                                     num_classes=1000)
        assert flops(model) / 2e9 == pytest.approx(gmacs, rel=2e-3), name

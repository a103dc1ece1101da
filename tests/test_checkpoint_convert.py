"""save_pretrained/load round trips, their errors, and AutoencoderKL parity both ways."""

import json

import diffusers
import pytest
import torch
from diffusers import AutoencoderKL

import latentae
from latentae.cli import main as cli_main
from latentae.convert.kl import kl_from_diffusers, kl_to_diffusers
from latentae.pretrained import convert_directory
from latentae.runtime import fast_path

torch.backends.cudnn.deterministic = True


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere (GroupNorm affine too), so parity means something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (1.0 if p.ndim == 1 else 0.0)
                    * torch.rand(p.shape, generator=g))


def _diffusers_sd_vae(widths=(128, 256, 512, 512)) -> AutoencoderKL:
    n = len(widths)
    return AutoencoderKL(block_out_channels=widths, layers_per_block=2, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, norm_num_groups=32).eval()


@pytest.fixture(scope="module")
def diffusers_vae() -> AutoencoderKL:
    vae = _diffusers_sd_vae()
    _randomize(vae)
    return vae


def _compare(ours, vae, x):
    with torch.no_grad():
        post = ours.encode(x)
        ref = vae.encode(x).latent_dist
        assert (post.mean - ref.mean).abs().max() <= 1e-5
        assert (post.logvar - ref.logvar).abs().max() <= 1e-5
        z = ref.mean
        assert (ours.decode(z) - vae.decode(z).sample).abs().max() <= 1e-5


@pytest.mark.parametrize("size", [(64, 64), (96, 64)])
def test_sdvae_matches_diffusers_autoencoderkl(diffusers_vae, size):
    ours = kl_from_diffusers(diffusers_vae).eval()
    assert sum(p.numel() for p in ours.encoder.parameters()) == 34_163_592
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    _compare(ours, diffusers_vae, x)


def test_export_loads_in_diffusers_and_agrees(tmp_path):
    ours = latentae.create_model("sdvae-tiny", layers_per_block=2).eval()
    _randomize(ours, seed=3)
    kl_to_diffusers(ours, tmp_path / "kl")
    vae = AutoencoderKL.from_pretrained(tmp_path / "kl").eval()
    _compare(ours, vae, torch.rand(2, 3, 64, 32) * 2 - 1)
    # the config names the diffusers that is installed, not a version written in the source
    cfg = json.loads((tmp_path / "kl" / "config.json").read_text())
    assert cfg["_diffusers_version"] == diffusers.__version__
    back = latentae.load(tmp_path / "kl").eval()  # diffusers dir -> latentae
    for k, v in ours.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])


def test_cli_convert_both_ways(tmp_path):
    ours = latentae.create_model("sdvae-tiny")
    ours.save_pretrained(tmp_path / "lat")
    assert cli_main(["convert", str(tmp_path / "lat"), str(tmp_path / "diff")]) == 0
    assert json.loads((tmp_path / "diff" / "config.json").read_text())["_class_name"] == \
        "AutoencoderKL"
    assert cli_main(["convert", str(tmp_path / "diff"), str(tmp_path / "lat2")]) == 0
    again = latentae.load(tmp_path / "lat2")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        # same weights, same memory format (latentae.load's CPU fast path) -> same bits
        ours = fast_path(ours.eval(), "cpu")
        assert torch.equal(ours(x, sample=False)[0], again.eval()(x, sample=False)[0])
    with pytest.raises(ValueError, match="no diffusers equivalent"):
        latentae.create_model("litevae-tiny").save_pretrained(tmp_path / "lite")
        convert_directory(tmp_path / "lite", tmp_path / "nope")


@pytest.mark.parametrize("name,overrides", [
    ("litevae-tiny", {}), ("litevae-tiny", {"decoder_norm": "smc", "output": "wavelet"}),
    ("sdvae-tiny", {"latent_channels": 8}),
])
def test_save_load_round_trip_is_identical(tmp_path, name, overrides):
    model = latentae.create_model(name, **overrides).eval()
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["family"] == model.family and meta["preset"] == name
    assert meta["latentae_version"] == latentae.__version__
    loaded = latentae.load(tmp_path / "m").eval()
    assert loaded.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 loaded.state_dict().values()))
    fast_path(model, "cpu")  # the memory format latentae.load hands out: then same bits
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x, sample=False)[0], loaded(x, sample=False)[0])


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        latentae.load(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        latentae.load(tmp_path / "empty")
    model = latentae.create_model("litevae-tiny")
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated file
    with pytest.raises(ValueError, match="corrupt or truncated"):
        latentae.load(tmp_path / "m")
    model.save_pretrained(tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    meta = json.loads(cfg.read_text())
    meta["config"]["latent_channels"] = 8  # shapes no longer match the weights
    cfg.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="shape mismatch"):
        latentae.load(tmp_path / "m")
    meta["family"] = "vqgan"
    cfg.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown model family"):
        latentae.load(tmp_path / "m")
    with pytest.raises(ValueError, match="--random-init"):
        latentae.load("litevae-tiny")


def test_cli_models_lists_every_preset(capsys):
    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out
    for name in latentae.list_models():
        assert name in out
    assert "34,163,664" in out and "1,035,692" in out  # SD-VAE: + quant_conv (72)
    assert cli_main(["models", "nope*"]) == 2

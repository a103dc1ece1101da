"""``latentae.load`` (``latentae/pretrained.py``): one loader for latentae directories,
diffusers ``AutoencoderKL`` / ``AutoencoderDC`` directories written by diffusers itself,
and presets with ``random_init``; its errors say what is wrong; ``info`` shows the
provenance the files record, each fact once."""

from __future__ import annotations

import json

import pytest
import torch

import latentae
from latentae.cli import main
from latentae.convert.dc import config_to_diffusers
from latentae.convert.kl import kl_config_to_diffusers
from latentae.errors import InputError
from latentae.pretrained import convert_directory, model_info

diffusers = pytest.importorskip("diffusers")


def _same_outputs(ours, theirs, x):
    with torch.no_grad():
        out = theirs.encode(x)
        z = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latent
        torch.testing.assert_close(ours.encode(x).mode(), z, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours.decode(z), theirs.decode(z).sample, rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("preset", ["dcae-tiny-f32", "sdvae-tiny"])
def test_load_reads_a_directory_that_diffusers_saved(preset, tmp_path):
    config = latentae.create_model(preset).config
    if preset.startswith("dcae"):
        vae = diffusers.AutoencoderDC(**config_to_diffusers(config))
    else:
        vae = diffusers.AutoencoderKL(**kl_config_to_diffusers(config))
    vae = vae.eval()
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    ours = latentae.load(tmp_path / "vae").eval()
    assert ours.config == config
    _same_outputs(ours, vae, torch.rand(1, 3, 64, 64) * 2 - 1)
    info = model_info(tmp_path / "vae")
    assert info["source"] == "diffusers directory"
    assert info["provenance"]["diffusers_class"] == type(vae).__name__


def test_presets_need_random_init_and_unknown_names_get_close_matches():
    with pytest.raises(InputError, match="random_init=True"):
        latentae.load("litevae-tiny")
    assert latentae.load("litevae-tiny", random_init=True).family == "litevae"
    with pytest.raises(InputError, match="Did you mean litevae-tiny"):
        latentae.load("litevae-tinny")


def test_family_mismatch_and_newer_writer_are_told_apart(tmp_path):
    latentae.create_model("litevae-tiny").save_pretrained(tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    meta = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**meta, "family": "dcae"}))
    with pytest.raises(InputError, match="fields are those of 'litevae'"):
        latentae.load(tmp_path / "m")
    meta["config"]["future_field"] = 1
    cfg.write_text(json.dumps({**meta, "latentae_version": "99.0.0"}))
    with pytest.raises(InputError, match="written by latentae 99.0.0, newer"):
        latentae.load(tmp_path / "m")
    cfg.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="does not know them"):
        latentae.load(tmp_path / "m")
    cfg.write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(InputError, match="UNet2DModel is not supported; supported: AutoencoderKL"):
        latentae.load(tmp_path / "m")


def test_info_shows_what_the_files_record_once(tmp_path, capsys):
    torch.manual_seed(0)
    run = tmp_path / "run"
    latentae.create_model("sdvae-tiny").save_pretrained(run / "model")
    (run / "config.yaml").write_text("train:\n  model: sdvae-tiny\n  seed: 7\n"
                                     "recipe:\n  name: sdvae\n  phases: [{}, {}]\n")
    info = model_info(run / "model")
    prov = info["provenance"]
    assert info["source"] == "latentae directory" and info["preset"] == "sdvae-tiny"
    # a card without a training run: config.yaml's settings are not in it, so they show
    assert prov["train.seed"] == 7 and prov["recipe.phases"] == 2
    assert prov["recipe.name"] == "sdvae"
    # the weights' family is the model's; the writer's version is the card's
    assert "weights.family" not in prov and "latentae_version" not in prov
    assert info["card"]["latentae_version"] == latentae.__version__
    assert "family" not in info["card"] and "parameters" not in info["card"]
    assert main(["info", str(run / "model")]) == 0
    names = [line.split(":")[0].strip() for line in capsys.readouterr().out.splitlines()]
    assert names.count("latentae_version") == 1 and names.count("family") == 1
    (run / "model" / "README.md").unlink()  # no card: the files' own record, all of it
    prov = model_info(run / "model")["provenance"]
    assert prov["latentae_version"] == latentae.__version__ and prov["weights.format"] == "pt"
    assert "weights.family" not in prov and prov["train.seed"] == 7


def test_convert_refuses_a_full_folder_unless_overwrite(tmp_path, capsys):
    latentae.create_model("sdvae-tiny").save_pretrained(tmp_path / "lat")
    assert convert_directory(tmp_path / "lat", tmp_path / "kl") == "diffusers"
    with pytest.raises(InputError, match="is not empty.*--overwrite"):
        convert_directory(tmp_path / "lat", tmp_path / "kl")
    assert main(["convert", str(tmp_path / "lat"), str(tmp_path / "kl"), "--overwrite"]) == 0
    with pytest.raises(InputError, match="already a latentae model directory"):
        convert_directory(tmp_path / "lat", tmp_path / "x", to="latentae")
    latentae.create_model("litevae-tiny").save_pretrained(tmp_path / "lite")
    assert main(["convert", str(tmp_path / "lite"), str(tmp_path / "y")]) == 2
    assert "no diffusers equivalent" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()

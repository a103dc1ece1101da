"""Diffusability while training (train/diffusability.py, diffusion/probe.py): the hooks
log under their own names, leave the training run bit-identical (with them on, off, and
across a resume), the probe's child process repeats for a seed, and the card keeps the
last values."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import final_weights, smooth_images, tiny_config

import latentae.train.diffusability as hooks_module
from latentae.cards import read_card
from latentae.cli import main as cli_main
from latentae.errors import InputError
from latentae.registry import create_model
from latentae.serialization import save_safetensors
from latentae.train.autoencoder import train
from latentae.train.diffusability import run_child
from latentae.train.validation import load_center_crops


def fake_child(request, root, result):
    """Stands in for the child process and, unlike it, even draws from the global RNG
    (the loop must not care: it reseeds before every step)."""
    torch.randn(100)
    root.mkdir(parents=True, exist_ok=True)
    out = {"kid": 0.5, "kid_seed_std": 0.1, "fid": None, "runs": [], "seconds": 1.0}
    result.write_text(json.dumps(out))
    return out


def hooked(tmp_path, out, **kw):
    return tiny_config(tmp_path, out, val_data=str(tmp_path / "data"), val_images=4,
                       diffusability_every=1, generation_probe_every=2,
                       overrides={"discriminator_on": False}, **kw)


def test_hooks_log_and_leave_training_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(hooks_module, "run_child", fake_child)
    train(tiny_config(tmp_path, "plain", overrides={"discriminator_on": False}))
    train(hooked(tmp_path, "full"))
    assert train(hooked(tmp_path, "split", max_steps=4)) is None
    train(hooked(tmp_path, "split", resume="auto"))
    plain, a, b = (final_weights(tmp_path / n) for n in ("plain", "full", "split"))
    for k in a:
        assert torch.equal(plain[k], a[k]) and torch.equal(a[k], b[k]), k
    records = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
    diag = [r["step"] for r in records if "diffusability/mmd2" in r]
    probe = [r["step"] for r in records if "probe/kid" in r]
    assert diag == [1, 2, 3, 4, 5, 6] and probe == [2, 5]  # every 1 / 2 steps of a phase
    split = [json.loads(line) for line in open(tmp_path / "split" / "metrics.jsonl")]
    assert [r["step"] for r in split if "probe/kid" in r] == probe  # none twice
    card, _ = read_card(tmp_path / "full" / "model")
    assert card["diffusability"]["probe"]["kid"] == 0.5
    assert card["diffusability"]["diffusability"]["step"] == 6
    assert cli_main(["plot", str(tmp_path / "full")]) == 0
    assert (tmp_path / "full" / "curves-diffusability.png").stat().st_size > 1000


def test_hook_settings_are_checked(tmp_path):
    with pytest.raises(InputError, match="--val-data"):
        train(tiny_config(tmp_path, "x", diffusability_every=1))


def test_probe_child_repeats_for_a_seed_and_leaves_the_parent_alone(tmp_path):
    data = smooth_images(tmp_path / "data", n=4, size=32)
    torch.manual_seed(0)
    model = create_model("litevae-tiny")
    model.save_pretrained(str(tmp_path / "ae"))
    crops = load_center_crops(str(data), 32, 4)
    (tmp_path / "probe").mkdir()
    save_safetensors({"train": crops, "held_out": crops.flip(-1)},
                     tmp_path / "probe" / "images.safetensors")
    request = dict(model=str(tmp_path / "ae"), images=str(tmp_path / "probe" /
                                                          "images.safetensors"),
                   steps=2, dit="dit-tiny", seeds=[0], batch_size=4,
                   sampling_steps=2, work=str(tmp_path / "probe" / "work"), threads=1)
    rng, weights = torch.get_rng_state(), {k: v.clone() for k, v in
                                           model.state_dict().items()}
    first = run_child(request, tmp_path / "probe", tmp_path / "probe" / "a.json")
    second = run_child(request, tmp_path / "probe", tmp_path / "probe" / "b.json")
    assert first["kid"] == second["kid"] and first["runs"] == second["runs"]
    assert first["kid_seed_std"] is None and first["fid"] is None  # one seed, 4 images
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert not (tmp_path / "probe" / "work" / "seed0").exists()  # the DiT run is deleted

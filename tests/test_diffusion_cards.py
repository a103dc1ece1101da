"""The model card of a diffusion model (``latentae/diffusion/card.py`` on ``latentae/cards.py``):
what ``latentae diffusion train`` (and ``export_latest``) write into ``RUN/model/README.md``,
``latentae info`` of a run, and ``latentae diffusion eval --update-card``. Tiny runs: a
DiT-tiny/1 on the 4×4 latents of a litevae-tiny, 3 steps."""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from diffusion_helpers import save_autoencoder, tiny_config, write_images  # noqa: E402

import latentae  # noqa: E402
from latentae.cards import FINGERPRINT_RULE, read_card  # noqa: E402
from latentae.cli import main  # noqa: E402
from latentae.diffusion import count_params, load  # noqa: E402
from latentae.diffusion.card import CACHED_KIND  # noqa: E402
from latentae.diffusion.train import export_latest, train  # noqa: E402
from latentae.latents import encoder_fingerprint  # noqa: E402

TINY = ("--model dit-tiny --patch 1 --steps 3 --batch-size 4 --sample-every 0 --grid-images 2 "
        "--grid-steps 2 --resolution 32 --norm-images 4 --no-progress --device cpu")
IMAGES = [f"{c}/{i}.png" for c in ("cats", "dogs") for i in range(3)]


def _sha(names):
    """The fingerprint rule (cards.FINGERPRINT_RULE), written out independently."""
    assert FINGERPRINT_RULE == "sha256 of the sorted names, each followed by a newline (UTF-8)"
    return hashlib.sha256("".join(f"{n}\n" for n in sorted(names)).encode()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A user's folder: my_images/{cats,dogs}, my_ae (litevae-tiny), a run on the images
    (ddpm) and one on their cached latents (flow)."""
    root = tmp_path_factory.mktemp("dcards")
    write_images(root / "my_images")
    save_autoencoder(root / "my_ae")
    base = f"diffusion train --autoencoder {root / 'my_ae'} {TINY}"
    assert main(shlex.split(f"{base} --data {root / 'my_images'} --out {root / 'runs/dit'}")) == 0
    assert main(["encode", str(root / "my_ae"), str(root / "my_images"), str(root / "latents"),
                 "--labels"]) == 0
    assert main(shlex.split(f"{base} --data {root / 'latents'} --cached --objective flow "
                            f"--out {root / 'runs/flow'}")) == 0
    return root


def test_a_run_writes_its_model_autoencoder_steps_and_data_into_the_card(runs):
    card, why = read_card(runs / "runs/dit/model")
    assert card is not None, why
    model, ae = load(runs / "runs/dit/model"), latentae.load(runs / "my_ae")
    assert (card["kind"], card["family"], card["preset"]) == ("diffusion", "dit", "dit-tiny")
    assert card["parameters"] == {"total": count_params(model)}
    assert (card["patch_size"], card["tokens"], card["num_classes"]) == (1, 16, 2)
    assert (card["latent_channels"], card["latent_size"]) == (4, 4) and card["learn_sigma"]
    assert card["objective"] == "ddpm" and card["recipe"] == "dit"
    assert (card["steps"], card["batch_size"], card["nimg"]) == (3, 4, 12)
    assert card["autoencoder"] == {
        "model": str(runs / "my_ae"), "path": str((runs / "my_ae").resolve()),
        "family": "litevae", "preset": "litevae-tiny",
        "scaling_factor": ae.scaling_factor, "shift_factor": ae.shift_factor,
        "encoder_sha256": encoder_fingerprint(ae)}
    assert card["latent_norm"] == {"kind": "model"} and card["resolution"] == 32
    assert card["data"]["count"] == 6 and card["data"]["sha256"] == _sha(IMAGES)
    assert card["command"].startswith("latentae diffusion train --autoencoder")
    assert card["latentae_version"] == latentae.__version__
    text = (runs / "runs/dit/model/README.md").read_text()
    assert "## Training" in text and "litevae-tiny" in text and "load_run" in text


def test_cached_latents_fingerprint_the_images_they_came_from(runs):
    card = read_card(runs / "runs/flow/model")[0]
    assert card["objective"] == "flow" and card["data"]["kind"] == CACHED_KIND
    assert card["data"]["sha256"] == _sha(IMAGES)  # the same images: the same hash
    assert card["sampling"] == {"sampler": "heun", "steps": 50, "guidance": 1.5}


def test_info_of_a_run_reads_its_card_each_fact_once(runs, tmp_path, capsys):
    for spec in (runs / "runs/dit", runs / "runs/dit/model"):
        assert main(["info", str(spec), "--json", str(tmp_path / "i.json")]) == 0
        printed = capsys.readouterr().out
        names = [line.split(":")[0].strip() for line in printed.splitlines()]
        assert len(names) == len(set(names)), names
        info = json.loads((tmp_path / "i.json").read_text())
        assert info["source"] == "diffusion run export" and info["family"] == "dit"
        assert info["tokens"] == 16 and info["total_params"] > 0
        assert info["card"]["data"]["sha256"] == _sha(IMAGES)
        assert info["card"]["autoencoder"]["preset"] == "litevae-tiny"
        assert "family" not in info["card"] and "tokens" not in info["card"]
        assert info["provenance"] == {"training_config": str(runs / "runs/dit/config.yaml")}
    (tmp_path / "bare").mkdir()  # no card, no run record: the files' own facts
    load(runs / "runs/dit/model").save_pretrained(tmp_path / "bare")
    (tmp_path / "bare" / "README.md").unlink()
    assert main(["info", str(tmp_path / "bare"), "--json", str(tmp_path / "j.json")]) == 0
    info = json.loads((tmp_path / "j.json").read_text())
    assert info["source"] == "diffusion model directory" and info["card"].startswith("no card")
    assert info["provenance"]["latentae_version"] == latentae.__version__


def test_a_stopped_run_exported_says_the_steps_it_made(runs, tmp_path):
    cfg = tiny_config(tmp_path / "stop", runs / "my_ae", runs / "my_images", max_steps=2,
                      ckpt_every=2)
    assert train(cfg) is None
    export_latest(cfg)
    card = read_card(tmp_path / "stop" / "model")[0]
    assert (card["steps"], card["nimg"]) == (2, 8)


def test_eval_update_card_merges_generation_metrics(runs, fetched, tmp_path, capsys):
    samples = tmp_path / "samples"
    assert main(["diffusion", "sample", str(runs / "runs/dit"), "--n", "4", "--steps", "2",
                 "--out", str(samples), "--no-progress", "--device", "cpu"]) == 0
    argv = ["diffusion", "eval", str(samples / "samples.npz"), "--ref", str(runs / "my_images"),
            "--no-progress", "--device", "cpu", "--batch-size", "8", "--update-card",
            "--json", str(tmp_path / "r.json")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    (entry,) = read_card(runs / "runs/dit/model")[0]["evaluation"]
    assert entry["metrics"]["gfid"] == pytest.approx(result["gfid"])
    assert entry["metrics"]["kid"] == pytest.approx(result["kid"])
    assert entry["data"]["sha256"] == _sha(IMAGES) and "4 samples (ddpm, 2 steps" in \
        entry["protocol"]
    assert read_card(runs / "runs/dit/model")[0]["steps"] == 3  # the rest is kept
    assert main(argv) == 0  # the same reference and protocol: replaced, not appended
    assert len(read_card(runs / "runs/dit/model")[0]["evaluation"]) == 1
    capsys.readouterr()
    assert main([*argv[:2], str(runs / "my_images"), *argv[3:]]) == 2  # no sampling.json
    assert "sampling.json" in capsys.readouterr().err

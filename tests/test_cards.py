"""Model cards (``latentae/cards.py``): what a training run, an export, a conversion and
``latentae eval --update-card`` write into ``README.md``, and ``latentae info`` reading it.
The commands are those of docs/training.md ("Model cards"), at tiny sizes."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from PIL import Image

import latentae
from latentae.cards import (
    card_fields,
    data_fingerprint,
    read_card,
    render_card,
    with_evaluation,
    write_card,
)
from latentae.cli import main
from latentae.engine.data import list_sources
from latentae.engine.webdata import write_shards
from latentae.eval.report import protocol_summary
from latentae.pretrained import model_info, write_scaling_factors
from latentae.registry import parameter_counts
from latentae.train.card import STREAM_KIND, training_data_fingerprint
from latentae.train.config import make_config

TINY = ["--set", "resolution=32", "--set", "batch_size=2", "--set", "losses.perceptual=0",
        "--set", "discriminator_on=false", "--set", "steps=3", "--no-progress"]


def _images(folder, names=("a/0.png", "a/1.png", "b/2.png", "3.png")):
    rng = np.random.default_rng(0)
    for n in names:
        (folder / n).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / n)
    return folder


def _sha(names):
    """The fingerprint rule, written out independently of latentae.cards."""
    return hashlib.sha256("".join(f"{n}\n" for n in sorted(names)).encode()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`latentae train` of sdvae-tiny with validation: the run folder and its data."""
    root = tmp_path_factory.mktemp("cards")
    data, run = _images(root / "my_images"), root / "runs" / "tiny"
    assert main(["train", "--model", "sdvae-tiny", "--recipe", "sdvae", "--data", str(data),
                 "--val-data", str(data), "--val-images", "2", "--out", str(run), *TINY]) == 0
    return run, data


def test_a_training_run_writes_its_recipe_steps_and_data_into_the_card(trained):
    run, data = trained
    card, why = read_card(run / "model")
    assert card is not None, why
    phases = card["phases"]
    assert card["library_name"] == "latentae" and card["format"] == "latentae"
    assert card["family"] == "sdvae" and card["preset"] == "sdvae-tiny"
    assert card["recipe"] == "sdvae" and [p["steps"] for p in phases] == [3] * len(phases)
    assert card["steps"] == 3 * len(phases) and card["nimg"] == 2 * card["steps"]
    assert card["parameters"] == parameter_counts(latentae.load(run / "model"))
    assert card["data"]["count"] == 4
    assert card["data"]["sha256"] == _sha(["a/0.png", "a/1.png", "b/2.png", "3.png"])
    val = card["validation"]
    assert val["data"]["count"] == 2 and val["data"]["sha256"] == _sha(["3.png", "a/0.png"])
    assert val["nimg"] == card["nimg"] and math.isfinite(val["metrics"]["psnr"])
    assert card["command"].startswith("latentae train --model sdvae-tiny")
    text = (run / "model" / "README.md").read_text()
    assert "## Training" in text and "| phase |" in text


# The card's fields that repeat the loaded model's facts, which info prints once, above.
FACTS = ("library_name", "tags", "family", "preset", "parameters",
         "spatial_compression_ratio", "latent_channels", "scaling_factor", "shift_factor")


def test_info_prints_the_card_and_each_fact_once(trained, tmp_path, capsys):
    run, _ = trained
    assert main(["info", str(run / "model"), "--json", str(tmp_path / "i.json")]) == 0
    printed = capsys.readouterr().out
    assert "data.sha256" in printed and "phases[0].steps" in printed
    names = [line.split(":")[0].strip() for line in printed.splitlines()]
    assert len(names) == len(set(names)), names  # no field printed twice
    assert not [n for n in names if n.startswith(("train.", "weights.", "recipe."))]
    info = json.loads((tmp_path / "i.json").read_text())
    card = read_card(run / "model")[0]
    assert info["card"] == {k: v for k, v in card.items() if k not in FACTS}
    assert info["provenance"] == {"training_config": str(run / "config.yaml")}
    assert info["total_params"] == card["parameters"]["total"]
    assert str(card["parameters"]["total"]) in printed
    assert printed.count(str(card["parameters"]["total"])) == 1
    # a card that disagrees with the weights is shown, not hidden
    latentae.save_pretrained(latentae.load(run / "model"), tmp_path / "m",
                             card={**card, "recipe": "x"})
    write_card(tmp_path / "m", {**read_card(tmp_path / "m")[0], "preset": "edited"})
    again = json.loads(json.dumps(model_info(tmp_path / "m")))
    assert again["preset"] == "sdvae-tiny" and again["card"]["preset"] == "edited"
    assert again["card"]["recipe"] == "x" and "family" not in again["card"]


def test_diffusers_export_and_conversion_back_keep_the_card(trained, tmp_path):
    run, _ = trained
    src = read_card(run / "model")[0]
    out, back = tmp_path / "my-vae-diffusers", tmp_path / "back"
    assert main(["export", str(run / "model"), "--format", "diffusers", str(out)]) == 0
    card = read_card(out)[0]
    assert card["library_name"] == "diffusers" and card["format"] == "diffusers"
    assert "AutoencoderKL.from_pretrained" in (out / "README.md").read_text()
    for key in ("recipe", "phases", "steps", "nimg", "data", "validation", "parameters"):
        assert card[key] == src[key], key
    assert card["command"].startswith("latentae export")
    assert [h["command"] for h in card["history"]] == [src["command"]]
    assert latentae.load(out).family == "sdvae"  # the card does not disturb loading
    assert main(["convert", str(out), str(back)]) == 0
    again = read_card(back)[0]
    assert again["format"] == "latentae" and again["data"] == src["data"]
    assert len(again["history"]) == 2 and again["command"].startswith("latentae convert")


def test_eval_update_card_merges_metrics_and_protocol(fetched, trained, tmp_path, capsys):
    run, data = trained
    model = tmp_path / "m"
    assert main(["export", str(run / "model"), "--format", "latentae", str(model)]) == 0
    argv = ["eval", str(model), "--data", str(data), "--resolution", "32", "--limit", "3",
            "--no-progress", "--update-card"]
    assert main([*argv, "--out", str(tmp_path / "e1")]) == 0
    doc = json.loads((tmp_path / "e1" / "metrics.json").read_text())
    card = read_card(model)[0]
    (entry,) = card["evaluation"]
    assert entry["metrics"] == pytest.approx(doc["metrics"])
    assert entry["protocol"] == protocol_summary(doc["protocol"])
    assert "3 images" in entry["protocol"] and "rFID tf1" in entry["protocol"]
    assert entry["data"]["sha256"] == _sha(["3.png", "a/0.png", "a/1.png"])
    assert card["steps"] == read_card(run / "model")[0]["steps"]  # the rest is kept
    assert main([*argv, "--out", str(tmp_path / "e2")]) == 0  # same data + protocol:
    assert len(read_card(model)[0]["evaluation"]) == 1  # replaced, not appended
    assert "## Evaluation" in (model / "README.md").read_text()


def test_update_card_refuses_presets_and_foreign_readmes_before_work(tmp_path, capsys):
    data = _images(tmp_path / "d")
    assert main(["eval", "sdvae-tiny", "--random-init", "--data", str(data), "--update-card",
                 "--out", str(tmp_path / "e")]) == 2
    assert "not a model directory" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
    latentae.save_pretrained(latentae.create_model("sdvae-tiny"), tmp_path / "m")
    (tmp_path / "m" / "README.md").write_text("# my notes\n")
    assert main(["eval", str(tmp_path / "m"), "--data", str(data), "--update-card",
                 "--out", str(tmp_path / "e")]) == 2
    assert "is not a latentae model card" in capsys.readouterr().err
    assert (tmp_path / "m" / "README.md").read_text() == "# my notes\n"


@pytest.mark.parametrize("text, why", [(None, "no README.md"),
                                       ("# notes\n", "no front matter"),
                                       ("---\nfamily: [sdvae\n---\n", "not valid YAML"),
                                       ("---\n- a\n---\n", "not a mapping")])
def test_a_missing_or_corrupt_card_leaves_info_working(text, why, tmp_path, capsys):
    model = tmp_path / "m"
    latentae.create_model("litevae-tiny").save_pretrained(str(model))  # the method too
    assert read_card(model)[0]["family"] == "litevae"
    if text is None:
        (model / "README.md").unlink()
    else:
        (model / "README.md").write_text(text)
    assert main(["info", str(model), "--json", str(tmp_path / "i.json")]) == 0
    card = json.loads((tmp_path / "i.json").read_text())["card"]
    assert card.startswith("no card") and why in card
    assert "no card" in capsys.readouterr().out


def test_fingerprints_shards_streams_and_the_rule(tmp_path):
    assert data_fingerprint("x", ["b", "a"], "k") == data_fingerprint("x", ["a", "b"], "k")
    assert data_fingerprint("x", ["a", "b"], "k")["sha256"] == _sha(["a", "b"])
    data = _images(tmp_path / "imgs", ("p.png", "q.png"))
    write_shards(data, tmp_path / "shards")
    cfg = make_config({"data": str(tmp_path / "shards")})
    fp = training_data_fingerprint(cfg, list_sources(cfg.data), None)
    assert fp["count"] == 2
    assert fp["sha256"] == _sha(["shard-000000.tar/000000000.png",
                                 "shard-000000.tar/000000001.png"])
    urls = ["https://host/s-000001.tar", "https://host/s-000000.tar"]
    fp = training_data_fingerprint(cfg, None, urls)
    assert fp["kind"] == STREAM_KIND and fp["count"] == 2 and fp["sha256"] == _sha(urls)


def test_fields_round_trip_and_scaling_factors_follow_config(tmp_path):
    model = latentae.create_model("sdvae-tiny")
    fields = card_fields(model, keep={"phases": ({"train_groups": ("all",)},),
                                      "license": "mit", "command": "old",
                                      "validation": {"metrics": {"psnr": math.inf}}})
    assert fields["history"] == [{"command": "old"}]  # the old writer, no version known
    assert fields["command"] != "old" and fields["latentae_version"] == latentae.__version__
    write_card(tmp_path, fields)
    back = read_card(tmp_path)[0]
    assert back["license"] == "mit" and back["phases"] == [{"train_groups": ["all"]}]
    assert back["validation"]["metrics"]["psnr"] == math.inf
    assert render_card(back) == (tmp_path / "README.md").read_text()
    e1 = {"data": {"sha256": "x"}, "protocol": "p", "metrics": {"psnr": 1.0}}
    e2 = {"data": {"sha256": "y"}, "protocol": "p", "metrics": {"psnr": 2.0}}
    merged = with_evaluation(with_evaluation(with_evaluation(back, e1), e2), e1)
    assert merged["evaluation"] == [e2, e1]
    latentae.save_pretrained(model, tmp_path / "m")
    write_scaling_factors(tmp_path / "m", 0.5, 0.25)
    card = read_card(tmp_path / "m")[0]
    assert (card["scaling_factor"], card["shift_factor"]) == (0.5, 0.25)

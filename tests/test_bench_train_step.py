"""``latentae bench MODEL --train-step RECIPE`` (issue 29): the stages of one training
step add up to the measured step, none is counted twice, every part of a full GAN step is
timed, and the plain PyTorch reference step runs beside it."""

from __future__ import annotations

import json

import pytest
import torch

from latentae.bench.train_step import STAGES, measure, summarize, train_step_bench
from latentae.cli import main
from latentae.engine.stages import collect, stage


def test_stages_are_timed_only_inside_collect_and_add_up():
    with stage("data"):  # no collect block open: nothing recorded, nothing fails
        pass
    with collect() as parts:
        for _ in range(2):
            with stage("g_forward"):
                torch.ones(64, 64) @ torch.ones(64, 64)
    assert set(parts) == {"g_forward"} and parts["g_forward"] > 0


@pytest.mark.parametrize("recipe, model, expected", [
    ("sdvae", "sdvae-tiny", {"loss perceptual", "loss adversarial", "discriminator"}),
    ("dcae", "dcae-tiny-f32", {"loss perceptual"}),
])
def test_each_step_is_its_stages_plus_an_unmarked_rest(recipe, model, expected, monkeypatch):
    import latentae.bench.train_step as ts
    captured = {}
    real = ts.measure

    def keep(b, warmup, repeats, progress=None):
        captured["rows"] = real(b, warmup, repeats, progress)
        return captured["rows"]

    monkeypatch.setattr(ts, "measure", keep)
    result = train_step_bench(model, recipe, 32, 2, torch.device("cpu"), warmup=0, repeats=2)
    rows = captured["rows"]
    for who in ("engine", "reference"):
        for seconds, parts in zip(rows[who], rows[f"{who}_parts"], strict=True):
            assert set(parts) <= set(STAGES)
            assert sum(parts.values()) <= seconds  # stages never overlap or nest
        named = result[who]["stages_s"]
        assert expected | {"data", "g_forward", "g_backward", "g_optimizer", "ema"} <= \
            set(named)
        assert sum(named.values()) == pytest.approx(result[who]["step_s"], abs=1e-9)
    assert result["ratio"] > 0 and result["phase"] == ("main" if recipe == "sdvae" else "lowres")


def test_summarize_reports_other_as_the_rest_of_the_median_step():
    rows = {"engine": [1.0, 2.0, 3.0], "reference": [2.0, 2.0, 2.0],
            "engine_parts": [{"g_forward": 0.5}, {"g_forward": 1.0}, {"g_forward": 1.5}],
            "reference_parts": [{"g_forward": 1.0}] * 3}
    out = summarize(rows)
    assert out["engine"]["stages_s"] == {"g_forward": 1.0, "other": 1.0}
    assert out["ratio"] == 1.0
    assert measure  # the interleaved loop is exercised by the test above


def test_cli_train_step_writes_json_and_refuses_two_models(tmp_path, capsys):
    out = tmp_path / "step.json"
    assert main(["bench", "sdvae-tiny", "--train-step", "sdvae", "--resolution", "32",
                 "--batch-size", "2", "--warmup", "0", "--repeats", "1", "--threads", "1",
                 "--json", str(out), "--markdown", str(tmp_path / "step.md")]) == 0
    doc = json.loads(out.read_text())
    assert doc["recipe"] == "sdvae" and "g_backward" in doc["engine"]["stages_s"]
    assert "plain PyTorch / engine" in (tmp_path / "step.md").read_text()
    capsys.readouterr()
    assert main(["bench", "sdvae-tiny", "litevae-tiny", "--train-step", "sdvae"]) == 2
    assert "--train-step times one MODEL" in capsys.readouterr().err
    assert main(["bench", "sdvae-tiny", "--train-step", "sdvae", "--phase", "nope",
                 "--resolution", "32", "--batch-size", "2"]) == 2
    assert "recipe sdvae has no phase 'nope'" in capsys.readouterr().err

"""`latentae demo` end to end for a few steps (the README's main command): a fixed step
budget (no clock in it), the curve and the table on the same crops, the run's model with
its full card, no fine-tune regression report for a from-scratch run."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_writes_report(tmp_path, capsys):
    pytest.importorskip("skimage")
    from latentae.cards import read_card
    from latentae.demos.autoencoder import run_demo
    report = run_demo(tmp_path / "demo", steps=3, threads=1)
    text, out = report.read_text(), capsys.readouterr().out
    assert out.startswith("demo: 3 steps of batch 4 at 64², 1 thread(s): about ")
    assert "| trained litevae-tiny, 16 latent channels (EMA) |" in text and "PSNR" in text
    assert "## What a real run needs" in text and "(../docs/training.md)" in text
    assert "Trained 3 steps, a fixed budget" in text and "1 thread." in text
    for name in ("recon_grid.png", "loss_curve.png", "model/config.json", "init/config.json"):
        assert (report.parent / name).is_file(), name
    run = report.parent / "run"
    assert not (run / "regression.md").exists() and "no reference set" not in out
    card, _ = read_card(report.parent / "model")  # the run's card: where it came from
    assert card["steps"] == 3 and card["recipe"] and card["data"]["count"] == 11
    val = [json.loads(x) for x in (run / "metrics.jsonl").open() if "val_psnr" in x][-1]
    assert f"| {val['val_psnr']:.4f} |" in text  # the curve's last point is the table's row

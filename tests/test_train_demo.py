"""`latentae demo` end to end for a few seconds (the README's main command)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_demo_writes_report(tmp_path):
    pytest.importorskip("skimage")
    from latentae.demos.autoencoder import run_demo
    report = run_demo(tmp_path / "demo", minutes=0.05, threads=1)
    text = report.read_text()
    assert "| trained litevae-tiny, 16 latent channels (EMA) |" in text and "PSNR" in text
    assert "## What a real run needs" in text and "(../docs/training.md)" in text
    for name in ("recon_grid.png", "loss_curve.png", "model/config.json", "init/config.json"):
        assert (report.parent / name).is_file(), name

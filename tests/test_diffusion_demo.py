"""`latentae demo --diffusion` end to end for a few seconds (fewer samples than the demo)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from diffusion_helpers import save_autoencoder  # noqa: E402


@pytest.mark.slow
def test_diffusion_demo_writes_an_honest_report(tmp_path, fetched, monkeypatch, capsys):
    pytest.importorskip("skimage")
    from latentae.demos import diffusion as demo
    monkeypatch.setattr(demo, "N_SAMPLES", 4)  # the demo's 40 cost a minute of Inception
    monkeypatch.setitem(demo.DEMO_TRAINING, "norm_images", 16)
    ae = save_autoencoder(tmp_path / "ae")
    report = demo.run_diffusion_demo(tmp_path / "demo", steps=3, autoencoder=str(ae),
                                     threads=1)
    text, out = report.read_text(), capsys.readouterr().out
    assert "diffusion demo: training dit-tiny for 3 steps" in out and "sampling 4" in out
    assert "PAUSED" not in out and "paused" not in out  # a fixed budget: it finishes
    assert "| DiT samples | 4 |" in text and "| other real crops (floor) | 4 |" in text
    assert "far below the 2,048" in text and "shared machine" in text
    work = report.parent
    assert (work / "samples" / "samples.npz").is_file()
    assert (work / "run" / "model" / "diffusion_run.json").is_file()
    assert len(list((work / "real_ref").glob("*.png"))) == 4

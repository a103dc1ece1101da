"""The reproduction studies (``latentae.studies``, ``latentae study``) end to end in ``--quick``
mode: tiny steps at 32², two kodak24 images; checks the files a study writes and that a
seed fixes the result."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import latentae
from latentae.cli import main

# The folder holding the latentae this test imports (a checkout's src/ or site-packages).
ROOT = Path(latentae.__file__).resolve().parent.parent


def run_study(name: str, out: Path, data: Path, *extra: str) -> dict:
    """Run ``python -m latentae.studies.NAME --quick`` in a fresh interpreter; return its
    results.json."""
    env = {**os.environ, "LATENTAE_STUDY_DATA": str(data), "PYTHONHASHSEED": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", f"latentae.studies.{name}", "--quick",
                           "--out", str(out), *extra], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def test_study_writes_table_json_and_plot(shared_data, fetched, tmp_path):
    res = run_study("litevae_vs_sdvae", tmp_path, shared_data)
    assert [r["model"] for r in res["rows"]] == ["sd-enc-small", "lite-tiny"]
    for row in res["rows"]:
        assert row["images"] == 2 and math.isfinite(row["psnr"]) and 0 < row["lpips"] < 1
        assert Path(row["model_dir"], "config.json").is_file()
        assert 0.09e6 < row["encoder_M"] * 1e6 < 0.12e6  # both encoders ~0.1M parameters
    table = (tmp_path / "table.md").read_text()
    assert "| lite-tiny |" in table and "--quick" in table
    assert (tmp_path / "psnr_vs_steps.png").stat().st_size > 1000


def test_same_seed_same_numbers(shared_data, fetched, tmp_path):
    runs = [run_study("recipe_ablations", tmp_path / f"r{i}", shared_data, "--only", "base",
                      "--seed", "3") for i in range(2)]
    assert runs[0]["seed"] == 3
    assert runs[0]["rows"][0]["psnr"] == runs[1]["rows"][0]["psnr"]
    assert runs[0]["rows"][0]["lpips"] == runs[1]["rows"][0]["lpips"]


def test_cli_lists_and_rejects_unknown(capsys):
    assert main(["study", "list"]) == 0
    assert "latent-mmd" in capsys.readouterr().out
    assert main(["study", "no-such-study"]) == 2
    assert "invalid choice" in capsys.readouterr().err

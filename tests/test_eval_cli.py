"""``latentae eval`` end to end on a few Kodak images with tiny random-init presets."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from latentae import weights
from latentae.cli import main
from latentae.eval.report import COLOUR_BAR_HEIGHT


@pytest.fixture
def folder(shared_data, tmp_path):
    """A corrupt file and two Kodak images of different orientation (768x512, 512x768)."""
    d = tmp_path / "imgs"
    d.mkdir()
    for n in ("kodim01.png", "kodim04.png"):
        shutil.copy(shared_data / "kodak24" / n, d / n)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return d


def test_eval_smoke_writes_report_and_counts_corrupt(fetched, folder, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["eval", "sdvae-tiny", "--random-init", "--data", str(folder), "--resolution",
               "64", "--out", str(out), "--batch-size", "2", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "rFID" in printed and "LPIPS" in printed and "1 corrupt" in printed
    doc = json.loads((out / "metrics.json").read_text())
    m, proto = doc["metrics"], doc["protocol"]
    assert proto["images"] == 2 and proto["corrupt"] == 1
    assert doc["corrupt_files"][0].endswith("broken.jpg")
    for k in ("psnr", "ssim", "lpips", "rfid", "mmd2_scaled", "mmd2_standardized"):
        assert isinstance(m[k], float) and math.isfinite(m[k]), k
    assert 0 < m["psnr"] < 40 and -1 <= m["ssim"] <= 1 and m["lpips"] > 0 and m["rfid"] > 0
    assert proto["weights_sha256"] == weights.weight_sha256s()
    assert proto["resolution"] == 64 and proto["rfid"]["protocol"] == "tf1"
    assert len(doc["latents"]["channel_mean"]) == 4
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["file"].rsplit("/", 1)[-1] for r in rows] == ["kodim01.png", "kodim04.png"]
    assert np.mean([float(r["psnr"]) for r in rows]) == pytest.approx(m["psnr"])
    grid = Image.open(out / "recon_grid.png")
    # original | recon | error, and the error's colour bar under the grid
    assert grid.size == (3 * 64 + 4 * 2, 2 * 64 + 3 * 2 + COLOUR_BAR_HEIGHT)
    bar = np.asarray(grid)[-COLOUR_BAR_HEIGHT + 2:-COLOUR_BAR_HEIGHT + 12, 4:-4]
    assert (bar[:, 0] < 20).all() and bar[:, -1].mean() > 150  # inferno: black -> yellow
    assert "## Protocol" in (out / "report.md").read_text()


def test_eval_single_image_bfloat16_litevae(fetched, folder, tmp_path, capsys):
    out = tmp_path / "r"
    rc = main(["eval", "litevae-tiny", "--random-init", "--data", str(folder), "--resolution",
               "32", "--out", str(out), "--limit", "2", "--dtype", "bfloat16", "--no-progress"])
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    p = doc["protocol"]  # the first two files: broken.jpg (corrupt) and kodim01.png
    assert p["images"] == 1 and p["corrupt"] == 1 and p["model_dtype"] == "bfloat16"
    assert doc["metrics"]["rfid"] is None and any("at least 2" in n for n in doc["notes"])
    assert math.isfinite(doc["metrics"]["psnr"])


def test_eval_bad_inputs_fail_cleanly(fetched, tmp_path, folder, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["eval", "sdvae-tiny", "--random-init", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(args + ["--data", str(empty), "--resolution", "64"]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(args + ["--data", str(folder), "--resolution", "60"]) == 2
    assert "not divisible" in capsys.readouterr().err
    assert main(["eval", "sdvae-tiny", "--data", str(folder)]) == 2
    assert "--random-init" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"nope")
    assert main(args + ["--data", str(bad), "--resolution", "64"]) == 2
    assert "could be decoded" in capsys.readouterr().err


def test_default_report_folder_names_the_run_not_the_word_model():
    """Two runs' ``model`` folders evaluated on one data set must not share ``eval-model``
    (issue 25, item 10)."""
    from latentae.cli.eval import default_out
    a, b = default_out("runs/a/model", "data/kodak24/"), default_out("runs/b/model", "x/kodak24")
    assert a == "eval-a-on-kodak24" and b == "eval-b-on-kodak24"
    assert default_out("sdvae", "imgs") == "eval-sdvae-on-imgs"
    assert default_out("runs/a/checkpoints/state-400.pt", "d") == "eval-a-state-400-on-d"
    assert default_out("my.vae", "d") == "eval-my.vae-on-d"

"""The commands docs/training.md shows, run as a user would (tiny sizes)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import latentae
from latentae.cli import main

TINY = ["--set", "resolution=32", "--set", "batch_size=2", "--set", "losses.perceptual=0",
        "--set", "discriminator_on=false", "--set", "steps=3", "--no-progress"]


def _images(folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_stop_resume_then_use_the_model(tmp_path):
    data, run = _images(tmp_path / "my_images"), tmp_path / "runs" / "tiny"
    base = ["train", "--model", "litevae-tiny", "--recipe", "litevae", "--data", str(data),
            "--out", str(run), *TINY]
    assert main([*base, "--max-steps", "2"]) == 0
    assert not (run / "model").exists()  # stopped early: state saved, nothing exported
    assert main([*base, "--resume", "auto"]) == 0
    assert latentae.load(run / "model").family == "litevae"
    assert main(["latent-stats", str(run / "model"), str(data), "--write"]) == 0
    assert main(["encode", str(run / "model"), str(data), str(tmp_path / "latents")]) == 0
    assert list((tmp_path / "latents").glob("*.safetensors"))


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None,
                    reason="torchrun is not installed beside this Python")
def test_torchrun_two_processes(tmp_path):
    data, run = _images(tmp_path / "my_images"), tmp_path / "run"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "latentae", "train",
           "--model", "sdvae-tiny", "--recipe", "sdvae", "--data", str(data), "--out", str(run),
           *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "model" / "config.json").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) >= 1  # rank 0 logs once

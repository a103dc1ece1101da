"""``latentae diffusion``: the commands docs/diffusion.md shows, run as a user would (tiny
sizes appended: the last flag wins), sampling that resumes to the same images, and the
one-line errors of every bad input."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from diffusion_helpers import exported, run, save_autoencoder, write_images  # noqa: E402
from test_diffusion_train import losses  # noqa: E402
from test_train import assert_same_training  # noqa: E402

from latentae.cli import main  # noqa: E402
from latentae.diffusion.generate import sample_folder  # noqa: E402
from latentae.diffusion.pipeline import load_run  # noqa: E402
from latentae.latents import shard_metadata, write_shard  # noqa: E402
from latentae.pretrained import load as load_pretrained  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "diffusion.md"
TINY_TRAIN = "--model dit-tiny --patch-size 1 --steps 4 --batch-size 4 --sample-every 2 " \
             "--grid-images 4 --grid-steps 2 --log-every 1 --no-progress --device cpu"
TINY_SAMPLE = "--n 4 --steps 3 --batch-size 3 --no-progress --device cpu"
TINY_METRICS = "--no-progress --device cpu --batch-size 8"
ENCODE = "latentae encode my_ae my_images latents --labels"
TRAIN = ("latentae diffusion train --autoencoder my_ae --model dit-s --patch-size 2 --data latents "
         "--cached --out runs/dit")
TRAIN_FLY = ("latentae diffusion train --autoencoder my_ae --model dit-s --patch-size 2 --data "
             "my_images --resolution 256 --out runs/dit-fly")
SAMPLE = ("latentae diffusion sample runs/dit --n 64 --guidance 1.5 --sampler dpm++2m --steps 30 "
          "--out samples")
REF = "latentae diffusion ref-stats my_images --out ref.npz --resolution 256"
EVAL = "latentae diffusion eval samples/samples.npz --ref ref.npz"
INFO = "latentae info runs/dit"
MODELS = "latentae models --diffusion --f 32 --latent-channels 32 --patch-size 1 --resolution 512"
TORCHRUN = ("torchrun --nproc_per_node 2 -m latentae diffusion train --autoencoder my_ae "
            "--model dit-s --patch-size 2 --data latents --cached --out runs/dit-ddp")


def cli(command: str, extra: str = "") -> int:
    argv = shlex.split(command)[1:] + shlex.split(extra)
    return main(argv)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A user's folder: my_images/{cats,dogs}/*.png (32²) and my_ae (litevae-tiny)."""
    write_images(tmp_path / "my_images")
    save_autoencoder(tmp_path / "my_ae")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_command_here_is_in_the_docs():
    text = DOCS.read_text()
    for command in (ENCODE, TRAIN, TRAIN_FLY, TRAIN + " --resume auto", SAMPLE, REF, EVAL,
                    EVAL + " --update-card", INFO, MODELS, TORCHRUN, "latentae demo --diffusion"):
        assert command in text, command
    shown = re.findall(r"^(?:latentae|torchrun) .*$", text, flags=re.M)
    # a new command in the docs needs a test here (the 3 of §5: test_diffusion_sample.py)
    assert len(shown) == 15, shown


def test_the_docs_commands_end_to_end(workdir, fetched, capsys):
    assert cli(ENCODE) == 0
    assert cli(TRAIN, TINY_TRAIN + " --max-steps 2") == 0  # stopped: a checkpoint, no model
    assert not (workdir / "runs/dit/model").exists()
    assert cli(TRAIN + " --resume auto", TINY_TRAIN) == 0
    assert sorted(p.name for p in (workdir / "runs/dit/samples").glob("*.png")) == [
        "step-00000002.png", "step-00000004.png"]
    assert cli(TRAIN_FLY, TINY_TRAIN + " --resolution 32") == 0
    assert cli(SAMPLE, TINY_SAMPLE) == 0
    with np.load(workdir / "samples/samples.npz") as z:
        assert z["arr_0"].shape == (4, 32, 32, 3) and z["arr_0"].dtype == np.uint8
        assert set(z["labels"].tolist()) <= {0, 1}  # uniform random classes (DiT's)
        assert z["latents"].shape == (4, 4, 4, 4)  # the latents before decoding
    assert cli(REF, TINY_METRICS + " --resolution 32") == 0
    capsys.readouterr()
    assert cli(EVAL, TINY_METRICS) == 0
    out = capsys.readouterr().out
    assert "4 samples vs 6 real images" in out and "gFID" in out and "KID" in out
    assert cli(INFO) == 0
    assert "data.sha256" in capsys.readouterr().out  # the card (tests/test_diffusion_cards.py)
    assert cli(EVAL + " --update-card", TINY_METRICS) == 0
    assert "runs/dit/model/README.md" in capsys.readouterr().out
    assert cli(MODELS) == 0
    assert "675,184,960" in capsys.readouterr().out  # DiT-XL/1 on 32 channels, 256 tokens


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None,
                    reason="torchrun is not installed beside this Python")
def test_torchrun_two_processes_train_as_one(workdir):
    assert cli(ENCODE) == 0
    assert cli(TRAIN, TINY_TRAIN) == 0
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", *shlex.split(TORCHRUN)[1:], *shlex.split(TINY_TRAIN)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the same data, dropped labels, t and ε for the global batch: only sums differ
    assert_same_training(exported(workdir / "runs/dit"), exported(workdir / "runs/dit-ddp"))
    one, two = (losses(workdir / r) for r in ("runs/dit", "runs/dit-ddp"))
    assert len(one) == 4 and one == pytest.approx(two, rel=1e-5)  # logged over all processes


def test_the_docs_python_example_runs(workdir):
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S).group(1)
    assert cli(ENCODE) == 0
    shown = 'model="dit-s", patch_size=2, out="runs/dit"'
    assert shown in code
    code = code.replace(shown, 'model="dit-tiny", patch_size=1, out="runs/py", steps=2, '
                        'batch_size=2, progress=False, device="cpu", val_every=0')
    code = code.replace("steps=30", "steps=2").replace('load_run("runs/dit")',
                                                       'load_run("runs/py")')
    scope: dict = {}
    exec(compile(code, str(DOCS), "exec"), scope)
    assert scope["images"].shape == (8, 3, 32, 32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny trained runs: class-conditional ddpm and unconditional flow."""
    root = tmp_path_factory.mktemp("druns")
    ae = save_autoencoder(root / "ae")
    run(root / "cond", ae, write_images(root / "img"), steps=2)
    run(root / "uncond", ae, write_images(root / "flat", classes=()), steps=2,
        objective="flow")
    return root


def test_sampling_resumes_to_the_same_images(runs, tmp_path):
    kw = dict(sampler="dpm++2m", steps=3, guidance=1.5, batch_size=2, device="cpu",
              progress=False, labels="balanced")
    sample_folder(runs / "cond", tmp_path / "a", n=5, **kw)
    sample_folder(runs / "cond", tmp_path / "b", n=3, **kw)  # "interrupted" after 3 …
    (tmp_path / "b" / "000001.png").unlink()  # … with one file lost
    npz = sample_folder(runs / "cond", tmp_path / "b", n=5, **kw)
    for i in range(5):
        name = f"{i:06d}.png"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with np.load(npz) as b, np.load(tmp_path / "a" / "samples.npz") as a:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and b["labels"].tolist() == [0, 1, 0, 1, 0]
        assert len({a["arr_0"][i].tobytes() for i in range(5)}) == 5  # distinct noise
    with pytest.raises(ValueError, match="other settings"):
        sample_folder(runs / "cond", tmp_path / "b", n=5, **{**kw, "seed": 1})


def test_a_run_reloads_with_its_normalisation_and_classes(runs):
    pipe = load_run(runs / "cond")
    assert pipe.info.classes == ("cats", "dogs") and pipe.info.latent_size == 4
    assert pipe.model.config.class_dropout_prob == 0.1  # the training-time value is kept
    z = pipe.sample_latents(torch.tensor([0, 1]),
                            [torch.Generator().manual_seed(i) for i in range(2)],
                            sampler="ddim", steps=2)
    assert pipe.decode(z).shape == (2, 3, 32, 32)


def _one_line_error(capsys, argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("latentae "), err
    assert re.search(match, err), err


def test_bad_inputs_are_one_line_errors(runs, tmp_path, capsys):
    ae, img, shards = runs / "ae", runs / "img", tmp_path / "shards3"
    base = ["diffusion", "train", "--autoencoder", str(ae), "--data", str(img), "--out",
            str(tmp_path / "r"), "--model", "dit-tiny", "--resolution", "32", "--steps", "1",
            "--batch-size", "2", "--no-progress", "--device", "cpu"]
    _one_line_error(capsys, [*base, "--patch", "3"], "not divisible by patch size 3")
    _one_line_error(capsys, [*base, "--model", "dit-xxl"], "unknown diffusion model 'dit-xxl'")
    _one_line_error(capsys, [*base, "--cached"], "--cached needs the latent shards")
    _one_line_error(capsys, [*base, "--resolution", "36"], "not divisible by the autoencoder")
    _one_line_error(capsys, [*base, "--objective", "flow", "--learn-sigma"], "ddpm objective only")
    # latents of another f8 autoencoder with 3 channels, for this one with 4
    meta = {**shard_metadata(load_pretrained(ae), "other", False, "mode", ["a"]),
            "latent_channels": "3"}
    shards.mkdir()
    write_shard(shards / "latents-00000.safetensors", {"a/0.png": torch.zeros(3, 4, 4)},
                {"a/0.png": (32, 32)}, meta, {"a/0.png": 0})
    _one_line_error(capsys, [*base, "--data", str(shards), "--cached"],
                    "have 3 channels at f8.*has 4 channels")
    _one_line_error(capsys, ["encode", str(ae), str(runs / "flat"), str(tmp_path / "l"),
                             "--labels"], "no class subfolders")
    sample = ["diffusion", "sample", "--n", "2", "--out", str(tmp_path / "s"), "--device",
              "cpu", "--no-progress"]
    _one_line_error(capsys, [*sample, str(tmp_path / "missing")], "does not exist")
    _one_line_error(capsys, [*sample, str(img)], "not a finished diffusion run")
    _one_line_error(capsys, [*sample, str(runs / "uncond"), "--guidance", "2"], "needs classes")
    _one_line_error(capsys, [*sample, str(runs / "cond"), "--sampler", "euler"],
                    "does not go with this run's objective 'ddpm'")

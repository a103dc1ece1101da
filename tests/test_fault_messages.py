"""The poor messages of the fault sweep of 2026-12-04 (``shared/reports/
fault-sweep-2026-12-04.md``, issue 28 item 6): each case says what to do on one line, or
no longer fails. The row of the sweep is named in each test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from latentae.cli import main
from latentae.studies import design, runner

ROOT = Path(__file__).resolve().parents[1]


def run(*argv) -> int:
    return main([str(a) for a in argv])


def test_a_closed_stdout_pipe_ends_quietly():
    # ST02: `latentae study list | head -5` printed "error: [Errno 32] Broken pipe".
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.Popen([sys.executable, "-m", "latentae", "study", "list"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader goes away before the first line is written
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and err == ""  # 128 + SIGPIPE, as `yes | head`


@pytest.mark.parametrize("argv, message", [
    (["progressive", "--seeds", "0"], "argument --seeds: must be an integer >= 1, got 0"),
    (["progressive", "--jobs", "-1"], "argument --jobs: must be an integer >= 1, got -1"),
    (["latent-mmd", "--budgets", "abc"],
     "argument --budgets: expected comma-separated positive step counts like 100,200,400"),
])
def test_study_flags_are_range_checked_up_front(argv, message, tmp_path, capsys):
    # ST04 (an IndexError traceback after writing scale.json), ST05 (accepted, ran),
    # ST08 ("invalid literal for int()", no flag named).
    assert run("study", *argv, "--quick", "--dry-run", "--out", tmp_path / "o") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_out_that_is_a_file_is_named(tmp_path, capsys):
    # ST06 ("[Errno 17] File exists"), DEMO01 ("[Errno 20] Not a directory: …/data/train")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert run("study", "progressive", "--quick", "--dry-run", "--out", afile) == 2
    assert f"--out {afile} is a file; give a folder" in capsys.readouterr().err
    assert run("demo", "--out", afile / "sub") == 2
    assert f"--out {afile / 'sub'}: {afile} is a file; give a folder" in capsys.readouterr().err
    assert afile.read_text() == "mine"


def test_a_dry_run_gives_no_verdict():
    # ST10: the dry run's table read "not reproduced (CI excludes the paper's effect)".
    mod = SimpleNamespace(CONTRASTS=[runner.Contrast("a", "b", "psnr", 1.0, "paper",
                                                     margin=0.1, noninferiority=0.5)])
    results = [{"arm": arm, "seed_index": i,
                "budgets": {"1": {"test": {"psnr": 20.0 + (arm == "a") * (5 + i)}}}}
               for arm in "ab" for i in range(2)]
    for dry in (False, True):
        scale = design.get_scale("quick", budgets=(1,), seeds=2, dry_run=dry)
        row = runner.contrasts(mod, results, scale, ("a", "b"))[0]
        said = [row[k] for k in ("verdict", "verdict_holm", "equivalence", "noninferiority")]
        assert all(v == "dry run: no verdict" for v in said) == dry


@pytest.fixture(scope="module")
def dit_pt(tmp_path_factory) -> Path:
    """A dit-tiny state dict as a .pt file: 2x2 patches of 4x8x8 latents, 2 classes."""
    from latentae.diffusion.registry import build, preset_config
    config = preset_config("dit-tiny", patch_size=2, input_size=8, in_channels=4,
                           num_classes=2)
    path = tmp_path_factory.mktemp("dc") / "dit.pt"
    torch.save(build("dit", config, preset="dit-tiny").state_dict(), path)
    return path


DC = ["--model", "dit-tiny", "--patch-size", "2", "--in-channels", "4"]


@pytest.mark.parametrize("flags, message", [
    (["--input-size", "8", "--num-classes", "-1"],  # DC04: "-1 classes need 0 (…)"
     "argument --num-classes: must be a non-negative integer (>= 0), got -1"),
    (["--input-size", "0", "--num-classes", "2"],
     "argument --input-size: must be a positive integer (>= 1), got 0"),
])
def test_diffusion_convert_flags_are_range_checked_before_loading(flags, message, dit_pt,
                                                                  tmp_path, capsys):
    assert run("diffusion", "convert", dit_pt, tmp_path / "o", *DC, *flags) == 2
    assert message in capsys.readouterr().err


def test_diffusion_convert_input_size_is_checked_against_the_position_embedding(
        dit_pt, tmp_path, capsys):
    # DC05: --input-size 1000000 tried to allocate 128 TB (a RuntimeError traceback).
    assert run("diffusion", "convert", dit_pt, tmp_path / "o", *DC, "--input-size",
               "1000000", "--num-classes", "2") == 2
    assert ("--input-size 1000000 does not fit the checkpoint: its position embedding "
            "holds 16 patch tokens, the latent size it was trained on: pass --input-size 8"
            ) in capsys.readouterr().err
    assert run("diffusion", "convert", dit_pt, tmp_path / "o", *DC, "--input-size", "8",
               "--num-classes", "2") == 0


def test_diffusion_convert_of_a_png_does_not_advise_weights_only_false(tmp_path, capsys):
    # DC07: torch's "Re-running torch.load with weights_only=False will likely succeed".
    png = tmp_path / "img0.png"
    Image.new("RGB", (8, 8)).save(png)
    assert run("diffusion", "convert", png, tmp_path / "o", *DC, "--input-size", "8",
               "--num-classes", "2") == 2
    err = capsys.readouterr().err
    assert f"{png} is not a readable PyTorch checkpoint (.pt/.pth of tensors)" in err
    assert "weights_only" not in err and len(err.strip().splitlines()) == 1


def test_bench_checks_the_resolution_before_the_onnx_export(monkeypatch, capsys):
    # OX03: "resolution 60 is not divisible …" came after a 40 s ONNX export.
    from latentae.bench import runner as bench_runner

    def export(*a, **k):
        raise AssertionError("exported before the resolution was checked")
    monkeypatch.setattr(bench_runner, "onnxruntime_subject", export)
    assert run("bench", "litevae-tiny", "--compare", "onnxruntime", "--resolution", "60",
               "--device", "cpu", "--threads", "1", "--repeats", "1", "--warmup", "0") == 2
    assert ("resolution 60 is not divisible by litevae-tiny's compression factor 8"
            in capsys.readouterr().err)


def test_a_bad_diffusers_config_names_its_file(tmp_path, capsys):
    # FT01: "use_quant_conv and use_post_quant_conv must agree" named no file.
    from latentae import create_model, save_pretrained
    folder = tmp_path / "d_extra"
    save_pretrained(create_model("sdvae-tiny"), folder, format="diffusers")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "use_quant_conv": False}))
    assert run("info", folder) == 2
    assert (f"{folder / 'config.json'}: use_quant_conv and use_post_quant_conv must agree"
            in capsys.readouterr().err)


def test_card_rewrites_keep_the_users_notes_below_the_generated_text(tmp_path, capsys):
    # MC03b: `latent-stats --write` on a latentae card dropped the notes added below it.
    from latentae import create_model
    model_dir, images = tmp_path / "model", tmp_path / "images"
    create_model("litevae-tiny").save_pretrained(str(model_dir))
    card = model_dir / "README.md"
    notes = "\n## My notes\n\nMy own notes about this model that must survive.\n"
    card.write_text(card.read_text() + notes)
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(images / f"{i}.png")
    assert run("latent-stats", model_dir, images, "--write", "--device", "cpu",
               "--threads", "1") == 0
    text = card.read_text()
    assert text.endswith(notes) and "scaling_factor" in text
    assert "note:" not in capsys.readouterr().err  # nothing else was edited
    card.write_text(text.replace("## Use", "## Use it like this"))
    assert run("latent-stats", model_dir, images, "--write", "--device", "cpu",
               "--threads", "1") == 0
    assert "its generated text was edited" in capsys.readouterr().err
    assert card.read_text().endswith(notes) and "## Use it like" not in card.read_text()


def test_a_train_that_failed_before_its_first_step_does_not_block_the_retry(tmp_path,
                                                                             capsys):
    # T16b: the failed start (no usable image) left config.yaml + tb/, and the retry with
    # a fixed --data was refused as "holds a run".
    bad, good, out = tmp_path / "textpng", tmp_path / "good", tmp_path / "t16"
    bad.mkdir()
    (bad / "notreally.png").write_text("not an image")
    good.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 64), (60 * i, 90, 200)).save(good / f"{i}.png")
    train = ["train", "--model", "litevae-tiny", "--recipe", "sdvae", "--set", "resolution=64",
             "--set", "batch_size=2", "--set", "losses.perceptual=0", "--set",
             "discriminator_on=false", "--set", "steps=1", "--val-every", "0",
             "--no-progress", "--device", "cpu", "--out", out]
    assert run(*train, "--data", bad) == 2
    assert "no usable training image" in capsys.readouterr().err
    assert (out / "config.yaml").is_file()
    assert run(*train, "--data", good) == 0
    assert "stopped before its first step: starting it over" in capsys.readouterr().out
    assert (out / "model").is_dir()
    assert run(*train, "--data", good) == 2  # a run that trained is still refused
    assert "holds a run" in capsys.readouterr().err


def test_a_stream_that_fails_names_the_program_and_its_status():
    # WD14: gs:// without a network printed webdataset's reprs ("<webdataset.gopen.Pipe
    # object …>") and then "the command that reads it exited with status -15".
    from latentae.engine.webdata import stream_error
    url = "gs://bucket/shard-000000.tar"
    gsutil = OSError(f"((['gsutil', 'cat', '{url}'],), {{'bufsize': 8192}}): exit -15 "
                     "(read) {}", object(), url)
    curl = OSError(f"((\"curl -f -s -L '{url}'\",), {{'shell': True}}): exit 7 (read) {{}}")
    assert stream_error(gsutil).startswith("gsutil was stopped by SIGTERM (for a URL: is")
    assert stream_error(curl).startswith("curl exited with status 7 (for a URL: is")


def test_sigterm_before_the_first_step_stops_a_blocked_read_at_once(tmp_path):
    # WD14: a gs:// shard without a network blocked in gsutil's retries; SIGTERM at 120 s
    # was acted on at 610 s. `pipe:sleep 300` blocks the first read the same way.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "latentae", "train", "--model", "litevae-tiny", "--recipe",
           "sdvae", "--set", "resolution=64", "--set", "batch_size=2", "--set",
           "losses.perceptual=0", "--set", "discriminator_on=false", "--no-progress",
           "--device", "cpu", "--data", "pipe:sleep 300", "--out", str(tmp_path / "run")]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)  # its own group: see finally
    try:
        lines = iter(p.stdout.readline, "")
        assert any(line.startswith("  phase main") for line in lines)  # in the loop now
        time.sleep(2)  # blocked in the first read
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == -signal.SIGTERM  # ended by it, as its default does
    finally:  # the shell and `sleep 300` that webdataset started (they hold the pipes)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert "SIGTERM before the first step: nothing to save" in p.stderr.read()

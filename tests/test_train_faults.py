"""Training faults of issue 14 (and the fault sweep of 2026-12-01), each case with the test
that failed before its fix: retention and unreadable checkpoints (item 1), reused run
folders (2), a full disk while checkpointing (9), one-line errors for another --model, the
non-finite guard and bad config values (10), SIGINT (11), 0 as "off" (12), negative
numbers (13). Most use the fast regression task of ``test_train_generic``."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from torch import nn

from latentae.engine import state as state_module
from latentae.engine.loop import StopSignals
from latentae.engine.state import TrainState, list_states, load_latest, save, state_path
from latentae.errors import DiskFullError, InputError, StateError, TrainingStopped
from latentae.train.autoencoder import train
from latentae.train.config import make_config, resolve_recipe

sys.path.insert(0, str(Path(__file__).parent))
from test_train import smooth_images, tiny_config  # noqa: E402
from test_train_generic import fit, regression_config  # noqa: E402


def test_retention_never_deletes_the_state_just_written(tmp_path):
    # Sweep T03: higher-numbered corrupt files outranked each new checkpoint, which
    # retention (the 3 highest names) then deleted at once.
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for n in (40, 50, 60):
        state_path(folder, n).write_bytes(b"corrupt")
    items = {"model": nn.Linear(2, 1), "state": TrainState()}
    for n in (2, 10):
        save(folder, items, n, keep=3)
    assert [n for n, _ in list_states(folder)] == [2, 10, 40, 50, 60]
    for n in (12, 14):
        save(folder, items, n, keep=3)
    assert [n for n, _ in list_states(folder)] == [10, 12, 14, 40, 50, 60]


def test_no_readable_checkpoint_stops_naming_them_and_restart_starts_over(tmp_path):
    fit(regression_config(tmp_path, max_images=16))
    ckpts = tmp_path / "run" / "checkpoints"
    for _, p in list_states(ckpts):
        p.write_bytes(os.urandom(1000))
    before = {p.name: p.read_bytes() for p in ckpts.iterdir()}
    with pytest.raises(StateError) as e:
        fit(regression_config(tmp_path, resume="auto"))
    assert "state-000000000016.pt is unreadable" in str(e.value)
    assert "--resume auto --restart" in str(e.value)
    assert {p.name: p.read_bytes() for p in ckpts.iterdir()} == before  # nothing changed
    assert fit(regression_config(tmp_path, resume="auto", restart=True)).is_file()
    assert load_latest(ckpts)["state"]["nimg"] == 28


def test_a_folder_holding_a_run_is_refused_unless_resume_or_overwrite(tmp_path):
    # Sweep T04: a run without --resume overwrote config.yaml and lost its checkpoints
    # to the old run's, which a later --resume auto then continued.
    fit(regression_config(tmp_path, max_images=8, seed=1))
    config = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(StateError, match="holds a run.*--resume auto.*--overwrite"):
        fit(regression_config(tmp_path))
    assert (tmp_path / "run" / "config.yaml").read_text() == config
    state_path(tmp_path / "run" / "checkpoints", 999).write_bytes(b"old run")
    fit(regression_config(tmp_path, overwrite=True))
    assert 999 not in [n for n, _ in list_states(tmp_path / "run" / "checkpoints")]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 10))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        fit(regression_config(tmp_path, "afile"))


class FullDisk:
    """A file whose writes fail with ENOSPC after ``room`` bytes."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_a_full_disk_while_checkpointing_keeps_the_previous_one(tmp_path, monkeypatch):
    # Sweep T19: "RuntimeError: [enforce fail at inline_container.cc:672]" and an 8.6 MB
    # .tmp left on the full disk.
    real, calls = state_module.atomic_write, []

    @contextlib.contextmanager
    def filling(path, mode="wb", needed=None):
        calls.append(path)
        with real(path, mode, needed) as f:
            yield f if len(calls) == 1 else FullDisk(f, room=300)

    monkeypatch.setattr(state_module, "atomic_write", filling)
    with pytest.raises(DiskFullError, match=r"no space left .* writing .*state-000000000016"
                                            r"\.pt \(0\.0 MB needed\)"):
        fit(regression_config(tmp_path, ckpt_every=2))  # checkpoints at 8, then 16
    ckpts = tmp_path / "run" / "checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["state-000000000008.pt"]  # no temporary
    assert load_latest(ckpts)["state"]["nimg"] == 8


def test_the_nan_guard_stops_with_training_stopped_naming_the_checkpoint(tmp_path):
    with pytest.raises(TrainingStopped, match="3 non-finite fit steps in a row.*newest "
                                              "checkpoint is .*state-000000000020.pt"):
        fit(regression_config(tmp_path, max_bad_steps=3), nan_from=12)
    with pytest.raises(TrainingStopped, match="none was written"):
        fit(regression_config(tmp_path, "early", max_bad_steps=2), nan_from=0)


def test_resuming_with_another_model_is_one_line(tmp_path):
    # Sweep T06: a RuntimeError with ~20 KB of key names.
    kw = {"overrides": {"steps": 1, "discriminator_on": False}}
    train(tiny_config(tmp_path, "run", max_steps=1, **kw))
    with pytest.raises(StateError) as e:
        train(tiny_config(tmp_path, "run", model="sdvae-tiny", resume="auto", **kw))
    message = str(e.value)
    assert "--model" in message and "\n" not in message and len(message) < 500, message


@pytest.mark.parametrize("values, field", [
    ({"recipe_overrides": {"betas": 0.5}}, "betas"),  # sweep T40: IndexError
    ({"recipe_overrides": {"betas": "0.5,1.5"}}, "betas"),
    ({"recipe_overrides": {"lr": "abc"}}, "lr"),
    ({"recipe_overrides": {"steps": -5}}, "steps"),
    ({"recipe_overrides": {"resolution": 10**9}}, "resolution"),  # huge
    ({"recipe_overrides": {"losses.kl": float("nan")}}, "kl"),  # sweep T28
    ({"recipe_overrides": {"discriminator_on": "maybe"}}, "discriminator_on"),
    ({"max_steps": -1}, "max_steps"),  # sweep T12: silently one step
    ({"ckpt_every": -1}, "ckpt_every"),
    ({"workers": -1}, "workers"),
    ({"seed": "x"}, "seed"),
    ({"model": ["a"]}, "model"),
    ({"max_images": 10**18}, "max_images"),
])
def test_bad_config_values_are_input_errors_naming_the_field(values, field):
    with pytest.raises(InputError, match=field):
        resolve_recipe(make_config({"data": "x"}, values))


def test_interval_zero_means_off_not_zero_division(tmp_path):
    # Sweep T22/T23: --ckpt-every 0 and --log-every 0 crashed with ZeroDivisionError.
    fit(regression_config(tmp_path, ckpt_every=0, log_every=0, val_every=0,
                          keep_checkpoints=5))
    assert [n for n, _ in list_states(tmp_path / "run" / "checkpoints")] == [20, 28]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["nimg"] for r in records if "loss" in r] == [20, 28]  # phase ends only
    assert [r["nimg"] for r in records if "val_w_error" in r] == [28]  # the run's end


def test_cli_accepts_zero_intervals(tmp_path):
    from latentae.cli import main
    data, run = smooth_images(tmp_path / "data"), tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--recipe", "sdvae",
                 *TINY, "--ckpt-every", "0", "--log-every", "0", "--val-every", "0"]) == 0
    assert [n for n, _ in list_states(run / "checkpoints")] == [4]
    assert main(["train", "--data", str(data), "--out", str(run), "--max-steps", "-1"]) == 2


TINY = ["--set", "steps=2", "--set", "resolution=32", "--set", "batch_size=2",
        "--set", "losses.perceptual=0", "--set", "discriminator_on=false", "--no-progress",
        "--device", "cpu"]


def test_a_second_ctrl_c_aborts_at_once():
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert signals.received == signal.SIGINT  # the first one only asks
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)


def test_sigint_checkpoints_says_how_to_resume_and_resumes(tmp_path):
    # Sweep §4: SIGINT exited 130 with a KeyboardInterrupt traceback and no checkpoint.
    data, run = smooth_images(tmp_path / "data"), tmp_path / "run"
    cmd = [sys.executable, "-m", "latentae", "train", "--data", str(data), "--out", str(run),
           "--recipe", "sdvae", *TINY, "--set", "steps=100000", "--log-every", "1",
           "--ckpt-every", "100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.time() + 180
    while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").stat().st_size:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume auto" in out, (out, err)
    nimg = load_latest(run / "checkpoints")["state"]["nimg"]
    assert nimg >= 2
    from latentae.cli import main
    assert main(["train", "--data", str(data), "--out", str(run), "--recipe", "sdvae", *TINY,
                 "--set", "steps=100000", "--resume", "auto", "--max-steps", "1"]) == 0
    assert load_latest(run / "checkpoints")["state"]["nimg"] == nimg + 2

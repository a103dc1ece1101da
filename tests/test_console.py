"""The training console (issue 25 item 6): the resolved recipe at the start, each
validation on one line, a progress bar with an ETA also when stderr is a log file, and a
last line that says finished or paused."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from latentae import progress

sys.path.insert(0, str(Path(__file__).parent))
from test_train import tiny_config  # noqa: E402


def test_the_bar_writes_whole_lines_with_an_eta_when_not_a_terminal():
    out = io.StringIO()
    for _ in progress.bar(range(4), file=out, total=4, unit="img", mininterval=0,
                          maxinterval=0, miniters=1, delay=0):
        pass
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) >= 2
    assert any("<" in line and "4/4" in line for line in lines)  # elapsed<remaining
    quiet = io.StringIO()
    for _ in progress.bar(range(3), file=quiet, enabled=False):
        pass
    assert quiet.getvalue() == ""


def test_a_run_prints_its_recipe_validations_and_how_it_ended(tmp_path, capsys):
    from latentae.train.autoencoder import train
    from latentae.train.config import resolve_recipe
    cfg = tiny_config(tmp_path, "run", max_steps=2)
    assert train(cfg, resolve_recipe(cfg)) is None
    out = capsys.readouterr().out
    assert out.startswith(f"new run in {cfg.out}\nmodel litevae-tiny, recipe litevae")
    assert "batch 2 (global)" in out and "losses l1 1" in out
    assert "paused (the --max-minutes / --max-steps / --max-images limit), not " \
        "finished" in out
    assert "latentae export" in out.splitlines()[-1]
    cfg = tiny_config(tmp_path, "run", resume="auto", val_data=str(tmp_path / "data"),
                      val_images=2)
    train(cfg, resolve_recipe(cfg))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"resuming run in {cfg.out} at image 4")
    val = [line for line in lines if line.startswith("validation at step")]
    assert len(val) == 1 and "psnr" in val[0] and "EMA model" in val[0]
    assert lines[-1].startswith("finished: exported the EMA model")


def test_a_short_command_prints_no_bar_in_a_log():
    out = io.StringIO()
    for _ in progress.bar(range(4), file=out, total=4):
        pass
    assert out.getvalue() == ""  # under LOG_SECONDS: a one-line error stays one line


def test_a_failed_start_leaves_no_empty_run_folder(tmp_path):
    import pytest

    from latentae.engine.config import LoopConfig
    from latentae.engine.loop import training_loop

    def broken(device):
        raise ValueError("bad data")

    with pytest.raises(ValueError):
        training_loop(LoopConfig(out=str(tmp_path / "new"), device="cpu"), broken)
    assert not (tmp_path / "new" / "checkpoints").exists()  # was: an empty checkpoints/

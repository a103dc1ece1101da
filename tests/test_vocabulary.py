"""One vocabulary in both tasks (issue 25 item 2): ``--threads`` on every command that
computes, ``batch_size`` the global batch, ``patch_size`` and ``--val-every`` spelled
alike (the old spellings still read), and old run folders resume after the renames."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from latentae.cli import build_parser
from latentae.diffusion.config import make_diffusion_config

sys.path.insert(0, str(Path(__file__).parent))
from diffusion_helpers import run as diffusion_run  # noqa: E402
from diffusion_helpers import save_autoencoder, write_images  # noqa: E402

# Commands that only move files or print: no torch threads to set.
NO_COMPUTE = {"models", "convert", "weights fetch", "weights list", "weights verify",
              "info", "plot", "shards", "study", "diffusion convert", "diffusion attach"}


def _commands(p: argparse.ArgumentParser, prefix: str = ""):
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _commands(sub, f"{prefix} {name}".strip())
            return
    yield prefix, p


def test_every_command_that_computes_takes_threads():
    missing = [name for name, p in _commands(build_parser())
               if name not in NO_COMPUTE
               and not any("--threads" in a.option_strings for a in p._actions)]
    assert missing == []


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_interval_batch_and_patch_flags_are_spelled_alike():
    base = ["diffusion", "train", "--autoencoder", "ae", "--data", "d"]
    new = _parse([*base, "--val-every", "7", "--patch-size", "4", "--threads", "1"])
    old = _parse([*base, "--sample-every", "7", "--patch", "4"])
    assert (new.val_every, new.patch_size) == (old.val_every, old.patch_size) == (7, 4)
    train = _parse(["train", "--data", "d", "--val-every", "7", "--batch-size", "8",
                    "--threads", "1"])
    assert train.val_every == 7 and train.batch_size == 8 and train.threads == 1
    cfg = make_diffusion_config(dict(autoencoder="ae", data="d", patch=4))  # a YAML of old
    assert cfg.patch_size == 4


def test_train_batch_size_flag_sets_every_phase_global(tmp_path, monkeypatch):
    from latentae.cli import main
    from latentae.train import autoencoder
    from latentae.train.config import resolve_recipe
    seen = {}
    monkeypatch.setattr(autoencoder, "train", lambda cfg: seen.update(cfg=cfg))
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--batch-size", "6", "--set", "p256.lr=1e-5"]) == 0
    assert {p.batch_size for p in resolve_recipe(seen["cfg"]).phases} == {6}


def test_an_old_diffusion_run_folder_resumes_after_the_patch_rename(tmp_path, capsys):
    ae = save_autoencoder(tmp_path / "ae")
    data = write_images(tmp_path / "data")
    run = tmp_path / "run"
    assert diffusion_run(run, ae, data, steps=4, max_steps=2) is None  # paused
    config = run / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    for section in ("train", "diffusion"):  # as latentae wrote it before the rename
        doc[section]["patch"] = doc[section].pop("patch_size")
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = diffusion_run(run, ae, data, steps=4, resume="auto")
    assert out is not None and (out / "model.safetensors").is_file()


def test_a_users_mistake_is_one_error_type():
    import pytest

    from latentae.devices import resolve_device
    from latentae.errors import InputError
    with pytest.raises(InputError, match="device"):
        resolve_device("tpu")  # was a plain ValueError, as the CLI's other mistakes are not

"""The CLI's one error boundary (``cli/__init__.py``) and its shared arguments
(``cli/args.py``): expected failures are one line and exit 2, bugs keep their traceback,
``--debug`` shows it always, Ctrl-C exits 130; numeric flags are range-checked before
any work; ``--batch`` is a hidden alias of ``--batch-size``; ``--json PATH`` writes."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest
from PIL import Image

import latentae
from latentae.cli import args as shared
from latentae.cli import build_parser, main
from latentae.cli import models as cli_models
from latentae.errors import DiskFullError, InputError, StateError


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    Image.new("RGB", (32, 32), (120, 30, 200)).save(d / "a.png")
    return d


def _raising(exc: BaseException):
    def func(args):
        raise exc
    return func


@pytest.mark.parametrize("exc", [
    InputError("bad input\nsecond line"), StateError("torn state"), ValueError("plain"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "x.png"),
    PermissionError(errno.EACCES, "Permission denied", "/root/x"),
    IsADirectoryError(errno.EISDIR, "Is a directory", "out"),
    DiskFullError("no space left on the device of /tmp writing x"),
])
def test_expected_errors_are_one_line_and_exit_2(exc, monkeypatch, capsys):
    monkeypatch.setattr(cli_models, "cmd_models", _raising(exc))
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentae models: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_bugs_keep_their_traceback_and_debug_shows_all(monkeypatch):
    monkeypatch.setattr(cli_models, "cmd_models", _raising(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["models"])
    monkeypatch.setattr(cli_models, "cmd_models", _raising(InputError("expected")))
    for argv in (["--debug", "models"], ["models", "--debug"]):
        with pytest.raises(InputError, match="expected"):
            main(argv)


def test_keyboard_interrupt_exits_130_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(cli_models, "cmd_models", _raising(KeyboardInterrupt()))
    assert main(["models"]) == 130
    assert capsys.readouterr().err == "latentae models: interrupted\n"


def test_a_bug_exits_1_with_a_traceback_from_the_console():
    code = ("import sys; from latentae.cli import main, models as m; "
            "m.cmd_models = lambda a: 1 / 0; sys.exit(main(['models']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "ZeroDivisionError" in proc.stderr
    assert "Traceback" in proc.stderr


def test_truncated_weights_are_an_expected_error(tmp_path, capsys):
    latentae.create_model("litevae-tiny").save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    assert main(["info", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["latent-stats", "sdvae-tiny", "IMAGES", "--random-init", "--limit", "0"],
     "argument --limit: must be a positive integer"),
    (["latent-stats", "sdvae-tiny", "IMAGES", "--random-init", "--limit", "-2"],
     "argument --limit: must be a positive integer"),
    (["shards", "IMAGES", "OUT", "--size=-5MB"], "argument --size: must be a positive size"),
    (["shards", "IMAGES", "OUT", "--size", "lots"], "argument --size: expected a size"),
    (["encode", "sdvae-tiny", "IMAGES", "OUT", "--batch-size", "0"], "--batch-size"),
    (["encode", "sdvae-tiny", "IMAGES", "OUT", "--overlap", "-1"], "non-negative"),
    (["eval", "sdvae-tiny", "--data", "IMAGES", "--resolution", "0"], "--resolution"),
    (["bench", "sdvae-tiny", "--threads", "0"], "--threads"),
    (["reconstruct", "sdvae-tiny", "IMAGES", "OUT", "--dtype", "int8"], "invalid choice"),
])
def test_numeric_flags_are_range_checked_before_any_work(argv, message, images, tmp_path,
                                                         capsys):
    argv = [str(images) if a == "IMAGES" else str(tmp_path / "out") if a == "OUT" else a
            for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_byte_size_parses_units():
    assert shared.byte_size("1GB") == 1 << 30 and shared.byte_size("64kb") == 64 << 10
    assert shared.byte_size("1.5MB") == 3 << 19 and shared.byte_size("4096") == 4096


def test_batch_is_a_hidden_alias_of_batch_size(capsys):
    parser = build_parser()
    a = parser.parse_args(["bench", "sdvae-tiny", "--batch", "3"])
    b = parser.parse_args(["bench", "sdvae-tiny", "--batch-size", "3"])
    assert a.batch_size == b.batch_size == 3
    assert main(["bench", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--batch-size" in text and "--batch " not in text


def test_device_defaults_to_auto_everywhere():
    parser = build_parser()
    for argv in (["bench", "m"], ["eval", "m", "--data", "d"], ["encode", "m", "i", "o"],
                 ["decode", "m", "l", "o"], ["reconstruct", "m", "i", "o"],
                 ["latent-stats", "m", "i"]):
        assert parser.parse_args(argv).device == "auto", argv


def test_json_path_writes_the_document(tmp_path, capsys):
    assert main(["info", "sdvae-tiny", "--json", str(tmp_path / "info.json")]) == 0
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["encoder_params"] == 395_216 and info["source"] == "preset (no weights)"
    assert main(["info", "sdvae-tiny", "--json", str(tmp_path / "no" / "x.json")]) == 2
    assert "its folder does not exist" in capsys.readouterr().err

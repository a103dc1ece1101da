"""Fault injection for everything but training (issue 14; the sweep of 2026-12-01,
``scripts/fault_sweep.py``, ``docs/robustness.md``): one output-folder rule (item 3),
distinct output names (4), shards (5), encode resume (6), keys that leave OUT (7), full
disks and I/O errors leave no temporary (8), bad configs and files (10, 13), tiles bound
memory (14), the umask (15); SIGKILL/SIGINT of a real ``encode``. Training faults:
``tests/test_train_faults.py``."""

from __future__ import annotations

import argparse
import ast
import errno
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch as st
import torch
from PIL import Image

from latentae import create_model, save_pretrained
from latentae.bench.report import write_report as write_bench_report
from latentae.cli import build_parser, main
from latentae.engine.data import list_sources, read_source
from latentae.engine.webdata import write_shards
from latentae.errors import DiskFullError, InputError
from latentae.eval import report as eval_report
from latentae.folders import output_names
from latentae.io import CorruptImageError, save_image
from latentae.latents import read_shard, write_shard
from latentae.models.litevae import LiteVAEConfig
from latentae.runtime import ModelRunner
from latentae.serialization import check_config_fields, save_safetensors
from latentae.tiling import tiled_apply

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "latentae"


def _sweep():
    spec = importlib.util.spec_from_file_location("fault_sweep", ROOT / "scripts/fault_sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_sweep"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


SWEEP = _sweep()


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> Path:
    """The sweep's fixtures: tiny models, images, crafted shards, broken model dirs."""
    w = tmp_path_factory.mktemp("sweep").resolve()
    SWEEP.build_fixtures(w)
    return w


def run(*argv) -> int:
    return main([str(a) for a in argv])


def _err(capsys) -> str:
    """Standard error less the progress bars' lines (latentae.progress writes them there)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return "".join(line for line in err.splitlines(True)
                   if not re.search(r"\|.*\[\d+:\d+.*\]$", line.rstrip()))


def _temporaries(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith((".tmp", ".old"))]


# --- the sweep's cheap cases, re-run (corrupt, truncated and foreign files of every kind)
FAST = ["E04", "E05", "D04", "D06", "D07", "D08", "D10", "D14", "D15", "K03", "K04", "K05",
        "K06", "K07", "I01", "I01b", "I02", "I05", "I05b", "I05c", "I06", "I08", "I09", "I10",
        "I10b", "I10c", "I10e", "I10f", "I11", "X03", "S05", "H02", "H03", "T44", "V08"]


@pytest.mark.parametrize("case_id", FAST + [c.id for c in SWEEP._wild().CASES])
def test_sweep_case_is_ok_now(case_id, w):
    case = next(c for c in SWEEP.CASES if c.id == case_id)
    now, verdict = SWEEP.run_case(case, w)
    assert verdict == "ok", now


# --- item 3: one rule for every command that writes a folder -----------------------------
FOLDER_COMMANDS = {
    "convert": "convert $SDD OUT", "export": "export $SD OUT",
    "encode": "encode $LT $FX/good OUT", "decode": "decode $LT $LAT/good.safetensors OUT",
    "reconstruct": "reconstruct $LT $FX/good OUT", "shards": "shards $FX/good OUT",
    "eval": "eval $LT --data $FX/good --resolution 64 --device cpu --out OUT",
    "diffusion convert": "diffusion convert $W/none.pt OUT --model dit-tiny --patch-size 2 "
                         "--input-size 8 --in-channels 4 --num-classes 0",
}


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_a_non_empty_output_folder_is_refused_before_any_work(command, w, tmp_path,
                                                              monkeypatch, capsys):
    def slow_part(*a, **k):
        raise AssertionError("the slow part ran before the output folder was checked")
    for target in ("latentae.pretrained.load", "latentae.cli.eval.evaluate_reconstruction",
                   "latentae.runtime.ModelRunner.encode_posterior",
                   "latentae.runtime.ModelRunner.decode", "latentae.engine.webdata.atomic_dir"):
        monkeypatch.setattr(target, slow_part)
    if command in ("convert", "export"):
        monkeypatch.setattr("latentae.cli.args.load", slow_part)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    argv = SWEEP._expand(FOLDER_COMMANDS[command].replace("OUT", str(out)), w)
    rc = main(argv)
    err = _err(capsys)
    if rc == 2 and "invalid choice" in err:
        pytest.skip(f"`latentae {command}` is not registered on this branch")
    assert rc == 2 and "not empty" in err and "--overwrite" in err, err
    assert (out / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("command", ["convert", "export", "encode", "decode", "reconstruct",
                                     "shards"])
def test_overwrite_replaces_what_the_folder_held(command, w, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.tar").write_text("old")
    argv = SWEEP._expand(FOLDER_COMMANDS[command].replace("OUT", str(out)), w)
    assert main(argv + ["--overwrite"]) == 0
    assert not (out / "stale.tar").exists() and any(out.iterdir())
    assert _temporaries(tmp_path) == []


# --- item 4: names stay distinct ---------------------------------------------------------
def test_inputs_sharing_a_stem_keep_their_suffixes(w, tmp_path):
    assert output_names(["pic.jpg", "pic.png", "a/b.png", "A/B.jpg", "c.png"]) == {
        "pic.jpg": "pic.jpg.png", "pic.png": "pic.png.png", "a/b.png": "a/b.png.png",
        "A/B.jpg": "A/B.jpg.png", "c.png": "c.png"}
    with pytest.raises(InputError, match="'x.jpg.png' and 'x.jpg' would both be written"):
        output_names(["x.jpg.png", "x.jpg", "x.png"])
    assert run("encode", w / "m/litevae-tiny", w / "fx/collide", tmp_path / "lat") == 0
    assert run("decode", w / "m/litevae-tiny", tmp_path / "lat", tmp_path / "dec") == 0
    assert run("reconstruct", w / "m/litevae-tiny", w / "fx/collide", tmp_path / "rec") == 0
    for d in (tmp_path / "dec", tmp_path / "rec", tmp_path / "rec/compare"):
        assert sorted(p.name for p in d.glob("*.png")) == ["pic.jpg.png", "pic.png.png"]
    a, b = (Image.open(tmp_path / "dec" / n).tobytes() for n in ("pic.jpg.png", "pic.png.png"))
    assert a != b


# --- item 5: shards ----------------------------------------------------------------------
def test_shards_replace_whole_and_name_the_broken_file(w, tmp_path, monkeypatch):
    out = tmp_path / "shards"
    assert len(write_shards(w / "fx/good", out, max_bytes=100)) == 6
    with pytest.raises(InputError, match="not empty.*--overwrite"):
        write_shards(w / "fx/good", out)
    assert [p.name for p in write_shards(w / "fx/good", out, overwrite=True)] == \
        ["shard-000000.tar"]
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar"]  # no stale shard
    with pytest.raises(InputError, match=r"trunctar/b\.tar is not a readable tar shard"):
        list_sources(w / "fx/trunctar")
    last = list_sources(out)[-1]
    with open(out / "shard-000000.tar", "rb+") as f:  # the last member cut in half
        f.truncate(last.offset + last.size // 2)
    with pytest.raises(CorruptImageError, match=r"000000005\.png in .*shard-000000\.tar is "
                                                "truncated"):
        read_source(last)  # listed before the cut: read in place, then short
    with pytest.raises(InputError, match=r"shard-000000\.tar is not a readable tar shard"):
        list_sources(out)


# --- item 6: encode resume ---------------------------------------------------------------
@pytest.mark.parametrize("model, extra, named", [
    ("$SD", [], "model="), ("$LT", ["--apply-scaling"], "apply_scaling="),
    ("$LT", ["--sample"], "sample="), ("$LT", ["--tile", "32", "--overlap", "8"], "tile="),
    ("$LT", ["--random-init"], "model=")])
def test_encode_refuses_to_resume_another_run(model, extra, named, w, tmp_path, capsys):
    out = tmp_path / "lat"
    assert run("encode", w / "m/litevae-tiny", w / "fx/good", out, "--shard-size", "2") == 0
    assert run("encode", *SWEEP._expand(model, w), w / "fx/good", out, "--shard-size", "2",
               *extra) == 2
    err = _err(capsys)
    assert named in err and "--overwrite" in err, err


def test_shards_of_another_model_or_image_set_are_refused(w, tmp_path, capsys):
    images, out = tmp_path / "imgs", tmp_path / "lat"
    images.mkdir()
    for p in (w / "fx/good").iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    assert run("encode", w / "m/litevae-tiny", images, out, "--shard-size", "2") == 0
    shard = read_shard(out / "latents-00001.safetensors")
    write_shard(out / "latents-00001.safetensors", shard.latents, shard.sizes,
                {**shard.meta, "model": "sdvae-tiny", "family": "sdvae"})
    assert run("encode", w / "m/litevae-tiny", images, out, "--shard-size", "2") == 2
    err = _err(capsys)
    assert "family 'sdvae' (this run: 'litevae')" in err and "--overwrite" in err
    write_shard(out / "latents-00001.safetensors", shard.latents, shard.sizes, shard.meta)
    (images / "img5.png").unlink()
    assert run("encode", w / "m/litevae-tiny", images, out, "--shard-size", "2") == 2
    assert "latents-00002.safetensors exists but holds other images" in _err(capsys)
    (images / "img4.png").unlink()
    assert run("encode", w / "m/litevae-tiny", images, out, "--shard-size", "2") == 2
    assert "holds shards this run would not write (latents-00002" in _err(capsys)
    assert run("encode", w / "m/litevae-tiny", images, out, "--shard-size", "2",
               "--overwrite") == 0
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "latents-00000.safetensors", "latents-00001.safetensors"]


# --- item 7: names from files never leave OUT ----------------------------------------------
@pytest.mark.parametrize("key", ["../../x", "/abs/x", "a/../../x", "..", "a/.."])
def test_a_key_that_leaves_the_output_folder_is_refused(key, w, tmp_path, capsys):
    shard = read_shard(w / "lat" / "good.safetensors")
    bad = tmp_path / "bad.safetensors"
    z = shard.latents["a.png"]
    write_shard(bad, {key: z, "fine.png": z}, {key: (64, 64), "fine.png": (64, 64)},
                shard.meta)
    assert run("decode", w / "m/litevae-tiny", bad, tmp_path / "o" / "out") == 2
    assert repr(key) in _err(capsys)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bad.safetensors"]


# --- item 8: full disks and I/O errors leave no temporary ---------------------------------
def _fail_with(code: int, where: str, monkeypatch) -> None:
    def fail(*args):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, where, fail)


WRITERS = {
    "save_image": lambda d, w: save_image(torch.zeros(3, 8, 8), d / "a.png"),
    "eval report": lambda d, w: eval_report.write_report(d / "r", _eval_result(), {}),
    "bench report": lambda d, w: write_bench_report({"results": {}, "settings": {}},
                                                    d / "b.json"),
    "latent shard": lambda d, w: write_shard(d / "s.safetensors", {"a": torch.zeros(4, 2, 2)},
                                             {"a": (16, 16)}, {"format": "x"}),
    "save_pretrained": lambda d, w: create_model("sdvae-tiny").save_pretrained(d / "m"),
    "diffusers export": lambda d, w: save_pretrained(create_model("sdvae-tiny"), d / "m",
                                                     format="diffusers"),
    "weights cache": lambda d, w: save_safetensors({"w": torch.ones(3)}, d / "w.safetensors"),
    "tar shards": lambda d, w: write_shards(w / "fx/good", d / "t"),
}


def _eval_result():
    from latentae.eval.reconstruction import EvalResult
    return EvalResult(summary={}, rows=[], latents={}, corrupt=[], seconds={}, grid=None)


@pytest.mark.parametrize("code, where", [(errno.ENOSPC, "fsync"), (errno.ENOSPC, "replace"),
                                         (errno.EIO, "fsync")])
@pytest.mark.parametrize("writer", WRITERS)
def test_a_failed_write_leaves_no_temporary_and_names_the_file(writer, where, code, w,
                                                                tmp_path, monkeypatch):
    monkeypatch.setattr("latentae.bench.report.to_markdown", lambda *a: "table\n")
    _fail_with(code, where, monkeypatch)
    with pytest.raises(OSError) as e:
        WRITERS[writer](tmp_path, w)
    if code == errno.ENOSPC:
        assert isinstance(e.value, DiskFullError) or "no space left" in str(e.value)
        assert "no space left on the device" in str(e.value)
    assert str(tmp_path) in str(e.value)  # the file (or folder) is named
    monkeypatch.undo()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("argv, code", [
    ("decode $LT $LAT/good.safetensors OUT", errno.ENOSPC), ("encode $LT $FX/good OUT", errno.EIO),
    ("export $SD OUT", errno.ENOSPC), ("convert $SDD OUT", errno.EIO),
    ("shards $FX/good OUT", errno.ENOSPC), ("latent-stats $LT $FX/good --json OUT/s.json",
                                            errno.ENOSPC)])
def test_the_cli_says_no_space_left_in_one_line(argv, code, w, tmp_path, monkeypatch, capsys):
    message = "no space left on the device" if code == errno.ENOSPC else "Input/output error"
    out = tmp_path / "o"
    if "--json" in argv:
        out.mkdir()
    _fail_with(code, "fsync", monkeypatch)
    assert main(SWEEP._expand(argv.replace("OUT", str(out)), w)) == 2
    err = _err(capsys)
    assert err.count("\n") == 1 and message in err, err
    monkeypatch.undo()
    assert _temporaries(tmp_path) == []


# --- items 10, 13: bad values are named before anything is allocated -----------------------
@pytest.mark.parametrize("field, value, message", [
    ("latent_channels", 10**9, "out of range"), ("latent_channels", -1, "out of range"),
    ("latent_channels", 0, "out of range"), ("latent_channels", "four", "an integer"),
    ("latent_channels", True, "an integer"), ("extractor_mult", (1, 0), "out of range"),
    ("decoder_channels", (), "not be empty"), ("scaling_factor", 0.0, "positive"),
    ("scaling_factor", float("nan"), "finite"), ("shift_factor", float("inf"), "finite"),
    ("decoder_norm", 3, "a string"), ("shared_extractor", "yes", "true or false")])
def test_config_fields_are_checked_by_type_and_range(field, value, message):
    config = LiteVAEConfig()
    object.__setattr__(config, field, value)
    with pytest.raises(InputError, match=f"{field} = .*{message}"):
        check_config_fields(config, "config.json")


def test_nonfinite_latents_warn_once_per_shard(w, tmp_path, capsys):
    meta = read_shard(w / "lat/good.safetensors").meta
    (tmp_path / "lat").mkdir()
    for i in range(2):
        z = torch.zeros(4, 8, 8)
        z[0, 0, 0], z[1, 1, 1] = float("nan"), float("inf")
        write_shard(tmp_path / "lat" / f"l{i}.safetensors", {f"{i}a.png": z, f"{i}b.png": z},
                    {f"{i}a.png": (64, 64), f"{i}b.png": (64, 64)}, meta)
    assert run("decode", w / "m/litevae-tiny", tmp_path / "lat", tmp_path / "dec") == 0
    assert _err(capsys).count("hold NaN or Inf") == 2


def _messages(tree: ast.AST):
    """String constants of a module that are not docstrings (messages, help texts)."""
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docs]


def _all_commands() -> dict:
    """The subcommands of ``build_parser`` and of every ``cli/*.py`` with a ``register``
    (a module another branch wires into ``cli/__init__.py`` counts)."""
    commands = dict(build_parser()._subparsers._group_actions[0].choices)
    for path in sorted((SRC / "cli").glob("*.py")):
        module = importlib.import_module(f"latentae.cli.{path.stem}")
        if path.stem != "__init__" and hasattr(module, "register"):
            sub = argparse.ArgumentParser().add_subparsers()
            module.register(sub)
            commands = {**sub.choices, **commands}
    return commands


def test_every_hint_names_a_command_and_flags_that_exist():
    commands = _all_commands()
    seen = 0
    for path in SRC.rglob("*.py"):
        for text in _messages(ast.parse(path.read_text())):
            for m in re.finditer(r"`latentae ([a-z][a-z-]*)((?: [a-z][a-z-]*)?)"
                                 r"((?: --[a-z-]+)*)", text):
                seen += 1
                name, sub, flags = m.group(1), m.group(2).strip(), m.group(3).split()
                assert name in commands, f"{path.name}: {m.group(0)} names no command"
                p = commands[name]
                subs = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
                if subs and sub in subs[0].choices:
                    p = subs[0].choices[sub]
                known = {o for a in p._actions for o in a.option_strings}
                for flag in flags:
                    assert flag in known, f"{path.name}: {m.group(0)}: no {flag}"
    assert seen > 5


# --- item 14: tiles bound memory by default -------------------------------------------------
def test_tiles_run_one_per_forward_pass_unless_max_batch(w):
    calls = []
    x = torch.randn(1, 3, 96, 128)
    for max_batch in (None, 3):
        model = create_model("litevae-tiny")
        encode = model.encode
        model.encode = lambda t, encode=encode: calls.append(len(t)) or encode(t)
        runner = ModelRunner(model, "cpu", tile=64, overlap=16, max_batch=max_batch)
        runner.encode(x)
        assert max(calls) == (1 if max_batch is None else 3) and sum(calls) == 6, calls
        calls.clear()
    f = lambda t: torch.nn.functional.avg_pool2d(t, 2)  # noqa: E731
    assert torch.equal(tiled_apply(f, x, 64, 16, 0.5, 1), tiled_apply(f, x, 64, 16, 0.5, None))


# --- item 15: the user's umask ----------------------------------------------------------------
def test_written_folders_and_files_follow_the_umask(w, tmp_path):
    old = os.umask(0o022)
    try:
        for argv in ("export $SD OUT/export", "convert $SDD OUT/convert",
                     "encode $LT $FX/good OUT/enc", "decode $LT OUT/enc OUT/dec",
                     "shards $FX/good OUT/tars", "reconstruct $LT $FX/good OUT/rec"):
            assert main(SWEEP._expand(argv.replace("OUT", str(tmp_path)), w)) == 0
        create_model("sdvae-tiny").save_pretrained(tmp_path / "saved")
    finally:
        os.umask(old)
    for p in tmp_path.rglob("*"):
        want = 0o755 if p.is_dir() else 0o644
        assert p.stat().st_mode & 0o777 == want, (p, oct(p.stat().st_mode))


# --- byte-reproducible files (what makes a resumed encode equal an uninterrupted one) -----
def test_safetensors_files_are_byte_reproducible_and_standard(tmp_path):
    t = {"z": torch.randn(3, 2).to(torch.float16), "a": torch.randn(5), "b": torch.tensor(True),
         "c": torch.arange(3, dtype=torch.float64), "d": torch.randn(2).to(torch.bfloat16)}
    save_safetensors(t, tmp_path / "one", {"format": "pt"})
    assert (tmp_path / "one").read_bytes() == st.save(t, metadata={"format": "pt"})
    meta = {f"k{i}": str(i) for i in range(8)}
    save_safetensors(t, tmp_path / "a", meta)
    save_safetensors(t, tmp_path / "b", dict(reversed(meta.items())))
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    back = st.load_file(tmp_path / "a")
    assert all(torch.equal(back[k], t[k]) for k in t)


# --- SIGKILL / SIGINT of a real encode --------------------------------------------------------
def _encode_argv(w: Path, out: Path) -> list[str]:
    return ["encode", str(w / "m/sdvae-tiny"), str(w / "big"), str(out), "--shard-size", "1",
            "--batch-size", "1", "--threads", "1"]


@pytest.mark.parametrize("how", ["kill at a random moment after the first shard",
                                 "interrupt (Ctrl-C)"])
def test_a_killed_encode_reruns_to_the_same_bytes(how, w, tmp_path):
    if not (w / "big").is_dir():
        for i in range(10):
            SWEEP._png(w / "big" / f"b{i}.png", 160, 128, i)
    ref = w / "ref"
    if not ref.is_dir():
        assert main(_encode_argv(w, ref)) == 0
    out = tmp_path / "lat"
    env = {**os.environ, "PYTHONPATH": str(SRC.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "latentae", *_encode_argv(w, out)],
                            env=env, stderr=subprocess.PIPE, text=True)
    want = "latents-*.safetensors"
    deadline = time.monotonic() + 120
    while proc.poll() is None and not list(out.glob(want)) and time.monotonic() < deadline:
        time.sleep(0.002)
    if "random" in how:
        time.sleep(random.uniform(0, 0.3))
    proc.send_signal(signal.SIGINT if "Ctrl-C" in how else signal.SIGKILL)
    err = proc.communicate(timeout=60)[1]
    if "Ctrl-C" in how and proc.returncode != 0:
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert _temporaries(out) == []
    assert main(_encode_argv(w, out)) == 0
    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for n in names:
        assert (out / n).read_bytes() == (ref / n).read_bytes(), n


# --- issue 28: the one output rule, cards, latents, locks, files from the wild -----------
def test_every_torch_load_passes_weights_only_true():
    """A checkpoint is data, never code: ``weights_only=True`` on every ``torch.load``
    (it also holds under ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which only changes the
    default)."""
    bad = []
    for path in [*SRC.rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if kw.get("weights_only") != "True":
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert bad == []


def test_a_planted_pickle_in_the_study_cache_never_runs(tmp_path, monkeypatch):
    from latentae.studies import design

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    cache = tmp_path / "cache"
    cache.mkdir()
    torch.save(Payload(), cache / "crops-test-4-64.pt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(Exception):  # noqa: B017 - any refusal; what matters is below
        design.crop_set("test", tmp_path, 4, 64, cache)
    assert not (tmp_path / "PWNED").exists()


_HOLDER = ("import sys; from latentae.locks import lock_folder; lock_folder(sys.argv[1]); "
           "print('locked', flush=True); sys.stdin.read()")


def test_a_second_process_is_refused_at_once_naming_the_first(tmp_path):
    from latentae.locks import FolderLockedError, lock_folder, release_folder
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    first = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "run")], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=rf"in use by .*pid {first.pid} on host"):
            lock_folder(tmp_path / "run")
    finally:
        first.kill()
        first.wait()
    lock_folder(tmp_path / "run")  # the kernel dropped the dead process's flock: taken over
    release_folder(tmp_path / "run")


def test_a_stale_lock_of_a_killed_process_is_taken_over_with_a_note(w, tmp_path, capsys):
    out = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out.mkdir()
    (out / ".latentae-lock").write_text(f'{{"pid": {dead.pid}, "host": "h", "command": '
                                        '"latentae train", "since": "t"}')
    argv = SWEEP._expand(f"train $TR --resume auto --out {out}", w)
    assert main(argv) == 0
    assert f"took over the lock of `latentae train` (pid {dead.pid}" in _err(capsys)


def test_encode_leaves_no_lock_or_folder_when_it_fails(w, tmp_path):
    out = tmp_path / "enc"
    assert run("encode", w / "m/litevae-tiny", w / "fx/trunc", out) == 2
    assert not out.exists()
    assert run("encode", w / "m/litevae-tiny", w / "fx/good", out) == 0
    assert sorted(p.name for p in out.iterdir())[0] == ".latentae-run.json"
    assert not (out / ".latentae-lock").exists()


@pytest.mark.parametrize("layout", ["input inside", "output inside"])
def test_overwrite_never_deletes_an_input(layout, tmp_path):
    from latentae.files import check_inputs_apart, prepare_output_dir
    out, src = tmp_path / "out", tmp_path / "out" / "model"
    if layout == "output inside":
        src, out = tmp_path / "model", tmp_path / "model" / "sub"
    src.mkdir(parents=True)
    with pytest.raises(InputError, match="--overwrite would"):
        prepare_output_dir(out, overwrite=True, inputs=[src])
    check_inputs_apart(out, ["litevae-tiny", None, tmp_path / "elsewhere"])  # skipped
    assert src.is_dir()


def test_a_symlinked_output_is_replaced_through_the_link(tmp_path):
    from latentae.files import atomic_dir
    target, link = tmp_path / "target", tmp_path / "link"
    target.mkdir()
    (target / "old.txt").write_text("old")
    link.symlink_to(target)
    with atomic_dir(link, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert link.is_symlink() and sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert _temporaries(tmp_path) == [] and not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("readme", ["hf", "plain"])
def test_a_foreign_readme_is_never_rewritten(readme, w, tmp_path, capsys):
    """The model-card layout of every Hugging Face repository (front matter, then prose)
    is not a latentae card: --update-card refuses before work, --write leaves it."""
    from latentae.cards import read_card
    model = tmp_path / "m"
    shutil.copytree(w / "m/sd-diff", model)
    text = SWEEP._wild().HF_README if readme == "hf" else "# My model\n\nnotes\n"
    (model / "README.md").write_text(text)
    assert read_card(model)[0] is None
    rc = run("eval", model, "--data", w / "fx/good", "--resolution", 64, "--device", "cpu",
             "--no-diffusability", "--out", tmp_path / "ev", "--update-card")
    assert rc == 2 and "is not a latentae model card" in _err(capsys)
    assert not (tmp_path / "ev").exists()
    assert run("latent-stats", model, w / "fx/good", "--write", "--device", "cpu") == 0
    assert "left as it is" in _err(capsys)
    assert (model / "README.md").read_text() == text
    assert json.loads((model / "config.json").read_text())["scaling_factor"] != 0.18215


def test_latentae_cards_carry_the_marker_and_stay_cards(w, tmp_path):
    from latentae.cards import MARKER, read_card
    save_pretrained(create_model("litevae-tiny"), tmp_path / "m")
    card, why = read_card(tmp_path / "m")
    assert card is not None and card[MARKER] == 1, why
    assert (tmp_path / "m/README.md").read_text().startswith(f"---\n{MARKER}: 1\n")


def test_an_unwritable_folder_names_the_file_not_the_temporary(tmp_path, monkeypatch):
    from latentae.files import atomic_write_bytes

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".s.json.x.tmp"))
    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(OSError, match=r"Read-only file system: '.*/s\.json'"):
        atomic_write_bytes(tmp_path / "s.json", b"{}")


def test_a_resume_with_other_options_names_the_fields(tmp_path):
    from latentae.engine.rundir import RunFolder
    from latentae.errors import StateError
    folder = RunFolder(tmp_path)
    folder.write_config({"diffusion": {"model": "dit-tiny", "lr": 1e-4}}, False, ("diffusion",))
    with pytest.raises(StateError, match=r"diffusion\.model: 'dit-tiny' \(saved\) vs 'uvit"):
        folder.write_config({"diffusion": {"model": "uvit-tiny", "lr": 1e-4}}, True,
                            ("diffusion",))

"""Re-run the cheap cases of the fault and bad-input sweep
(``shared/reports/fault-sweep-2026-12-01.md``) and print its table: id, command, what
happens now, verdict (``docs/robustness.md`` holds the last run).

    PYTHONPATH=src python scripts/fault_sweep.py [--only E01,D13] [--markdown]
                                                 [--workdir DIR] [--real-disk]

Every case runs ``latentae.cli.main`` in this process on tiny random-init models and
small images made here (a few seconds in all); an exception escaping ``main`` is a
traceback (verdict ``bug``). A case is ``ok`` when the exit code is the expected one,
the message matches what a user needs, and its file check holds (nothing outside OUT,
no temporary left, no output lost). Full disks are injected by monkeypatching
``os.fsync`` to raise ``ENOSPC``; ``--real-disk`` runs those cases in a subprocess on a
200 KB tmpfs instead (``unshare -rm``, where user namespaces are allowed).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentae import create_model, save_pretrained
from latentae.cli import main
from latentae.latents import read_shard, write_shard
from latentae.serialization import save_safetensors

ROOT = Path(__file__).resolve().parents[1]


# --- fixtures --------------------------------------------------------------------------
def _png(path: Path, w: int, h: int, seed: int = 0, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    a = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(a)
    path.parent.mkdir(parents=True, exist_ok=True)
    (img if mode == "RGB" else img.convert(mode)).save(path)
    return path


def _images(w: Path) -> None:
    fx = w / "fx"
    for i in range(6):
        _png(fx / "good" / f"img{i}.png", 64, 64, i)
    (fx / "empty").mkdir(parents=True)
    for i in range(4):
        _png(fx / "trunc" / f"ok{i}.png", 64, 64, i)
    Image.open(fx / "good" / "img0.png").save(fx / "trunc" / "bad.jpg")
    data = (fx / "trunc" / "bad.jpg").read_bytes()
    (fx / "trunc" / "bad.jpg").write_bytes(data[:len(data) // 3])
    (fx / "textpng").mkdir()
    (fx / "textpng" / "notreally.png").write_text("not an image\n")
    for mode in ("L", "RGBA", "P", "CMYK"):
        ext = "jpg" if mode == "CMYK" else "png"
        _png(fx / "modes" / f"{mode}.{ext}", 64, 64, 1, mode)
    _png(fx / "tiny" / "t.png", 10, 10)
    _png(fx / "odd" / "odd.png", 100, 67)
    _png(fx / "collide" / "pic.png", 64, 64, 1)
    Image.open(_png(fx / "tmp" / "x.png", 64, 64, 2)).save(fx / "collide" / "pic.jpg")
    shutil.rmtree(fx / "tmp")
    for i in range(4):
        _png(fx / "loop" / f"l{i}.png", 64, 64, i)
    os.symlink("..", fx / "loop" / "up")
    os.symlink("self", fx / "loop" / "self")


def _models(w: Path) -> None:
    m = w / "m"
    for name in ("litevae-tiny", "sdvae-tiny", "dcae-tiny-f32"):
        torch.manual_seed(0)
        create_model(name).save_pretrained(m / name)
    torch.manual_seed(0)
    save_pretrained(create_model("sdvae-tiny"), m / "sd-diff", format="diffusers")
    torch.manual_seed(0)
    save_pretrained(create_model("dcae-tiny-f32"), m / "dc-diff", format="diffusers")


def _bad_models(w: Path) -> None:
    m, bad = w / "m", w / "bad"
    weights = "diffusion_pytorch_model.safetensors"

    def diff(name: str, edit: Callable[[dict], None] | None = None, weights_op=None):
        d = bad / name
        shutil.copytree(m / "sd-diff", d)
        cfg = json.loads((d / "config.json").read_text())
        if edit:
            edit(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
        if weights_op:
            weights_op(d / weights)

    diff("d_nosafe", weights_op=Path.unlink)
    diff("d_trunc", weights_op=lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]))
    diff("d_unet", lambda c: c.update(_class_name="UNet2DModel"))
    diff("d_inch", lambda c: c.update(in_channels=4))
    diff("d_mism", lambda c: c.update(block_out_channels=[64, 64]))
    diff("d_absurd", lambda c: c.update(latent_channels=10**9))

    def lite(name: str, edit: Callable[[dict], object] | None = None, weights_op=None):
        d = bad / name
        shutil.copytree(m / "litevae-tiny", d)
        meta = json.loads((d / "config.json").read_text())
        if edit:
            new = edit(meta)
            meta = new if isinstance(new, (dict, str)) else meta
        text = meta if isinstance(meta, str) else json.dumps(meta)
        (d / "config.json").write_text(text)
        if weights_op:
            weights_op(d / "model.safetensors")

    def field_(k, v):
        return lambda meta: meta["config"].__setitem__(k, v)

    lite("l_fam", lambda meta: meta.update(family="vqgan"))
    lite("l_missing", lambda meta: meta["config"].pop("latent_channels"))
    lite("l_extra", field_("foo", 1))
    lite("l_absurd", field_("latent_channels", 10**9))
    lite("l_neg", field_("latent_channels", -1))
    lite("l_zero", field_("latent_channels", 0))
    lite("l_strtype", field_("latent_channels", "four"))
    lite("l_scale0", field_("scaling_factor", 0.0))
    lite("l_wide", field_("decoder_channels", [16384] * 4))
    lite("l_wrongfam", lambda meta: {**meta, "family": "sdvae"})
    lite("l_nofamily", lambda meta: {"config": meta["config"]})
    lite("l_badjson", lambda meta: "{not json")
    lite("l_trunc", weights_op=lambda p: p.write_bytes(p.read_bytes()[:1000]))
    lite("l_nosafe", weights_op=Path.unlink)
    lite("l_list", lambda meta: "[1, 2, 3]")
    shutil.copytree(m / "litevae-tiny", bad / "l_other")
    shutil.copy(m / "sdvae-tiny" / "model.safetensors", bad / "l_other" / "model.safetensors")


def _shards(w: Path) -> None:
    lat = w / "lat"
    lat.mkdir()
    meta = {"format": "latentae-latents/1", "family": "litevae", "model": "litevae-tiny",
            "latent_channels": "4", "compression": "8", "scaling_factor": "1.0",
            "shift_factor": "0.0", "scaling_applied": "false", "posterior": "mode"}
    z = torch.randn(4, 8, 8)
    write_shard(lat / "wrongch.safetensors", {"a.png": torch.randn(16, 8, 8)},
                {"a.png": (64, 64)}, meta)
    write_shard(lat / "fourd.safetensors", {"a.png": torch.randn(1, 4, 8, 8)},
                {"a.png": (64, 64)}, meta)
    write_shard(lat / "good.safetensors", {"a.png": z}, {"a.png": (64, 64)}, meta)
    data = (lat / "good.safetensors").read_bytes()
    (lat / "trunc.safetensors").write_bytes(data[:len(data) // 2])
    save_safetensors({"a.png": z}, lat / "nosizes.safetensors", meta)
    write_shard(lat / "bigsizes.safetensors", {"a.png": z}, {"a.png": (4000, 4000)}, meta)
    write_shard(lat / "nan.safetensors", {"a.png": torch.full((4, 8, 8), float("nan"))},
                {"a.png": (64, 64)}, meta)
    keys = {"../../ESCAPED_rel": z, str(w / "ESCAPED_abs"): z}
    write_shard(lat / "traverse.safetensors", keys, {k: (64, 64) for k in keys}, meta)
    write_shard(lat / "scale0.safetensors", {"a.png": z}, {"a.png": (64, 64)},
                {**meta, "scaling_applied": "true", "scaling_factor": "0.0"})
    save_safetensors({"a.png": torch.ones(4, 8, 8, dtype=torch.int64)}, lat / "int.safetensors",
                     {**meta, "sizes": json.dumps({"a.png": [64, 64]})})
    (w / "emptylat").mkdir()


def _tars(w: Path) -> None:
    fx = w / "fx"
    good = (fx / "good" / "img0.png").read_bytes()
    (fx / "trunctar").mkdir()
    with tarfile.open(fx / "trunctar" / "a.tar", "w") as t:
        for i in range(3):
            info = tarfile.TarInfo(f"{i}.png")
            info.size = len(good)
            t.addfile(info, io.BytesIO(good))
    shutil.copy(fx / "trunctar" / "a.tar", fx / "trunctar" / "b.tar")
    data = (fx / "trunctar" / "b.tar").read_bytes()
    (fx / "trunctar" / "b.tar").write_bytes(data[:700])
    (fx / "evil").mkdir()
    with tarfile.open(fx / "evil" / "e.tar", "w") as t:
        for name in ("../../escape.png", str(w / "abs_escape.png"), "ok/normal.png"):
            info = tarfile.TarInfo(name)
            info.size = len(good)
            t.addfile(info, io.BytesIO(good))
        link = tarfile.TarInfo("link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)


def build_fixtures(w: Path) -> None:
    """Models, images, crafted shards, broken model folders and tars under ``w``."""
    _images(w)
    _models(w)
    _bad_models(w)
    _shards(w)
    _tars(w)
    (w / "afile").write_text("an existing file\n")
    (w / "o").mkdir()
    _wild().build(w)


# --- running a case --------------------------------------------------------------------
@dataclass
class Result:
    rc: int
    out: str
    err: str
    tb: str | None = None
    left: list[str] = field(default_factory=list)  # files on the real small disk after it


@contextlib.contextmanager
def _full_disk():
    """Every atomic write fails as on a full disk (its ``fsync`` raises ``ENOSPC``)."""
    real = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    os.fsync = full
    try:
        yield
    finally:
        os.fsync = real


def run_cli(argv: list[str], full_disk: bool = False) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with _full_disk() if full_disk else contextlib.nullcontext():
            try:
                rc = main(argv)
            except BaseException:  # noqa: BLE001 - what escapes main is the finding
                return Result(1, out.getvalue(), err.getvalue(), traceback.format_exc())
    return Result(rc, out.getvalue(), err.getvalue())


def run_real_disk(argv: list[str], w: Path) -> Result:
    """``argv`` in a subprocess whose ``w/small`` is a 200 KB tmpfs with 4 KB free."""
    small = w / "small"
    small.mkdir(exist_ok=True)
    cmd = (f"mount -t tmpfs -o size=200k tmpfs {small} && head -c 196k /dev/zero > "
           f"{small}/fill && cd {w} && "
           f"{sys.executable} -m latentae {' '.join(argv)}; rc=$?; "
           f"echo LEFT: >&2; find {small} -mindepth 1 ! -name fill >&2; exit $rc")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True,
                       env=env)
    tb = p.stderr if "Traceback" in p.stderr else None
    err, _, left = p.stderr.partition("LEFT:\n")
    return Result(p.returncode, p.stdout, err, tb, left.split())


TR = ("--model litevae-tiny --recipe sdvae --data $FX/good --set resolution=64 --set "
      "batch_size=2 --set losses.perceptual=0 --set discriminator_on=false --set steps=2 "
      "--val-every 0 --no-progress --device cpu")  # the sweep's $TR, smaller


@dataclass
class Case:
    id: str
    group: str
    argv: str  # with $LT $SD $DC $SDD $DCD $FX $O $W $LAT $BAD
    rc: int  # expected exit code
    message: str = ""  # regex the output must match
    check: Callable[[Path], str | None] | None = None  # -> a problem, or None
    setup: Callable[[Path], None] | None = None
    before: str = ""  # the sweep's verdict
    full_disk: bool = False
    argv_list: list[str] = field(default_factory=list)


def _expand(text: str, w: Path) -> list[str]:
    text = text.replace("$TR", TR)
    names = {"$LT": w / "m/litevae-tiny", "$SDD": w / "m/sd-diff", "$DCD": w / "m/dc-diff",
             "$SD": w / "m/sdvae-tiny", "$DC": w / "m/dcae-tiny-f32", "$FX": w / "fx",
             "$O": w / "o", "$LAT": w / "lat", "$BAD": w / "bad", "$W": w}
    for k in sorted(names, key=len, reverse=True):
        text = text.replace(k, str(names[k]))
    return text.split()


def run_case(case: Case, w: Path, real_disk: bool = False) -> tuple[str, str]:
    """``(what happens now, verdict)`` of ``case``."""
    if case.setup:
        case.setup(w)
    argv = _expand(case.argv, w)
    if case.full_disk and real_disk:
        res = run_real_disk([a.replace(f"{w}/small_", f"{w}/small/") for a in argv], w)
    else:
        res = run_cli(argv, full_disk=case.full_disk)
    text = (res.err.strip().splitlines() or res.out.strip().splitlines() or [""])
    line = text[-1] if res.rc == 0 else next((t for t in text if "error" in t), text[-1])
    line = line.replace(str(w), "W")
    now = f"rc {res.rc}, `{line[:160]}`"
    if res.tb:
        return f"rc {res.rc}, traceback: {res.tb.strip().splitlines()[-1][:120]}", "bug"
    problems = []
    if res.rc != case.rc:
        problems.append(f"expected rc {case.rc}")
    if case.message and not re.search(case.message, res.err + res.out):
        problems.append("message lacks what a user needs")
    if res.rc == 2 and len([t for t in res.err.splitlines() if "error" in t]) != 1:
        problems.append("not one line")
    if case.check and (p := case.check(w)):
        problems.append(p)
    if temps := [f for f in res.left if f.endswith((".tmp", ".old"))]:
        problems.append(f"left {temps}")
    return now + ("; " + "; ".join(problems) if problems else ""), (
        "ok" if not problems else "poor message" if problems == ["message lacks what a user "
                                                                  "needs"] else "bug")


# --- checks ---------------------------------------------------------------------------
def no_temporaries(*dirs: str) -> Callable[[Path], str | None]:
    def check(w: Path) -> str | None:
        for d in dirs:
            left = [p.name for p in (w / d).rglob("*") if p.name.endswith((".tmp", ".old"))]
            left += [p.name for p in (w / d).parent.glob(f".{Path(d).name}.*")]
            if left:
                return f"left {left}"
        return None
    return check


def absent(*paths: str) -> Callable[[Path], str | None]:
    def check(w: Path) -> str | None:
        there = [p for p in paths if (w / p).exists() or list(w.glob(p))]
        return f"wrote {there}" if there else None
    return check


def files_in(d: str, n: int, pattern: str = "*.png") -> Callable[[Path], str | None]:
    def check(w: Path) -> str | None:
        got = sorted(p.name for p in (w / d).rglob(pattern))
        return None if len(got) == n else f"{len(got)} files {got}, expected {n}"
    return check


def _encode_sd_then(w: Path) -> None:
    main(["encode", str(w / "m/sdvae-tiny"), str(w / "fx/good"), str(w / "o/e23"),
          "--shard-size", "2"])


def _k07(w: Path) -> None:
    shutil.copytree(w / "m/dcae-tiny-f32", w / "o/k07")


def _h05(w: Path) -> None:
    main(["shards", str(w / "fx/good"), str(w / "o/h05"), "--size", "100"])


def _sizes(folder: Path, want: dict) -> str | None:
    got = json.loads(read_shard(folder / "latents-00000.safetensors").meta["sizes"])
    return None if got == want else f"sizes {got}"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _round_trip(w: Path) -> str | None:
    name = "diffusion_pytorch_model.safetensors"
    same = (w / "o/k10b" / name).read_bytes() == (w / "m/dc-diff" / name).read_bytes()
    return None if same else "diffusers weights differ after the round trip"


def _corrupt_run(w: Path) -> None:
    """A finished run whose every checkpoint is overwritten with random bytes (T03)."""
    shutil.copytree(w / "o/trun", w / "o/tcorrupt")
    for f in (w / "o/tcorrupt/checkpoints").glob("*.pt"):
        f.write_bytes(os.urandom(1000))


def _unchanged_dcae(w: Path) -> str | None:
    cfg = json.loads((w / "o/k07/config.json").read_text())
    return None if cfg.get("family") == "dcae" else "the dcae model was overwritten"


def _h05_check(w: Path) -> str | None:
    n = len(list((w / "o/h05").glob("*.tar")))
    return None if n == 6 else f"{n} shards"


CASES = [
    # encode
    Case("E01", "encode", "encode $LT $W/nonexistent $O/e01", 2, "is not a directory"),
    Case("E02", "encode", "encode $LT $FX/empty $O/e02", 2, "no images"),
    Case("E03", "encode", "encode $W/nonexistent-model $FX/good $O/e03", 2,
         "no saved model"),
    Case("E04", "encode", "encode $LT $FX/trunc $O/e04", 2, r"cannot decode image .*bad\.jpg"),
    Case("E05", "encode", "encode $LT $FX/textpng $O/e05", 2, "cannot identify image"),
    Case("E06", "encode", "encode $LT $FX/modes $O/e06", 0, "converted .* to 8-bit RGB"),
    Case("E07", "encode", "encode $LT $FX/tiny $O/e07 --pad", 0, "encoded 1 images"),
    Case("E10", "encode", "encode $DC $FX/odd $O/e10 --pad", 0, "encoded 1",
         lambda w: _sizes(w / "o/e10", {"odd.png": [67, 100]})),
    Case("E11", "encode", "encode $LT $FX/good $O/e11 --tile 100", 2, "multiples of"),
    Case("E12", "encode", "encode $LT $FX/good $O/e12 --tile 64 --overlap 64", 2,
         r"overlap must be in \[0, tile\)"),
    Case("E13", "encode", "encode $LT $FX/good $O/e13 --shard-size 0", 2, ">= 1"),
    Case("E14", "encode", "encode $LT $FX/good $O/e14 --batch-size 0", 2, ">= 1"),
    Case("E15", "encode", "encode $LT $FX/good $O/e15 --batch-size 1000", 0, "encoded 6"),
    Case("E16", "encode", "encode $LT $FX/good $W/afile", 2, "is a file, not a folder"),
    Case("E17", "encode", "encode $LT $FX/good $W/afile/sub", 2, "is a file, not a folder"),
    Case("E19", "encode", "encode $LT $FX/good $W/small_e19", 2,
         "no space left on the device", no_temporaries("small_e19"), before="poor message",
         full_disk=True),
    Case("E20", "encode", "encode $LT $FX/loop $O/e20", 0, "encoded 4 images"),
    Case("E21", "encode", "encode $LT $FX/good $O/e21 --shard-size 3", 2, "shard_size=2",
         setup=lambda w: main(["encode", str(w / "m/litevae-tiny"), str(w / "fx/good"),
                               str(w / "o/e21"), "--shard-size", "2"])),
    Case("E22", "encode", "encode $LT $FX/good $O/e21 --shard-size 2", 2,
         "latents-00001.safetensors is not a readable safetensors file.*delete it",
         setup=lambda w: _truncate(w / "o/e21/latents-00001.safetensors")),
    Case("E23", "encode", "encode $LT $FX/good $O/e23 --shard-size 2", 2,
         "another .*run.*model.*--overwrite", setup=_encode_sd_then, before="bug"),
    # collisions
    Case("C01", "collisions", "decode $LT $O/c01lat $O/c01dec", 0, "decoded 2 images",
         files_in("o/c01dec", 2), before="data loss",
         setup=lambda w: main(["encode", str(w / "m/litevae-tiny"), str(w / "fx/collide"),
                               str(w / "o/c01lat")])),
    Case("C02", "collisions", "reconstruct $LT $FX/collide $O/c02", 0, "reconstructed 2",
         files_in("o/c02", 4), before="data loss"),
    # decode
    Case("D01", "decode", "decode $LT $LAT/good.safetensors $W/small_d01", 2,
         "no space left on the device", no_temporaries("small_d01"), before="bug",
         full_disk=True),
    Case("D02", "decode", "decode $LT $W/nonexistent.safetensors $O/d02", 2, "does not exist"),
    Case("D03", "decode", "decode $SD $O/e07 $O/d03", 2, "made by a litevae model"),
    Case("D04", "decode", "decode $LT $LAT/wrongch.safetensors $O/d04", 2,
         "16 channels but"),
    Case("D05", "decode", "decode $DC $O/e07 $O/d05", 2, "channels but"),
    Case("D06", "decode", "decode $LT $LAT/fourd.safetensors $O/d06", 2,
         r"expected \(channels, h, w\)"),
    Case("D07", "decode", "decode $LT $LT/model.safetensors $O/d07", 2,
         "not a latentae latent shard"),
    Case("D08", "decode", "decode $LT $LAT/trunc.safetensors $O/d08", 2,
         "not a readable safetensors"),
    Case("D09", "decode", "decode $LT $W/emptylat $O/d09", 2, "no .safetensors latent"),
    Case("D10", "decode", "decode $LT $LAT/nosizes.safetensors $O/d10", 2,
         "has no 'sizes' metadata.*latentae encode", before="poor message"),
    Case("D11", "decode", "decode $LT $LAT/bigsizes.safetensors $O/d11", 0, "decoded 1"),
    Case("D12", "decode", "decode $LT $LAT/nan.safetensors $O/d12", 0,
         "warning: .*NaN or Inf", before="poor message"),
    Case("D13", "decode", "decode $LT $LAT/traverse.safetensors $O/d13/out", 2,
         "would be written outside", absent("ESCAPED_abs.png", "../ESCAPED_rel.png",
                                            "o/ESCAPED_rel.png", "o/d13"), before="bug"),
    Case("D14", "decode", "decode $LT $LAT/scale0.safetensors $O/d14", 2,
         "finite, non-zero factor", before="poor message"),
    Case("D15", "decode", "decode $LT $LAT/int.safetensors $O/d15", 2, "not floating point",
         before="poor message"),
    Case("D17", "decode", "decode $LT $O/e15 $O/d17 --tile 32 --overlap 8", 0, "decoded 6"),
    Case("D18", "decode", "decode $LT $O/e07 $W/afile", 2, "is a file, not a folder"),
    Case("D19", "decode", "decode $SD $O/d19lat $O/d19", 2, "another .*run.*--overwrite",
         before="poor message",
         setup=lambda w: (main(["encode", str(w / "m/sdvae-tiny"), str(w / "fx/good"),
                                str(w / "o/d19lat")]),
                          main(["decode", str(w / "m/sdvae-tiny"), str(w / "o/d19lat"),
                                str(w / "o/d19"), "--random-init"]))),
    # reconstruct
    Case("R01", "reconstruct", "reconstruct $LT $W/nonexistent $O/r01", 2, "not a directory"),
    Case("R02", "reconstruct", "reconstruct $DC $FX/tiny $O/r02 --pad", 0, "PSNR"),
    Case("R04", "reconstruct", "reconstruct $LT $FX/good $W/afile", 2, "is a file"),
    Case("R05", "reconstruct", "reconstruct $DC $FX/odd $O/r05 --pad", 0, "reconstructed 1"),
    Case("R06", "reconstruct", "reconstruct $LT $FX/modes $O/r06", 0, "reconstructed 4"),
    Case("R07", "reconstruct", "reconstruct $LT $FX/good $O/r07 --dtype float16", 0,
         "reconstructed 6"),
    Case("R08", "reconstruct", "reconstruct $LT $FX/good $O/r08 --device cuda:99", 2,
         "cuda|device"),
    Case("R09", "reconstruct", "reconstruct $LT $FX/good $O/r09 --device bogus", 2,
         "unknown device"),
    Case("R12", "reconstruct", "reconstruct $LT $FX/good $FX/good/out", 2,
         "inside the input folder"),
    # eval
    Case("V01", "eval", "eval $LT --data $W/nonexistent --resolution 64 --no-progress "
         "--device cpu --out $O/v01", 2, "not a directory"),
    Case("V02", "eval", "eval $LT --data $FX/empty --resolution 64 --no-progress --device cpu "
         "--out $O/v02", 2, "no images"),
    Case("V03", "eval", "eval $LT --data $FX/trunc --resolution 64 --no-progress --device cpu "
         "--out $O/v03", 0, "bad.jpg|corrupt"),
    Case("V04", "eval", "eval $LT --data $FX/textpng --resolution 64 --no-progress "
         "--device cpu --out $O/v04", 2, "could be decoded"),
    Case("V05", "eval", "eval $LT --data $FX/good --resolution 60 --no-progress --device cpu "
         "--out $O/v05", 2, "divisible"),
    Case("V06", "eval", "eval $LT --data $FX/good --resolution -64 --out $O/v06", 2,
         "positive"),
    Case("V07", "eval", "eval $LT --data $FX/good --limit 0 --out $O/v07", 2, "positive"),
    Case("V08", "eval", "eval $LT --data $FX/good --resolution 64 --no-progress --device cpu "
         "--out $W/afile", 2, "is a file, not a folder", before="poor message"),
    Case("V11", "eval", "eval $LT --data $FX/tiny --resolution 64 --no-progress --device cpu "
         "--out $O/v11", 0, "rFID"),
    Case("V12", "eval", "eval $LT --data $FX/good --resolution 64 --no-progress --device cpu "
         "--out $W/small_v12", 2, "no space left on the device", no_temporaries("small_v12"),
         before="bug", full_disk=True),
    Case("V09", "eval", "eval $FX/good --data $FX/good --resolution 64 --out $O/v09", 2,
         "no config.json"),
    # convert
    Case("K01", "convert", "convert $W/nonexistent $O/k01", 2, "not a model directory"),
    Case("K02", "convert", "convert $LT $O/k02", 2, "no diffusers equivalent"),
    Case("K03", "convert", "convert $BAD/d_nosafe $O/k03", 2, "has no diffusion_pytorch"),
    Case("K04", "convert", "convert $BAD/d_trunc $O/k04", 2, "d_trunc.*corrupt or truncated",
         before="poor message"),
    Case("K05", "convert", "convert $BAD/d_unet $O/k05", 2,
         "UNet2DModel is not supported; supported: AutoencoderKL, AutoencoderDC",
         before="poor message"),
    Case("K06", "convert", "convert $SDD $W/afile", 2, "is a file", before="poor message"),
    Case("K07", "convert", "convert $SDD $O/k07", 2, "not empty.*--overwrite",
         _unchanged_dcae, setup=_k07, before="data loss"),
    Case("K08", "convert", "convert $SDD $O/k08 --to diffusers", 2, "already a diffusers"),
    Case("K10", "convert", "convert $O/k10 $O/k10b", 0, "wrote diffusers",
         _round_trip, setup=lambda w: main(["convert", str(w / "m/dc-diff"), str(w / "o/k10")])),
    Case("K11", "convert", "convert $SDD $W/small_k11", 2, "no space left",
         no_temporaries("small_k11"), before="poor message", full_disk=True),
    # info
    Case("I01", "info", "info $BAD/d_inch", 2, "in_channels=4 is not supported"),
    Case("I01b", "info", "info $BAD/d_mism", 2, "does not match"),
    Case("I02", "info", "info $BAD/l_fam", 2, "unknown model family 'vqgan'"),
    Case("I03", "info", "info $BAD/l_missing", 0),
    Case("I04", "info", "info $BAD/l_extra", 2, "unknown field"),
    Case("I05", "info", "info $BAD/l_absurd", 2, "latent_channels = 1000000000 is out of range",
         before="poor message"),
    Case("I05b", "info", "info $BAD/d_absurd", 2, "latent_channels = 1000000000 is out of range"),
    Case("I05c", "info", "info $BAD/l_wide", 2, "does not match"),
    Case("I06", "info", "info $BAD/l_neg", 2, "latent_channels = -1 is out of range",
         before="poor message"),
    Case("I07", "info", "info $BAD/l_zero", 2, "latent_channels = 0 is out of range"),
    Case("I08", "info", "info $BAD/l_strtype", 2, "latent_channels = 'four' must be an integer",
         before="poor message"),
    Case("I09", "info", "info $BAD/l_wrongfam", 2, "fields are those of 'litevae'",
         before="poor message"),
    Case("I10", "info", "info $BAD/l_nofamily", 2, "not a latentae model config"),
    Case("I10b", "info", "info $BAD/l_badjson", 2, "not valid JSON"),
    Case("I10c", "info", "info $BAD/l_trunc", 2, "corrupt or truncated"),
    Case("I10d", "info", "info $BAD/l_nosafe", 2, "has no model.safetensors"),
    Case("I10e", "info", "info $BAD/l_other", 2, "does not match LiteVAE"),
    Case("I10f", "info", "info $BAD/l_list", 2, "not a latentae model config"),
    Case("I11", "info", "info $BAD/l_scale0", 2, "scaling_factor = 0.0 must be a positive"),
    Case("N03", "info", "info dcae-tiny-f32 --json -", 0, "spatial_compression_ratio"),
    Case("N01", "info", "info litevae-tinyy", 2, "Did you mean litevae-tiny"),
    # export
    Case("X01", "export", "export $SD $LT", 2, "not empty.*--overwrite"),
    Case("X02", "export", "export $SD $W/afile", 2, "is a file"),
    Case("X03", "export", "export $LT $O/x/x03", 2, "no diffusers equivalent", absent("o/x")),
    Case("X04", "export", "export $SD $W/small_x04", 2, "no space left",
         no_temporaries("small_x04"), before="poor message", full_disk=True),
    Case("X05", "export", "export sdvae-tiny $O/x05", 2, "pass --random-init"),
    # latent-stats
    Case("S02", "latent-stats", "latent-stats litevae-tiny $FX/good --random-init --write", 2,
         "needs a saved model directory"),
    Case("S01", "latent-stats", "latent-stats $LT $W/nonexistent", 2, "not a directory"),
    Case("S04", "latent-stats", "latent-stats $DC $FX/tiny", 2, "smaller than the compression"),
    Case("S05", "latent-stats", "latent-stats $LT $FX/good --json $O", 2, "is a folder",
         absent("o.tmp", ".o.*"), before="bug"),
    Case("S06", "latent-stats", "latent-stats $LT $FX/good --resolution 30", 2,
         "multiple of 8"),
    Case("S07", "latent-stats", "latent-stats $LT $FX/good --limit 0", 2, "positive",
         before="poor message"),
    Case("S10", "latent-stats", "latent-stats $LT $FX/good --limit -2", 2, "positive",
         before="poor message"),
    Case("S08", "latent-stats", "latent-stats $O/s08 $FX/good --write --use-shift", 0,
         "wrote scaling_factor", setup=lambda w: shutil.copytree(w / "m/litevae-tiny",
                                                                   w / "o/s08")),
    Case("S09", "latent-stats", "latent-stats $LT $FX/trunc", 2, "cannot decode image"),
    # bench
    Case("B01", "bench", "bench litevae-tinyy", 2, "litevae-tiny"),
    Case("B02", "bench", "bench litevae-tiny --resolution 60", 2, "60"),
    Case("B02b", "bench", "bench litevae-tiny --batch-size 0", 2, ">= 1"),
    Case("B02c", "bench", "bench litevae-tiny --dtype int8", 2, "unknown dtype"),
    Case("B02d", "bench", "bench litevae-tiny --repeats 0", 2, ">= 1"),
    Case("B08", "bench", "bench litevae-tiny --compare diffusers", 2, "diffusers twin"),
    Case("B09", "bench", "bench litevae-tiny --resolution 64 --batch-size 1 --warmup 0 "
         "--repeats 1 --threads 1 --device cpu", 0, "latentae bench"),
    Case("B07", "bench", "bench litevae-tiny --resolution 64 --batch-size 1 --warmup 0 "
         "--repeats 1 --json $W/afile/x.json", 2, "cannot write"),
    # shards
    Case("H01", "shards", "shards $W/nonexistent $O/h01", 2, "not a directory"),
    Case("H02", "shards", "shards $FX/good $O/h02 --size=-5MB", 2, "positive size",
         before="poor message"),
    Case("H03", "shards", "shards $FX/good $W/afile", 2, "is a file", before="poor message"),
    Case("H05", "shards", "shards $FX/good $O/h05 --size 200KB", 2, "not empty.*--overwrite",
         _h05_check, setup=_h05, before="bug"),
    Case("H06", "shards", "shards $FX/good $W/small_h06", 2, "no space left",
         no_temporaries("small_h06"), before="bug", full_disk=True),
    # train (argument and data checks, and two-step runs of litevae-tiny)
    Case("T07", "train", "train $TR --model litevae-tinyy --out $O/t07", 2, "litevae-tiny"),
    Case("T08", "train", "train $TR --set foo=1 --out $O/t08", 2, "unknown field 'foo'"),
    Case("T09", "train", "train $TR --set lr=abc --out $O/t09", 2, "lr"),
    Case("T10", "train", "train $TR --set steps=0 --out $O/t10", 2, "steps"),
    Case("T11", "train", "train $TR --set steps=-5 --out $O/t11", 2, "steps"),
    Case("T14", "train", "train $TR --data $W/nonexistent --out $O/t14", 2, "not a directory"),
    Case("T15", "train", "train $TR --data $FX/empty --out $O/t15", 2, "no images"),
    Case("T16", "train", "train $TR --data $FX/textpng --out $O/t16", 2, "no usable"),
    Case("T20", "train", "train $TR --recipe foo --out $O/t20", 2, "unknown recipe"),
    Case("T21", "train", "train $TR --set lr --out $O/t21", 2, "KEY=VALUE"),
    Case("T24", "train", "train $TR --resume bogus --out $O/t24", 2, "resume"),
    Case("T25", "train", "train $TR --keep-checkpoints 0 --out $O/t25", 2, "keep"),
    Case("T27", "train", "train $TR --set lr=-1 --out $O/t27", 2, "lr|learning rate"),
    Case("T29", "train", "train $TR --accumulation 3 --out $O/t29", 2, "divisible"),
    Case("T30", "train", "train $TR --config $W/nonexistent.yaml --out $O/t30", 2,
         "cannot read config"),
    Case("T30b", "train", "train $TR --config $W/bad.yaml --out $O/t30b", 2, "config",
         setup=lambda w: (w / "bad.yaml").write_text("foo: [1, 2\n")),
    Case("T31", "train", "train $TR --device cuda:99 --out $O/t31", 2, "device"),
    Case("T32", "train", "train $TR --workers -1 --out $O/t32", 2, "workers|negative"),
    Case("T36", "train", "train $TR --val-data $W/nonexistent --out $O/t36", 2,
         "not a directory"),
    Case("T37", "train", "train $TR --small-images bogus --out $O/t37", 2, "small"),
    Case("T39", "train", "train $TR --data $FX/tiny --small-images skip --out $O/t39", 2,
         "no usable"),
    Case("T41", "train", "train $TR --set train_groups=foo --out $O/t41", 2, "foo"),
    Case("T42", "train", "train $TR --data $FX/evil --out $O/t42", 0, "exported",
         absent("escape.png", "abs_escape.png", "../escape.png")),
    Case("T43", "train", "train $TR --data $FX/loop --out $O/t43", 0, "exported"),
    Case("T12", "train", "train --max-steps -1 --out $O/t12", 2, "max.steps|>= 1|positive",
         before="poor message"),
    Case("T18", "train", "train --model litevae-tiny --recipe sdvae --data $FX/good --set "
         "resolution=64 --set steps=1 --val-every 0 --no-progress --device cpu --out "
         "$W/afile", 2, "afile", before="poor message"),
    Case("T26", "train", "train --model litevae-tiny --recipe sdvae --data $FX/good --set "
         "resolution=65 --no-progress --device cpu --out $O/t26", 2, "65",
         before="poor message"),
    Case("T40", "train", "train --model litevae-tiny --recipe sdvae --data $FX/good --set "
         "betas=0.5 --no-progress --device cpu --out $O/t40", 2, "betas",
         before="poor message"),
    Case("T22", "train", "train $TR --ckpt-every 0 --log-every 0 --out $O/trun", 0,
         "exported", before="bug"),
    Case("T04", "train", "train $TR --set lr=1e-3 --out $O/trun", 2,
         "holds a run.*--resume auto.*--overwrite", before="data loss"),
    Case("T06", "train", "train $TR --model sdvae-tiny --resume auto --out $O/trun", 2,
         "sdvae|SDVAE|model", before="poor message"),
    Case("T03", "train", "train $TR --resume auto --out $O/tcorrupt", 2,
         "unreadable|none .*readable|--restart", setup=lambda w: _corrupt_run(w),
         before="data loss"),
    Case("T28", "train", "train $TR --set losses.kl=.nan --log-every 1 --out $O/t28", 2,
         "finite", before="poor message"),
    Case("T19", "train", "train $TR --out $W/small_t19", 2, "no space left",
         no_temporaries("small_t19"), before="bug", full_disk=True),
    Case("P01", "train", "plot $O/trun", 0, "png"),
    Case("P01b", "train", "plot $W/nonexistent", 2, "metrics.jsonl"),
    Case("T44", "train", "train --model litevae-tiny --recipe sdvae --data $FX/trunctar "
         "--set resolution=64 --set steps=1 --no-progress --device cpu --out $O/t44", 2,
         r"b\.tar is not a readable tar shard", before="poor message"),
]


def _wild():
    """``scripts/fault_sweep_wild.py``: the cases of the 2026-12-04 sweep (issue 28)."""
    sys.modules.setdefault("fault_sweep", sys.modules[__name__])  # it imports Case from here
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    import fault_sweep_wild
    return fault_sweep_wild


CASES += _wild().CASES


def run(only: list[str] | None = None, workdir: Path | None = None,
        real_disk: bool = False) -> list[tuple[Case, str, str]]:
    """Build the fixtures in ``workdir`` (a temporary folder by default) and run the
    cases (``only`` these ids); returns ``(case, what happens now, verdict)`` rows."""
    with contextlib.ExitStack() as stack:
        w = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        w = w.resolve()
        build_fixtures(w)
        cases = [c for c in CASES if only is None or c.id in only]
        return [(c, *run_case(c, w, real_disk)) for c in cases]


def table(rows: list[tuple[Case, str, str]]) -> str:
    """The rows as Markdown tables, one per group, in the order of ``CASES``."""
    lines: list[str] = []
    group = None
    for c, now, verdict in rows:
        if c.group != group:
            group = c.group
            lines += ["", f"### {group}", "", "| # | command | before | now | verdict |",
                      "|---|---|---|---|---|"]
        cmd = c.argv.replace("|", "\\|")
        lines.append(f"| {c.id} | `latentae {cmd}` | {c.before or 'ok'} | "
                     f"{now.replace('|', '/')} | {verdict} |")
    return "\n".join(lines).strip()


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated case ids")
    p.add_argument("--workdir", type=Path, help="keep the fixtures here (a new folder)")
    p.add_argument("--real-disk", action="store_true",
                   help="full-disk cases on a real tmpfs (unshare -rm) instead of injected")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = run(args.only.split(",") if args.only else None, args.workdir, args.real_disk)
    print(table(rows))
    bad = [c.id for c, _, v in rows if v != "ok"]
    print(f"\n{len(rows)} cases: {len(rows) - len(bad)} ok" + (f"; not ok: {bad}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(cli())

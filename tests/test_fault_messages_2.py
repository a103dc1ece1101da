"""The 7 rows of the fault sweep of 2026-12-04 (``shared/reports/fault-sweep-2026-12-04.md``,
issue 28 item 6) judged "poor message" that had no case of their own: DN12b, DN14b, DN21b,
NU01b, RO08, RO10, WD05. Each says what to do on one line; the row is named in each test.
The rest of that sweep's poor messages: ``tests/test_fault_messages.py``."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from latentae.cli import main


def run(*argv) -> int:
    return main([str(a) for a in argv])


DT = ["--model", "dit-tiny", "--patch-size", "2", "--batch-size", "4", "--steps", "3",
      "--ckpt-every", "3", "--log-every", "1", "--val-every", "0", "--grid-images", "2",
      "--grid-steps", "2", "--device", "cpu", "--no-progress", "--cached"]


@pytest.fixture(scope="module")
def dlat(tmp_path_factory) -> SimpleNamespace:
    """A litevae-tiny and an sdvae-tiny folder, the litevae latents of 8 images of two
    classes (``latents/``, 2 shards) and a 3-step dit-tiny run on them (``run/``)."""
    from latentae import create_model
    w = tmp_path_factory.mktemp("dlat")
    for c in ("cat", "dog"):
        (w / "cls" / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (64, 64), (30 * i, 80 + 80 * (c == "dog"), 200)).save(
                w / "cls" / c / f"{c}{i}.png")
    with torch.random.fork_rng(devices=[]):  # weights unlike a preset's random init
        torch.manual_seed(123)                # (seed 0), whatever ran before this test
        create_model("litevae-tiny").save_pretrained(str(w / "lt"))
        create_model("sdvae-tiny").save_pretrained(str(w / "sd"))
    assert run("encode", w / "lt", w / "cls", w / "latents", "--labels", "--shard-size", "4",
               "--device", "cpu", "--threads", "1") == 0
    assert run("diffusion", "train", "--autoencoder", w / "lt", "--data", w / "latents", *DT,
               "--out", w / "run") == 0
    return SimpleNamespace(w=w, lt=w / "lt", sd=w / "sd", latents=w / "latents", run=w / "run")


def _relabelled(dlat, out: Path, label: int) -> Path:
    """``dlat.latents`` copied to ``out`` with every label set to ``label``."""
    from latentae.latents import read_shard, write_shard
    out.mkdir()
    for p in sorted(dlat.latents.glob("*.safetensors")):
        s = read_shard(p)
        meta = {k: v for k, v in s.meta.items() if k not in ("sizes", "labels")}
        write_shard(out / p.name, s.latents, s.sizes, meta, dict.fromkeys(s.labels, label))
    return out


def test_a_negative_label_names_the_shard_and_the_range(dlat, tmp_path, capsys):
    # DN12b: cached latents with label -1 gave "IndexError: index out of range in self".
    data = _relabelled(dlat, tmp_path / "neg", -1)
    assert run("diffusion", "train", "--autoencoder", dlat.lt, "--data", data, *DT, "--out",
               tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert (f"{data / 'latents-00000.safetensors'}: the label of 'cat/cat0.png' is -1, "
            "outside the 2 classes of the shard (0 … 1): re-encode the images with "
            "`latentae encode --labels`") in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_preset_hint_of_diffusion_names_its_own_flag(dlat, tmp_path, capsys):
    # DN14b: the hint said "pass --random-init", which diffusion train answered with
    # "unrecognized arguments: --random-init"; the flag is --autoencoder-random-init.
    train = ["diffusion", "train", "--autoencoder", "litevae-tiny", "--data", dlat.latents,
             *DT, "--out", tmp_path / "o"]
    assert run(*train) == 2
    err = capsys.readouterr().err
    assert ("--autoencoder 'litevae-tiny' is a preset name, not saved weights: for a smoke "
            "run with random weights add --autoencoder-random-init") in err
    assert "--random-init " not in err.replace("--autoencoder-random-init", "")
    assert run(*train, "--random-init") == 2
    assert ("--random-init is not a flag of `latentae diffusion train`: for random weights "
            "of a preset --autoencoder pass --autoencoder-random-init"
            ) in capsys.readouterr().err
    run(*train, "--autoencoder-random-init")  # accepted: these latents are another model's
    assert "its encoder weights differ" in capsys.readouterr().err


def test_resuming_with_another_autoencoder_says_what_differs(dlat, tmp_path, capsys):
    # DN21b: "the diffusion differs from the one in config.yaml" named no field.
    resume = ["diffusion", "train", "--data", dlat.latents, *DT, "--resume", "auto"]
    shutil.copytree(dlat.run, tmp_path / "a")
    assert run(*resume, "--autoencoder", dlat.sd, "--out", tmp_path / "a") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (f"the latents in {dlat.latents} were made by {dlat.lt}" in err
            and f"the autoencoder {dlat.sd} is sdvae" in err
            and "pass the autoencoder that encoded them" in err), err
    shutil.copytree(dlat.lt, tmp_path / "lt-copy")  # the same weights in another folder
    shutil.copytree(dlat.run, tmp_path / "b")
    assert run(*resume, "--autoencoder", tmp_path / "lt-copy", "--out", tmp_path / "b") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (f"(diffusion.autoencoder: '{dlat.lt}' (saved) vs '{tmp_path / 'lt-copy'}'): "
            "resume with the same options, or start a new run with another --out") in err


def test_a_shard_with_a_non_utf8_name_says_so(dlat, tmp_path, capsys):
    # NU01b: latentae before the NU01 fix wrote "caf\udce9.png" into shard headers;
    # reading one said "invalid JSON in header: lone leading surrogate in hex escape".
    from latentae.latents import read_shard
    (tmp_path / "nu").mkdir()
    shard = tmp_path / "nu" / "latents-00000.safetensors"
    s = read_shard(next(dlat.latents.glob("*.safetensors")))
    key = next(iter(s.latents))
    header = {"__metadata__": {**s.meta, "sizes": json.dumps({"caf\udce9.png": [64, 64]})}}
    data = s.latents[key].contiguous().numpy().tobytes()
    header["caf\udce9.png"] = {"dtype": "F32", "shape": list(s.latents[key].shape),
                               "data_offsets": [0, len(data)]}
    text = json.dumps(header).encode()  # "\udce9" as a JSON escape, as it was written
    text += b" " * (-len(text) % 8)
    shard.write_bytes(len(text).to_bytes(8, "little") + text + data)
    for argv in (["decode", dlat.lt, shard.parent, tmp_path / "d", "--device", "cpu"],
                 ["diffusion", "train", "--autoencoder", dlat.lt, "--data", shard.parent,
                  *DT, "--out", tmp_path / "t"]):
        assert run(*argv) == 2
        err = capsys.readouterr().err
        assert (f"{shard} cannot be read: it was written with a file name that is not "
                "valid UTF-8") in err and "rename the images to UTF-8" in err, err
        assert "surrogate in hex escape" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, work", [
    (["latent-stats", "litevae-tiny", "IMAGES", "--random-init", "--json", "RO/s.json"],
     "latentae.folders.latent_statistics"),
    (["diffusion", "ref-stats", "IMAGES", "--out", "RO/ref.npz", "--resolution", "64"],
     "latentae.cli.diffusion_eval.reference_stats"),
    (["diffusion", "eval", "IMAGES", "--ref", "IMAGES", "--json", "RO/e.json"],
     "latentae.cli.diffusion_eval.evaluate_samples"),
])
def test_a_read_only_output_file_is_refused_before_the_work(argv, work, tmp_path,
                                                            monkeypatch, capsys):
    # RO08, RO10: "[Errno 30] Read-only file system: '…/.s.json.x9jvcnem.tmp'" after the
    # statistics / the Inception pass. A read-only mount denies write access as os.access
    # says; root ignores chmod, so the mount is emulated here.
    ro, images = tmp_path / "ro", tmp_path / "images"
    ro.mkdir()
    images.mkdir()
    Image.new("RGB", (64, 64)).save(images / "a.png")
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: (
        not (mode & os.W_OK and Path(p) == ro) and access(p, mode, **k)))

    def the_work(*a, **k):
        raise AssertionError("the work started before the output was checked")
    monkeypatch.setattr(work, the_work)
    argv = [str(a).replace("IMAGES", str(images)).replace("RO", str(ro)) for a in argv]
    assert run(*argv, "--device", "cpu") == 2
    err = capsys.readouterr().err
    out = argv[argv.index("--json" if "--json" in argv else "--out") + 1]
    assert f"error: cannot write {out}: no write permission on {ro}" in err
    assert ".tmp" not in err and list(ro.iterdir()) == []


def test_a_stream_cut_mid_file_says_so_without_reprs(tmp_path, capsys):
    # WD05: `--data "pipe:head -c N shard.tar"` printed "unexpected end of data @ <Pipe
    # ((…), {'shell': True, 'bufsize': 8192})>", <webdataset.gopen.Pipe object …>".
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 90, 200)).save(png, format="PNG")
    with tarfile.open(tmp_path / "s.tar", "w") as t:
        for i in range(8):
            info = tarfile.TarInfo(f"{i:09d}.png")
            info.size = len(png.getvalue())
            t.addfile(info, io.BytesIO(png.getvalue()))
    second = 512 + -(-len(png.getvalue()) // 512) * 512 + 512  # its data: header, data, header
    cut = second + len(png.getvalue()) // 2  # in the second member's data (a cut in a header
    # block reads as the end of the archive: Python's tarfile ends there without an error)
    data = f"pipe:head -c {cut} {tmp_path / 's.tar'}"
    assert run("train", "--model", "litevae-tiny", "--recipe", "sdvae", "--set",
               "resolution=64", "--set", "batch_size=4", "--set", "losses.perceptual=0",
               "--set", "discriminator_on=false", "--set", "steps=2", "--val-every", "0",
               "--no-progress", "--device", "cpu", "--data", data, "--out",
               tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert (f"error: cannot read shard {data}: the stream ended in the middle of a tar "
            "member (unexpected end of data: a cut or truncated shard; check that the "
            "command or download gives the whole file)") in err
    assert "Pipe" not in err and "bufsize" not in err and "0x" not in err

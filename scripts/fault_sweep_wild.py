"""The cases of the 2026-12-04 sweep (``shared/reports/fault-sweep-2026-12-04.md``, issue
28) that ``scripts/fault_sweep.py`` runs besides the old table: outputs that hold their
own inputs, symlinked outputs, foreign READMEs, latents of another autoencoder, run-folder
locks, files from the wild (decompression bombs, non-UTF-8 names) and the poor messages.
``before`` is the verdict of that sweep (every case here failed on the code it swept).

Extra fixtures (:func:`build`): ``fx/cls`` (two classes), ``fx/bomb`` and ``fx/bombmix``
(a 20000² 1-bit PNG of 49 KB, alone and among good images), ``fx/nonutf8`` (names
``caf\\xe9.png``, ``\\xff\\xfe.png``), ``o/dlat`` (litevae latents with labels), ``o/dref``
(a 3-step dit-tiny run on them) and ``o/hf`` (a model folder with a Hugging Face README).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import safetensors.torch as st
import torch
from fault_sweep import Case, _expand, _png, absent, main, no_temporaries
from fault_sweep_messages import CASES as MESSAGES
from PIL import Image

from latentae.files import LOCK_NAME
from latentae.latents import read_shard, write_shard

# The front matter and headings of the model card of stabilityai/sd-vae-ft-mse on the
# Hugging Face Hub (the layout every model repository there has).
HF_README = """---
license: mit
tags:
- stable-diffusion
- stable-diffusion-diffusers
inference: false
---
# Improved Autoencoders

## Utilizing
These weights are intended to be used with the 🧨 diffusers library.

## Decoder Finetuning
We publish two kl-f8 autoencoder versions, finetuned from the original kl-f8 autoencoder
on a 1:1 ratio of LAION-Aesthetics and LAION-Humans. My own notes must survive.
"""

DT = ("--model dit-tiny --patch 2 --batch-size 4 --steps 3 --ckpt-every 3 --log-every 1 "
      "--sample-every 0 --grid-images 2 --grid-steps 2 --device cpu --no-progress")
SMP = "--n 2 --steps 2 --device cpu --no-progress"


def build(w: Path) -> None:
    """The fixtures above (a few seconds)."""
    fx = w / "fx"
    for c in ("cat", "dog"):
        for i in range(4):
            _png(fx / "cls" / c / f"{c}{i}.png", 64, 64, i)
    bomb = Image.new("1", (20000, 20000))
    (fx / "bomb").mkdir()
    bomb.save(fx / "bomb" / "bomb.png", optimize=True)
    shutil.copytree(fx / "good", fx / "bombmix")
    shutil.copy(fx / "bomb" / "bomb.png", fx / "bombmix" / "zz-bomb.png")
    (fx / "nonutf8").mkdir()
    for i, raw in enumerate((b"caf\xe9.png", b"\xff\xfe.png", b"ok.png")):
        shutil.copy(fx / "good" / f"img{i}.png", os.path.join(os.fsencode(fx / "nonutf8"), raw))
    main(["encode", str(w / "m/litevae-tiny"), str(fx / "cls"), str(w / "o/dlat"),
          "--labels", "--shard-size", "4"])
    main(["diffusion", "train", "--autoencoder", str(w / "m/litevae-tiny"), "--cached",
          "--data", str(w / "o/dlat"), *DT.split(), "--out", str(w / "o/dref")])
    shutil.copytree(w / "m/sd-diff", w / "o/hf")
    (w / "o/hf/README.md").write_text(HF_README)


# --- setups and checks ------------------------------------------------------------------
def _inside(w: Path, out: str, model: str = "m/litevae-tiny", name: str = "model") -> None:
    shutil.copytree(w / model, w / out / name)


def _intact(path: str, name: str = "config.json"):
    def check(w: Path) -> str | None:
        return None if (w / path / name).is_file() else f"{path}/{name} was deleted"
    return check


def _symlink(w: Path, out: str) -> None:
    (w / f"{out}-target").mkdir()
    os.symlink(w / f"{out}-target", w / out)


def _through_link(out: str, name: str):
    def check(w: Path) -> str | None:
        left = no_temporaries(f"{out}-target")(w) or no_temporaries(out)(w)
        if left:
            return left
        if not (w / out).is_symlink() or not (w / f"{out}-target" / name).exists():
            return f"{name} not written through the link"
        return None
    return check


def _readme_kept(folder: str):
    def check(w: Path) -> str | None:
        text = (w / folder / "README.md").read_text()
        return None if "My own notes must survive" in text else "the README prose is gone"
    return check


def _mix(w: Path) -> None:
    """A folder of litevae shards plus one sdvae shard (DN07)."""
    shutil.copytree(w / "o/dlat", w / "o/dmix")
    main(["encode", str(w / "m/sdvae-tiny"), str(w / "fx/cls"), str(w / "o/dsd"), "--labels",
          "--shard-size", "4"])
    shutil.copy(w / "o/dsd/latents-00001.safetensors", w / "o/dmix/latents-00001.safetensors")


def _edit_shards(w: Path, name: str, labels: dict | None = None, **meta: str) -> None:
    """``o/dlat`` copied to ``o/NAME`` with metadata fields (or all labels) replaced."""
    (w / "o" / name).mkdir()
    for p in sorted((w / "o/dlat").glob("*.safetensors")):
        s = read_shard(p)
        m = {k: v for k, v in s.meta.items() if k not in ("sizes", "labels")} | meta
        write_shard(w / "o" / name / p.name, s.latents, s.sizes, m, labels or s.labels)


def _one_latent(w: Path, name: str, key: str, shape: tuple, **meta: str) -> None:
    """``o/NAME.safetensors``: one litevae-tiny latent under ``key`` (metadata edited)."""
    s = read_shard(next((w / "o/dlat").glob("*.safetensors")))
    m = {k: v for k, v in s.meta.items() if k not in ("sizes", "labels", "classes")}
    write_shard(w / "o" / f"{name}.safetensors", {key: torch.zeros(shape)}, {key: (64, 64)},
                m | meta)


def _swap_autoencoder(w: Path) -> None:
    """A copy of the run whose autoencoder path now holds another family (DS12)."""
    shutil.copytree(w / "o/dref", w / "o/dae")
    shutil.copytree(w / "m/sdvae-tiny", w / "o/swapped")
    info = w / "o/dae/model/diffusion_run.json"
    d = json.loads(info.read_text())
    d["autoencoder_path"] = d["autoencoder"] = str(w / "o/swapped")
    info.write_text(json.dumps(d))


def _foreign_sampling(w: Path) -> None:
    """Samples whose sampling.json was edited to name another run (MC04): a copy of the
    run whose weights then changed (as a run trained further would)."""
    main(["diffusion", "sample", str(w / "o/dref"), *SMP.split(), "--out", str(w / "o/mc04s")])
    shutil.copytree(w / "o/dref", w / "o/mc04run")
    weights = w / "o/mc04run/model/model.safetensors"
    tensors = st.load_file(weights)
    st.save_file({k: v + 1 for k, v in tensors.items()}, weights)
    path = w / "o/mc04s/sampling.json"
    path.write_text(path.read_text().replace(str(w / "o/dref"), str(w / "o/mc04run")))


_holders: list[subprocess.Popen] = []
_HOLD = ("import fcntl, json, os, socket, sys, time; f = open(sys.argv[1], 'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX); f.truncate(0); f.write(json.dumps({'pid': "
         "os.getpid(), 'host': socket.gethostname(), 'command': 'latentae train (other)', "
         "'since': 'now'})); f.flush(); print('held', flush=True); time.sleep(120)")


def _held_by_other(w: Path, out: str) -> None:
    """Another process holds the lock of ``o/OUT`` (as a running train would)."""
    (w / out).mkdir(parents=True)
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(w / out / LOCK_NAME)],
                         stdout=subprocess.PIPE, text=True)
    p.stdout.readline()
    _holders.append(p)


def _release(w: Path) -> str | None:
    for p in _holders:
        p.send_signal(signal.SIGKILL)
        p.wait()
    _holders.clear()
    return None


def _stale(w: Path, out: str) -> None:
    """A lock file left by a process that was killed (no flock held any more)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    (w / out).mkdir(parents=True)
    (w / out / LOCK_NAME).write_text(json.dumps({"pid": p.pid, "host": "here",
                                                 "command": "latentae train", "since": "x"}))
    time.sleep(0.01)


def _nan_weights(w: Path) -> None:
    shutil.copytree(w / "m/litevae-tiny", w / "o/nanw")
    tensors = st.load_file(w / "o/nanw/model.safetensors")
    first = sorted(tensors)[0]
    st.save_file({**tensors, first: tensors[first] * float("nan")},
                 w / "o/nanw/model.safetensors", {"format": "pt"})


def _stopped_run(w: Path) -> None:
    """A run stopped at image 4 (2 steps of batch 2, checkpoints every step)."""
    main([*_tr(w), "--set", "steps=3", "--ckpt-every", "1", "--max-steps", "2",
          "--out", str(w / "o/rs01")])


def _zero_byte_newest(w: Path) -> None:
    """A run stopped at image 8 plus a 0-byte newer checkpoint (image 16): resume falls
    back to 8 and, stopped at 10, must name the state it wrote, not the 0-byte one."""
    main([*_tr(w), "--set", "steps=6", "--ckpt-every", "2", "--max-steps", "4",
          "--out", str(w / "o/zb07")])
    (w / "o/zb07/checkpoints/state-000000000016.pt").write_bytes(b"")


def _tr(w: Path) -> list[str]:
    return ["train", *_expand("$TR", w)]


LT_DT = f"diffusion train --autoencoder $LT --cached {DT}"
HF_EVAL = "--data $FX/good --resolution 64 --no-progress --device cpu --no-diffusability"

CASES = [
    # outputs that hold their own inputs (all refused before anything is deleted)
    Case("PS07", "new: inputs inside OUT", "encode $O/p7/model $FX/good $O/p7 --overwrite", 2,
         "would delete the input", _intact("o/p7/model"), lambda w: _inside(w, "o/p7"),
         before="bug"),
    Case("PS08", "new: inputs inside OUT", "export $O/p8/sd $O/p8 --overwrite", 2,
         "would delete the input", _intact("o/p8/sd"),
         lambda w: _inside(w, "o/p8", "m/sdvae-tiny", "sd"), before="bug"),
    Case("PS09", "new: inputs inside OUT", "convert $O/p9/sdd $O/p9/sdd --overwrite", 2,
         "would delete the input", _intact("o/p9/sdd"),
         lambda w: _inside(w, "o/p9", "m/sd-diff", "sdd"), before="bug"),
    Case("PS09b", "new: inputs inside OUT", "convert $O/p9b/sdd $O/p9b --overwrite", 2,
         "would delete the input", _intact("o/p9b/sdd"),
         lambda w: _inside(w, "o/p9b", "m/sd-diff", "sdd"), before="bug"),
    Case("PS10", "new: inputs inside OUT", "diffusion convert $O/p10/dit.pt $O/p10 --model "
         "dit-tiny --patch-size 2 --input-size 8 --in-channels 4 --num-classes 2 --overwrite",
         2, "would delete the input", _intact("o/p10", "dit.pt"),
         lambda w: ((w / "o/p10").mkdir(), torch.save({}, w / "o/p10/dit.pt")), before="bug"),
    Case("PS12", "new: inputs inside OUT", f"eval $O/p12 {HF_EVAL} --out $O/p12 --overwrite",
         2, "would delete the input", _intact("o/p12"),
         lambda w: shutil.copytree(w / "m/litevae-tiny", w / "o/p12"), before="bug"),
    Case("PS13c", "new: inputs inside OUT", "train $TR --model $O/p13c/model --recipe "
         "finetune-decoder --out $O/p13c --overwrite", 2, "would delete the input",
         _intact("o/p13c/model"),
         lambda w: (_inside(w, "o/p13c"), (w / "o/p13c/config.yaml").write_text("a: 1\n")),
         before="data loss"),
    Case("PS15", "new: inputs inside OUT", "shards $FX/good $O/ps15", 0, "wrote 1 shard",
         _through_link("o/ps15", "shard-000000.tar"), lambda w: _symlink(w, "o/ps15"),
         before="bug"),
    Case("PS17", "new: inputs inside OUT", f"eval $LT {HF_EVAL} --out $O/ps17", 0, "wrote",
         _through_link("o/ps17", "metrics.json"), lambda w: _symlink(w, "o/ps17"),
         before="bug"),
    Case("PS16", "new: inputs inside OUT", "export $SD $O/ps16 --overwrite", 0, "wrote",
         _through_link("o/ps16", "config.json"), lambda w: _symlink(w, "o/ps16"),
         before="bug"),
    Case("DS09", "new: inputs inside OUT", f"diffusion sample $O/dref {SMP} --out $O/ds09", 2,
         "not empty", lambda w: None if (w / "o/ds09/samples.npz").read_text() == "mine\n"
         else "samples.npz replaced",
         lambda w: ((w / "o/ds09").mkdir(), (w / "o/ds09/samples.npz").write_text("mine\n")),
         before="data loss"),
    # foreign READMEs
    Case("MC02", "new: model cards", f"eval $O/hf {HF_EVAL} --out $O/mc02 --update-card", 2,
         "not written by latentae", _readme_kept("o/hf"), before="data loss"),
    Case("MC03", "new: model cards", "latent-stats $O/hf $FX/good --write --device cpu", 0,
         "left as it is", _readme_kept("o/hf"), before="data loss"),
    Case("MC04", "new: model cards", "diffusion eval $O/mc04s/samples.npz --ref $O/dlat "
         "--device cpu --no-progress --update-card", 2, "not drawn by the model",
         setup=_foreign_sampling, before="bug"),
    # latents know their autoencoder
    Case("DN06", "new: latents and their autoencoder", f"{LT_DT} --data $O/dlat --out $O/dn06"
         .replace("$LT", "$SD"), 2, "made by .*litevae.* sdvae", before="bug"),
    Case("DN07", "new: latents and their autoencoder", f"{LT_DT} --data $O/dmix --out $O/dn07",
         2, "different autoencoders", setup=_mix, before="bug"),
    Case("DS12", "new: latents and their autoencoder", f"diffusion sample $O/dae {SMP} --out "
         "$O/ds12", 2, "made by .*litevae.*sdvae", absent("o/ds12/000000.png"),
         _swap_autoencoder, before="bug"),
    Case("DN17", "new: latents and their autoencoder", f"{LT_DT} --data $O/dscale0 --out "
         "$O/dn17", 2, "non-zero factor", absent("o/dn17/model"),
         lambda w: _edit_shards(w, "dscale0", scaling_applied="true", scaling_factor="0.0"),
         before="poor message"),
    Case("DN18", "new: latents and their autoencoder", f"{LT_DT} --data $O/dbadcls --out "
         "$O/dn18", 2, r"dbadcls/latents-0+\.safetensors: the 'labels'/'classes' metadata",
         setup=lambda w: _edit_shards(w, "dbadcls", classes="not json"),
         before="poor message"),
    Case("DN21", "new: latents and their autoencoder", f"{LT_DT} --data $O/dlat --model "
         "uvit-tiny --resume auto --out $O/dn21", 2, r"model: 'dit-tiny' \(saved\) vs "
         "'uvit-tiny'", setup=lambda w: shutil.copytree(w / "o/dref", w / "o/dn21"),
         before="poor message"),
    Case("D13d", "new: latents and their autoencoder", "decode $LT $O/nul.safetensors "
         "$O/d13d", 2, r"nul\.safetensors: the name 'a\\x00b\.png' holds a NUL", absent("o/d13d"),
         lambda w: _one_latent(w, "nul", "a\0b", (4, 8, 8)), before="poor message"),
    Case("D20", "new: latents and their autoencoder", "decode $LT $O/badcomp.safetensors "
         "$O/d20", 2, r"badcomp\.safetensors: the 'compression' metadata is 'abc'",
         setup=lambda w: _one_latent(w, "badcomp", "a", (4, 8, 8), compression="abc"),
         before="poor message"),
    Case("ZB08", "new: latents and their autoencoder", "decode $LT $O/zero.safetensors "
         "$O/zb08", 2, r"zero\.safetensors: latent 'a' has shape \(4, 0, 0\)",
         setup=lambda w: _one_latent(w, "zero", "a", (4, 0, 0)), before="poor message"),
    Case("DN12", "new: latents and their autoencoder", f"{LT_DT} --data $O/dlabel --out "
         "$O/dn12", 2, "outside the 2 classes",
         setup=lambda w: _edit_shards(w, "dlabel", labels={
             f"{c}/{c}{i}.png": 99 for c in ("cat", "dog") for i in range(4)}),
         before="poor message"),
    # locks
    Case("CC02b", "new: run-folder locks", "train $TR --resume auto --out $O/cc02b", 2,
         r"in use by .*pid \d+ on host", _release, lambda w: _held_by_other(w, "o/cc02b"),
         before="bug"),
    Case("CC04", "new: run-folder locks", f"{LT_DT} --data $O/dlat --resume auto --out $O/cc04",
         2, r"in use by .*pid \d+", _release, lambda w: _held_by_other(w, "o/cc04"),
         before="bug"),
    Case("CC05", "new: run-folder locks", "encode $LT $FX/good $O/cc05", 2, r"in use by",
         _release, lambda w: _held_by_other(w, "o/cc05"), before="new case"),
    Case("CC06", "new: run-folder locks", "train $TR --resume auto --out $O/cc06", 0,
         "took over the lock", setup=lambda w: _stale(w, "o/cc06"), before="new case"),
    # files from the wild
    Case("HB01", "new: files from the wild", "encode $LT $FX/bomb $O/hb01", 2,
         r"bomb.*--max-image-pixels", before="poor message"),
    Case("HB02", "new: files from the wild", "train $TR --data $FX/bomb --out $O/hb02", 2,
         r"no usable .*1 corrupt", before="poor message"),
    Case("HB04", "new: files from the wild", "reconstruct $LT $FX/bomb $O/hb04", 2,
         r"bomb\.png.*--max-image-pixels", absent("o/hb04"), before="poor message"),
    Case("HB05", "new: files from the wild", "latent-stats $LT $FX/bomb", 2,
         r"bomb\.png.*--max-image-pixels", before="poor message"),
    Case("HB07", "new: files from the wild", "train $TR --data $O/hb07 --set steps=4 --out "
         "$O/hb07t", 0, "1 corrupt",
         setup=lambda w: main(["shards", str(w / "fx/bombmix"), str(w / "o/hb07")]),
         before="bug"),
    Case("HB08", "new: files from the wild", "diffusion ref-stats $FX/bomb --out $O/hb08.npz "
         "--resolution 64 --device cpu --no-progress", 2, r"skipped as unreadable.*bomb\.png",
         absent("o/hb08.npz"), before="poor message"),
    Case("HB06", "new: files from the wild", "train $TR --data $FX/bombmix --set steps=4 "
         "--out $O/hb06", 0, "1 corrupt", before="bug"),
    Case("HB03", "new: files from the wild", f"eval $LT {HF_EVAL.replace('good', 'bombmix')} "
         "--out $O/hb03", 0, "1 corrupt image.* skipped: .*bomb", before="poor message"),
    Case("DN22", "new: files from the wild", "diffusion train --autoencoder $LT "
         f"{DT} --data $FX/clsbomb --resolution 64 --out $O/dn22", 0, "[1-9] corrupt",
         setup=lambda w: (shutil.copytree(w / "fx/cls", w / "fx/clsbomb"),
                          shutil.copy(w / "fx/bomb/bomb.png", w / "fx/clsbomb/cat/b.png")),
         before="bug"),
    Case("NU01", "new: files from the wild", "encode $LT $FX/nonutf8 $O/nu01", 2,
         r"caf\\xe9\.png.*not valid UTF-8", absent("o/nu01"), before="bug"),
    Case("NU04", "new: files from the wild", "train $TR --data $FX/nonutf8 --out $O/nu04", 0,
         "exported", before="bug"),
    Case("NU05", "new: files from the wild", f"eval $LT {HF_EVAL.replace('good', 'nonutf8')} "
         "--out $O/nu05", 0, "wrote", before="bug"),
    # messages
    Case("WD03", "new: messages", "train $TR --data pipe:false --out $O/wd03", 2,
         "exited with status|it is empty", before="poor message"),
    Case("WD04", "new: messages", "train $TR --data pipe:cat+$W/nonexistent.tar --out $O/wd04",
         2, "exited with status|it is empty", before="poor message"),
    Case("WD10", "new: messages", "train $TR --data $FX/trunctar/*.tar --out $O/wd10", 2,
         r"wildcards are not expanded: pass the folder", before="poor message"),
    Case("DE02", "new: messages", "diffusion eval $FX/good --ref $W/nonexistent.npz "
         "--device cpu --no-progress", 2, r"latentae diffusion ref-stats REAL_DIR",
         before="poor message"),
    Case("DE03e", "new: messages", "diffusion eval $FX/good --ref $O/bad_ref.npz --device "
         "cpu --no-progress", 2, r"expected a latentae reference.*diffusion ref-stats",
         setup=lambda w: np.savez(w / "o/bad_ref.npz", foo=np.zeros(3)),
         before="poor message"),
    Case("DM03", "new: messages", "models --diffusion --resolution 0 --f 0", 2,
         r"--resolution: must be a positive integer", before="poor message"),
    Case("OX06", "new: messages", "export $O/nanw --format onnx $O/ox06", 2,
         "non-finite weights .* the model itself is broken", absent("o/ox06"), _nan_weights,
         before="poor message"),
    Case("RS01", "new: messages", "train $TR --set steps=3 --resume auto --out $O/rs01", 0,
         r"resuming from .*state-0+4\.pt", setup=_stopped_run, before="poor message"),
    Case("ZB07", "new: messages", "train $TR --set steps=6 --resume auto --max-steps 1 --out "
         "$O/zb07", 0, r"checkpoint \S*state-0+10\.pt", setup=_zero_byte_newest,
         before="poor message"),
    Case("DN14", "new: messages", f"{LT_DT} --data $O/dlat --out $O/dn14".replace(
        "$LT", "litevae-tiny"), 2, "--autoencoder-random-init", before="poor message"),
]
CASES += MESSAGES  # issue 28 item 6

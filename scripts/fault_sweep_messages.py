"""The poor messages of the 2026-12-04 sweep fixed by issue 28 item 6, as cases of
``scripts/fault_sweep.py`` (``fault_sweep_wild.py`` appends them). Each case builds what
it needs in its ``setup``. Not here: ST02 (a closed stdout pipe needs a real process),
ST10 (a whole dry run), WD14 (gsutil without a network) and the order of OX03's checks:
``tests/test_fault_messages.py`` covers those; RO08 and RO10 (a read-only mount: root, who
runs the sweep, ignores a chmod): ``tests/test_fault_messages_2.py``. The last 5 cases
are the rows that were variants of fixed ones (DN12b, DN14b, DN21b, NU01b, WD05)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from fault_sweep import TR, Case, absent, run_cli

from latentae.diffusion.registry import build, preset_config
from latentae.latents import read_shard, write_shard

NOTES = "\n## My notes\n\nMy own notes about this model that must survive.\n"
DC = "--model dit-tiny --patch-size 2 --in-channels 4"
DTR = ("diffusion train --autoencoder $LT --cached --model dit-tiny --patch 2 --batch-size 4 "
       "--steps 3 --ckpt-every 3 --log-every 1 --sample-every 0 --grid-images 2 "
       "--grid-steps 2 --device cpu --no-progress")  # fault_sweep_wild's LT_DT


def _dit_pt(w: Path) -> None:
    """``o/dit_official.pt``: a dit-tiny state dict (2x2 patches of 4x8x8 latents)."""
    config = preset_config("dit-tiny", patch_size=2, input_size=8, in_channels=4,
                           num_classes=2)
    torch.save(build("dit", config, preset="dit-tiny").state_dict(), w / "o/dit_official.pt")


def _quant_conv_off(w: Path) -> None:
    """``bad/ft01``: a diffusers SD-VAE whose config turns off use_quant_conv only."""
    shutil.copytree(w / "m/sd-diff", w / "bad/ft01")
    cfg = json.loads((w / "bad/ft01/config.json").read_text())
    (w / "bad/ft01/config.json").write_text(json.dumps({**cfg, "use_quant_conv": False}))


def _failed_start(w: Path) -> None:
    """``o/t16b``: what a train that found no usable image leaves (config.yaml, tb/)."""
    run_cli([*f"train {TR} --out {w}/o/t16b".replace("$FX", str(w / "fx")).split(),
             "--data", str(w / "fx/textpng")])


def _card_with_notes(w: Path) -> None:
    shutil.copytree(w / "m/litevae-tiny", w / "o/mc03b")
    card = w / "o/mc03b/README.md"
    card.write_text(card.read_text() + NOTES)


def _notes_kept(w: Path) -> str | None:
    text = (w / "o/mc03b/README.md").read_text()
    return None if text.endswith(NOTES) else "the notes below the card were dropped"


def _labels_negative(w: Path) -> None:
    """``o/dlabelneg``: ``o/dlat`` with every class label -1."""
    (w / "o/dlabelneg").mkdir()
    for p in sorted((w / "o/dlat").glob("*.safetensors")):
        s = read_shard(p)
        meta = {k: v for k, v in s.meta.items() if k not in ("sizes", "labels")}
        write_shard(w / "o/dlabelneg" / p.name, s.latents, s.sizes, meta,
                    dict.fromkeys(s.labels, -1))


def _surrogate_shard(w: Path) -> None:
    """``o/nu01b``: a shard as latentae before the NU01 fix wrote it for ``caf\\xe9.png``:
    the name as a lone surrogate escape in its JSON header."""
    s = read_shard(next((w / "o/dlat").glob("*.safetensors")))
    key, name = next(iter(s.latents)), "caf\udce9.png"
    data = s.latents[key].contiguous().numpy().tobytes()
    header = {"__metadata__": {**s.meta, "sizes": json.dumps({name: [64, 64]})},
              name: {"dtype": "F32", "shape": list(s.latents[key].shape),
                     "data_offsets": [0, len(data)]}}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (w / "o/nu01b").mkdir()
    (w / "o/nu01b/latents-00000.safetensors").write_bytes(
        len(text).to_bytes(8, "little") + text + data)


def _cut_stream(w: Path) -> None:
    """``o/wd05.sh``: prints ``fx/trunctar/a.tar`` up to the middle of its second member."""
    size = (w / "fx/good/img0.png").stat().st_size  # each member of a.tar is img0.png
    cut = 512 + -(-size // 512) * 512 + 512 + size // 2
    script = w / "o/wd05.sh"
    script.write_text(f"#!/bin/sh\nhead -c {cut} {w / 'fx/trunctar/a.tar'}\n")
    os.chmod(script, 0o755)


CASES = [
    Case("ST04", "new: messages", "study progressive --seeds 0 --quick --dry-run --out $O/st04",
         2, r"--seeds: must be an integer >= 1, got 0", absent("o/st04"),
         before="poor message"),
    Case("ST05", "new: messages", "study progressive --jobs -1 --quick --dry-run --out "
         "$O/st05", 2, r"--jobs: must be an integer >= 1, got -1", absent("o/st05"),
         before="poor message"),
    Case("ST06", "new: messages", "study progressive --quick --dry-run --out $W/afile", 2,
         r"--out \S*afile is a file; give a folder", before="poor message"),
    Case("ST08", "new: messages", "study latent-mmd --budgets abc --dry-run --out $O/st08", 2,
         r"--budgets: expected comma-separated positive step counts", absent("o/st08"),
         before="poor message"),
    Case("DEMO01", "new: messages", "demo --out $W/afile", 2,
         r"--out \S*afile is a file; give a folder", before="poor message"),
    Case("DC04", "new: messages", f"diffusion convert $O/dit_official.pt $O/dc04 {DC} "
         "--input-size 8 --num-classes -1", 2, r"--num-classes: must be a non-negative",
         absent("o/dc04"), setup=_dit_pt, before="poor message"),
    Case("DC05", "new: messages", f"diffusion convert $O/dit_official.pt $O/dc05 {DC} "
         "--input-size 1000000 --num-classes 2", 2,
         r"--input-size 1000000 does not fit .* pass --input-size 8", absent("o/dc05"),
         setup=_dit_pt, before="poor message"),
    Case("DC07", "new: messages", f"diffusion convert $FX/good/img0.png $O/dc07 {DC} "
         "--input-size 8 --num-classes 2", 2,
         r"img0\.png is not a readable PyTorch checkpoint \(\.pt/\.pth of tensors\)"
         r"(?!.*weights_only)", absent("o/dc07"), before="poor message"),
    Case("OX03", "new: messages", "bench litevae-tiny --compare onnxruntime --resolution 60 "
         "--device cpu --threads 1 --repeats 1 --warmup 0", 2,
         r"resolution 60 is not divisible by litevae-tiny's compression factor 8",
         before="poor message"),
    Case("FT01", "new: messages", f"train {TR} --model $BAD/ft01 --out $O/ft01", 2,
         r"ft01/config\.json: use_quant_conv and use_post_quant_conv must agree",
         setup=_quant_conv_off, before="poor message"),
    Case("T16b", "new: messages", f"train {TR} --out $O/t16b", 0,
         r"stopped before its first step: starting it over", setup=_failed_start,
         before="poor message"),
    Case("MC03b", "new: messages", "latent-stats $O/mc03b $FX/good --write --device cpu "
         "--threads 1", 0, r"wrote scaling_factor", _notes_kept, setup=_card_with_notes,
         before="poor message"),
    Case("DN12b", "new: messages", f"{DTR} --data $O/dlabelneg --out $O/dn12b", 2,
         r"dlabelneg/latents-0+\.safetensors: the label of .* is -1, outside the 2 classes",
         setup=_labels_negative, before="poor message"),
    Case("DN14b", "new: messages", f"{DTR} --random-init --data $O/dlat --out $O/dn14b"
         .replace("$LT", "litevae-tiny"), 2, r"--random-init is not a flag of `latentae "
         r"diffusion train`: .*pass --autoencoder-random-init", absent("o/dn14b"),
         before="poor message"),
    Case("DN21b", "new: messages", f"{DTR} --data $O/dlat --resume auto --out $O/dn21b"
         .replace("$LT", "$SD"), 2, r"made by \S*litevae-tiny .*is sdvae .*pass the "
         "autoencoder that encoded them", setup=lambda w: shutil.copytree(
             w / "o/dref", w / "o/dn21b"), before="poor message"),
    Case("NU01b", "new: messages", "decode $LT $O/nu01b $O/nu01bd", 2,
         r"nu01b/latents-00000\.safetensors cannot be read: it was written with a file name "
         r"that is not valid UTF-8 .*rename the images", absent("o/nu01bd"),
         setup=_surrogate_shard, before="poor message"),
    Case("WD05", "new: messages", "train $TR --data pipe:$O/wd05.sh --out $O/wd05", 2,
         r"cannot read shard pipe:\S*wd05\.sh: the stream ended in the middle of a tar "
         r"member \(unexpected end of data", setup=_cut_stream, before="poor message"),
]

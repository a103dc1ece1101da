"""Diffusability while an autoencoder trains: what ``--diffusability-every N`` and
``--generation-probe-every N`` add to a run, as periodic hooks of the loop (each
returns the values logged to ``metrics.jsonl`` / TensorBoard at that step).

- **Diagnostics** (``eval/diagnostics.py``) of the EMA model on the first
  ``val_images`` held-out images, loaded once (one fixed batch, latents encoded once per
  call and reused); logged as ``diffusability/<name>`` with their cost
  ``diffusability/seconds``.
- **Generation probe** (``diffusion/probe.py``): the EMA model is saved to
  ``RUN/probe/model`` and a child process (``python -m latentae.diffusion.probe``)
  trains, samples and measures a tiny DiT on its latents; this process waits and logs
  ``probe/kid``, ``probe/kid_seed_std``, ``probe/fid`` (n ≥ 2,048 only) and
  ``probe/seconds``. It touches neither the training state nor any RNG.

The card of the exported model keeps the last values (``train/card.py``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentae.engine import dist
from latentae.engine.state import TrainState
from latentae.errors import InputError, StateError
from latentae.eval.diagnostics import PREFIX, diagnostics, logged
from latentae.files import atomic_write_text
from latentae.serialization import save_safetensors
from latentae.train.config import TrainConfig
from latentae.train.validation import load_center_crops

PROBE = "probe/"
Hook = Callable[[nn.Module, TrainState, Path], dict[str, float]]


def check_settings(cfg: TrainConfig) -> None:
    """What the hooks need, refused before training starts."""
    if (cfg.diffusability_every or cfg.generation_probe_every) and not cfg.val_data:
        raise InputError("--diffusability-every / --generation-probe-every measure held-out "
                         "images: pass --val-data DIR")
    if cfg.diffusability_every and cfg.val_images < 2:
        raise InputError("--diffusability-every needs --val-images of at least 2 (the "
                         "latent statistics and the MMD need two codes)")
    if cfg.generation_probe_every and not Path(cfg.data).is_dir():
        raise InputError("--generation-probe-every encodes the first images of --data: "
                         "pass a folder of images (not a stream)")


class DiffusabilityHooks:
    """The periodic hooks of one run (rank 0 measures; other processes log nothing)."""

    def __init__(self, cfg: TrainConfig, val_images: torch.Tensor | None, resolution: int
                 ) -> None:
        check_settings(cfg)
        self.cfg, self.images, self.resolution = cfg, val_images, resolution
        self.probe_images: dict[str, torch.Tensor] | None = None
        if cfg.generation_probe_every and dist.is_main():  # a bad folder fails now
            n = cfg.generation_probe_images
            self.probe_images = {"train": load_center_crops(cfg.data, resolution, n),
                                 "held_out": load_center_crops(cfg.val_data, resolution, n)}

    def hooks(self) -> list[tuple[int, Hook]]:
        """``(every_steps, hook)`` pairs for the loop (an interval of 0 is left out)."""
        pairs = [(self.cfg.diffusability_every, self.diagnose),
                 (self.cfg.generation_probe_every, self.probe)]
        return [(every, hook) for every, hook in pairs if every]

    def diagnose(self, ema: nn.Module, state: TrainState, folder: Path) -> dict[str, float]:
        if not dist.is_main() or self.images is None:
            return {}
        t0 = time.perf_counter()
        values = logged(diagnostics(ema, self.images, seed=self.cfg.seed))
        return values | {PREFIX + "seconds": round(time.perf_counter() - t0, 3)}

    def probe(self, ema: nn.Module, state: TrainState, folder: Path) -> dict[str, float]:
        if not dist.is_main():
            return {}
        cfg, root = self.cfg, folder / "probe"
        model_dir = root / "model"
        shutil.rmtree(model_dir, ignore_errors=True)
        ema.save_pretrained(str(model_dir))
        result, images = root / f"probe-{state.nimg:012d}.json", root / "images.safetensors"
        if not images.is_file():
            save_safetensors(self.probe_images, images)
        request = dict(model=str(model_dir), images=str(images),
                       steps=cfg.generation_probe_steps, dit=cfg.generation_probe_model,
                       seeds=list(range(cfg.generation_probe_seeds)), work=str(root / "work"),
                       device=str(next(ema.parameters()).device),
                       threads=torch.get_num_threads())
        out = run_child(request, root, result)
        print(f"generation probe at image {state.nimg}: KID {out['kid']:.5f}"
              + (f" ± {out['kid_seed_std']:.5f} (std over {len(out['runs'])} DiT seeds)"
                 if out["kid_seed_std"] is not None else "")
              + f", {out['seconds']:.1f} s")
        values = {"kid": out["kid"], "kid_seed_std": out["kid_seed_std"], "fid": out["fid"],
                  "seconds": round(out["seconds"], 3)}
        return {PROBE + k: v for k, v in values.items() if v is not None}


def run_child(request: dict[str, Any], root: Path, result: Path) -> dict[str, Any]:
    """Write the request, run ``python -m latentae.diffusion.probe`` and read its result;
    a failed child is a :class:`StateError` with the end of its output."""
    root.mkdir(parents=True, exist_ok=True)
    req = root / "request.json"
    atomic_write_text(req, json.dumps(request, indent=1))
    done = subprocess.run([sys.executable, "-m", "latentae.diffusion.probe", str(req),
                           str(result)], capture_output=True, text=True)
    if done.returncode != 0:
        raise StateError(f"the generation probe failed (exit {done.returncode}): "
                         f"{(done.stderr or done.stdout)[-2000:]}")
    return json.loads(result.read_text())


def last_values(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last logged diagnostics and probe values of a run (for the model card)."""
    out: dict[str, Any] = {}
    for prefix in (PREFIX, PROBE):
        rows = [r for r in records if any(k.startswith(prefix) for k in r)]
        if rows:
            last = rows[-1]
            out[prefix.rstrip("/")] = {"step": last.get("step"), "nimg": last.get("nimg"),
                                       **{k[len(prefix):]: v for k, v in last.items()
                                          if k.startswith(prefix)}}
    return out or None


__all__ = ["DiffusabilityHooks", "check_settings", "last_values", "run_child"]

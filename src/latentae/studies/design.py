"""The experimental design every study shares (issue 17): the held-out split, the
evaluation crops, the scales, paired seeds, the plateau stop rule and a cached,
resumable training run per (arm, seed).

- **Held-out rule** (:func:`split_bsds`): of the 400 BSDS images, the 50 whose
  ``sha256(file name)`` is lowest are held out; training reads the other 350 (a folder
  of links, :func:`train_folder`). The 50 are split again (:func:`split_held_out`): the
  25 lowest hashes are the **selection** images (the ``val`` crops: validation curve,
  plateau stop, lr sweeps), the other 25 the **test** images (``test``/``test_rs`` crops:
  the final tables), on which nothing is selected. Evaluation uses random crops of those
  images at native scale (no resize; positions from a seeded generator,
  :func:`random_crops`); ``test_rs`` crops the test images at the *training* scale (short
  side resized to the crop size, as ``crop_flip`` does in training: issue 27 defect 2,
  train/test scale); kodak24 crops are a second, out-of-distribution set.
- **Paired seeds** (:func:`paired_seed`): run seed = ``seed_from(study seed, seed
  index)``, never the arm, so every arm of one seed index starts from the same initial
  weights (where modules are shared) and reads the same data order.
- **Plateau** (:class:`Plateau`): training runs in chunks of ``eval_every`` steps
  (``latentae.train`` with ``resume='auto'`` and ``max_steps``); after each chunk the EMA
  weights of the checkpoint are validated on held-out crops; the run stops when the
  relative improvement over the last ``window`` evaluations falls below ``rel_tol``, or
  at the step cap. Models are kept at each budget step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from latentae.engine.state import load_latest, seed_from
from latentae.errors import InputError, TrainingStopped
from latentae.files import atomic_path, atomic_write_text
from latentae.io import list_images, load_image, resize_shortest, to_tensor
from latentae.pretrained import load
from latentae.train.autoencoder import train
from latentae.train.config import make_config
from latentae.train.recipes import LossWeights, Phase, Recipe

HELD_OUT = 50
SELECTION = 25  # of the held-out images: selection (val); the rest: the test images


@dataclass(frozen=True)
class Scale:
    """How big a study runs. ``budgets`` are step counts at which the model is kept and
    tested (the last is the cap); ``eval_every`` steps between validations."""

    name: str
    resolution: int
    batch_size: int
    budgets: tuple[int, ...]
    eval_every: int
    val_crops: int  # held-out crops for the validation curve
    test_crops: int  # held-out crops for the final table (1-2k for a result)
    kodak_crops: int
    kid_crops: int  # 0: no KID (Inception on CPU is slow); FID only from >= 2048
    seeds: int
    device: str = "cpu"
    dtype: str = "float32"  # bf16 on CUDA: training autocasts (latentae.runtime.autocast)
    perceptual: bool = False  # LPIPS-VGG in the loss (rule 5: when LPIPS/KID decide)
    lr_mult: float = 1.0  # times the paper's learning rate (the lr sweep)
    arm_lr_mult: tuple[tuple[str, float], ...] = ()  # per-arm exceptions: ((arm, mult),)
    workers: int = 0  # data-loader processes per run (JPEG decoding feeds a GPU)
    dry_run: bool = False  # --dry-run: every model built, one step each, nothing measured


SCALES = {
    "quick": Scale("quick", 32, 2, (1,), 1, 2, 4, 2, 0, 2),
    "cpu": Scale("cpu", 64, 8, (200, 400, 800), 50, 64, 1024, 256, 0, 3),
    "gpu": Scale("gpu", 128, 32, (1000, 2000), 250, 256, 2048, 512, 2048, 3,
                 device="cuda", dtype="bfloat16", perceptual=True, workers=3),
    # The GPU machine as it is (scripts/gpu_evidence.sh): LPIPS-VGG (56 MiB) and Inception
    # cannot travel with the data, so L1 + KL only and no KID; PSNR decides, LPIPS-Alex is
    # reported. 20 paired seeds; many runs share the GPU, each decoding its own JPEGs.
    "h200": Scale("h200", 128, 32, (400, 800), 100, 256, 2048, 512, 0, 20,
                  device="cuda", dtype="bfloat16", perceptual=False, workers=0),
}


def step_budgets(text: str) -> tuple[int, ...]:
    """``"100,200,400"`` -> ``(100, 200, 400)``: positive step counts."""
    try:
        budgets = tuple(int(b) for b in text.split(","))
    except ValueError:
        budgets = ()
    if not budgets or min(budgets) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive step counts "
                                         f"like 100,200,400, got {text!r}")
    return budgets


def get_scale(name: str, scales: dict[str, Scale] | None = None, **overrides: Any) -> Scale:
    """A scale by name from ``scales`` (default :data:`SCALES`; a study may declare its
    own), with fields replaced (``seeds=5``); unknown name -> InputError."""
    scales = SCALES if scales is None else scales
    if name not in scales:
        raise InputError(f"unknown scale {name!r}; valid: {', '.join(scales)}")
    return replace(scales[name], **{k: v for k, v in overrides.items() if v is not None})


def for_arm(scale: Scale, arm: str) -> Scale:
    """``scale`` with ``lr_mult`` replaced by the arm's own multiplier, if it has one (each
    architecture at its best lr of the sweep, issue 17 rule 6)."""
    own = dict(scale.arm_lr_mult).get(arm)
    return scale if own is None else replace(scale, lr_mult=own)


def paired_seed(study_seed: int, seed_index: int) -> int:
    """The run seed of seed index ``i``: the same for every arm (paired design)."""
    return seed_from(study_seed, seed_index) % 2**31


def name_rank(path: Path) -> str:
    return hashlib.sha256(path.name.encode()).hexdigest()


def split_bsds(files: list[Path], held_out: int = HELD_OUT) -> tuple[list[Path], list[Path]]:
    """``(train, held_out)``: the ``held_out`` files with the lowest sha256 of the file
    name are held out; both lists sorted by name."""
    if len(files) <= held_out:
        raise InputError(f"need more than {held_out} images to hold {held_out} out, got "
                         f"{len(files)}")
    ranked = sorted(files, key=name_rank)
    return sorted(ranked[held_out:]), sorted(ranked[:held_out])


def split_held_out(held: list[Path], selection: int = SELECTION
                   ) -> tuple[list[Path], list[Path]]:
    """``(selection, test)`` of the held-out images: the ``selection`` lowest name hashes
    drive every choice (validation curve, plateau, lr sweeps), the rest only the final
    test (issue 27 defect 1: val and test shared the 50 images); both sorted by name."""
    if len(held) <= selection:
        raise InputError(f"need more than {selection} held-out images, got {len(held)}")
    ranked = sorted(held, key=name_rank)
    return sorted(ranked[:selection]), sorted(ranked[selection:])


def train_folder(data: Path, cache: Path, resolution: int | None = None) -> Path:
    """A folder of the training part of ``data``: links (``cache/bsds-train``), or with
    ``resolution`` PNGs already resized so the short side is ``resolution``
    (``cache/bsds-train-rR``): the resize training's ``crop_flip`` (``crop_scale`` 1) does
    at every step, done once, so training reads the same pixels at a fraction of the
    decoding cost (on the GPU machine, JPEG decoding starves the GPU). Built in a private
    temporary folder and renamed into place, so study workers that start together never
    see (or trip over) a half-made one."""
    train_files, _ = split_bsds(list_images(data))
    folder = cache / ("bsds-train" if resolution is None else f"bsds-train-r{resolution}")
    if folder.is_dir() and len(list(folder.iterdir())) == len(train_files):
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=cache))
    for f in train_files:
        if resolution is None:
            os.symlink(f.resolve(), tmp / f.name)
        else:  # same stem: the files sort (and so stream) in the same order
            resize_shortest(load_image(f), resolution).save(tmp / f"{f.stem}.png",
                                                           compress_level=1)
    if folder.is_dir():  # an incomplete folder from an interrupted older version
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.rename(tmp, folder)
    except OSError:  # another worker renamed its (identical) folder first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def one_resolution(recipe: Recipe) -> int | None:
    """The recipe's training resolution if every phase shares it (then the training
    images may be resized once: :func:`train_folder`), else None."""
    sizes = {p.resolution for p in recipe.phases}
    return sizes.pop() if len(sizes) == 1 else None


def random_crops(files: list[Path], n: int, size: int, seed: int,
                 training_scale: bool = False) -> torch.Tensor:
    """``(n, 3, size, size)`` in [-1, 1]: crop k from image ``k mod len(files)`` (a
    seeded permutation, so crops ``k`` and ``k + len(files)`` share an image: the
    image-level bootstrap's clusters) at a seeded position, native scale (no resize), or
    with ``training_scale`` after resizing the short side to ``size`` (as training's
    ``crop_flip`` with ``crop_scale`` 1)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(files), generator=g)
    images: dict[int, torch.Tensor] = {}
    out = torch.empty(n, 3, size, size)
    for k in range(n):
        i = int(order[k % len(files)])
        if i not in images:
            img = load_image(files[i])
            images[i] = to_tensor(resize_shortest(img, size) if training_scale else img)
        img = images[i]
        h, w = img.shape[-2:]
        if min(h, w) < size:
            raise InputError(f"{files[i]} ({w}×{h}) is smaller than the {size}² crop")
        top = int(torch.randint(0, h - size + 1, (1,), generator=g))
        left = int(torch.randint(0, w - size + 1, (1,), generator=g))
        out[k] = img[:, top:top + size, left:left + size]
    return out


CROP_SEEDS = {"val": 1, "test": 2, "kodak": 3, "test_rs": 5}  # 4: diffusion training crops


def crop_files(kind: str, data: Path) -> list[Path]:
    """The images a crop set is cut from: ``val`` the selection images, ``test`` and
    ``test_rs`` the test images (:func:`split_held_out`), ``kodak`` every image of
    ``data``."""
    if kind not in CROP_SEEDS:
        raise InputError(f"unknown crop set {kind!r}; valid: {', '.join(CROP_SEEDS)}")
    files = list_images(data)
    if kind == "kodak":
        return files
    selection, test = split_held_out(split_bsds(files)[1])
    return selection if kind == "val" else test


def crop_set(kind: str, data: Path, n: int, size: int, cache: Path) -> torch.Tensor:
    """Cached evaluation crops of :func:`crop_files` (``test_rs``: at the training
    scale); crop k comes from image ``k mod len(crop_files(...))``."""
    path = cache / f"crops-{kind}-{n}-{size}-split2.pt"  # split2: val/test images disjoint
    if path.is_file():
        return torch.load(path, weights_only=True)  # never a pickle payload
    crops = random_crops(crop_files(kind, data), n, size, CROP_SEEDS[kind],
                         training_scale=kind == "test_rs")
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a unique temporary: workers may write it together
        torch.save(crops, tmp)
    return crops


@dataclass(frozen=True)
class Plateau:
    """Stop when ``(best of the last window) / (best before it) − 1 < rel_tol`` for a
    higher-is-better validation value (PSNR), after at least ``window + 1`` values."""

    rel_tol: float = 0.002
    window: int = 3

    def reached(self, values: list[float]) -> bool:
        if len(values) <= self.window:
            return False
        before, recent = max(values[:-self.window]), max(values[-self.window:])
        return recent / before - 1 < self.rel_tol if before > 0 else recent <= before


def ema_from_checkpoint(init: Path, saved: dict[str, Any]) -> torch.nn.Module:
    """The model of ``init`` with the EMA weights of a loaded checkpoint ``saved``."""
    model = load(init)
    model.load_state_dict(saved["ema"]["model"])
    return model.eval()


def run_config(init: Path, data: Path, run_dir: Path, seed: int, scale: Scale, chunk: int,
               overrides: dict | None = None):
    """The ``TrainConfig`` of one chunk: resume the run, train ``chunk`` more steps."""
    return make_config({
        "model": str(init), "data": str(data), "out": str(run_dir), "seed": seed,
        "resume": "auto", "restart": True, "max_steps": chunk, "val_every": 0,
        "ckpt_every": 0, "keep_checkpoints": 1, "log_every": 25, "progress": False,
        "grad_clip": 0.0,  # neither paper clips (issue 17, rule 6)
        "compile": False,  # a run trains in chunks: each would compile again
        "device": scale.device, "workers": scale.workers, **(overrides or {})})


def trained_steps(run_dir: Path, recipe: Recipe) -> tuple[int, dict[str, Any] | None]:
    """Optimizer steps in the newest checkpoint of ``run_dir`` and that checkpoint
    (``(0, None)`` without one)."""
    saved = load_latest(run_dir / "checkpoints")
    if saved is None:
        return 0, None
    state, phases = saved["state"], recipe.phases
    return (sum(p.steps for p in phases[:state["phase"]])
            + state["phase_nimg"] // phases[state["phase"]].batch_size), saved


def train_arm(run_dir: Path, init: Path, recipe: Recipe, data: Path, seed: int,
              scale: Scale, validate, plateau: Plateau = Plateau(),
              overrides: dict | None = None) -> dict[str, Any]:
    """Train (or continue) one (arm, seed) run to the plateau or the cap, keeping the
    EMA model at every budget step. ``validate(model) -> float`` (higher is better).
    The record (curve, budgets, wall time) is cached in ``run_dir/arm.json``; a finished
    run returns it without training. Wall time counts training and validation."""
    path = run_dir / "arm.json"
    rec = json.loads(path.read_text()) if path.is_file() else {
        "curve": [], "budgets": {}, "seconds": 0.0, "done": False, "seed": seed}
    total = sum(p.steps for p in recipe.phases)
    while not rec["done"]:
        t0, last = time.perf_counter(), rec["curve"][-1]["step"] if rec["curve"] else 0
        step = min(last + scale.eval_every, total)
        done, saved = trained_steps(run_dir, recipe)  # ahead of the curve after a stop
        if done < step:
            train(run_config(init, data, run_dir, seed, scale, step - done, overrides),
                  recipe)
            done, saved = trained_steps(run_dir, recipe)
        if done < step:  # SIGTERM: the checkpoint is kept
            raise TrainingStopped(f"{run_dir} stopped before step {step}; --resume "
                                  "continues it")
        model = ema_from_checkpoint(init, saved)
        rec["curve"].append({"step": step, "val": validate(model)})
        if step in scale.budgets or step >= total:
            model.save_pretrained(str(run_dir / f"model-{step}"))
            rec["budgets"][str(step)] = str(run_dir / f"model-{step}")
        values = [c["val"] for c in rec["curve"]]
        rec["plateau"] = plateau.reached(values)
        if rec["plateau"] and str(step) not in rec["budgets"]:
            model.save_pretrained(str(run_dir / f"model-{step}"))
            rec["budgets"][str(step)] = str(run_dir / f"model-{step}")
        rec["done"] = rec["plateau"] or step >= total
        rec["seconds"] += time.perf_counter() - t0
        atomic_write_text(path, json.dumps(rec, indent=1))
    return rec


NEVER = Plateau(rel_tol=-1e9)  # fixed budgets (multi-phase recipes: no early stop)


def litevae_phase(name: str, steps: int, resolution: int, scale: Scale, **losses: Any
                  ) -> Phase:
    """A phase with LiteVAE's optimiser (Adam, lr 1e-4 × ``scale.lr_mult``, betas
    (0.5, 0.9), as issue 17 rule 6 states the paper's) and L1 + KL 1e-6 (+ LPIPS-VGG
    where the scale says so), plus ``losses`` (``wavelet=0.1``, ``adversarial=…``,
    ``discriminator_on=True``...)."""
    on = losses.pop("discriminator_on", False)
    weights = dict(perceptual=1.0 if scale.perceptual else 0.0, kl=1e-6) | losses
    return Phase(name, steps, resolution, scale.batch_size, 1e-4 * scale.lr_mult,
                 betas=(0.5, 0.9), losses=LossWeights(**weights), discriminator_on=on)

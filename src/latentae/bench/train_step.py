"""``latentae bench MODEL --train-step RECIPE``: where one autoencoder training step
spends its time, and the engine's step against a plain PyTorch step of the same work.

The engine's step is the real one (:class:`~latentae.train.autoencoder.AutoencoderTask`,
its ``step`` and the loop's data and EMA parts) with its stages timed
(:mod:`latentae.engine.stages`); the reference is written out below as a PyTorch user
would write it, on the same model, losses, discriminator and data loader, with its own
optimizers. Both run interleaved (engine, reference, engine, ...) in one process; the
recipe's phase runs at the chosen resolution and batch with the discriminator and its
adversarial term on from the first step, so every part of a full step is timed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from latentae.engine.ema import EMA
from latentae.engine.stages import collect, stage
from latentae.engine.state import TrainState
from latentae.errors import InputError
from latentae.losses import (
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    highpass_l1_loss,
    l1_loss,
    l2_loss,
    wavelet_charbonnier_loss,
)
from latentae.train.autoencoder import AutoencoderTask, make_optimizer
from latentae.train.config import make_config, resolve_recipe
from latentae.train.recipes import get_recipe

# the stages in the order a step runs them ("other": the measured step minus their sum)
STAGES = ("data", "g_forward", "loss l1", "loss l2", "loss wavelet", "loss highpass",
          "loss perceptual", "loss adversarial", "g_backward", "g_optimizer",
          "discriminator", "ema")


@dataclass
class StepBench:
    """One recipe phase ready to step: the engine's task (with the loop's data iterator,
    EMA and state) and its plain twin."""

    task: AutoencoderTask
    phase: Any
    batches: Iterator
    ema: EMA
    state: TrainState
    reference: Reference


def write_images(folder: Path, count: int, size: int, seed: int) -> Path:
    """``count`` smooth random RGB PNGs of ``size``² (what the loader decodes per step)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        low = rng.random((size // 8 + 1, size // 8 + 1, 3))
        img = Image.fromarray((low * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        img.save(folder / f"img{i:04d}.png")
    return folder


def build(model: str, recipe: str, resolution: int, batch: int, data: Path,
          device: torch.device, phase: str | None = None, seed: int = 0) -> StepBench:
    """The task of ``recipe``'s phase ``phase`` (default: its first) at ``resolution`` and
    ``batch``, the discriminator on from step 0."""
    names = [p.name for p in get_recipe(recipe).phases]
    if phase is not None and phase not in names:
        raise InputError(f"recipe {recipe} has no phase {phase!r}; its phases: {names}")
    index = names.index(phase) if phase else 0
    overrides = {"resolution": resolution, "batch_size": batch, "disc_start": 0,
                 "disc_warmup": 0}
    cfg = make_config({"model": model, "recipe": recipe, "data": str(data), "seed": seed,
                       "val_every": 0, "progress": False, "recipe_overrides": overrides})
    task = AutoencoderTask(cfg, resolve_recipe(cfg), device)
    task.begin_phase(index)
    phase = task.phases[index]
    return StepBench(task, phase, task.batches(index, 0), EMA(task.model, cfg.ema_decay),
                     TrainState(phase=index),
                     Reference(task, phase, cfg.grad_clip, cfg.ema_decay))


def engine_step(b: StepBench) -> tuple[float, dict[str, float]]:
    """Seconds of one engine step (data, ``task.step``, the EMA update) and its stages."""
    task = b.task
    with collect() as parts:
        t0 = time.perf_counter()
        with stage("data"):
            batch = next(b.batches)
        task.step(batch, b.state)
        with stage("ema"):
            b.ema.update(task.model)
        _sync(task.device)
        seconds = time.perf_counter() - t0
    n = b.phase.batch_size
    b.state.phase_nimg, b.state.nimg = b.state.phase_nimg + n, b.state.nimg + n
    return seconds, parts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Reference:
    """The same step written plainly: encode, reparameterise, decode, the recipe's loss
    terms, backward, clip + step; the discriminator's hinge/logistic step; EMA lerp."""

    def __init__(self, task: AutoencoderTask, phase: Any, grad_clip: float,
                 ema_decay: float) -> None:
        self.task, self.phase, self.clip, self.decay = task, phase, grad_clip, ema_decay
        self.model = task.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = make_optimizer(self.params, phase)
        self.disc = task.disc if phase.discriminator_on else None
        self.d_opt = make_optimizer(list(self.disc.parameters()), phase) if self.disc else None
        self.ema = [p.detach().clone() for p in self.model.parameters()]
        self.batches = task.batches(task.phases.index(phase), 0)

    def step(self) -> float:
        t0 = time.perf_counter()
        with stage("data"):
            x = next(self.batches)[0].to(self.task.device)
        recon = self.generator(x)
        if self.disc is not None:
            with stage("discriminator"):
                self.discriminator(x, recon)
        with stage("ema"), torch.no_grad():
            torch._foreach_lerp_(self.ema, list(self.model.parameters()), 1 - self.decay)
        _sync(self.task.device)
        return time.perf_counter() - t0

    def generator(self, x: torch.Tensor) -> torch.Tensor:
        w, model = self.phase.losses, self.model
        self.opt.zero_grad(set_to_none=True)
        if self.disc is not None:
            self.disc.requires_grad_(False)
        with stage("g_forward"):
            post = model.encode(x)
            z = post.mean + post.std * torch.randn_like(post.mean)
            recon = model.decode(z)
            kl = post.kl()
        loss = w.kl * kl.mean() / x[0].numel()
        for name, fn in (("l1", l1_loss), ("l2", l2_loss), ("wavelet", wavelet_charbonnier_loss),
                         ("highpass", lambda a, b: highpass_l1_loss(a, b, w.highpass_sigma)),
                         ("perceptual", self.task.perceptual)):
            if getattr(w, name):
                with stage(f"loss {name}"):
                    loss = loss + getattr(w, name) * fn(recon, x)
        if self.disc is not None and w.adversarial:
            with stage("loss adversarial"):
                adv = generator_loss(self.disc(recon), self.phase.gan_loss)
                weight = w.adversarial * (adaptive_weight(loss, adv, model.last_layer())
                                          if w.adaptive else 1.0)
                loss = loss + weight * adv
        with stage("g_backward"):
            loss.backward()
        with stage("g_optimizer"):
            if self.clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.opt.step()
        return recon.detach()

    def discriminator(self, x: torch.Tensor, recon: torch.Tensor) -> None:
        self.d_opt.zero_grad(set_to_none=True)
        self.disc.requires_grad_(True)
        logits = self.disc(torch.cat([x, recon]))
        n = len(x)
        loss = discriminator_loss([t[:n] for t in logits], [t[n:] for t in logits],
                                  self.phase.gan_loss)
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.disc.parameters()), self.clip)
        self.d_opt.step()


def measure(b: StepBench, warmup: int, repeats: int, progress=None) -> dict[str, Any]:
    """Interleaved engine and reference steps: per step seconds and stages of both."""
    for _ in range(warmup):
        engine_step(b)
        b.reference.step()
    rows: dict[str, list] = {"engine": [], "engine_parts": [], "reference": [],
                             "reference_parts": []}
    for r in range(repeats):
        if progress is not None:
            progress(f"train-step: round {r + 1}/{repeats}")
        seconds, parts = engine_step(b)
        rows["engine"].append(seconds)
        rows["engine_parts"].append(parts)
        with collect() as ref_parts:
            rows["reference"].append(b.reference.step())
        rows["reference_parts"].append(ref_parts)
    return rows


def summarize(rows: dict[str, list]) -> dict[str, Any]:
    """Median seconds per stage and of the step for both; ``other`` = the measured
    step's median minus the stages' medians, so the breakdown adds up to the step."""
    out: dict[str, Any] = {}
    for who in ("engine", "reference"):
        step = statistics.median(rows[who])
        parts = {s: statistics.median(p.get(s, 0.0) for p in rows[f"{who}_parts"])
                 for s in STAGES if any(s in p for p in rows[f"{who}_parts"])}
        parts["other"] = step - sum(parts.values())
        out[who] = {"step_s": step, "stages_s": parts, "steps_s": rows[who]}
    out["ratio"] = out["reference"]["step_s"] / out["engine"]["step_s"]
    return out


def markdown(result: dict[str, Any], title: str) -> str:
    eng, ref = result["engine"], result["reference"]
    lines = [f"### {title}", "", "| stage | engine s | share | plain PyTorch s |",
             "|---|---|---|---|"]
    for s in (*STAGES, "other"):
        if s in eng["stages_s"] or s in ref["stages_s"]:
            e = eng["stages_s"].get(s)
            lines.append(f"| {s} | {_f(e)} | {_share(e, eng['step_s'])} | "
                         f"{_f(ref['stages_s'].get(s))} |")
    lines.append(f"| **measured step** (median) | **{eng['step_s']:.3f}** | 100% | "
                 f"**{ref['step_s']:.3f}** |")
    lines.append(f"\nplain PyTorch / engine: **{result['ratio']:.2f}×** (> 1: the engine is "
                 "faster)")
    return "\n".join(lines) + "\n"


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _share(v: float | None, total: float) -> str:
    return "–" if v is None else f"{100 * v / total:.0f}%"


def train_step_bench(model: str, recipe: str, resolution: int, batch: int,
                     device: torch.device, warmup: int = 1, repeats: int = 3,
                     phase: str | None = None, progress=None) -> dict[str, Any]:
    """Build, measure and summarise one recipe phase (images written to a temporary
    folder, 2 batches' worth, so the loader decodes files as in training)."""
    with tempfile.TemporaryDirectory(prefix="latentae-train-step-") as tmp:
        data = write_images(Path(tmp) / "images", 2 * batch, resolution, seed=0)
        b = build(model, recipe, resolution, batch, data, device, phase)
        result = summarize(measure(b, warmup, repeats, progress))
    result.update(model=model, recipe=recipe, phase=b.phase.name, resolution=resolution,
                  batch=batch)
    return result

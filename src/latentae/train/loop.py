"""The training loop, visible top to bottom (STYLE §3, after edm2's training_loop):
set up, resume from the newest valid state, then for each :class:`Phase` one loop that
takes a batch, makes a generator step (reconstruction + KL + adversarial terms), a
discriminator step, an EMA update, and reports, validates and checkpoints. Generator
and discriminator are separate modules with separate optimizers, each DDP-wrapped on
its own. Everything random derives from (seed, phase, step, sample position), so a
resumed run repeats an uninterrupted one bit for bit (CPU).
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from latentae.losses import (
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    highpass_l1_loss,
    l1_loss,
    l2_loss,
    r1_penalty,
    wavelet_charbonnier_loss,
)
from latentae.models.distributions import DiagonalGaussian
from latentae.train import dist
from latentae.train.config import TrainConfig, dump_yaml, resolve_recipe
from latentae.train.data import TrainImages, make_loader, seed_from
from latentae.train.recipes import Phase, Recipe
from latentae.train.run import (
    Run,
    checkpoint,
    export,
    main_thread,
    memory_format,
    over_time,
    report,
    restore,
    setup,
    validate,
    write_config,
)
from latentae.train.state import load_latest

__all__ = ["Generator", "Run", "set_trainable", "train"]


class Generator(nn.Module):
    """The autoencoder's training forward as one module for DDP: ``(x, eps) ->
    (recon, kl)`` with ``z = mean + std·eps`` (``eps`` drawn by the loop for the global
    batch, so any process count sees the same noise) and ``kl`` per image ``(B,)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.model.encode(x)
        z = posterior.mean + posterior.std * eps  # (B, nz, H/f, W/f)
        if isinstance(posterior, DiagonalGaussian):  # KL in float32 even under autocast
            moments = torch.cat([posterior.mean, posterior.logvar], dim=1).float()
            posterior = DiagonalGaussian(moments)
        return self.model.decode(z), posterior.kl().float()


def set_trainable(model: nn.Module, groups: tuple[str, ...]) -> list[nn.Parameter]:
    """Freeze everything but ``param_groups()[g]`` for ``g`` in ``groups``; return the
    trainable parameters (model order, no duplicates)."""
    available = model.param_groups()
    unknown = [g for g in groups if g not in available]
    if unknown:
        raise ValueError(f"{type(model).__name__} has no parameter group(s) {unknown}; "
                         f"valid: {sorted(available)}")
    chosen = {id(p) for g in groups for p in available[g]}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    # A frozen BatchNorm must not keep updating its running statistics (buffers, not
    # parameters): DC-AE phase 3 trains only the decoder head above BatchNorm stages.
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in m.parameters()):
            m.eval()
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(params: list[nn.Parameter], phase: Phase) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if phase.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=phase.lr, betas=tuple(phase.betas), weight_decay=phase.weight_decay)


def autocast(device: torch.device):
    """bf16 autocast on GPU, float32 on CPU (STYLE §7); wraps forward passes only."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def step_seed(cfg: TrainConfig, phase: int, step: int) -> int:
    return seed_from(cfg.seed, phase, step, 2)  # latent noise of this step


def reconstruction_losses(recon: torch.Tensor, x: torch.Tensor, kl: torch.Tensor,
                          phase: Phase, perceptual: nn.Module | None) -> dict[str, torch.Tensor]:
    """The weighted non-adversarial terms (float32), keyed by name; zero weights skip."""
    w, out = phase.losses, {}
    terms = (("l1", l1_loss), ("l2", l2_loss), ("wavelet", wavelet_charbonnier_loss),
             ("highpass", lambda a, b: highpass_l1_loss(a, b, w.highpass_sigma)))
    for name, fn in terms:
        if getattr(w, name):
            out[name] = getattr(w, name) * fn(recon, x)
    if w.perceptual:
        out["perceptual"] = w.perceptual * perceptual(recon, x)
    if w.kl:
        out["kl"] = w.kl * kl.float().mean() / x[0].numel()  # = losses.kl_loss
    return out


def generator_step(run: Run, G: nn.Module, x: torch.Tensor, eps: torch.Tensor,
                   phase: Phase, gan_on: bool) -> tuple[dict[str, float], torch.Tensor, bool]:
    """One optimizer step of the autoencoder over ``accumulation`` rounds. Returns the
    logged values, the detached reconstructions (for the D step), and success."""
    acc, logs, recons = run.cfg.accumulation, {}, []
    run.g_opt.zero_grad(set_to_none=True)
    if run.disc is not None:
        run.disc.requires_grad_(False)
    for i, (xb, eb) in enumerate(zip(x.chunk(acc), eps.chunk(acc))):
        with dist.no_sync(G, sync=i == acc - 1):
            with autocast(run.device):
                recon, kl = G(xb, eb)
            recon = recon.float()
            terms = reconstruction_losses(recon, xb, kl, phase, run.perceptual)
            rec = sum(terms.values())
            if gan_on:  # the unwrapped D: its gradients are not wanted here
                with autocast(run.device):
                    adv = generator_loss(run.disc(recon), phase.gan_loss)
                weight = torch.tensor(phase.losses.adversarial)
                if phase.losses.adaptive:
                    last = run.model.decoder.last_layer_weight()
                    weight = weight * dist.all_reduce_mean(adaptive_weight(rec, adv, last))
                    logs["adaptive_weight"] = float(weight)
                terms["adversarial"] = weight * adv
            loss = sum(terms.values())
            (loss / acc).backward()
        recons.append(recon.detach())
        for k, v in {**terms, "loss": loss}.items():
            logs[k] = logs.get(k, 0.0) + float(v.detach()) / acc
    ok = finish_step(run, run.g_opt, run.model, logs, "g")
    return logs, torch.cat(recons), ok


def discriminator_step(run: Run, D: nn.Module, x: torch.Tensor, recon: torch.Tensor,
                       phase: Phase) -> tuple[dict[str, float], bool]:
    """One optimizer step of the discriminator: reals and reconstructions in one
    forward (one DDP call), hinge or logistic loss, optional R1 on the reals."""
    acc, logs = run.cfg.accumulation, {"d_loss": 0.0}
    run.d_opt.zero_grad(set_to_none=True)
    run.disc.requires_grad_(True)
    for i, (xb, rb) in enumerate(zip(x.chunk(acc), recon.chunk(acc))):
        with dist.no_sync(D, sync=i == acc - 1):
            real = xb.detach().requires_grad_(phase.losses.r1 > 0)
            with autocast(run.device):
                logits = D(torch.cat([real, rb]))
            n = len(xb)
            real_l, fake_l = [t[:n] for t in logits], [t[n:] for t in logits]
            loss = discriminator_loss(real_l, fake_l, phase.gan_loss)
            if phase.losses.r1:
                loss = loss + 0.5 * phase.losses.r1 * r1_penalty(real, real_l)
            (loss / acc).backward()
        logs["d_loss"] += float(loss.detach()) / acc
        logs["logits_real"] = float(sum(t.detach().float().mean() for t in real_l))
        logs["logits_fake"] = float(sum(t.detach().float().mean() for t in fake_l))
    return logs, finish_step(run, run.d_opt, run.disc, logs, "d")


def finish_step(run: Run, opt: torch.optim.Optimizer, module: nn.Module,
                logs: dict[str, float], tag: str) -> bool:
    """Clip, guard against non-finite gradients (skip the step and count it; stop after
    ``max_bad_steps`` in a row), then step. Gradients are already all-reduced, so every
    process takes the same decision."""
    params = [p for p in module.parameters() if p.grad is not None]
    clip = run.cfg.grad_clip if run.cfg.grad_clip > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(params, clip) if params else torch.tensor(0.0)
    logs[f"{tag}_grad_norm"] = float(norm)
    if not math.isfinite(float(norm)):
        run.bad_steps[tag] += 1
        run.skipped += 1
        opt.zero_grad(set_to_none=True)
        if run.bad_steps[tag] >= run.cfg.max_bad_steps:
            raise RuntimeError(
                f"{run.bad_steps[tag]} non-finite {tag.upper()} steps in a row at step "
                f"{run.global_step} (phase {run.phase}): lower the learning rate, raise "
                "grad_clip, or check the data; the last good checkpoint is in "
                f"{run.dir / 'checkpoints'}")
        return False
    opt.step()
    run.bad_steps[tag] = 0
    return True


def run_phase(run: Run, phase: Phase, resume: dict[str, Any] | None) -> bool:
    """Train one phase from ``run.step``; returns False when stopped early."""
    cfg, rank, world = run.cfg, dist.rank(), dist.world_size()
    if phase.batch_size % cfg.accumulation:
        raise ValueError(f"phase {phase.name!r}: batch_size {phase.batch_size} is not "
                         f"divisible by accumulation {cfg.accumulation}")
    run.g_opt = make_optimizer(set_trainable(run.model, phase.train_groups), phase)
    run.d_opt = make_optimizer(list(run.disc.parameters()), phase) \
        if phase.discriminator_on else None
    if resume is not None:  # optimizers of the phase we stopped in
        run.g_opt.load_state_dict(resume["g_opt"])
        if run.d_opt is not None:
            run.d_opt.load_state_dict(resume["d_opt"])
    G = dist.wrap(Generator(run.model))
    D = dist.wrap(run.disc) if phase.discriminator_on else None
    if cfg.compile:
        G = torch.compile(G)
    data = TrainImages(run.sources, phase.resolution, cfg.seed, run.phase, cfg.small_images,
                       cfg.crop_scale)
    batches = iter(make_loader(data, phase.batch_size, rank, world, run.step, cfg.workers))
    lat = phase.resolution // run.model.spatial_compression_ratio
    # A run bounded by --max-minutes has no meaningful step total (or ETA).
    bar = tqdm(total=None if cfg.max_minutes else phase.steps, initial=run.step,
               desc=f"{phase.name}",
               disable=not (cfg.progress and dist.is_main()), dynamic_ncols=True)
    window, t0 = [], time.time()
    while run.step < phase.steps:
        if dist.any_true(run.stop or over_time(run), run.device):
            bar.close()
            return False
        x, corrupt, small = next(batches)
        x = x.to(run.device, memory_format=memory_format(cfg))
        g = torch.Generator().manual_seed(step_seed(cfg, run.phase, run.step))
        eps = torch.randn(phase.batch_size * world, run.model.latent_channels, lat, lat,
                          generator=g)[rank * phase.batch_size:(rank + 1) * phase.batch_size]
        gan_on = phase.discriminator_on and run.step >= phase.disc_start
        logs, recon, _ = generator_step(run, G, x, eps.to(run.device), phase, gan_on)
        if gan_on:
            logs.update(discriminator_step(run, D, x, recon, phase)[0])
        run.ema.update(run.model)
        run.step, run.global_step = run.step + 1, run.global_step + 1
        run.nimg += phase.batch_size * world
        run.corrupt, run.small = run.corrupt + corrupt, run.small + small
        window.append(logs)
        bar.update(1)
        if run.step % cfg.log_every == 0 or run.step == phase.steps:
            report(run, phase, window, bar, phase.batch_size * world * len(window)
                   / max(time.time() - t0, 1e-9))
            window, t0 = [], time.time()
        if cfg.val_every and run.step % cfg.val_every == 0:
            validate(run)
        if run.step % cfg.ckpt_every == 0 and run.step < phase.steps:
            checkpoint(run)
    bar.close()
    return True


def train(cfg: TrainConfig, recipe: Recipe | None = None) -> Path | None:
    """Run (or with ``resume='auto'`` continue) training. Returns the directory of the
    exported EMA model (``OUT/model``), or ``None`` when stopped early (SIGTERM,
    ``max_minutes``) after writing a checkpoint."""
    dist.init()
    recipe = recipe or resolve_recipe(cfg)
    run = setup(cfg, recipe)
    state = load_latest(run.dir / "checkpoints", run.device) if cfg.resume == "auto" else None
    if state is not None:
        restore(run, state)
        dist.print0(f"resumed from {state['path']}: phase {run.phase}, step {run.step}")
    if dist.is_main():
        write_config(run, state is not None)
        dist.print0(dump_yaml(cfg, recipe) if state is None else "")
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(run, "stop", True)) \
        if main_thread() else None
    try:
        while run.phase < len(recipe.phases):
            resume = state if state is not None and state["phase"] == run.phase else None
            if not run_phase(run, recipe.phases[run.phase], resume if run.step else None):
                checkpoint(run)
                dist.print0(f"stopped at step {run.global_step}; continue with --resume auto")
                return None
            run.phase, run.step = run.phase + 1, 0
            checkpoint(run)
        validate(run)
        return export(run)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if run.log is not None:
            run.log.close()



"""The autoencoder task: what an autoencoder adds to the generic loop (``loop.py``).

:func:`train` runs a :class:`~latentae.train.recipes.Recipe` with
:class:`AutoencoderTask`: per phase it freezes all but the phase's parameter groups and
builds new optimizers; each step is a generator step (reconstruction + KL + adversarial
terms over ``accumulation`` rounds) and, once the discriminator is on, a discriminator
step. Generator and discriminator are separate modules with separate optimizers, each
DDP-wrapped on its own. Validation reconstructs held-out images with the EMA model
(PSNR/SSIM/LPIPS + a grid); export is ``save_pretrained`` of the EMA model with its
model card (``card.py``), the discriminator beside it (``train/discriminator.py``) and,
for a run that started from a model directory, the regression report
(``train/regression.py``). Data is a local folder (``data.py``) or a webdataset stream
(``webdata.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentae.engine import dist
from latentae.engine.data import TrainImages, list_sources, make_loader
from latentae.engine.loop import images, optimizer_step, training_loop
from latentae.engine.stages import stage
from latentae.engine.state import Stateful, TrainState, seed_from
from latentae.engine.webdata import StreamedData, is_streamed
from latentae.errors import InputError
from latentae.losses import (
    adaptive_weight,
    build_discriminator,
    cutmix_loss,
    cutmix_mask,
    discriminator_loss,
    generator_loss,
    highpass_l1_loss,
    l1_loss,
    l2_loss,
    r1_penalty,
    wavelet_charbonnier_loss,
)
from latentae.losses.regularisers import NAMES as REGULARISERS
from latentae.losses.regularisers import check_regularisers, regulariser_terms
from latentae.models.distributions import DiagonalGaussian
from latentae.nn.grad_checkpoint import enable_gradient_checkpointing
from latentae.pretrained import load
from latentae.runtime import autocast, compile_module
from latentae.train.card import training_card, training_data_fingerprint
from latentae.train.config import TrainConfig, check_recipe, config_document, resolve_recipe
from latentae.train.diffusability import DiffusabilityHooks
from latentae.train.discriminator import load_discriminator, save_discriminator
from latentae.train.recipes import ADDED_PHASE_FIELDS, Phase, Recipe, phase_lr
from latentae.train.regression import RegressionCheck
from latentae.train.validation import evaluate, load_validation, optional_lpips, save_grid

__all__ = ["AutoencoderForward", "AutoencoderTask", "set_trainable", "train"]


def train(cfg: TrainConfig, recipe: Recipe | None = None) -> Path | None:
    """Train (or with ``resume='auto'`` continue) an autoencoder. Returns the exported
    EMA model's directory (``OUT/model``), or ``None`` when stopped early (SIGTERM,
    ``max_minutes``, ``max_steps``) after writing a checkpoint."""
    recipe = recipe or resolve_recipe(cfg)
    check_recipe(recipe)
    return training_loop(cfg, lambda device: AutoencoderTask(cfg, recipe, device))


class AutoencoderForward(nn.Module):
    """The generator side's training forward as one module for DDP: ``(x, eps) ->
    (recon, kl)`` with ``z = mean + std·eps`` (``eps`` drawn for the global batch, so any
    process count sees the same noise) and ``kl`` per image ``(B,)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, eps: torch.Tensor, regularisers: Callable | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``regularisers(decode, z, x) -> {name: term}`` (losses/regularisers.py) runs
        here, inside the one (DDP) forward, on the same ``z``."""
        posterior = self.model.encode(x)
        z = posterior.mean + posterior.std * eps  # (B, nz, H/f, W/f)
        if isinstance(posterior, DiagonalGaussian):  # KL in float32 even under autocast
            moments = torch.cat([posterior.mean, posterior.logvar], dim=1).float()
            posterior = DiagonalGaussian(moments)
        terms = regularisers(self.model.decode, z, x) if regularisers is not None else {}
        return self.model.decode(z), posterior.kl().float(), terms


def set_trainable(model: nn.Module, groups: tuple[str, ...]) -> list[nn.Parameter]:
    """Freeze everything but ``param_groups()[g]`` for ``g`` in ``groups``; return the
    trainable parameters (model order, no duplicates)."""
    available = model.param_groups()
    unknown = [g for g in groups if g not in available]
    if unknown:
        raise InputError(f"{type(model).__name__} has no parameter group(s) {unknown}; "
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


# a loss's setting, printed only when its loss is on (name -> the loss it sets)
_SETTING_OF = {"highpass_sigma": "highpass", "equivariance_p": "equivariance",
               "decoder_noise_sigma": "decoder_noise"}


def recipe_summary(cfg: TrainConfig, recipe: Recipe) -> str:
    """``model`` and ``recipe`` as resolved (steps scaled, overrides applied): a header
    line and one line per phase with what trains and the non-zero loss weights."""
    disc = (f", discriminator {recipe.discriminator}" if recipe.uses_discriminator else "")
    lines = [f"model {cfg.model}, recipe {recipe.name}{disc}, data {cfg.data}:"]
    for p in recipe.phases:
        losses = ", ".join(f"{f.name} {getattr(p.losses, f.name):g}"
                           for f in dataclasses.fields(p.losses)
                           if getattr(p.losses, f.name) and f.name != "adaptive"
                           and getattr(p.losses, _SETTING_OF.get(f.name, f.name)))
        gan = f", GAN from step {p.disc_start}" if p.discriminator_on else ""
        lines.append(f"  phase {p.name}: {p.steps} steps at {p.resolution}², batch "
                     f"{p.batch_size} (global), {p.optimizer} lr {p.lr:g} ({p.lr_decay}), "
                     f"trains {'+'.join(p.train_groups)}; losses {losses or 'none'}{gan}")
    return "\n".join(lines)


def per_process(recipe: Recipe, world: int) -> tuple[Phase, ...]:
    """The phases as one process runs them: ``batch_size`` is the global batch (as DiT and
    edm2 count it), each of ``world`` processes takes ``batch_size / world``."""
    return tuple(dataclasses.replace(p, batch_size=p.batch_size // world)
                 for p in recipe.phases)


class AutoencoderTask:
    """An autoencoder, its discriminator and losses, as a :class:`~latentae.engine.loop.Task`."""

    resume_keys = ("recipe",)
    resume_defaults = ADDED_PHASE_FIELDS  # old run folders resume (rundir.agrees)

    def __init__(self, cfg: TrainConfig, recipe: Recipe, device: torch.device) -> None:
        self.cfg, self.recipe, self.device = cfg, recipe, device
        self.phases = per_process(recipe, dist.world_size())
        self.model = load(cfg.model, random_init=True).to(
            device, memory_format=memory_format(cfg))
        check_phases(self.model, recipe, cfg)
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.disc = build_discriminator(recipe.discriminator, channels=recipe.discriminator_channels
                                        ).to(device) if recipe.uses_discriminator else None
        if cfg.init_discriminator:
            if self.disc is None:
                raise InputError(f"--discriminator: recipe {recipe.name} trains none")
            load_discriminator(self.disc, recipe, cfg.init_discriminator)
        needs_vgg = any(p.losses.perceptual > 0 for p in recipe.phases)
        self.perceptual = optional_lpips("vgg", device, needs_vgg)
        self.stream = StreamedData(cfg.data, cfg.seed, cfg.shuffle_buffer, cfg.small_images,
                                   cfg.crop_scale, cfg.workers, device) \
            if is_streamed(cfg.data) else None
        self.sources = list_sources(cfg.data) if self.stream is None else None
        self.val_images = load_validation(cfg, recipe.phases[-1].resolution)
        self.regression = RegressionCheck(cfg, recipe.phases[-1].resolution) \
            if dist.is_main() and RegressionCheck.wanted(cfg) else None
        self.lpips_metric = optional_lpips("alex", device, dist.is_main()
                                           and self.val_images is not None)
        self.diffusability = DiffusabilityHooks(cfg, self.val_images,
                                                recipe.phases[-1].resolution)
        self.phase: Phase = self.phases[0]
        self.g_opt: torch.optim.Optimizer | None = None
        self.d_opt: torch.optim.Optimizer | None = None
        self.G: nn.Module | None = None
        self.D: nn.Module | None = None

    def config(self) -> dict[str, Any]:
        return config_document(self.cfg, self.recipe)

    def summary(self) -> str:
        """The resolved recipe, one line per phase (printed when the run starts)."""
        return recipe_summary(self.cfg, self.recipe)

    def begin_phase(self, index: int) -> None:
        """Train only the phase's groups, with new optimizers and DDP wrappers."""
        phase = self.phase = self.phases[index]
        self.g_opt = make_optimizer(set_trainable(self.model, phase.train_groups), phase)
        self.d_opt = make_optimizer(list(self.disc.parameters()), phase) \
            if phase.discriminator_on else None
        self.G = dist.wrap(AutoencoderForward(self.model))
        self.D = dist.wrap(self.disc) if phase.discriminator_on else None
        self.G = compile_module(self.G, self.cfg.compile)

    def batches(self, index: int, start: int) -> Iterator[tuple[torch.Tensor, int, int]]:
        cfg, phase = self.cfg, self.phases[index]
        if self.stream is not None:
            return self.stream.batches(index, start, phase.resolution, phase.batch_size)
        data = TrainImages(self.sources, phase.resolution, cfg.seed, index, cfg.small_images,
                           cfg.crop_scale)
        return iter(make_loader(data, phase.batch_size, dist.rank(), dist.world_size(),
                                start, cfg.workers))

    def noise(self, state: TrainState) -> torch.Tensor:
        """This process's slice of the global batch's latent noise ``(B, nz, h, w)``."""
        b, rank, lat = self.phase.batch_size, dist.rank(), (
            self.phase.resolution // self.model.spatial_compression_ratio)
        g = torch.Generator().manual_seed(seed_from(self.cfg.seed, state.phase,
                                                    state.phase_nimg, 2))
        eps = torch.randn(b * dist.world_size(), self.model.latent_channels, lat, lat,
                          generator=g)
        return eps[rank * b:(rank + 1) * b].to(self.device)

    def step(self, batch: tuple[torch.Tensor, int, int], state: TrainState) -> dict[str, float]:
        x, corrupt, small = batch
        state.corrupt, state.small = state.corrupt + corrupt, state.small + small
        x = x.to(self.device, memory_format=memory_format(self.cfg))
        phase = self.phase
        gan_on = phase.discriminator_on and state.phase_nimg >= images(phase.disc_start, phase)
        adv_on = gan_on and state.phase_nimg >= images(phase.disc_start + phase.disc_warmup,
                                                       phase)
        lr = phase_lr(phase, state.phase_nimg // images(1, phase))
        for opt in (self.g_opt, self.d_opt):
            for group in opt.param_groups if opt is not None else ():
                group["lr"] = lr
        logs, recon = generator_step(self, x, self.noise(state), adv_on, state)
        if gan_on:
            with stage("discriminator"):
                logs.update(discriminator_step(self, x, recon, state))
        logs["lr"] = lr
        return logs

    def periodic(self) -> list:
        """The loop's periodic hooks: diffusability diagnostics and generation probe."""
        return self.diffusability.hooks()

    def checkpoint_items(self) -> dict[str, Stateful]:
        items: dict[str, Stateful] = {"model": self.model}
        if self.disc is not None:
            items["disc"] = self.disc
        items["g_opt"] = self.g_opt
        if self.d_opt is not None:
            items["d_opt"] = self.d_opt
        if self.stream is not None:
            items["stream"] = self.stream.position
        return items

    def validate(self, ema: nn.Module, state: TrainState, folder: Path) -> dict[str, float]:
        """The EMA model on the held-out images (rank 0): metrics, grid to samples/."""
        if self.val_images is None or not dist.is_main():
            return {}
        metrics, recon = evaluate(ema, self.val_images, self.lpips_metric)
        save_grid(self.val_images, recon, folder / "samples" / f"val-{state.nimg:012d}.png")
        return metrics

    def export(self, ema: nn.Module, folder: Path) -> Path:
        if dist.is_main():
            data = training_data_fingerprint(self.cfg, self.sources, self.stream and
                                             self.stream.urls)
            ema.save_pretrained(str(folder / "model"),
                                card=training_card(self.cfg, self.recipe, folder, data))
            if self.disc is not None:
                save_discriminator(self.disc, self.recipe, folder / "model" / "discriminator")
            if self.regression is not None:
                self.regression.write(ema, folder)
        return folder / "model"


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def check_phases(model: nn.Module, recipe: Recipe, cfg: TrainConfig) -> None:
    """Fail before training on what the model cannot do in some phase."""
    f = model.spatial_compression_ratio
    for p in recipe.phases:
        if p.resolution % f:
            raise InputError(f"phase {p.name}.resolution {p.resolution} is not divisible by "
                             f"the compression ratio {f} of {cfg.model}: use a multiple of "
                             f"{f} (--set resolution={max(f, p.resolution // f * f)})")
        if p.batch_size % (cfg.accumulation * dist.world_size()):
            raise InputError(f"phase {p.name}: batch_size {p.batch_size} (the global batch) "
                             f"is not divisible by accumulation {cfg.accumulation} × "
                             f"{dist.world_size()} processes")
        unknown = sorted(set(p.train_groups) - model.param_groups().keys())
        if unknown:
            raise InputError(f"phase {p.name}.train_groups: {type(model).__name__} has no "
                             f"group(s) {unknown}; valid: {sorted(model.param_groups())}")
        groups = model.param_groups()
        check_regularisers(p.losses, {id(q) for g in p.train_groups for q in groups[g]},
                           groups["encoder"], f"phase {p.name}")


def reconstruction_losses(recon: torch.Tensor, x: torch.Tensor, kl: torch.Tensor,
                          phase: Phase, perceptual: nn.Module | None) -> dict[str, torch.Tensor]:
    """The weighted non-adversarial terms (float32), keyed by name; zero weights skip."""
    w, out = phase.losses, {}
    terms = (("l1", l1_loss), ("l2", l2_loss), ("wavelet", wavelet_charbonnier_loss),
             ("highpass", lambda a, b: highpass_l1_loss(a, b, w.highpass_sigma)))
    for name, fn in terms:
        if getattr(w, name):
            with stage(f"loss {name}"):
                out[name] = getattr(w, name) * fn(recon, x)
    if w.perceptual:
        with stage("loss perceptual"):
            out["perceptual"] = w.perceptual * perceptual(recon, x)
    if w.kl:
        out["kl"] = w.kl * kl.float().mean() / x[0].numel()  # = losses.kl_loss
    return out


def generator_step(task: AutoencoderTask, x: torch.Tensor, eps: torch.Tensor, gan_on: bool,
                   state: TrainState) -> tuple[dict[str, float], torch.Tensor]:
    """One optimizer step of the autoencoder over ``accumulation`` rounds. Returns the
    logged values and the detached reconstructions (for the D step)."""
    acc, phase, logs, recons = task.cfg.accumulation, task.phase, {}, []
    task.g_opt.zero_grad(set_to_none=True)
    if task.disc is not None:
        task.disc.requires_grad_(False)
    reg = regularisers_of(task, state)
    for i, (xb, eb) in enumerate(zip(x.chunk(acc), eps.chunk(acc))):
        with dist.no_sync(task.G, sync=i == acc - 1):
            with stage("g_forward"), autocast(task.device):
                recon, kl, extra = task.G(xb, eb, reg)
            recon = recon.float()
            terms = reconstruction_losses(recon, xb, kl, phase, task.perceptual)
            terms.update({k: v.float() for k, v in extra.items()})
            if gan_on:  # the unwrapped D: its gradients are not wanted here
                with stage("loss adversarial"):
                    terms["adversarial"] = adversarial_term(task, recon, sum(terms.values()),
                                                            logs)
            loss = sum(terms.values())
            with stage("g_backward"):
                (loss / acc).backward()
        recons.append(recon.detach())
        for k, v in {**terms, "loss": loss}.items():
            logs[k] = logs.get(k, 0.0) + float(v.detach()) / acc
    with stage("g_optimizer"):
        logs["g_grad_norm"] = optimizer_step(task.g_opt, task.model.parameters(), state,
                                             task.cfg, "G")
    return logs, torch.cat(recons)


def regularisers_of(task: AutoencoderTask, state: TrainState) -> Callable | None:
    """The phase's diffusability regularisers as ``(decode, z, x) -> terms`` with their
    draws seeded from (seed, phase, image index), or ``None`` when all are off."""
    w = task.phase.losses
    if not any(getattr(w, n) for n in REGULARISERS):
        return None
    g = torch.Generator().manual_seed(seed_from(task.cfg.seed, state.phase, state.phase_nimg, 4))
    return lambda decode, z, x: regulariser_terms(
        w, decode, z, x, g, task.perceptual if w.perceptual else None)


def adversarial_term(task: AutoencoderTask, recon: torch.Tensor, rec: torch.Tensor,
                     logs: dict[str, float]) -> torch.Tensor:
    """``λ·L_adv``, with λ times the adaptive weight of LiteVAE eq. 2 when the phase
    asks for it (gradients at ``model.last_layer()``, averaged over processes)."""
    phase = task.phase
    with autocast(task.device):
        adv = generator_loss(task.disc(recon), phase.gan_loss)
    weight = torch.tensor(phase.losses.adversarial)
    if phase.losses.adaptive:
        last = task.model.last_layer()
        weight = weight * dist.all_reduce_mean(adaptive_weight(rec, adv, last))
        logs["adaptive_weight"] = float(weight)
    return weight * adv


def cutmix_masks(task: AutoencoderTask, x: torch.Tensor, state: TrainState) -> torch.Tensor:
    """This process's slice of the global batch's CutMix masks ``(B, 1, H, W)``, seeded
    from (seed, phase, image index) like the latent noise."""
    b, rank = len(x), dist.rank()
    g = torch.Generator().manual_seed(seed_from(task.cfg.seed, state.phase, state.phase_nimg, 3))
    masks = cutmix_mask(b * dist.world_size(), x.shape[-2], x.shape[-1], g)
    return masks[rank * b:(rank + 1) * b].to(x.device, x.dtype)


def discriminator_step(task: AutoencoderTask, x: torch.Tensor, recon: torch.Tensor,
                       state: TrainState) -> dict[str, float]:
    """One optimizer step of the discriminator: reals, reconstructions and (with
    ``losses.cutmix``) their CutMix mixes in one forward (one DDP call), hinge or
    logistic loss, optional R1 on the reals."""
    acc, phase, logs = task.cfg.accumulation, task.phase, {"d_loss": 0.0}
    task.d_opt.zero_grad(set_to_none=True)
    task.disc.requires_grad_(True)
    masks = cutmix_masks(task, x, state).chunk(acc) if phase.losses.cutmix else [None] * acc
    for i, (xb, rb, mb) in enumerate(zip(x.chunk(acc), recon.chunk(acc), masks)):
        with dist.no_sync(task.D, sync=i == acc - 1):
            real = xb.detach().requires_grad_(phase.losses.r1 > 0)
            parts = [real, rb] if mb is None else [real, rb, mb * xb + (1 - mb) * rb]
            with autocast(task.device):
                logits = task.D(torch.cat(parts))
            n = len(xb)
            real_l, fake_l = [t[:n] for t in logits], [t[n:2 * n] for t in logits]
            loss = discriminator_loss(real_l, fake_l, phase.gan_loss)
            if phase.losses.r1:
                loss = loss + 0.5 * phase.losses.r1 * r1_penalty(real, real_l)
            if mb is not None:  # U-Net GAN §3.2: augmentation + consistency terms
                mix_l = [t[2 * n:] for t in logits]
                loss = loss + phase.losses.cutmix * cutmix_loss(mix_l, real_l, fake_l, mb,
                                                                 phase.gan_loss)
            (loss / acc).backward()
        logs["d_loss"] += float(loss.detach()) / acc
        logs["logits_real"] = float(sum(t.detach().float().mean() for t in real_l))
        logs["logits_fake"] = float(sum(t.detach().float().mean() for t in fake_l))
    logs["d_grad_norm"] = optimizer_step(task.d_opt, task.disc.parameters(), state,
                                         task.cfg, "D")
    return logs


"""The diffusion task: a DiT or U-ViT learning an autoencoder's latents, on the generic
loop (``latentae.engine.loop``: run folder, config.yaml, JSONL + TensorBoard, checkpoints,
EMA, DDP, resume, limits, progress bar).

:func:`train` builds :class:`DiffusionTask` from a
:class:`~latentae.diffusion.config.DiffusionConfig`. Each step takes this process's
latents (``data.latent_batches``: cached, or encoded on the fly by the frozen autoencoder),
normalises them (``data.LatentNorm``), drops labels to the null class with probability
``class_dropout`` (for guidance), draws t and ε, and takes one AdamW step on the ``ddpm``
(ε + learned-variance bound, ``ddpm_loss_terms``) or ``flow`` (velocity,
``flow_loss_terms``) loss, the forward under bf16 autocast on GPU.

All randomness of a step — dropped labels, t, ε — is drawn from one generator seeded by
(seed, phase, image index) **for the global batch**, and each process takes its slice, so
W processes train exactly as one with the same global batch (the models' own in-forward
label dropout is switched off on the trained instance for this; the saved config keeps
``class_dropout_prob``). Validation draws a sample grid with the EMA model into
``RUN/samples/``; the export is ``RUN/model`` (``pipeline.write_run``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from latentae.devices import resolve_device
from latentae.diffusion.card import run_card, training_data_fingerprint
from latentae.diffusion.config import (
    RENAMED,
    DiffusionConfig,
    check_diffusion_config,
    renamed,
)
from latentae.diffusion.data import LatentNorm, channel_norm, latent_batches, open_training_data
from latentae.diffusion.ddpm import ddpm_loss_terms, ddpm_schedule
from latentae.diffusion.dit import DiTBlock
from latentae.diffusion.flow import flow_loss_terms, sample_flow_t
from latentae.diffusion.layers import LabelEmbedder
from latentae.diffusion.noise import randint, randn
from latentae.diffusion.pipeline import (
    LatentDiffusion,
    RunInfo,
    balanced_labels,
    load_autoencoder,
    model_call,
    write_run,
)
from latentae.diffusion.recipes import get_recipe, warmup_lr
from latentae.diffusion.registry import create_diffusion
from latentae.diffusion.schedules import get_schedule
from latentae.diffusion.uvit import UViTBlock
from latentae.engine import dist
from latentae.engine.config import LoopConfig
from latentae.engine.loop import global_step, images, optimizer_step, training_loop
from latentae.engine.rundir import RunFolder
from latentae.engine.state import Stateful, TrainState, load_latest, seed_from
from latentae.errors import InputError
from latentae.files import atomic_dir
from latentae.io import image_grid, save_image
from latentae.nn.grad_checkpoint import enable_gradient_checkpointing
from latentae.runtime import autocast, compile_module
from latentae.serialization import load_state_dict_strict

__all__ = ["DiffusionTask", "enable_block_checkpointing", "export_latest", "model_from_state",
           "train"]

# Settings a resumed run may change (speed and the training-time grid only).
RUN_TIME_FIELDS = ("workers", "gradient_checkpointing", "compile", "grid_images", "grid_sampler",
                   "grid_steps", "grid_guidance")


def train(cfg: DiffusionConfig, autoencoder: nn.Module | None = None) -> Path | None:
    """Train (or with ``resume='auto'`` continue) a diffusion model. Returns ``RUN/model``,
    or ``None`` when stopped early (``max_minutes``, ``max_steps``, SIGTERM) after a
    checkpoint. ``autoencoder``: the one ``cfg.autoencoder`` names, when the caller holds
    it already (``latentae eval --diffusion-proxy``), instead of loading it again."""
    check_diffusion_config(cfg)
    return training_loop(cfg, lambda device: DiffusionTask(cfg, device, autoencoder))


def export_latest(cfg: DiffusionConfig) -> Path:
    """Export ``RUN/model`` (and a last sample grid) from the EMA weights of the run's
    newest checkpoint, e.g. after a run stopped by ``max_minutes`` (one process)."""
    cfg = dataclasses.replace(cfg, resume="auto", overwrite=False)
    folder = RunFolder(cfg.out)
    saved = load_latest(folder.checkpoints)
    if saved is None:
        raise InputError(f"{folder.checkpoints} holds no checkpoint to export")
    task = DiffusionTask(cfg, resolve_device(cfg.device))
    task.model.load_state_dict(saved["ema"]["model"])
    state = TrainState()
    state.load_state_dict(saved["state"])
    task.trained_steps = state.phase_nimg // cfg.batch_size  # the card says what was done
    task.validate(task.model.eval(), state, folder.path)
    return task.export(task.model, folder.path)


# ours: the std of the normalised latents is measured on the stream's first images when
# a run starts with the autoencoder's factors (--latent-norm model); outside SCALE_RANGE
# the factors were not calibrated for these latents (an LDM scaling_factor makes it ~1).
SCALE_CHECK_IMAGES = 64
SCALE_RANGE = (0.5, 2.0)


def normalized_std(norm: LatentNorm, measured: LatentNorm) -> float:
    """The pooled std of ``norm.normalize(z)`` over all channels, from ``measured``, the
    latents' per-channel mean and 1/std (``LatentNorm.from_latents``)."""
    means = [(m - sh) * sc for m, sh, sc in zip(measured.shift, norm.shift, norm.scale)]
    variances = [(sc / ms) ** 2 for sc, ms in zip(norm.scale, measured.scale)]
    c = len(means)
    pooled = sum(variances) / c + sum(m * m for m in means) / c - (sum(means) / c) ** 2
    return pooled ** 0.5


def warn_latent_scale(norm: LatentNorm, measured: LatentNorm, autoencoder: str) -> float:
    """Print a warning (stderr, rank 0) when the autoencoder's ``scaling_factor`` leaves
    the latents' std far from 1; returns that std."""
    std = normalized_std(norm, measured)
    if not SCALE_RANGE[0] <= std <= SCALE_RANGE[1]:
        pooled = normalized_std(LatentNorm("model", (norm.shift[0],) * len(norm.shift),
                                           (1.0,) * len(norm.shift)), measured)
        dist.print0(f"warning: the latents of {autoencoder} have std {std:.3g} after its "
                    f"scaling_factor {norm.scale[0]:.4g} (a diffusion model expects ~1): "
                    f"its factor is not calibrated for these images. Calibrate it with "
                    f"`latentae latent-stats {autoencoder} IMAGES --write` (a factor near "
                    f"{1 / pooled:.4g}) or train with --latent-norm channel",
                    file=sys.stderr)
    return std


def model_from_state(config: dict[str, Any], saved: dict[str, Any],
                     device: str | torch.device = "cpu") -> nn.Module:
    """The EMA diffusion model of ``saved`` (an ``engine.state.read_state`` dict) of the
    run whose ``config.yaml`` is ``config`` (what :meth:`DiffusionTask.config` wrote)."""
    run, data = renamed(config["diffusion"]), config["data"]
    c, h, _ = data["latent_shape"]
    model = create_diffusion(run["model"], patch_size=run["patch_size"], in_channels=c,
                             input_size=h, num_classes=len(data["classes"]),
                             learn_sigma=run["learn_sigma"],
                             class_dropout_prob=run["class_dropout"])
    load_state_dict_strict(model, saved["ema"]["model"], source=saved["path"])
    return model.to(device)


@dataclasses.dataclass(frozen=True)
class DiffusionPhase:
    name: str
    steps: int
    batch_size: int  # per process


def enable_block_checkpointing(model: nn.Module) -> int:
    """Recompute each transformer block's activations in the backward pass (DiT blocks take
    ``(x, c)``, U-ViT blocks ``(x, skip)``); returns how many were wrapped. Idempotent."""
    return enable_gradient_checkpointing(model, (DiTBlock, UViTBlock))


class DiffusionTask:
    """A diffusion model on an autoencoder's latents, as a :class:`~latentae.engine.loop.Task`."""

    resume_keys = ("diffusion",)
    resume_renames = RENAMED  # an old run folder's "patch" is "patch_size"

    def __init__(self, cfg: DiffusionConfig, device: torch.device,
                 autoencoder: nn.Module | None = None) -> None:
        self.cfg, self.device, world = cfg, device, dist.world_size()
        if cfg.batch_size % world:
            raise InputError(f"the global batch {cfg.batch_size} is not divisible by the "
                             f"{world} processes")
        self.phases = (DiffusionPhase("train", cfg.steps, cfg.batch_size // world),)
        self.autoencoder = (load_autoencoder(cfg.autoencoder, cfg.autoencoder_random_init,
                                             device) if autoencoder is None else
                            autoencoder.to(device).eval().requires_grad_(False))
        self.data = open_training_data(cfg, self.autoencoder)
        c, h, _ = self.data.latent_shape
        self.model = create_diffusion(
            cfg.model, patch_size=cfg.patch_size, in_channels=c, input_size=h,
            num_classes=len(self.data.classes), learn_sigma=cfg.learn_sigma,
            class_dropout_prob=cfg.class_dropout).to(device)
        for m in self.model.modules():  # dropped by step() for the global batch instead
            if isinstance(m, LabelEmbedder):
                m.dropout_prob = 0.0
        if cfg.gradient_checkpointing:
            enable_block_checkpointing(self.model)
        self.norm = self.latent_norm()
        recipe = get_recipe(cfg.recipe)
        guidance = recipe.guidance if self.data.classes else 1.0
        self.info = RunInfo(
            autoencoder=cfg.autoencoder, autoencoder_random_init=cfg.autoencoder_random_init,
            autoencoder_path="" if cfg.autoencoder_random_init else str(
                Path(cfg.autoencoder).resolve()),
            objective=cfg.objective, learn_sigma=bool(cfg.learn_sigma), latent_norm=self.norm,
            resolution=cfg.resolution, latent_size=h, latent_channels=c,
            num_classes=len(self.data.classes), classes=tuple(self.data.classes),
            sampler=recipe.sampler if cfg.objective == recipe.objective else "heun",
            sample_steps=recipe.sample_steps if cfg.objective == recipe.objective else 50,
            guidance=guidance, schedule=str(get_schedule(cfg.schedule)))
        self.opt: torch.optim.Optimizer | None = None
        self.net: nn.Module = self.model
        self.trained_steps = cfg.steps  # fewer when export_latest exports a stopped run

    def latent_norm(self) -> LatentNorm:
        """The model's factors, or per-channel statistics: read back from the run's
        config.yaml when resuming, else computed once (the same on every process)."""
        cfg = self.cfg
        folder = RunFolder(cfg.out)
        config = folder.path / "config.yaml"
        resuming = cfg.resume == "auto" and folder.newest_checkpoint() and config.is_file()
        if cfg.latent_norm == "model":
            norm = LatentNorm.from_autoencoder(self.autoencoder)
            if not resuming:  # checked once, when the run starts
                measured = channel_norm(self.data, self.autoencoder,
                                        min(cfg.norm_images, SCALE_CHECK_IMAGES),
                                        **self.stream_args())
                warn_latent_scale(norm, measured, cfg.autoencoder)
            return norm
        if resuming:
            return LatentNorm.from_dict(yaml.safe_load(config.read_text())["latent_norm"])
        norm = channel_norm(self.data, self.autoencoder, cfg.norm_images,
                            **self.stream_args())
        both = dist.all_reduce_mean(torch.tensor(norm.shift + norm.scale, device=self.device,
                                                 dtype=torch.float64)).tolist()
        c = len(norm.shift)
        return LatentNorm("channel", tuple(both[:c]), tuple(both[c:]))

    def stream_args(self) -> dict[str, Any]:
        cfg, device = self.cfg, self.device
        return dict(posterior=cfg.posterior, seed=cfg.seed, device=device, workers=cfg.workers,
                    encode_ctx=lambda: autocast(device))

    def config(self) -> dict[str, Any]:
        cfg = self.cfg
        own = [f.name for f in dataclasses.fields(DiffusionConfig)
               if f.name not in {g.name for g in dataclasses.fields(LoopConfig)}]
        run = {k: getattr(cfg, k) for k in own if k not in RUN_TIME_FIELDS}
        run.update(seed=cfg.seed, ema_decay=cfg.ema_decay, grad_clip=cfg.grad_clip)
        return {"train": _plain(dataclasses.asdict(cfg)), "diffusion": _plain(run),
                "latent_norm": self.norm.to_dict(),
                "data": {"items": len(self.data.dataset), "classes": list(self.data.classes),
                         "latent_shape": list(self.data.latent_shape),
                         "tokens": self.model.tokens}}

    def summary(self) -> str:
        """The resolved run (recipe values included), printed when the run starts."""
        cfg, (c, h, w) = self.cfg, self.data.latent_shape
        return (f"{cfg.model}/{cfg.patch_size} ({self.model.tokens} tokens) on latents "
                f"({c}, {h}, {w}) of {cfg.autoencoder}, {len(self.data.classes)} classes, "
                f"{cfg.objective} objective; recipe {cfg.recipe}: {cfg.steps} steps, batch "
                f"{cfg.batch_size} (global), AdamW lr {cfg.lr:g}, warm-up {cfg.warmup_steps}, "
                f"EMA {cfg.ema_decay}, grad clip {cfg.grad_clip:g}; latent norm "
                f"{self.norm.kind}")

    def begin_phase(self, index: int) -> None:
        cfg = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas),
                                     weight_decay=cfg.weight_decay)
        self.net = compile_module(dist.wrap(self.model), cfg.compile)

    def batches(self, index: int, start: int) -> Iterator[Any]:
        return latent_batches(self.data, self.autoencoder, batch=self.phases[index].batch_size,
                              start=start, rank=dist.rank(), world=dist.world_size(),
                              **self.stream_args())

    def step(self, batch: Any, state: TrainState) -> dict[str, float]:
        z, labels, corrupt, small = batch
        state.corrupt, state.small = state.corrupt + corrupt, state.small + small
        z = self.norm.normalize(z)  # (B, C, h, w)
        b, rank = len(z), dist.rank()
        g = torch.Generator().manual_seed(seed_from(self.cfg.seed, state.phase,
                                                    state.phase_nimg, 2))
        draw = GlobalDraws(g, b * dist.world_size(), slice(rank * b, (rank + 1) * b),
                           self.device)
        labels = self.drop_labels(labels, draw)
        lr = warmup_lr(self.cfg.lr, self.cfg.warmup_steps,
                       state.phase_nimg // images(1, self.phases[state.phase]))
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        terms = self.loss_terms(z, labels, draw)
        terms["loss"].mean().backward()
        means = dist.all_reduce_mean(torch.stack([v.detach().mean() for v in terms.values()]))
        logs = dict(zip(terms, means.tolist()))  # over the global batch, as DiT logs
        logs["grad_norm"] = optimizer_step(self.opt, self.model.parameters(), state, self.cfg,
                                           "model")
        return {**logs, "lr": lr}

    def drop_labels(self, labels: torch.Tensor, draw: GlobalDraws) -> torch.Tensor | None:
        """Labels with each replaced by the null class with probability ``class_dropout``
        (Ho & Salimans 2022, as DiT/U-ViT train); ``None`` for unconditional data."""
        if not self.data.classes:
            return None
        drop = draw.rand() < self.cfg.class_dropout
        return torch.where(drop, len(self.data.classes), labels)

    def loss_terms(self, z: torch.Tensor, labels: torch.Tensor | None,
                   draw: GlobalDraws) -> dict[str, torch.Tensor]:
        fn = model_call(self.net, self.cfg.objective, self.device)
        if self.cfg.objective == "ddpm":
            schedule = ddpm_schedule(noise=self.cfg.schedule)
            t = draw.take(randint(len(schedule), (draw.total,), draw.generator))
            noise = draw.take(randn((draw.total, *z.shape[1:]), draw.generator))
            return ddpm_loss_terms(fn, z, labels, t, noise, learn_sigma=self.cfg.learn_sigma,
                                   schedule=schedule)
        t = draw.take(sample_flow_t(draw.total, draw.generator, t_sampling=self.cfg.t_sampling))
        noise = draw.take(randn((draw.total, *z.shape[1:]), draw.generator))
        return {"loss": flow_loss_terms(fn, z, labels, t, noise, self.cfg.objective)}

    def checkpoint_items(self) -> dict[str, Stateful]:
        return {"model": self.model, "opt": self.opt}

    def validate(self, ema: nn.Module, state: TrainState, folder: Path) -> dict[str, float]:
        """A grid of ``grid_images`` EMA samples (classes round robin, the same noise every
        time) decoded through the autoencoder, to ``RUN/samples/step-N.png`` (rank 0)."""
        if not dist.is_main():
            return {}
        cfg, n = self.cfg, self.cfg.grid_images
        pipe = LatentDiffusion(ema, self.autoencoder, self.info, self.device)
        labels = balanced_labels(range(n), self.info.num_classes, self.device)
        gens = [torch.Generator().manual_seed(seed_from(cfg.seed, 7, i)) for i in range(n)]
        guidance = cfg.grid_guidance if labels is not None else 1.0
        x = pipe.decode(pipe.sample_latents(labels, gens, sampler=cfg.grid_sampler,
                                            steps=cfg.grid_steps, guidance=guidance))
        k = self.info.num_classes
        cols = k if 0 < k <= 12 else 8  # one column per class when they fit
        rows = [list(x[i:i + cols].cpu()) for i in range(0, n, cols)]
        path = folder / "samples" / f"step-{global_step(self.phases, state):08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(image_grid(rows), path)
        return {}

    def export(self, ema: nn.Module, folder: Path) -> Path:
        """``RUN/model``: the EMA model, its run record and its model card (rank 0)."""
        if dist.is_main():
            card = run_card(self.info, self.autoencoder, recipe=self.cfg.recipe,
                            steps=self.trained_steps, batch_size=self.cfg.batch_size,
                            data=training_data_fingerprint(self.cfg.data, self.data))
            with atomic_dir(folder / "model", overwrite=True) as tmp:
                write_run(tmp, ema, self.info, card)
        return folder / "model"


class GlobalDraws:
    """Draws for the global batch from one generator; this process keeps its slice."""

    def __init__(self, generator: torch.Generator, total: int, part: slice,
                 device: torch.device) -> None:
        self.generator, self.total, self.part, self.device = generator, total, part, device

    def take(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.part].to(self.device)

    def rand(self) -> torch.Tensor:
        return self.take(torch.rand(self.total, generator=self.generator))



def _plain(x: Any) -> Any:
    """Tuples as lists, as config.yaml reads back (a resumed run compares the two)."""
    return json.loads(json.dumps(x))

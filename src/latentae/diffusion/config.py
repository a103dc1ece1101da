"""The configuration of a diffusion training run, and the one place it is resolved.

:class:`DiffusionConfig` extends the generic loop's :class:`~latentae.engine.config.LoopConfig`
with what the diffusion task reads. :func:`make_diffusion_config` merges, later winning,
the recipe of the model's family (``recipes.py``: lr, batch, warm-up, EMA, length,
clipping), a YAML file and the command line, then checks every value (the shared
``LIMITS``/``CHOICES`` below, through ``latentae.engine.config.check``, and the
combinations). The
resolved values are what ``OUT/config.yaml`` records.

Units: ``batch_size`` is the **global** batch (all processes, as the releases state it;
each of W processes takes ``batch_size / W``); ``steps``, ``warmup_steps`` and the loop's
intervals count optimizer steps; ``val_every`` is ``--sample-every`` (a sample grid).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from latentae.diffusion.data import cached_resolution
from latentae.diffusion.recipes import GRID_SAMPLER, GRID_STEPS, get_recipe
from latentae.diffusion.registry import get_preset
from latentae.diffusion.samplers import SAMPLERS
from latentae.diffusion.schedules import get_schedule
from latentae.engine.config import (
    BIG,
    LOOP_CHOICES,
    LOOP_LIMITS,
    LoopConfig,
    check_loop_config,
    merge_sources,
)
from latentae.errors import InputError
from latentae.runtime import COMPILE_BACKENDS

RECIPE_FIELDS = ("lr", "batch_size", "weight_decay", "betas", "warmup_steps", "ema_decay",
                 "grad_clip", "steps", "objective", "schedule")


@dataclass(frozen=True)
class DiffusionConfig(LoopConfig):
    """Everything a diffusion run needs (defaults: DiT-S/2 on 256² images, DDPM)."""

    autoencoder: str = ""           # saved latentae / diffusers folder (or a preset, see below)
    autoencoder_random_init: bool = False  # allow a preset name: random weights (smoke tests)
    model: str = "dit-s"            # diffusion preset (latentae models --diffusion)
    patch_size: int = 2
    data: str = ""                  # image folder (DIR/CLASS/img or flat), or latent shards
    cached: bool = False            # data holds `latentae encode [--labels]` shards
    objective: str = "ddpm"         # ddpm | flow | flow-sit (the recipe's when not given)
    schedule: str = "linear"        # ddpm noise schedule spec (schedules.py; the recipe's)
    learn_sigma: bool | None = None  # None: DiT's choice for ddpm (True), False for flow
    t_sampling: str = "uniform"     # flow: uniform or logit_normal t
    class_dropout: float = 0.1      # label -> null class for guidance (both releases)
    recipe: str = ""                # "" = the model's family: dit | uvit (or usit)
    lr: float = 1e-4
    batch_size: int = 256
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    steps: int = 400_000
    resolution: int = 256           # image side (cached: by default the latents' side × f)
    crop: str = "random"            # on the fly: random crop (+ flip) or center crop
    flip: bool = True               # on the fly: random horizontal flip
    crop_scale: float = 1.0         # random crop: shortest side resized to R·U(1, S) first
    posterior: str = "sample"       # on the fly: a posterior draw (DiT) or its mode
    latent_norm: str = "model"      # the autoencoder's scaling/shift, or per-channel stats
    norm_images: int = 1024         # latents the per-channel statistics are computed on
    workers: int = 0                # image loader processes (on the fly)
    gradient_checkpointing: bool = False
    compile: str | None = None      # torch.compile backend of the training forward
    grid_images: int = 16           # the sample grid drawn every val_every steps
    grid_sampler: str = ""          # "" = dpm++2m (ddpm) or heun (flow)
    grid_steps: int = GRID_STEPS
    grid_guidance: float = 1.5      # 1.0 for unconditional data
    val_every: int = 5000           # --sample-every (ours)
    ckpt_every: int = 5000          # ours
    log_every: int = 100            # as the DiT release


# Allowed range (inclusive) of every numeric field, and the choices (the loop's too).
LIMITS: dict[str, tuple[float, float]] = {
    **LOOP_LIMITS, "patch_size": (1, 64), "lr": (0.0, 10.0), "batch_size": (1, 65_536),
    "weight_decay": (0.0, 100.0), "betas": (0.0, 1.0), "warmup_steps": (0, BIG),
    "steps": (1, BIG), "resolution": (8, 16_384), "crop_scale": (1.0, 64.0),
    "norm_images": (1, 10**7), "workers": (0, 1024), "class_dropout": (0.0, 1.0),
    "grid_images": (1, 256), "grid_steps": (1, 1000), "grid_guidance": (0.0, 100.0),
}
CHOICES: dict[str, tuple[str, ...]] = {
    **LOOP_CHOICES, "objective": tuple(SAMPLERS),  # ddpm, flow, flow-sit
    "latent_norm": ("model", "channel"),
    "crop": ("random", "center"), "posterior": ("sample", "mode"),
    "t_sampling": ("uniform", "logit_normal"), "compile": (None, *COMPILE_BACKENDS),
}


def family_recipe(model: str, recipe: str) -> str:
    """The recipe a run uses: the one named, else the model family's."""
    return recipe or get_preset(model)[0]


# Fields renamed since run folders were first written: old name -> new (one vocabulary:
# ``patch_size`` as the models and diffusers spell it). Old names are still read.
RENAMED = {"patch": "patch_size"}


def renamed(source: dict[str, Any]) -> dict[str, Any]:
    """``source`` with old field names replaced by their new ones."""
    return {RENAMED.get(k, k): v for k, v in source.items()}


def make_diffusion_config(*sources: dict[str, Any]) -> DiffusionConfig:
    """Merge dicts (later wins, ``None`` ignored; old field names read, :data:`RENAMED`)
    over the recipe's values; check."""
    values = merge_sources(DiffusionConfig, tuple(renamed(s) for s in sources))
    if values.get("cached") and values.get("data") and "resolution" not in values:
        values["resolution"] = cached_resolution(values["data"])  # the latents' images
    recipe = get_recipe(family_recipe(values.get("model", "dit-s"), values.get("recipe", "")))
    base = {k: getattr(recipe, k) for k in RECIPE_FIELDS}
    cfg = DiffusionConfig(**{**base, **values, "recipe": recipe.name})
    objective = cfg.objective if cfg.objective in SAMPLERS else "ddpm"  # checked below
    cfg = dataclasses.replace(
        cfg, grid_sampler=cfg.grid_sampler or GRID_SAMPLER[objective],
        learn_sigma=cfg.learn_sigma if cfg.learn_sigma is not None else objective == "ddpm")
    check_diffusion_config(cfg)
    return cfg


def check_diffusion_config(cfg: DiffusionConfig) -> None:
    """Every value (shared limits) and the combinations a diffusion run needs."""
    check_loop_config(cfg, LIMITS, CHOICES)
    get_preset(cfg.model)
    if not cfg.autoencoder:
        raise InputError("no autoencoder: pass --autoencoder MODEL (a saved latentae or "
                         "diffusers folder) whose latents the diffusion model learns")
    if not cfg.data:
        raise InputError("no training data: pass --data DIR (images, DIR/CLASS/image for "
                         "classes) or --data SHARDS --cached (from `latentae encode --labels`)")
    if cfg.grid_sampler not in SAMPLERS[cfg.objective]:
        raise InputError(f"grid_sampler {cfg.grid_sampler!r} does not go with objective "
                         f"{cfg.objective!r}: choose one of {', '.join(SAMPLERS[cfg.objective])}")
    get_schedule(cfg.schedule)  # a bad spec is an InputError naming the valid ones
    if cfg.learn_sigma and cfg.objective != "ddpm":
        raise InputError("learn_sigma applies to the ddpm objective only (flow predicts the "
                         "velocity alone): drop --learn-sigma or use --objective ddpm")
    if cfg.lr <= 0:
        raise InputError(f"lr must be > 0, got {cfg.lr}")

"""The autoencoder run's configuration and its tables of allowed values.

:class:`TrainConfig` extends the generic loop's
:class:`~latentae.engine.config.LoopConfig` with what the autoencoder task reads
(model, recipe, data, loader and speed switches).

Values come from defaults, then a YAML file, then the command line; recipe fields are
overridden with dotted keys (``lr`` for every phase, ``p128.batch_size`` for one phase,
``losses.kl`` / ``p256.losses.wavelet`` for loss weights, ``discriminator``). Every value,
of the run and of each phase, is converted and range-checked by :func:`coerce` and
:func:`~latentae.engine.config.check` against :data:`LIMITS` / :data:`CHOICES`; a bad one is an
:class:`~latentae.errors.InputError` naming the field.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from latentae.engine.config import (
    BIG,
    LOOP_CHOICES,
    LOOP_LIMITS,
    LoopConfig,
    check,
    check_loop_config,
    coerce,
    merge_sources,
)
from latentae.errors import InputError
from latentae.runtime import COMPILE_BACKENDS
from latentae.train.recipes import LossWeights, Phase, Recipe, get_recipe, scale_steps


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """Everything an autoencoder run needs besides the recipe."""

    model: str = "litevae-tiny"  # preset name, or a saved model directory to start from
    recipe: str = "litevae"
    # A folder of images or of .tar shards (exact resume), or a webdataset stream: a
    # brace pattern, http(s):// URLs, pipe: commands (resume at a shard boundary).
    data: str = ""
    shuffle_buffer: int = 1000  # samples, streamed data only (webdataset's default); 0: off
    val_data: str | None = None
    val_images: int = 8
    # The regression report (train/regression.py): before/after metrics on a general
    # reference set, flagged when its PSNR falls by more than regression_tolerance dB.
    reference_data: str | None = None
    reference_images: int = 64
    regression_tolerance: float = 0.1
    init_discriminator: str | None = None  # OUT/model/discriminator of an earlier run
    steps_scale: float = 1.0
    accumulation: int = 1  # gradient accumulation rounds per step
    workers: int = 0
    small_images: str = "upscale"  # images smaller than the crop: "upscale" or "skip"
    crop_scale: float = 1.0  # shortest side resized to resolution × U(1, crop_scale)
    channels_last: bool = False
    compile: str | None = None  # torch.compile backend of the training forward
    gradient_checkpointing: bool = False  # recompute block activations in backward
    recipe_overrides: tuple[tuple[str, Any], ...] = ()
    # Diffusability while training (train/diffusability.py); 0: off.
    diffusability_every: int = 0  # diagnostics on the first val_images held-out images
    generation_probe_every: int = 0  # a tiny DiT on the latents (diffusion/probe.py)
    generation_probe_images: int = 256  # ours: training images encoded = held-out references
    generation_probe_steps: int = 1000  # ours: the DiT's optimizer steps per probe
    generation_probe_model: str = "dit-s"  # the proxy's model
    generation_probe_seeds: int = 2  # DiT seeds per probe: their spread is reported


# Allowed range (inclusive, with a strict upper bound for ``OPEN_ABOVE``) of every numeric
# field of TrainConfig, Recipe, Phase and LossWeights, by field name (the loop's own too).
LIMITS: dict[str, tuple[float, float]] = {
    **LOOP_LIMITS, "val_images": (1, 100_000),
    "steps_scale": (1e-9, 1e6), "accumulation": (1, 4096), "workers": (0, 1024),
    "crop_scale": (1.0, 64.0), "discriminator_channels": (1, 8192),
    "steps": (1, BIG), "resolution": (8, 16_384), "batch_size": (1, 65_536),
    "lr": (0.0, 10.0), "betas": (0.0, 1.0), "weight_decay": (0.0, 100.0),
    "disc_start": (0, BIG), "disc_warmup": (0, BIG), "highpass_sigma": (1e-3, 100.0),
    "shuffle_buffer": (0, 10**8), "reference_images": (1, 100_000),
    "regression_tolerance": (0.0, 100.0), "equivariance_p": (0.0, 1.0),
    "decoder_noise_sigma": (0.0, 100.0),
    "diffusability_every": (0, BIG), "generation_probe_every": (0, BIG),
    "generation_probe_images": (2, 100_000), "generation_probe_steps": (1, BIG),
    "generation_probe_seeds": (1, 100),
}
LOSS_LIMIT = (0.0, 1e6)  # every LossWeights weight without its own entry in LIMITS
LOSS_LIMITS = {f.name: LIMITS.get(f.name, LOSS_LIMIT) for f in dataclasses.fields(LossWeights)}
CHOICES: dict[str, tuple[str, ...]] = {
    **LOOP_CHOICES, "small_images": ("upscale", "skip"),
    "optimizer": ("adam", "adamw"), "gan_loss": ("hinge", "non-saturating"),
    "lr_decay": ("constant", "cosine", "linear"), "compile": (None, *COMPILE_BACKENDS),
}


def check_config(cfg: TrainConfig) -> None:
    """Check an autoencoder run's config: every value and the combinations."""
    check_loop_config(cfg, LIMITS, CHOICES)
    check_train_sources(cfg)


def check_train_sources(cfg: TrainConfig) -> None:
    """The data, reference and discriminator settings of an autoencoder run."""
    if not cfg.data:
        raise InputError("no training data: pass --data DIR (a folder of images or of "
                         ".tar shards), a shard pattern shards/train-{000000..000099}.tar, "
                         "https:// URLs or a pipe: command")
    if cfg.reference_data and not Path(cfg.model).is_dir():
        raise InputError(f"--reference-data compares the trained model with the one it "
                         f"started from, but --model {cfg.model} is not a model directory: "
                         "pass a saved or diffusers model folder, or drop --reference-data")
    for key in ("reference_data", "init_discriminator"):
        value = getattr(cfg, key)
        if value and not Path(value).is_dir():
            raise InputError(f"{key}: {value} is not a folder")


def check_recipe(recipe: Recipe) -> None:
    """Check every phase and its loss weights, and that phase names are unique."""
    check(recipe, LIMITS, CHOICES, "recipe.")
    for phase in recipe.phases:
        check(phase, LIMITS, CHOICES, f"phase {phase.name}.")
        check(phase.losses, LOSS_LIMITS, {}, f"phase {phase.name}.losses.")
        if not phase.train_groups:
            raise InputError(f"phase {phase.name}.train_groups is empty")
        if phase.losses.cutmix and recipe.discriminator != "unet":
            raise InputError(f"phase {phase.name}.losses.cutmix needs the per-pixel outputs "
                             f"of the U-Net discriminator, not {recipe.discriminator!r}: "
                             "--set discriminator=unet or losses.cutmix=0")
    if len({p.name for p in recipe.phases}) != len(recipe.phases):
        raise InputError(f"phase names must be unique: {[p.name for p in recipe.phases]}")


def _replace(obj: Any, key: str, value: Any, where: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    if key not in hints:
        raise InputError(f"unknown field {key!r} in {where}; valid: {sorted(hints)}")
    return dataclasses.replace(obj, **{key: coerce(value, hints[key], f"{where}.{key}")})


def _override_phase(phase: Phase, key: str, value: Any) -> Phase:
    if key.startswith("losses."):
        losses = _replace(phase.losses, key[len("losses."):], value, f"phase {phase.name}.losses")
        return dataclasses.replace(phase, losses=losses)
    return _replace(phase, key, value, f"phase {phase.name}")


def apply_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """Apply dotted-key overrides (see the module docstring) and return a new recipe."""
    names = [p.name for p in recipe.phases]
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if key in ("discriminator", "discriminator_channels"):
            recipe = _replace(recipe, key, value, "recipe")
            continue
        if head in names and rest:
            phases = tuple(_override_phase(p, rest, value) if p.name == head else p
                           for p in recipe.phases)
        elif head in names:
            raise InputError(f"override {key!r} names phase {head!r} but no field "
                             f"(e.g. {head}.lr)")
        else:
            phases = tuple(_override_phase(p, key, value) for p in recipe.phases)
        recipe = dataclasses.replace(recipe, phases=phases)
    return recipe


def resolve_recipe(cfg: TrainConfig) -> Recipe:
    """The recipe named in ``cfg``, steps scaled, then overridden, then checked."""
    recipe = scale_steps(get_recipe(cfg.recipe), cfg.steps_scale)
    recipe = apply_overrides(recipe, dict(cfg.recipe_overrides))
    check_recipe(recipe)
    return recipe


def make_config(*sources: dict[str, Any]) -> TrainConfig:
    """Merge dicts (:func:`merge_sources`) into a checked config."""
    # compile was a switch before it named a backend: true/false in old config files
    sources = tuple({**s, "compile": ("inductor" if s["compile"] else None)}
                    if isinstance(s.get("compile"), bool) else s for s in sources)
    values = merge_sources(TrainConfig, sources, merged=("recipe_overrides",))
    overrides = values.pop("recipe_overrides", {})
    cfg = TrainConfig(**values, recipe_overrides=tuple(overrides.items()))
    check_config(cfg)
    return cfg


def config_document(cfg: TrainConfig, recipe: Recipe) -> dict[str, Any]:
    """The resolved run configuration as plain data (what ``config.yaml`` holds)."""
    train = dataclasses.asdict(cfg)
    train["recipe_overrides"] = dict(cfg.recipe_overrides)
    return {"train": train, "recipe": _plain(dataclasses.asdict(recipe))}


def dump_yaml(cfg: TrainConfig, recipe: Recipe) -> str:
    """:func:`config_document` as YAML."""
    return yaml.safe_dump(config_document(cfg, recipe), sort_keys=False)


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


__all__ = ["CHOICES", "LIMITS", "LossWeights", "Phase", "Recipe", "TrainConfig",
           "apply_overrides", "check_config", "check_recipe", "config_document", "dump_yaml",
           "make_config", "resolve_recipe"]

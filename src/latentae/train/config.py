"""Run configuration, and the one place its values are checked.

- :class:`LoopConfig`: what the generic loop (``loop.py``) reads, for any model kind:
  run folder, seed, intervals, limits, EMA, the non-finite guard, resume rules.
- :class:`TrainConfig` (a ``LoopConfig``): plus what the autoencoder task reads
  (model, recipe, data, loader and speed switches).

Values come from defaults, then a YAML file, then the command line; recipe fields are
overridden with dotted keys (``lr`` for every phase, ``p128.batch_size`` for one phase,
``losses.kl`` / ``p256.losses.wavelet`` for loss weights, ``discriminator``). Every value,
of the run and of each phase, is converted and range-checked by :func:`coerce` and
:func:`check` against :data:`LIMITS` / :data:`CHOICES`; a bad one is an
:class:`~latentae.errors.InputError` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from latentae.errors import InputError
from latentae.train.recipes import LossWeights, Phase, Recipe, get_recipe, scale_steps


@dataclass(frozen=True)
class LoopConfig:
    """Settings of the generic loop. Intervals count optimizer steps of the current phase
    and are converted to images once (:func:`latentae.train.loop.images`); 0 turns a
    periodic event off (the end-of-phase checkpoint and the end-of-run validation still
    happen). ``max_minutes`` / ``max_steps`` / ``max_images`` 0 mean no limit; otherwise
    the run checkpoints and stops cleanly (edm2's ``slice_nimg``), counted in this process."""

    out: str = "runs/run"
    seed: int = 0
    device: str = "auto"
    resume: str = "none"  # "auto": newest valid checkpoint in OUT/checkpoints
    restart: bool = False  # with resume="auto": start over if no checkpoint is readable
    overwrite: bool = False  # delete the run already in OUT and start a new one
    ema_decay: float = 0.999
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    max_bad_steps: int = 10  # non-finite steps in a row before stopping
    log_every: int = 10
    val_every: int = 1000
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    max_minutes: float = 0.0
    max_steps: int = 0  # steps of the phase the process starts in (converted to images)
    max_images: int = 0
    progress: bool = True


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
    compile: bool = False
    gradient_checkpointing: bool = False  # recompute block activations in backward
    recipe_overrides: tuple[tuple[str, Any], ...] = ()
    # Diffusability while training (train/diffusability.py); 0: off.
    diffusability_every: int = 0  # diagnostics on the first val_images held-out images
    generation_probe_every: int = 0  # a tiny DiT on the latents (diffusion/probe.py)
    generation_probe_images: int = 256  # ours: training images encoded = held-out references
    generation_probe_steps: int = 1000  # ours: the DiT's optimizer steps per probe
    generation_probe_model: str = "dit-s"  # the proxy's model
    generation_probe_seeds: int = 2  # DiT seeds per probe: their spread is reported


BIG = 10**15  # a count no run reaches: larger values are typos (and overflow int64 maths)

# Allowed range (inclusive, with a strict upper bound where noted) of every numeric field
# of LoopConfig/TrainConfig, Recipe, Phase and LossWeights, by field name.
LIMITS: dict[str, tuple[float, float]] = {
    "seed": (0, 2**63 - 1), "ema_decay": (0.0, 1.0), "grad_clip": (0.0, 1e9),
    "max_bad_steps": (1, BIG), "log_every": (0, BIG), "val_every": (0, BIG),
    "ckpt_every": (0, BIG), "keep_checkpoints": (1, 10_000), "max_minutes": (0.0, 1e9),
    "max_steps": (0, BIG), "max_images": (0, BIG), "val_images": (1, 100_000),
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
    # the diffusion run (latentae.diffusion.config.DiffusionConfig)
    "patch": (1, 64), "warmup_steps": (0, BIG), "norm_images": (1, 10**7),
    "class_dropout": (0.0, 1.0), "grid_images": (1, 256), "grid_steps": (1, 1000),
    "grid_guidance": (0.0, 100.0),
}
OPEN_ABOVE = {"ema_decay", "betas"}  # must stay below the upper bound (EMA, Adam)
LOSS_LIMIT = (0.0, 1e6)  # every LossWeights weight
CHOICES: dict[str, tuple[str, ...]] = {
    "resume": ("none", "auto"), "small_images": ("upscale", "skip"),
    "optimizer": ("adam", "adamw"), "gan_loss": ("hinge", "non-saturating"),
    "objective": ("ddpm", "flow"), "latent_norm": ("model", "channel"),
    "crop": ("random", "center"), "posterior": ("sample", "mode"),
    "t_sampling": ("uniform", "logit_normal"), "lr_decay": ("constant", "cosine", "linear"),
}
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _finite(v: int | float) -> bool:
    return isinstance(v, int) or math.isfinite(v)  # an int is finite (and may not fit a float)


def _number(value: Any, t: type, key: str) -> int | float:
    """``value`` as a finite ``int`` (integral values only) or ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"{key}: expected a number, got {value!r}")
    try:
        number = int(value) if t is int and not isinstance(value, float) else float(value)
    except (TypeError, ValueError, OverflowError):
        try:  # "1e3" for an int field
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{key}: cannot read {value!r} as {t.__name__}") from None
    if not _finite(number) or t is int and number != int(number):
        raise InputError(f"{key}: expected a finite {t.__name__}, got {value!r}")
    return t(number)


def _scalar(value: Any, t: type, key: str) -> Any:
    if t is bool:
        text = str(value).lower()
        if not isinstance(value, bool) and text not in TRUE + FALSE:
            raise InputError(f"{key}: expected true or false, got {value!r}")
        return value if isinstance(value, bool) else text in TRUE
    if t is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InputError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return _number(value, t, key) if t in (int, float) else value


def coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` (from YAML or the command line) as the annotated type: ``"2e-4"`` ->
    float, ``"0.5,0.9"`` or a list -> tuple of the declared length. Raises
    :class:`InputError` naming ``key`` when it does not fit."""
    args = typing.get_args(hint)
    if hint is Any or value is None and type(None) in args:
        return value
    if typing.get_origin(hint) is tuple:
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        if args[-1] is not Ellipsis and len(items) != len(args):
            raise InputError(f"{key}: expected {len(args)} values, got {value!r}")
        if args[0] is Any or typing.get_origin(args[0]) is tuple:
            return tuple(tuple(x) if isinstance(x, list) else x for x in items)
        return tuple(_scalar(x, args[0], key) for x in items)
    return _scalar(value, next((a for a in args if a is not type(None)), hint), key)


def check(obj: Any, where: str = "") -> None:
    """Range- and choice-check every field of a config dataclass (``where`` prefixes the
    field name in messages, e.g. ``"phase p128."``). The one place values are judged."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{where}{f.name}"
        if f.name in CHOICES and value not in CHOICES[f.name]:
            raise InputError(f"{key} must be one of {list(CHOICES[f.name])}, "
                             f"got {value!r}")
        bounds = LIMITS.get(f.name) or (LOSS_LIMIT if isinstance(obj, LossWeights) else None)
        values = value if isinstance(value, tuple) else (value,)
        if bounds is None:
            continue
        if not all(isinstance(v, (int, float)) and _finite(v) for v in values):
            raise InputError(f"{key} must be a finite number, got {value!r}")
        lo, hi = bounds
        bad = [v for v in values if not lo <= v <= hi or f.name in OPEN_ABOVE and v >= hi]
        if bad:
            top = f"{hi:g})" if f.name in OPEN_ABOVE else f"{hi:g}]"
            raise InputError(f"{key} must be in [{lo:g}, {top}, got {value!r}")


def check_config(cfg: LoopConfig) -> None:
    """Check a run config: every value (:func:`check`) and the combinations."""
    check(cfg)
    if cfg.resume == "auto" and cfg.overwrite:
        raise InputError("--resume auto continues the run in OUT and --overwrite deletes "
                         "it: pass one of them")
    if cfg.restart and cfg.resume != "auto":
        raise InputError("--restart only applies with --resume auto (start over when no "
                         "checkpoint is readable); for a new run use --overwrite")
    if isinstance(cfg, TrainConfig):
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
    check(recipe, "recipe.")
    for phase in recipe.phases:
        check(phase, f"phase {phase.name}.")
        check(phase.losses, f"phase {phase.name}.losses.")
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


def merge_sources(config_cls: type, sources: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """Merge dicts of ``config_cls`` fields (later wins; ``None`` values ignored), each
    value coerced to its field's type; an unknown key is an ``InputError``.
    ``recipe_overrides`` dicts are merged key by key."""
    hints = typing.get_type_hints(config_cls)
    values: dict[str, Any] = {}
    for src in sources:
        for k, v in src.items():
            if v is None:
                continue
            if k not in hints:
                raise InputError(f"unknown config key {k!r}; valid: {sorted(hints)}")
            if k == "recipe_overrides":
                values.setdefault(k, {}).update(dict(v.items() if isinstance(v, dict) else v))
            else:
                values[k] = coerce(v, hints[k], k)
    return values


def make_config(*sources: dict[str, Any]) -> TrainConfig:
    """Merge dicts (:func:`merge_sources`) into a checked config."""
    values = merge_sources(TrainConfig, sources)
    overrides = values.pop("recipe_overrides", {})
    cfg = TrainConfig(**values, recipe_overrides=tuple(overrides.items()))
    check_config(cfg)
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (empty file -> ``{}``)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"cannot read config {path}: {e}") from e
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of config keys at the top level")
    return data


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


__all__ = ["LIMITS", "LoopConfig", "LossWeights", "Phase", "Recipe", "TrainConfig",
           "apply_overrides", "check", "check_config", "check_recipe", "coerce",
           "config_document", "dump_yaml", "load_yaml", "make_config", "merge_sources",
           "resolve_recipe"]

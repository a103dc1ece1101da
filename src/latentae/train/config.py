"""Run configuration: a frozen :class:`TrainConfig` (model, data, run folder, loop
settings) plus the resolved :class:`~latentae.train.recipes.Recipe`. Values come from
defaults, then a YAML file, then the command line; recipe fields are overridden with
dotted keys (``lr`` for every phase, ``p128.batch_size`` for one phase,
``losses.kl`` / ``p256.losses.wavelet`` for loss weights, ``discriminator``)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from latentae.train.recipes import LossWeights, Phase, Recipe, get_recipe, scale_steps


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs besides the recipe. ``max_minutes`` / ``max_steps`` 0 mean
    no limit; otherwise the run checkpoints and stops cleanly (edm2 ``slice_nimg``)."""

    model: str = "litevae-tiny"  # preset name, or a saved model directory to start from
    recipe: str = "litevae"
    data: str = ""
    val_data: str | None = None
    out: str = "runs/run"
    seed: int = 0
    steps_scale: float = 1.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    accumulation: int = 1  # gradient accumulation rounds per step
    log_every: int = 10
    val_every: int = 1000
    val_images: int = 8
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    max_bad_steps: int = 10  # non-finite steps in a row before stopping
    max_minutes: float = 0.0
    max_steps: int = 0  # stop (checkpoint, exit 0) after this many steps in this process
    workers: int = 0
    small_images: str = "upscale"  # images smaller than the crop: "upscale" or "skip"
    crop_scale: float = 1.0  # shortest side resized to resolution × U(1, crop_scale)
    channels_last: bool = False
    compile: bool = False
    gradient_checkpointing: bool = False  # recompute block activations in backward
    device: str = "auto"
    resume: str = "none"  # "auto": newest valid checkpoint in OUT/checkpoints
    progress: bool = True
    recipe_overrides: tuple[tuple[str, Any], ...] = ()

    def validate(self) -> None:
        if not self.data:
            raise ValueError("no training data: pass --data DIR (a folder of images or "
                             "of .tar shards)")
        if self.small_images not in ("upscale", "skip"):
            raise ValueError(f"small_images must be 'upscale' or 'skip', "
                             f"got {self.small_images!r}")
        if self.resume not in ("none", "auto"):
            raise ValueError(f"resume must be 'auto' or 'none', got {self.resume!r}")
        if self.accumulation < 1 or self.keep_checkpoints < 1 or self.crop_scale < 1:
            raise ValueError("accumulation and keep_checkpoints must be >= 1, "
                             "crop_scale >= 1")


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type (``"2e-4"`` -> float, list ->
    tuple); raise ``ValueError`` naming ``key`` when it does not fit."""
    text = str(hint)
    try:
        if value is None or "Any" in text:
            return value
        if text.startswith("tuple") or "tuple[" in text:
            items = value if isinstance(value, (list, tuple)) else str(value).split(",")
            inner = typing.get_args(hint)[0] if typing.get_args(hint) else str
            return tuple(inner(x) if inner in (int, float) else x for x in items)
        for t in (bool, int, float):
            if hint is t or text == t.__name__:
                if t is bool and isinstance(value, str):
                    return value.lower() in ("1", "true", "yes", "on")
                return t(value)
        return value
    except (TypeError, ValueError) as e:
        raise ValueError(f"{key}: cannot read {value!r} as {text}") from e


def _replace(obj: Any, key: str, value: Any, where: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    if key not in hints:
        raise ValueError(f"unknown field {key!r} in {where}; valid: {sorted(hints)}")
    return dataclasses.replace(obj, **{key: coerce(value, hints[key], f"{where}.{key}")})


def _override_phase(phase: Phase, key: str, value: Any) -> Phase:
    if key.startswith("losses."):
        losses = _replace(phase.losses, key[len("losses."):], value, "losses")
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
            raise ValueError(f"override {key!r} names phase {head!r} but no field "
                             f"(e.g. {head}.lr)")
        else:
            phases = tuple(_override_phase(p, key, value) for p in recipe.phases)
        recipe = dataclasses.replace(recipe, phases=phases)
    return recipe


def resolve_recipe(cfg: TrainConfig) -> Recipe:
    """The recipe named in ``cfg``, steps scaled, then overridden, then validated."""
    recipe = scale_steps(get_recipe(cfg.recipe), cfg.steps_scale)
    recipe = apply_overrides(recipe, dict(cfg.recipe_overrides))
    for phase in recipe.phases:
        phase.validate()
    if len({p.name for p in recipe.phases}) != len(recipe.phases):
        raise ValueError(f"phase names must be unique: {[p.name for p in recipe.phases]}")
    return recipe


def make_config(*sources: dict[str, Any]) -> TrainConfig:
    """Merge dicts (later wins; ``None`` values ignored) into a validated config.
    ``recipe_overrides`` dicts are merged key by key."""
    hints = typing.get_type_hints(TrainConfig)
    values: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for src in sources:
        for k, v in src.items():
            if v is None:
                continue
            if k not in hints:
                raise ValueError(f"unknown config key {k!r}; valid: {sorted(hints)}")
            if k == "recipe_overrides":
                overrides.update(dict(v.items() if isinstance(v, dict) else v))
            else:
                values[k] = coerce(v, hints[k], k)
    cfg = TrainConfig(**values, recipe_overrides=tuple(overrides.items()))
    cfg.validate()
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (empty file -> ``{}``)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read config {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys at the top level")
    return data


def dump_yaml(cfg: TrainConfig, recipe: Recipe) -> str:
    """The resolved run configuration as YAML (what ``config.yaml`` in a run holds)."""
    train = dataclasses.asdict(cfg)
    train["recipe_overrides"] = dict(cfg.recipe_overrides)
    return yaml.safe_dump({"train": train, "recipe": _plain(dataclasses.asdict(recipe))},
                          sort_keys=False)


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


__all__ = ["LossWeights", "Phase", "Recipe", "TrainConfig", "apply_overrides", "dump_yaml",
           "load_yaml", "make_config", "resolve_recipe"]

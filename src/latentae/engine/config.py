"""The generic loop's settings (:class:`LoopConfig`) and the one value checker.

A task's config extends ``LoopConfig`` and owns its tables: :func:`check` range- and
choice-checks every field of a config dataclass against the ``limits`` / ``choices`` the
caller hands it (:data:`LOOP_LIMITS` / :data:`LOOP_CHOICES` for the loop's own fields,
merged into each task's tables). Values come from defaults, then a YAML file
(:func:`load_yaml`), then the command line, merged by :func:`merge_sources`; a bad value
is an :class:`~latentae.errors.InputError` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from latentae.errors import InputError

Limits = Mapping[str, tuple[float, float]]
Choices = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class LoopConfig:
    """Settings of the generic loop. Intervals count optimizer steps of the current phase
    and are converted to images once (:func:`latentae.engine.loop.images`); 0 turns a
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


BIG = 10**15  # a count no run reaches: larger values are typos (and overflow int64 maths)

# Allowed range (inclusive) of every numeric field of LoopConfig; a task's table adds its own.
LOOP_LIMITS: dict[str, tuple[float, float]] = {
    "seed": (0, 2**63 - 1), "ema_decay": (0.0, 1.0), "grad_clip": (0.0, 1e9),
    "max_bad_steps": (1, BIG), "log_every": (0, BIG), "val_every": (0, BIG),
    "ckpt_every": (0, BIG), "keep_checkpoints": (1, 10_000), "max_minutes": (0.0, 1e9),
    "max_steps": (0, BIG), "max_images": (0, BIG),
}
LOOP_CHOICES: dict[str, tuple[str, ...]] = {"resume": ("none", "auto")}
OPEN_ABOVE = frozenset({"ema_decay", "betas"})  # must stay below the upper bound (EMA, Adam)
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


def check(obj: Any, limits: Limits, choices: Choices, where: str = "",
          open_above: Collection[str] = OPEN_ABOVE) -> None:
    """Range- and choice-check every field of a config dataclass against the caller's
    tables (``where`` prefixes the field name in messages, e.g. ``"phase p128."``); a
    field in ``open_above`` must stay below its upper bound. The one place values are
    judged."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{where}{f.name}"
        if f.name in choices and value not in choices[f.name]:
            raise InputError(f"{key} must be one of {list(choices[f.name])}, "
                             f"got {value!r}")
        bounds = limits.get(f.name)
        values = value if isinstance(value, tuple) else (value,)
        if bounds is None:
            continue
        if not all(isinstance(v, (int, float)) and _finite(v) for v in values):
            raise InputError(f"{key} must be a finite number, got {value!r}")
        lo, hi = bounds
        bad = [v for v in values if not lo <= v <= hi or f.name in open_above and v >= hi]
        if bad:
            top = f"{hi:g})" if f.name in open_above else f"{hi:g}]"
            raise InputError(f"{key} must be in [{lo:g}, {top}, got {value!r}")


def check_loop_config(cfg: LoopConfig, limits: Limits, choices: Choices) -> None:
    """Check a run config: every value (:func:`check`, with the task's tables) and the
    combinations of the loop's own settings."""
    check(cfg, limits, choices)
    if cfg.resume == "auto" and cfg.overwrite:
        raise InputError("--resume auto continues the run in OUT and --overwrite deletes "
                         "it: pass one of them")
    if cfg.restart and cfg.resume != "auto":
        raise InputError("--restart only applies with --resume auto (start over when no "
                         "checkpoint is readable); for a new run use --overwrite")


def merge_sources(config_cls: type, sources: tuple[dict[str, Any], ...],
                  merged: Collection[str] = ()) -> dict[str, Any]:
    """Merge dicts of ``config_cls`` fields (later wins; ``None`` values ignored), each
    value coerced to its field's type; an unknown key is an ``InputError``. The fields
    named in ``merged`` hold mappings (or pairs) that are merged key by key, as dicts."""
    hints = typing.get_type_hints(config_cls)
    values: dict[str, Any] = {}
    for src in sources:
        for k, v in src.items():
            if v is None:
                continue
            if k not in hints:
                raise InputError(f"unknown config key {k!r}; valid: {sorted(hints)}")
            if k in merged:
                values.setdefault(k, {}).update(dict(v.items() if isinstance(v, dict) else v))
            else:
                values[k] = coerce(v, hints[k], k)
    return values


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (empty file -> ``{}``)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"cannot read config {path}: {e}") from e
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of config keys at the top level")
    return data


__all__ = ["BIG", "LOOP_CHOICES", "LOOP_LIMITS", "LoopConfig", "check", "check_loop_config",
           "coerce", "load_yaml", "merge_sources"]

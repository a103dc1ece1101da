"""The latentae model directory: ``config.json`` + ``model.safetensors``.

``config.json`` holds the family, the preset name, the latentae version and every config
field, so a directory rebuilds itself without code flags; the weights carry
``{"format": "pt", "family": ...}`` as safetensors metadata. This module writes and
reads that format and knows no model class, so the models can save themselves
(``Autoencoder.save_pretrained``) without importing the registry: rebuilding a model from
a directory is :func:`latentae.pretrained.load`. Training state (optimizers, EMA, RNG)
is a separate file written by ``latentae.train``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from latentae.errors import InputError
from latentae.files import atomic_path, atomic_write_text
from latentae.version import __version__

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "config_from_dict", "config_to_dict",
           "load_state_dict_strict", "read_config", "read_json", "read_weights",
           "write_model_dir"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def config_to_dict(model) -> dict[str, Any]:
    """What ``config.json`` holds: family, preset, latentae version, config fields."""
    return {"family": model.family, "preset": model.preset, "latentae_version": __version__,
            "config": dataclasses.asdict(model.config)}


def config_from_dict(config_cls: type, values: dict[str, Any], source: str = "config.json",
                     written_by: str | None = None) -> Any:
    """Rebuild a frozen config dataclass from JSON values (lists -> tuples).

    Unknown fields raise :class:`InputError`; the message says whether the file was
    written by a newer latentae (``written_by``, its ``latentae_version``) or not.
    """
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        newer = written_by is not None and _version_tuple(written_by) > _version_tuple(
            __version__)
        why = (f"it was written by latentae {written_by}, newer than this {__version__}: "
               "upgrade latentae" if newer else
               f"this latentae ({__version__}) does not know them: the file was edited by "
               f"hand or its family is wrong; valid fields: {sorted(fields)}")
        raise InputError(f"{source} has unknown field(s) {unknown} for "
                         f"{config_cls.__name__}: {why}")
    kwargs = {}
    for k, v in values.items():
        if isinstance(v, list) and "tuple" in str(hints[k]):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        kwargs[k] = v
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise InputError(f"{source}: the config does not build a {config_cls.__name__}: "
                         f"{e}") from e


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in str(v).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def write_model_dir(model, path: str | os.PathLike, state_dict: dict | None = None) -> None:
    """Write ``model``'s config and weights (or ``state_dict``, e.g. EMA) into ``path``
    (created if missing); each file is written atomically (``latentae.files``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict() if state_dict is None else state_dict
    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    with atomic_path(path / WEIGHTS_NAME) as tmp:
        save_file(sd, str(tmp), metadata={"format": "pt", "family": model.family})
    atomic_write_text(path / CONFIG_NAME, json.dumps(config_to_dict(model), indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a file that is not JSON raises :class:`InputError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not a text file: {e}") from e


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check ``config.json`` of a saved latentae model directory."""
    path = Path(path)
    cfg_file = path / CONFIG_NAME
    if not path.is_dir():
        raise InputError(f"{path} is not a directory (expected a saved model directory)")
    if not cfg_file.is_file():
        raise InputError(f"{path} has no {CONFIG_NAME}: not a saved latentae or diffusers "
                         "model directory")
    meta = read_json(cfg_file)
    if not isinstance(meta, dict) or "family" not in meta or "config" not in meta:
        cls = meta.get("_class_name") if isinstance(meta, dict) else None
        what = f"a diffusers {cls} config" if cls else "no 'family'/'config'"
        raise InputError(f"{cfg_file} is not a latentae model config ({what}); latentae "
                         "reads latentae directories and diffusers AutoencoderKL / "
                         "AutoencoderDC directories")
    return meta


def read_weights(path: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> dict[str, torch.Tensor]:
    """A safetensors file as a state dict; a truncated or corrupt file raises
    :class:`InputError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path.parent} has no {path.name}")
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as e:
        raise InputError(f"{path} is corrupt or truncated: {e}") from e


def load_state_dict_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor],
                           source: str = "state dict") -> None:
    """Load all of ``sd`` into ``model`` or raise :class:`InputError` listing what differs."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"{source} does not match {type(model).__name__}:"]
        for label, items in (("missing", missing), ("unexpected", unexpected),
                             ("shape mismatch", shapes)):
            if items:
                lines.append(f"  {label} ({len(items)}): {', '.join(items[:5])}"
                             + (" ..." if len(items) > 5 else ""))
        raise InputError("\n".join(lines))
    model.load_state_dict(sd, strict=True)

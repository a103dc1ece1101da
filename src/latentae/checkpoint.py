"""Saving and loading models: ``config.json`` + ``model.safetensors``.

``config.json`` holds the family, the preset name, every config field and the latentae
version, so a directory rebuilds itself without code flags. Writes go to temporary
names first and are renamed into place (atomic per file). Training state (optimizers,
EMA, RNG) is a separate file written by ``latentae.train``.
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

from latentae.files import atomic_write_bytes

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def config_to_dict(model) -> dict[str, Any]:
    from latentae import __version__
    return {"family": model.family, "preset": model.preset, "latentae_version": __version__,
            "config": dataclasses.asdict(model.config)}


def config_from_dict(config_cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a frozen config dataclass from JSON values (lists -> tuples)."""
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"config.json has unknown field(s) {unknown} for "
                         f"{config_cls.__name__} (written by a newer latentae?)")
    kwargs = {}
    for k, v in values.items():
        if isinstance(v, list) and "tuple" in str(hints[k]):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        kwargs[k] = v
    return config_cls(**kwargs)


def save_pretrained(model, path: str | os.PathLike, state_dict: dict | None = None) -> None:
    """Write ``model``'s config and weights (or ``state_dict``, e.g. EMA) to ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict() if state_dict is None else state_dict
    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    tmp = path / (WEIGHTS_NAME + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt", "family": model.family})
    os.replace(tmp, path / WEIGHTS_NAME)
    text = json.dumps(config_to_dict(model), indent=2) + "\n"
    atomic_write_bytes(path / CONFIG_NAME, text.encode())


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check ``config.json`` of a saved latentae model directory."""
    path = Path(path)
    cfg_file = path / CONFIG_NAME
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory (expected a saved model directory)")
    if not cfg_file.is_file():
        raise ValueError(f"{path} has no {CONFIG_NAME}: not a saved latentae model")
    try:
        meta = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file} is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or "family" not in meta or "config" not in meta:
        raise ValueError(f"{cfg_file} is not a latentae config (no 'family'/'config'); "
                         "for a diffusers directory use `latentae convert`")
    return meta


def load(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a model saved with ``save_pretrained``; fails whole, never half-loaded."""
    from latentae.registry import FAMILIES, build

    path = Path(path)
    meta = read_config(path)
    family = meta["family"]
    if family not in FAMILIES:
        raise ValueError(f"{path}: unknown model family {family!r}; valid: {sorted(FAMILIES)}")
    config = config_from_dict(FAMILIES[family][1], meta["config"])
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{path} has no {WEIGHTS_NAME}")
    try:
        sd = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{weights} is corrupt or truncated: {e}") from e
    model = build(family, config, preset=meta.get("preset"))
    load_state_dict_strict(model, sd, source=str(weights))
    return model.to(device)


def load_state_dict_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor],
                           source: str = "state dict") -> None:
    """Load all of ``sd`` into ``model`` or raise ``ValueError`` listing what differs."""
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
        raise ValueError("\n".join(lines))
    model.load_state_dict(sd, strict=True)

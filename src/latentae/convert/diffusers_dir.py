"""The diffusers model directory, read and written without importing diffusers:
``config.json`` (``_class_name``, ``_diffusers_version`` and the constructor arguments)
+ ``diffusion_pytorch_model.safetensors`` (what ``ModelMixin.save_pretrained`` writes
with ``safe_serialization=True``; diffusers ``modeling_utils.py``)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from latentae.errors import InputError
from latentae.files import atomic_write_text
from latentae.serialization import read_json, read_weights, save_safetensors

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
# the first diffusers with AutoencoderDC: what an export claims when diffusers is not installed
MIN_DIFFUSERS_VERSION = "0.32.0"
AUTOENCODER_CLASSES = ("AutoencoderKL", "AutoencoderDC")  # the ones latentae converts


def diffusers_version() -> str:
    """The installed diffusers' version (read from its metadata, without importing it), or
    :data:`MIN_DIFFUSERS_VERSION`: the ``_diffusers_version`` an exported config carries."""
    try:
        return importlib.metadata.version("diffusers")
    except importlib.metadata.PackageNotFoundError:
        return MIN_DIFFUSERS_VERSION


def diffusers_class(path: str | Path) -> str | None:
    """``_class_name`` of the ``config.json`` in ``path``, or ``None`` when ``path`` is not
    a diffusers directory (no folder, no config, not JSON, no class name)."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        return None
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return cfg.get("_class_name") if isinstance(cfg, dict) else None


def read_diffusers_dir(path: str | Path, expect: str | None = None
                       ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of a diffusers model directory (safetensors weights only);
    ``expect`` checks ``_class_name``."""
    path = Path(path)
    cfg_file, weights = path / "config.json", path / DIFFUSERS_WEIGHTS
    if not cfg_file.is_file():
        raise InputError(f"{path} has no config.json")
    cfg = read_json(cfg_file)
    if not isinstance(cfg, dict):
        raise InputError(f"{cfg_file} is not a diffusers config (not a JSON object)")
    if expect is not None and cfg.get("_class_name") != expect:
        raise InputError(f"{path} holds a {cfg.get('_class_name')!r}, not {expect}")
    if not weights.is_file():
        raise InputError(f"{path} has no {DIFFUSERS_WEIGHTS} (only safetensors weights "
                         "are read; re-save the model with safe_serialization=True)")
    return cfg, read_weights(weights)


@contextlib.contextmanager
def naming_config(path: str | Path) -> Iterator[None]:
    """An ``InputError`` about the config of the directory ``path`` names its
    ``config.json`` (sweep FT01: "use_quant_conv and use_post_quant_conv must agree"
    named no file)."""
    try:
        yield
    except InputError as e:
        raise InputError(f"{Path(path) / 'config.json'}: {e}") from e


def write_diffusers_dir(out: str | Path, class_name: str, config: dict[str, Any],
                        state_dict: dict[str, torch.Tensor]) -> None:
    """Write a directory that ``diffusers.<class_name>.from_pretrained`` loads (each file
    atomically; ``out`` is created if missing)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(state_dict, out / DIFFUSERS_WEIGHTS, {"format": "pt"})
    cfg = {"_class_name": class_name, "_diffusers_version": diffusers_version(), **config}
    atomic_write_text(out / "config.json", json.dumps(cfg, indent=2) + "\n")

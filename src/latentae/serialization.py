"""The latentae model directory: ``config.json`` + ``model.safetensors`` + ``README.md``.

``config.json`` holds the family, the preset name, the latentae version and every config
field, so a directory rebuilds itself without code flags; the weights carry
``{"format": "pt", "family": ...}`` as safetensors metadata; ``README.md`` is the model
card (``latentae.cards``). This module writes and reads that format and knows no model
class, so the models can save themselves (``Autoencoder.save_pretrained``) without
importing the registry: rebuilding a model from a directory is
:func:`latentae.pretrained.load`. Training state (optimizers, EMA, RNG)
is a separate file written by ``latentae.train``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import typing
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from latentae.cards import card_fields, write_card
from latentae.errors import InputError
from latentae.files import atomic_write, atomic_write_text
from latentae.version import __version__

__all__ = ["CONFIG_NAME", "MAX_CONFIG_INT", "WEIGHTS_NAME", "check_config_fields",
           "check_state_dict", "config_from_dict", "config_to_dict", "load_state_dict_strict",
           "read_config", "read_json", "read_weights", "save_safetensors", "write_model_dir"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# No width, depth or channel count of a real autoencoder comes near this; a larger value
# (a typo, 10**9) would only fail later allocating hundreds of GB.
MAX_CONFIG_INT = 1 << 16
_POSITIVE = ("channels", "widths", "_mult", "_dim", "heads", "grid")  # name ends: ints >= 1
_SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
                       torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
                       torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                       torch.bool: "BOOL"}


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
        config = config_cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise InputError(f"{source}: the config does not build a {config_cls.__name__}: "
                         f"{e}") from e
    check_config_fields(config, source)
    return config


def check_config_fields(config: Any, source: str = "config") -> None:
    """Refuse a config dataclass whose field values do not fit their types: ints (not
    bools or strings) in ``[0, MAX_CONFIG_INT]`` (``>= 1`` for channels, widths, mults,
    dims, heads, grids), finite floats, a positive ``scaling_factor``, strings, bools,
    and tuples of these. Raises :class:`InputError` naming the field, before any tensor
    of the model is allocated."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        problem = _field_problem(f.name, hints[f.name], value)
        if problem is None and f.name == "scaling_factor" and not value > 0:
            problem = "must be a positive number (latents are multiplied by it)"
        if problem:
            raise InputError(f"{source}: {f.name} = {value!r} {problem}")


def _field_problem(name: str, hint: Any, value: Any) -> str | None:
    """Why ``value`` does not fit the annotation ``hint`` (``None`` when it does)."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, tuple):
            return "must be a list"
        if not value and name.endswith(_POSITIVE):
            return "must not be empty"
        item = typing.get_args(hint)[0]
        return next((p for v in value if (p := _field_problem(name, item, v))), None)
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        low = 1 if name.endswith(_POSITIVE) else 0
        if not low <= value <= MAX_CONFIG_INT:
            return f"is out of range: valid {low} … {MAX_CONFIG_INT}"
        return None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        return None if math.isfinite(value) else "must be finite"
    if hint is str:
        return None if isinstance(value, str) else "must be a string"
    return None


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in str(v).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def write_model_dir(model, path: str | os.PathLike, state_dict: dict | None = None,
                    card: dict[str, Any] | None = None) -> None:
    """Write ``model``'s config and weights (or ``state_dict``, e.g. EMA) and its model
    card ``README.md`` (``latentae.cards.card_fields``; ``card``: the fields to keep
    besides the model's own) into ``path`` (created if missing); each file is written
    atomically (``latentae.files``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict() if state_dict is None else state_dict
    save_safetensors(sd, path / WEIGHTS_NAME, {"format": "pt", "family": model.family})
    atomic_write_text(path / CONFIG_NAME, json.dumps(config_to_dict(model), indent=2) + "\n")
    write_card(path, card_fields(model, "latentae", card))


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as a safetensors file, atomically (``latentae.files``) and
    byte-reproducibly: the same tensors and metadata give the same bytes in every run
    (``safetensors.torch.save_file`` writes the metadata in a random order).

    The layout is safetensors' own (its ``serialize``): tensors ordered by decreasing
    dtype size, then name, so every offset is aligned; the JSON header (``__metadata__``
    first, here with sorted keys) padded with spaces to a multiple of 8 bytes."""
    if sys.byteorder != "little":  # safetensors is little-endian; we write raw memory
        raise RuntimeError("save_safetensors needs a little-endian machine")
    items = sorted(((k, v.detach().cpu().contiguous()) for k, v in tensors.items()),
                   key=lambda kv: (-kv[1].element_size(), kv[0]))
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    start = 0
    for k, t in items:
        if t.dtype not in _SAFETENSORS_DTYPES:
            raise InputError(f"tensor {k!r} has dtype {t.dtype}, which safetensors files "
                             f"do not hold here; valid: {sorted(map(str, _SAFETENSORS_DTYPES))}")
        n = t.numel() * t.element_size()
        header[k] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                     "data_offsets": [start, start + n]}
        start += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-(8 + len(head)) % 8)
    with atomic_write(path, "wb", needed=8 + len(head) + start) as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for _, t in items:
            f.write(t.reshape(-1).view(torch.uint8).numpy().data)


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


def check_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor],
                     source: str = "state dict") -> None:
    """Raise :class:`InputError` listing the keys and shapes in which ``sd`` and
    ``model`` differ. Works on a model built on the ``meta`` device (no memory)."""
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


def load_state_dict_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor],
                           source: str = "state dict") -> None:
    """Load all of ``sd`` into ``model`` or raise :class:`InputError` listing what differs."""
    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True)

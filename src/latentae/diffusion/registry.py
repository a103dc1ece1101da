"""Diffusion backbone presets: name -> model. A dict of families, a dict of presets and a
few functions, like ``latentae.registry`` for the autoencoders.

A preset fixes the architecture (depth, width, heads); the latent it runs on does not
belong to it, so ``create_diffusion`` takes the patch size, latent channels and size and
the number of classes every time: ``create_diffusion("dit-xl", patch_size=2,
in_channels=4, input_size=32, num_classes=1000)`` is DiT-XL/2 on SD-VAE latents of 256²
images. ``load(dir)`` rebuilds a model written by ``model.save_pretrained(dir)``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from latentae.diffusion import dit, uvit
from latentae.diffusion.base import DiffusionModel, count_params
from latentae.errors import InputError, unknown_choice
from latentae.serialization import (
    WEIGHTS_NAME,
    config_from_dict,
    load_state_dict_strict,
    read_config,
)

# family -> (model class, config class, analytic FLOPs of one forward)
FAMILIES: dict[str, tuple[type[DiffusionModel], type, Any]] = {
    "dit": (dit.DiT, dit.DiTConfig, dit.flops),
    "uvit": (uvit.UViT, uvit.UViTConfig, uvit.flops),
}
_PRESETS: dict[str, tuple[str, dict]] = {}  # name -> (family, architecture fields)


def register(name: str, family: str, arch: dict) -> None:
    """Add a preset. Registering a name twice raises."""
    if name in _PRESETS:
        raise ValueError(f"diffusion preset {name!r} is already registered")
    if family not in FAMILIES:
        raise ValueError(f"unknown diffusion family {family!r}; valid: {sorted(FAMILIES)}")
    _PRESETS[name] = (family, dict(arch))


for _family, _module in (("dit", dit), ("uvit", uvit)):
    for _name, _arch in _module.PRESETS.items():
        register(_name, _family, _arch)


def list_diffusion(pattern: str = "*") -> list[str]:
    """Diffusion preset names matching a shell-style pattern, sorted."""
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, pattern))


def get_preset(name: str) -> tuple[str, dict]:
    """``(family, architecture fields)``; an unknown name raises with close matches."""
    if name not in _PRESETS:
        raise unknown_choice("diffusion model", name, _PRESETS)
    return _PRESETS[name]


def build(family: str, config: Any, preset: str | None = None) -> DiffusionModel:
    """A model of ``family`` from its config, with the releases' random init."""
    model = FAMILIES[family][0](config)
    model.preset = preset
    return model


def preset_config(name: str, *, patch_size: int, in_channels: int, input_size: int,
                  num_classes: int, learn_sigma: bool | None = None, **overrides: Any) -> Any:
    """The config ``create_diffusion`` builds (see there)."""
    family, arch = get_preset(name)
    config_cls = FAMILIES[family][1]
    values = {**arch, "patch_size": patch_size, "in_channels": in_channels,
              "input_size": input_size, "num_classes": num_classes, **overrides}
    if learn_sigma is not None:
        values["learn_sigma"] = learn_sigma
    fields = {f.name for f in dataclasses.fields(config_cls)}
    bad = sorted(set(values) - fields)
    if bad:
        raise InputError(f"unknown config field(s) {bad} for {config_cls.__name__}; "
                         f"valid: {sorted(fields)}")
    return config_cls(**values)


def create_diffusion(name: str, *, patch_size: int, in_channels: int, input_size: int,
                     num_classes: int, learn_sigma: bool | None = None,
                     **overrides: Any) -> DiffusionModel:
    """Build the preset ``name`` (``dit-s|b|l|xl``, ``uvit-s|h|2b``) for latents
    ``(in_channels, input_size, input_size)`` cut into ``patch_size²`` patches, with
    ``num_classes`` classes (plus the null class; 0 = unconditional). ``learn_sigma``
    defaults to the release's choice (DiT: True, U-ViT: False); other keyword arguments
    override config fields (e.g. ``class_dropout_prob``, U-ViT's ``final_conv``)."""
    config = preset_config(name, patch_size=patch_size, in_channels=in_channels,
                           input_size=input_size, num_classes=num_classes,
                           learn_sigma=learn_sigma, **overrides)
    return build(get_preset(name)[0], config, preset=name)


def flops(config: Any) -> int:
    """Analytic FLOPs of one forward of one sample (a DiT or U-ViT config or model)."""
    config = getattr(config, "config", config)
    for _, config_cls, count in FAMILIES.values():
        if isinstance(config, config_cls):
            return count(config)
    raise InputError(f"not a diffusion config: {type(config).__name__}")


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> DiffusionModel:
    """Rebuild a model saved with ``model.save_pretrained(path)``, in eval mode with
    ``requires_grad`` off; fails whole."""
    path = Path(path)
    try:
        meta = read_config(path)
    except ValueError as e:
        raise InputError(str(e)) from e
    family = meta["family"]
    if family not in FAMILIES:
        raise InputError(f"{path} holds a {family!r} model, not a diffusion model (valid: "
                         f"{sorted(FAMILIES)}); autoencoders load with latentae.load")
    weights = path / WEIGHTS_NAME
    try:
        config = config_from_dict(FAMILIES[family][1], meta["config"])
        model = build(family, config, preset=meta.get("preset"))
        sd = load_file(str(weights), device="cpu")
        load_state_dict_strict(model, sd, source=str(weights))
    except (SafetensorError, OSError) as e:
        raise InputError(f"{weights} is missing, corrupt or truncated: {e}") from e
    except ValueError as e:
        raise InputError(str(e)) from e
    return model.to(device).eval().requires_grad_(False)  # as diffusers returns it


def describe_presets(*, resolution: int = 256, compression: int = 8, patch_size: int = 2,
                     in_channels: int = 4, num_classes: int = 1000) -> list[dict]:
    """One row per preset for images of ``resolution``² through an autoencoder with
    spatial factor ``compression`` and ``in_channels`` latent channels: name, family,
    params (counted on the meta device), tokens ``(resolution/f/p)²`` and GFLOPs per
    forward of one sample (:func:`flops`)."""
    if resolution % compression:
        raise InputError(f"image size {resolution} is not divisible by the autoencoder "
                         f"factor {compression}")
    rows = []
    for name in list_diffusion():
        with torch.device("meta"):
            model = create_diffusion(name, patch_size=patch_size, in_channels=in_channels,
                                     input_size=resolution // compression,
                                     num_classes=num_classes)
        rows.append({"name": name, "family": model.family, "params": count_params(model),
                     "tokens": model.tokens, "gflops": flops(model.config) / 1e9})
    return rows

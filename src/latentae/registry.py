"""Preset name -> model. One dict of families, one dict of presets, two functions.

Presets are data that live next to their family (``PRESETS`` at the bottom of each
``models/*.py``); this module collects them. ``create_model("litevae-b",
latent_channels=12)`` builds a model; ``list_models("litevae-*")`` lists names;
``parameter_counts(model)`` is the one parameter count every command prints.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

from latentae.errors import InputError, unknown_choice
from latentae.models import dcae, litevae, sdvae
from latentae.models.autoencoder import Autoencoder

# family -> (model class, config class)
FAMILIES: dict[str, tuple[type[Autoencoder], type]] = {
    "sdvae": (sdvae.SDVAE, sdvae.SDVAEConfig),
    "litevae": (litevae.LiteVAE, litevae.LiteVAEConfig),
    "dcae": (dcae.DCAE, dcae.DCAEConfig),
}
_PRESETS: dict[str, tuple[str, Any]] = {}  # name -> (family, config)


def register(name: str, family: str, config: Any) -> None:
    """Add a preset. Registering a name twice raises."""
    if name in _PRESETS:
        raise InputError(f"preset {name!r} is already registered")
    if family not in FAMILIES:
        raise InputError(f"unknown family {family!r}; valid: {sorted(FAMILIES)}")
    _PRESETS[name] = (family, config)


for _family, _module in (("sdvae", sdvae), ("litevae", litevae), ("dcae", dcae)):
    for _name, _config in _module.PRESETS.items():
        register(_name, _family, _config)


def list_models(pattern: str = "*") -> list[str]:
    """Preset names matching a shell-style pattern, sorted."""
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, pattern))


def get_preset(name: str) -> tuple[str, Any]:
    """``(family, config)`` of a preset; an unknown name raises with close matches."""
    if name not in _PRESETS:
        raise unknown_choice("model preset", name, _PRESETS)
    return _PRESETS[name]


def replace_config(config: Any, **overrides: Any) -> Any:
    """``dataclasses.replace`` that names the valid fields when one is unknown."""
    fields = {f.name for f in dataclasses.fields(config)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise InputError(f"unknown config field(s) {bad} for {type(config).__name__}; "
                         f"valid: {sorted(fields)}")
    return dataclasses.replace(config, **overrides)


def build(family: str, config: Any, preset: str | None = None) -> Autoencoder:
    """Build a model of ``family`` from its config (random init)."""
    if family not in FAMILIES:
        raise InputError(f"unknown model family {family!r}; valid: {sorted(FAMILIES)}")
    model = FAMILIES[family][0](config)
    model.preset = preset
    return model


def create_model(name: str, **overrides: Any) -> Autoencoder:
    """Build the preset ``name`` with random weights; keyword args override config fields."""
    family, config = get_preset(name)
    return build(family, replace_config(config, **overrides), preset=name)


def parameter_counts(model: Autoencoder) -> dict[str, int]:
    """``{"encoder", "decoder", "total"}`` parameter counts of ``model``.

    Encoder and decoder are the ``param_groups()`` of those names: every parameter that
    ``encode`` (resp. ``decode``) runs. For SD-VAE that includes the 1×1 ``quant_conv``
    (``post_quant_conv``) on the moments (latents), which diffusers keeps outside
    ``vae.encoder`` (``vae.decoder``): ``sdvae-f8`` has 34,163,664 encoder parameters,
    72 more than diffusers' ``vae.encoder`` (34,163,592); LiteVAE and DC-AE have no such
    layers (LiteVAE Table 17 drops them). Works on the meta device (no memory).
    """
    return model.parameter_counts()  # the count itself is the model's (model cards use it)

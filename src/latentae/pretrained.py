"""The one loader and saver: latentae directories, diffusers directories, presets.

``load(spec)`` takes a saved latentae directory (``config.json`` + ``model.safetensors``,
``latentae/serialization.py``), a diffusers ``AutoencoderKL`` or ``AutoencoderDC``
directory (``latentae/convert/``), or, with ``random_init=True``, a preset name of the
registry built with random weights (smoke runs). ``save_pretrained`` writes either
format, with its model card ``README.md`` (``latentae/cards.py``); ``convert_directory``
turns one into the other and keeps the card. Every command that takes a ``MODEL``
argument goes through ``load``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open

from latentae.cards import (
    CARD_NAME,
    card_fields,
    model_facts,
    read_card,
    unrepeated,
    with_evaluation,
    write_card,
)
from latentae.convert.dc import dcae_from_diffusers, dcae_to_diffusers
from latentae.convert.diffusers_dir import AUTOENCODER_CLASSES, diffusers_class
from latentae.convert.kl import kl_from_diffusers, kl_to_diffusers
from latentae.errors import InputError
from latentae.files import atomic_dir, atomic_write_text, prepare_output_dir
from latentae.models.autoencoder import Autoencoder
from latentae.registry import FAMILIES, build, create_model, list_models, parameter_counts
from latentae.serialization import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_state_dict,
    config_from_dict,
    load_state_dict_strict,
    read_config,
    read_json,
    read_weights,
    write_model_dir,
)

__all__ = ["FORMATS", "add_evaluation", "card_and_provenance", "card_for_update",
           "convert_directory", "load", "model_dir_provenance", "model_info",
           "save_pretrained", "source_card", "write_scaling_factors"]

FORMATS = ("latentae", "diffusers")
_FROM_DIFFUSERS = {"AutoencoderKL": kl_from_diffusers, "AutoencoderDC": dcae_from_diffusers}
_TO_DIFFUSERS = {"sdvae": kl_to_diffusers, "dcae": dcae_to_diffusers}


def load(spec: str | os.PathLike, device: str | torch.device = "cpu", *,
         random_init: bool = False) -> Autoencoder:
    """The model that ``spec`` names, on ``device``; fails whole, never half-loaded.

    ``spec``: a latentae model directory, a diffusers ``AutoencoderKL``/``AutoencoderDC``
    directory, or a preset name (``latentae models``) when ``random_init`` is true (random
    weights from torch's global RNG; seed it for repeatable weights).

    The model comes in **eval mode with** ``requires_grad`` **off**, as diffusers'
    ``from_pretrained`` returns it: DC-AE's BatchNorm decoder stages would otherwise
    normalise with batch statistics and overwrite their running ones. A trainer calls
    ``model.train()`` and chooses what trains (``train.autoencoder.set_trainable``).
    """
    return _load(spec, device, random_init).eval().requires_grad_(False)


def _load(spec: str | os.PathLike, device: str | torch.device,
          random_init: bool) -> Autoencoder:
    path = Path(spec)
    if path.is_dir():
        cls = diffusers_class(path)
        if cls in _FROM_DIFFUSERS:
            return _FROM_DIFFUSERS[cls](path).to(device)
        if cls is not None:
            raise InputError(f"{path} holds a diffusers {cls}: {cls} is not supported; "
                             f"supported: {', '.join(AUTOENCODER_CLASSES)}")
        return _load_latentae_dir(path, device)
    if str(spec) in list_models():
        if not random_init:
            raise InputError(f"{spec!r} is a preset name, not saved weights: for a smoke "
                             "run with random weights pass --random-init (`diffusion "
                             "train`: --autoencoder-random-init; Python: random_init=True), "
                             "or give a model directory")
        return create_model(str(spec)).to(device)
    raise _not_a_model(spec)


def _not_a_model(spec: str | os.PathLike) -> InputError:
    path = Path(spec)
    if path.exists():
        return InputError(f"{path} is a file, not a model directory")
    if isinstance(spec, os.PathLike) or os.sep in str(spec):
        return InputError(f"{path} is not a directory: there is no saved model there")
    close = difflib.get_close_matches(str(spec), list_models(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return InputError(f"{str(spec)!r} is neither a model directory nor a preset name.{hint} "
                      f"Presets: {', '.join(list_models())}")


def _load_latentae_dir(path: Path, device: str | torch.device) -> Autoencoder:
    meta = read_config(path)
    family = meta["family"]
    if family not in FAMILIES:
        raise InputError(f"{path}: unknown model family {family!r}; valid: "
                         f"{sorted(FAMILIES)}")
    _check_family_fields(path, family, meta["config"])
    config = config_from_dict(FAMILIES[family][1], meta["config"], str(path / CONFIG_NAME),
                              written_by=meta.get("latentae_version"))
    sd = read_weights(path / WEIGHTS_NAME, device)
    with torch.device("meta"):  # config and weights must agree before memory is spent
        check_state_dict(build(family, config), sd, source=str(path / WEIGHTS_NAME))
    model = build(family, config, preset=meta.get("preset"))
    load_state_dict_strict(model, sd, source=str(path / WEIGHTS_NAME))
    return model.to(device)


def _check_family_fields(path: Path, family: str, values: Any) -> None:
    """A config whose fields are another family's is a mixed-up file, not a newer one."""
    if not isinstance(values, dict):
        raise InputError(f"{path / CONFIG_NAME}: 'config' is not a JSON object")
    if set(values) <= _fields(FAMILIES[family][1]):
        return
    for other, (_, cfg_cls) in FAMILIES.items():
        if other != family and set(values) <= _fields(cfg_cls):
            raise InputError(f"{path / CONFIG_NAME} says family {family!r} but its config "
                             f"fields are those of {other!r}: the file was edited or mixed "
                             f"up; set \"family\": \"{other}\" or save the model again")


def _fields(config_cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_cls)}


def save_pretrained(model: Autoencoder, path: str | os.PathLike, format: str = "latentae",
                    state_dict: dict[str, torch.Tensor] | None = None,
                    card: dict[str, Any] | None = None) -> None:
    """Write ``model`` into the folder ``path`` (created if missing; each file atomic).

    ``format="latentae"``: ``config.json`` + ``model.safetensors`` (``state_dict``, e.g.
    EMA weights, replaces the model's own); ``"diffusers"``: an ``AutoencoderKL`` (SD-VAE)
    or ``AutoencoderDC`` (DC-AE) directory that diffusers' ``from_pretrained`` loads.
    Both get the model card ``README.md``; ``card`` holds fields to keep besides the
    model's own (``source_card(src)`` keeps a converted model's training and evaluation).
    """
    if format not in FORMATS:
        raise InputError(f"unknown model format {format!r}; valid: {', '.join(FORMATS)}")
    if format == "latentae":
        write_model_dir(model, path, state_dict, card)
        return
    if state_dict is not None:
        raise InputError("state_dict is only taken for the latentae format")
    if model.family not in _TO_DIFFUSERS:
        raise InputError(f"{model.family} has no diffusers equivalent: diffusers loads "
                         "SD-VAE (AutoencoderKL) and DC-AE (AutoencoderDC) models only; "
                         "keep the latentae format")
    _TO_DIFFUSERS[model.family](model, path)
    write_card(path, card_fields(model, "diffusers", card))


def source_card(spec: str | os.PathLike) -> dict[str, Any] | None:
    """The model card of the model directory ``spec`` (``None``: a preset, or no card),
    to keep in a copy of the same weights (``save_pretrained(..., card=...)``)."""
    return read_card(spec)[0] if Path(spec).is_dir() else None


def convert_directory(src: str | os.PathLike, out: str | os.PathLike, to: str | None = None,
                      overwrite: bool = False) -> str:
    """Convert the model directory ``src`` into the other format (or ``to``) at ``out``,
    written whole or not at all (``latentae.files.atomic_dir``). Returns the format."""
    src = Path(src)
    if not src.is_dir():
        raise InputError(f"{src} is not a model directory")
    source_format = "diffusers" if diffusers_class(src) in AUTOENCODER_CLASSES else "latentae"
    target = to or ("latentae" if source_format == "diffusers" else "diffusers")
    if target not in FORMATS:
        raise InputError(f"unknown target format {target!r}; valid: {', '.join(FORMATS)}")
    if target == source_format:
        raise InputError(f"{src} is already a {source_format} model directory; to make a "
                         f"copy in the same format, copy the folder")
    prepare_output_dir(out, overwrite, inputs=[src])  # refuse before the slow part
    model = load(src)
    with atomic_dir(out, overwrite=overwrite, inputs=[src]) as tmp:
        save_pretrained(model, tmp, format=target, card=source_card(src))
    return target


def write_scaling_factors(model_dir: str | os.PathLike, scale: float, shift: float) -> None:
    """Write ``scaling_factor``/``shift_factor`` into ``config.json`` of a latentae or
    diffusers model directory (atomically; every other key is kept)."""
    cfg_file = Path(model_dir) / CONFIG_NAME
    if not cfg_file.is_file():
        raise InputError(f"{model_dir} has no {CONFIG_NAME}: the factors are written into "
                         "a saved model directory, not a preset")
    meta = read_json(cfg_file)
    if isinstance(meta, dict) and "_class_name" in meta:  # diffusers
        meta["scaling_factor"] = scale
        if "shift_factor" in meta or shift:
            meta["shift_factor"] = shift or None
    elif isinstance(meta, dict) and isinstance(meta.get("config"), dict):
        meta["config"]["scaling_factor"], meta["config"]["shift_factor"] = scale, shift
    else:
        raise InputError(f"{cfg_file} is neither a latentae nor a diffusers config")
    atomic_write_text(cfg_file, json.dumps(meta, indent=2) + "\n")
    card, why = read_card(model_dir)
    if card is not None:  # the card says what config.json says
        write_card(model_dir, {**card, "scaling_factor": scale, "shift_factor": shift})
    elif (Path(model_dir) / CARD_NAME).exists():  # the user's README: never rewritten
        print(f"note: {Path(model_dir) / CARD_NAME} is left as it is ({why}); the factors "
              f"are in {cfg_file}", file=sys.stderr)


def card_for_update(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The card of ``model_dir`` to add to (``None``: it has none yet); raises
    :class:`InputError` for a preset name or a ``README.md`` that is not a card."""
    path = Path(model_dir)
    if not path.is_dir():
        raise InputError(f"{model_dir} is not a model directory: only a saved model's "
                         "card can take the metrics")
    fields, why = read_card(path)
    if fields is None and (path / CARD_NAME).exists():
        raise InputError(f"{path / CARD_NAME} is not a latentae model card ({why}); move "
                         "it away to let latentae write one")
    return fields


def add_evaluation(model_dir: str | os.PathLike, model: Autoencoder,
                   entry: dict[str, Any]) -> Path:
    """Merge an evaluation ``entry`` ({data, protocol, metrics, ...}) into the model card
    of ``model_dir`` (``model`` is what was loaded from it), atomically; a folder without
    a card gets one. A ``README.md`` that is not a card is refused, not overwritten."""
    path, fields = Path(model_dir), card_for_update(model_dir)
    if fields is None:  # a folder from before cards: its writer is unknown
        fmt = "diffusers" if diffusers_class(path) in AUTOENCODER_CLASSES else "latentae"
        fields = {k: v for k, v in card_fields(model, fmt).items() if k != "command"}
    return write_card(path, with_evaluation(fields, entry))


def model_info(spec: str | os.PathLike, random_init: bool = False) -> dict[str, Any]:
    """What ``latentae info`` prints: where the model comes from, family, preset,
    parameter counts (``registry.parameter_counts``), compression and latent factors of
    the loaded model, then (:func:`card_and_provenance`) its model card's other fields
    (``card``: a dict, or a string saying why there is no card) and what else its files
    record (``provenance``), each fact once."""
    path = Path(spec)
    if path.is_dir():
        model = load(path)
        source = ("diffusers directory" if diffusers_class(path) in AUTOENCODER_CLASSES
                  else "latentae directory")
    elif str(spec) in list_models():
        with torch.device("meta"):  # the structure only: no memory, no weights
            model = create_model(str(spec))
        source = "preset (no weights)"
    else:
        model, source = load(spec, random_init=random_init), "?"
    counts = parameter_counts(model)
    facts = loaded_facts(model, source)
    if not path.is_dir():
        why = "a preset" if source.startswith("preset") else "not a folder"
        return facts | {"provenance": "none recorded", "card": f"no card ({why})"}
    known = {"family": model.family, "preset": model.preset, "parameters": counts,
             **model_facts(model)}
    return facts | card_and_provenance(path, known, model_dir_provenance(path))


def loaded_facts(model: Autoencoder, source: str) -> dict[str, Any]:
    """The first lines of ``latentae info``: what the loaded model itself says."""
    counts = parameter_counts(model)
    return {"source": source, "family": model.family, "preset": model.preset,
            "encoder_params": counts["encoder"], "decoder_params": counts["decoder"],
            "total_params": counts["total"],
            "spatial_compression_ratio": model.spatial_compression_ratio,
            "latent_channels": model.latent_channels,
            "scaling_factor": model.scaling_factor, "shift_factor": model.shift_factor}


def card_and_provenance(path: Path, known: dict[str, Any], provenance: dict[str, Any]
                        ) -> dict[str, Any]:
    """``{"provenance", "card"}`` of the model folder ``path`` for ``latentae info``,
    each fact once: ``known`` holds the loaded model's facts under their card names
    (``family``, ``parameters``, ...), which neither section repeats; the card's fields
    come next (a field that disagrees with the model is kept, so it shows), and of
    ``provenance`` (:func:`model_dir_provenance`) only what the card does not say."""
    fields, why = read_card(path)
    card: dict[str, Any] | str = (unrepeated(fields, known) if fields is not None
                                  else f"no card ({why})")
    rest = {k: v for k, v in provenance.items() if not _said(k, v, known, fields or {})}
    return {"provenance": rest or ("in the card" if fields else "none recorded"),
            "card": card}


def _said(key: str, value: Any, known: dict[str, Any], card: dict[str, Any]) -> bool:
    """Whether the provenance entry ``key`` repeats a model fact or the card: the
    weights' ``family`` (and ``format`` "pt", which every save writes), the writer's
    version, and the training settings of a run the card records (``steps``: its
    recipe, data and command say them; ``training_config`` still points at them all)."""
    name = key.split(".", 1)[-1]
    if name in known and known[name] == value:
        return True
    if key == "weights.format":
        return value == "pt" and bool(card)
    if key == "latentae_version":
        return card.get(key) == value
    return key.startswith(("train.", "recipe.", "run.")) and card.get("steps") is not None


def model_dir_provenance(path: Path) -> dict[str, Any]:
    """What the directory's files say about where the model comes from: the writer's
    version (``config.json``), the weights' safetensors metadata, and the training run
    (``latentae train`` exports to ``RUN/model`` beside ``RUN/config.yaml``)."""
    meta = read_json(path / CONFIG_NAME)
    if "_class_name" in meta:
        return {"diffusers_class": meta["_class_name"],
                "diffusers_version": meta.get("_diffusers_version")}
    out: dict[str, Any] = {"latentae_version": meta.get("latentae_version")}
    try:
        with safe_open(str(path / WEIGHTS_NAME), framework="pt") as f:
            out.update({f"weights.{k}": v for k, v in (f.metadata() or {}).items()})
    except (SafetensorError, OSError):
        pass  # the caller's load() already proved the file readable
    return out | _training_provenance(path.parent / "config.yaml")


def _training_provenance(cfg: Path) -> dict[str, Any]:
    """The scalar settings of ``config.yaml``'s ``train`` section and the recipe's name
    and phase count (what ``train.config.dump_yaml`` writes)."""
    if not cfg.is_file():
        return {}
    try:
        data = yaml.safe_load(cfg.read_text())
    except (OSError, yaml.YAMLError):
        return {"training_config": f"{cfg} (unreadable)"}
    out: dict[str, Any] = {"training_config": str(cfg)}
    train = data.get("train") if isinstance(data, dict) else None
    if isinstance(train, dict):
        out.update({f"train.{k}": v for k, v in train.items()
                    if isinstance(v, (str, int, float, bool))})
    recipe = data.get("recipe") if isinstance(data, dict) else None
    if isinstance(recipe, dict):
        if isinstance(recipe.get("name"), str):
            out["recipe.name"] = recipe["name"]
        if isinstance(recipe.get("phases"), list):
            out["recipe.phases"] = len(recipe["phases"])
    return out

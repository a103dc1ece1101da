"""A run's discriminator as a folder, so GAN fine-tuning can continue in a later run.

Public VAE releases ship without their discriminator; a fine-tune therefore starts with
a fresh one (the recipes warm it up first). The export writes ours beside the model::

    OUT/model/discriminator/config.json        {"kind": "patchgan", "channels": 64, ...}
    OUT/model/discriminator/model.safetensors  its weights

and ``latentae train --discriminator OUT/model/discriminator`` starts a new run's
discriminator from it (kind and width must be the recipe's). A resumed run
(``--resume auto``) needs neither: its checkpoints hold the discriminator.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from latentae.errors import InputError
from latentae.files import atomic_path, atomic_write_text
from latentae.serialization import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_state_dict_strict,
    read_json,
    read_weights,
)
from latentae.train.recipes import Recipe
from latentae.version import __version__

__all__ = ["load_discriminator", "save_discriminator"]


def save_discriminator(disc: nn.Module, recipe: Recipe, path: str | Path) -> Path:
    """Write ``disc`` (built from ``recipe.discriminator`` / ``discriminator_channels``)
    into the folder ``path``, each file atomically. Returns ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in disc.state_dict().items()}
    with atomic_path(path / WEIGHTS_NAME) as tmp:
        save_file(sd, str(tmp), metadata={"format": "pt", "kind": recipe.discriminator})
    config = {"kind": recipe.discriminator, "channels": recipe.discriminator_channels,
              "recipe": recipe.name, "latentae_version": __version__}
    atomic_write_text(path / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return path


def load_discriminator(disc: nn.Module, recipe: Recipe, path: str | Path) -> None:
    """Load the weights saved by :func:`save_discriminator` into ``disc``; the saved kind
    and width must be the recipe's (else an :class:`InputError` saying which ``--set``)."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise InputError(f"{path} has no {CONFIG_NAME}: pass the discriminator folder an "
                         "earlier run exported (OUT/model/discriminator)")
    saved = read_json(path / CONFIG_NAME)
    want = {"kind": recipe.discriminator, "channels": recipe.discriminator_channels}
    have = {k: saved.get(k) for k in want} if isinstance(saved, dict) else {}
    if have != want:
        raise InputError(f"{path} holds a {have.get('kind')} discriminator of width "
                         f"{have.get('channels')}, the recipe builds {want['kind']} of width "
                         f"{want['channels']}: add --set discriminator={have.get('kind')} "
                         f"--set discriminator_channels={have.get('channels')}")
    load_state_dict_strict(disc, read_weights(path / WEIGHTS_NAME),
                           source=str(path / WEIGHTS_NAME))

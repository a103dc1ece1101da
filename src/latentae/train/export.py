"""An autoencoder from a run's training state: the EMA weights of a checkpoint, in the
architecture the run's ``config.yaml`` names (``latentae.load RUN`` / ``export RUN``
of a run that stopped before its end, see :mod:`latentae.loader`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latentae.errors import InputError
from latentae.models.autoencoder import Autoencoder
from latentae.pretrained import load
from latentae.serialization import load_state_dict_strict


def model_from_state(config: dict[str, Any], saved: dict[str, Any],
                     device: str | torch.device = "cpu") -> Autoencoder:
    """The EMA autoencoder of ``saved`` (an ``engine.state.read_state`` dict) of the run
    whose ``config.yaml`` is ``config`` (its ``train.model``: a preset or the folder it
    started from gives the architecture, the checkpoint the weights)."""
    spec = str(config.get("train", {}).get("model", ""))
    try:
        with torch.random.fork_rng(devices=[]):  # a preset's throw-away random weights
            model = load(spec, device, random_init=True)
    except InputError as e:
        raise InputError(f"the run in {Path(saved['path']).parent.parent} started from "
                         f"--model {spec}, which cannot be loaded ({e})") from e
    load_state_dict_strict(model, saved["ema"]["model"], source=saved["path"])
    return model

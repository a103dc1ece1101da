"""The one public loader, ``latentae.load``: whatever a user holds, as a model ready to use.

- a saved autoencoder (latentae or diffusers directory; a preset with ``random_init``):
  :func:`latentae.pretrained.load`;
- a saved diffusion model (DiT / U-ViT folder): :func:`latentae.diffusion.registry.load`;
- a training run folder (``RUN/config.yaml`` + ``RUN/checkpoints/``), autoencoder or
  diffusion: the EMA weights of its newest readable checkpoint, so a run that paused
  (``--max-steps``, ``--max-minutes``, Ctrl-C) has a model to use; a run without any
  checkpoint but with an exported ``RUN/model``: that model;
- one checkpoint file ``RUN/checkpoints/state-*.pt``: its EMA weights.

Every model comes back in **eval mode with** ``requires_grad`` **off**, as diffusers'
``from_pretrained`` returns it, and on the fast path (:func:`latentae.runtime.fast_path`:
on CPU an autoencoder's weights are channels_last and the allocator keeps freed blocks).
It sits above both tasks (``train/`` and ``diffusion/``
each know how their run's ``config.yaml`` names the architecture).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from latentae.cards import read_card
from latentae.diffusion import registry as diffusion_registry
from latentae.diffusion.train import model_from_state as diffusion_from_state
from latentae.engine.state import NAME, load_latest, read_state
from latentae.errors import InputError
from latentae.pretrained import load as load_autoencoder
from latentae.pretrained import loaded_facts
from latentae.runtime import fast_path
from latentae.train.export import model_from_state as autoencoder_from_state

KINDS = ("autoencoder", "diffusion")


@dataclass(frozen=True)
class RunSource:
    """A run folder (or one checkpoint of it) that ``spec`` names."""

    folder: Path
    kind: str  # "autoencoder" | "diffusion"
    config: dict[str, Any]
    checkpoint: Path | None  # a checkpoint file named explicitly; None: the newest


def find_run(spec: str | os.PathLike) -> RunSource | None:
    """The run that ``spec`` names (its folder, or a ``state-*.pt`` file in its
    ``checkpoints/``), or ``None`` when ``spec`` is no run."""
    path = Path(spec)
    checkpoint = None
    if path.is_file() and NAME.fullmatch(path.name):
        checkpoint, path = path, path.parent.parent
    config = path / "config.yaml"
    if not (config.is_file() and ((path / "checkpoints").is_dir() or checkpoint)):
        if checkpoint is not None:
            raise InputError(f"{checkpoint} is a checkpoint, but {config} is missing: the "
                             "run folder that says its architecture is needed")
        return None
    try:
        doc = yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"cannot read {config}: {e}") from e
    kind = "diffusion" if "diffusion" in doc else "autoencoder" if "train" in doc else None
    if kind is None or not isinstance(doc, dict):
        raise InputError(f"{config} is not a latentae run's config (no train/diffusion key)")
    return RunSource(path, kind, doc, checkpoint)


def _from_run(run: RunSource, device: str | torch.device) -> nn.Module:
    if run.checkpoint is not None:
        saved = read_state(run.checkpoint, device)
    else:
        saved = load_latest(run.folder / "checkpoints", device)
    if saved is None:
        if (run.folder / "model").is_dir():
            return load(run.folder / "model", device)
        raise InputError(f"{run.folder} holds no checkpoint yet (and no exported model/): "
                         "train it for at least one checkpoint interval")
    if run.kind == "diffusion":
        return diffusion_from_state(run.config, saved, device)
    return autoencoder_from_state(run.config, saved, device)


def run_info(run: RunSource) -> dict[str, Any]:
    """What ``latentae info`` prints for a run folder or checkpoint (autoencoder, or a
    diffusion run that has not exported yet): the model its EMA weights make, and where
    they come from."""
    saved = (read_state(run.checkpoint) if run.checkpoint is not None
             else load_latest(run.folder / "checkpoints"))
    if saved is None:
        raise InputError(f"{run.folder} holds no checkpoint yet")
    state = saved.get("state", {})
    source = (f"{run.kind} run folder {run.folder} (EMA weights of checkpoint "
              f"{Path(saved['path']).name})")
    if run.kind == "diffusion":
        model = diffusion_from_state(run.config, saved)
        facts = {"source": source, "family": model.family, "preset": model.preset,
                 "parameters": model.parameter_counts(), "tokens": model.tokens}
    else:
        facts = loaded_facts(autoencoder_from_state(run.config, saved), source)
    return facts | {
        "provenance": {"training_config": str(run.folder / "config.yaml"),
                       "checkpoint": saved["path"], "images_seen": state.get("nimg"),
                       "phase": state.get("phase"), "recipe": _recipe_name(run.config),
                       "started_from": run.config["train"].get("model")},
        "card": "no card (a run's checkpoint; `latentae export RUN OUT` writes one)"}


def _recipe_name(config: dict[str, Any]) -> Any:
    recipe = config.get("recipe")
    return recipe.get("name") if isinstance(recipe, dict) else config["train"].get("recipe")


def onnx_info(path: Path) -> dict[str, Any]:
    """What ``latentae info`` prints for an ONNX export folder (``export --format onnx``):
    its graphs and what its model card says (the weights are not loaded)."""
    graphs = {p.name: f"{p.stat().st_size / 2**20:.1f} MiB" for p in
              sorted(path.glob("*.onnx"))}
    fields, why = read_card(path)
    return {"source": f"ONNX export folder {path}", "graphs": graphs,
            "card": fields if fields is not None else f"no card ({why})"}


def is_onnx_folder(path: Path) -> bool:
    return path.is_dir() and (path / "encoder.onnx").is_file()


def is_diffusion_folder(path: Path) -> bool:
    """``path`` holds a saved DiT / U-ViT (its ``config.json`` names such a family)."""
    try:
        meta = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("family") in diffusion_registry.FAMILIES


def kind_of(spec: str | os.PathLike) -> str:
    """``"diffusion"`` or ``"autoencoder"``: what :func:`load` of ``spec`` returns."""
    run = find_run(spec)
    if run is not None:
        return run.kind
    return "diffusion" if is_diffusion_folder(Path(spec)) else "autoencoder"


def load(spec: str | os.PathLike, device: str | torch.device = "cpu", *,
         random_init: bool = False, kind: str | None = None) -> nn.Module:
    """The model ``spec`` names (see the module docstring), on ``device``, in eval mode
    with ``requires_grad`` off. ``kind`` (``"autoencoder"`` / ``"diffusion"``) refuses
    the other kind with a one-line error (a command that needs one)."""
    found = kind_of(spec)
    if kind is not None and found != kind:
        raise InputError(f"{spec} holds a {found} model; this needs an {kind}" if
                         kind == "autoencoder" else
                         f"{spec} holds a {found} model; this needs a {kind} model")
    run = find_run(spec)
    if run is not None:
        model = _from_run(run, device)
    elif found == "diffusion":
        model = diffusion_registry.load(spec, device)
    else:
        model = load_autoencoder(spec, device, random_init=random_init)
    return fast_path(model.eval().requires_grad_(False), device)


__all__ = ["KINDS", "RunSource", "find_run", "is_onnx_folder", "kind_of", "load", "onnx_info",
           "run_info"]

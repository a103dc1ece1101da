"""The model card of a diffusion model (``latentae.cards``) and ``latentae info`` of one.

A run's export (``RUN/model``) adds to the model's own fields (family, preset, patch,
tokens, latent grid, classes: ``cards.model_facts``) how it was trained
(:func:`run_card`): the objective, the autoencoder whose latents it learned (as given,
resolved, its preset and ``scaling_factor``/``shift_factor``), the latent normalisation,
the recipe, optimizer steps and images, the global batch, the fingerprint of ``--data``
(:func:`training_data_fingerprint`) and the recipe's sampling defaults.
:func:`diffusion_info` is what ``latentae info`` prints for a diffusion model folder or
run, each fact once (``pretrained.card_and_provenance``). ``latentae diffusion eval
SAMPLES --update-card`` merges the generation metrics into the card of the run that drew
SAMPLES (:func:`samples_model_folder`, :func:`generation_entry`, :func:`add_generation`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from latentae.cards import (
    card_fields,
    command_line,
    data_fingerprint,
    files_fingerprint,
    model_facts,
    with_evaluation,
    write_card,
)
from latentae.diffusion.data import CachedLatents, TrainingData
from latentae.diffusion.generate import SETTINGS_FILE, model_fingerprint
from latentae.diffusion.pipeline import RUN_FILE, RunInfo, model_folder
from latentae.diffusion.registry import FAMILIES, load
from latentae.engine.data import sources_fingerprint
from latentae.errors import InputError
from latentae.io import list_images
from latentae.latents import encoder_fingerprint
from latentae.pretrained import card_and_provenance, card_for_update, model_dir_provenance
from latentae.serialization import CONFIG_NAME, read_json
from latentae.version import __version__

__all__ = ["CACHED_KIND", "add_generation", "diffusion_folder", "diffusion_info",
           "generation_entry", "run_card", "samples_model_folder", "training_data_fingerprint"]

CACHED_KIND = "latents in shards (names: the paths of the images they were encoded from)"


def training_data_fingerprint(spec: str | os.PathLike, data: TrainingData) -> dict[str, Any]:
    """The fingerprint of ``--data``: its image files (or tar members), or for cached
    latents the image paths their shards hold, which are the names the image folder's
    own fingerprint hashes (the same images give the same sha256 either way)."""
    ds = data.dataset
    if isinstance(ds, CachedLatents):
        return data_fingerprint(spec, (key for _, key in ds.entries), CACHED_KIND)
    return sources_fingerprint(spec, ds.sources)


def run_card(info: RunInfo, autoencoder: nn.Module, *, recipe: str, steps: int,
             batch_size: int, data: dict[str, Any]) -> dict[str, Any]:
    """The card fields of a diffusion run: ``steps`` optimizer steps of the global batch
    ``batch_size`` (``nimg`` = their product), ``data`` from
    :func:`training_data_fingerprint`."""
    ae = {"model": info.autoencoder, "path": info.autoencoder_path or None,
          "random_init": info.autoencoder_random_init or None,
          "family": autoencoder.family, "preset": autoencoder.preset,
          "scaling_factor": float(autoencoder.scaling_factor),
          "shift_factor": float(autoencoder.shift_factor or 0.0),
          "encoder_sha256": encoder_fingerprint(autoencoder)}  # sample checks it
    return {"objective": info.objective,
            "autoencoder": {k: v for k, v in ae.items() if v is not None},
            "resolution": info.resolution, "latent_norm": _norm(info),
            "recipe": recipe, "steps": steps, "nimg": steps * batch_size,
            "batch_size": batch_size, "data": data,
            "sampling": {"sampler": info.sampler, "steps": info.sample_steps,
                         "guidance": info.guidance}}


def _norm(info: RunInfo) -> dict[str, Any]:
    """The latent normalisation; ``model``'s values are the autoencoder's factors."""
    norm = info.latent_norm.to_dict()
    return {"kind": norm["kind"]} if norm["kind"] == "model" else norm


def diffusion_folder(spec: str | os.PathLike) -> Path | None:
    """The diffusion model folder ``spec`` names (itself, or a run's ``RUN/model``), or
    ``None`` when it holds no diffusion model (an autoencoder, a preset name)."""
    for folder in (Path(spec), Path(spec) / "model"):
        cfg = folder / CONFIG_NAME
        if cfg.is_file():
            try:
                meta = read_json(cfg)
            except InputError:
                return None
            return folder if isinstance(meta, dict) and meta.get("family") in FAMILIES \
                else None
    return None


def diffusion_info(spec: str | os.PathLike) -> dict[str, Any]:
    """What ``latentae info`` prints for the diffusion model folder or run ``spec``: the
    loaded model's facts, then its card and the provenance its files record, each fact
    once (the card's copies of the facts, and provenance the card holds, left out)."""
    folder = diffusion_folder(spec)
    if folder is None:
        raise InputError(f"{spec} holds no diffusion model (config.json of a dit or uvit)")
    model = load(folder)
    known = {"family": model.family, "preset": model.preset,
             "parameters": model.parameter_counts(), **model_facts(model)}
    run = folder / RUN_FILE
    facts = {"source": "diffusion run export" if run.is_file() else "diffusion model directory",
             "family": model.family, "preset": model.preset,
             "total_params": known["parameters"]["total"],
             **{k: v for k, v in known.items() if k not in ("family", "preset", "parameters")}}
    provenance = model_dir_provenance(folder)
    if run.is_file():
        record = dataclasses.asdict(RunInfo.read(run))
        provenance |= {f"run.{k}": v for k, v in record.items()
                       if isinstance(v, (str, int, float, bool))}
    return facts | card_and_provenance(folder, known, provenance)


# --- generation metrics into the card -------------------------------------------------
def samples_model_folder(samples: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """``(model folder, sampling settings)`` of the run that drew ``samples`` (the
    ``--out`` folder of ``latentae diffusion sample``, or its ``samples.npz``), read from
    its ``sampling.json``; the card there must be one latentae may rewrite."""
    folder = Path(samples) if Path(samples).is_dir() else Path(samples).parent
    path = folder / SETTINGS_FILE
    try:
        settings = json.loads(path.read_text())
        run = settings["run"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"--update-card needs the {SETTINGS_FILE} that `latentae diffusion "
                         f"sample` writes beside the samples, to know their run: {path} "
                         f"({type(e).__name__})") from e
    target = model_folder(run)
    card_for_update(target)  # a README.md that is not a card is refused before work
    drew = settings.get("model_sha256")
    if drew is None:
        raise InputError(f"{path} records no fingerprint of the model that drew the samples "
                         "(they come from an older latentae): draw them again with `latentae "
                         "diffusion sample` to put their metrics into a card")
    if drew != model_fingerprint(target):
        raise InputError(f"the samples were not drawn by the model in {target}: {path} "
                         f"names that run, but its weights sha256 is "
                         f"{model_fingerprint(target)[:12]}, not {str(drew)[:12]} (the run "
                         "was trained further, or sampling.json was edited): draw the "
                         "samples again from the run whose card should take the metrics")
    return target, settings


def generation_entry(ref: str | os.PathLike, result: dict[str, Any],
                     settings: dict[str, Any]) -> dict[str, Any]:
    """The card's evaluation entry of an ``evaluate_samples`` ``result``: the reference's
    fingerprint (a folder: its images by :data:`~latentae.cards.FINGERPRINT_RULE`; a
    statistics file: the sha256 of its bytes), a one-line protocol with the sampling
    settings, the metrics, the notes and the command."""
    ref = Path(ref)
    if ref.is_dir():
        data = files_fingerprint(ref, list_images(ref), "real image files (paths relative "
                                                        "to spec)")
    else:
        data = {"spec": str(ref), "kind": "reference statistics file (sha256 of its bytes)",
                "count": result["n_ref"], "sha256": hashlib.sha256(ref.read_bytes()).hexdigest()}
    proto, c = result["protocol"], result["config"]
    line = (f"{result['n']} samples ({settings.get('sampler')}, {settings.get('steps')} "
            f"steps, guidance {settings.get('guidance')}, seed {settings.get('seed')}) vs "
            f"{result['n_ref']} real images; FID protocol {proto['fid_protocol']}, "
            f"{proto['network']}; IS {c['is_splits']} splits, precision/recall k="
            f"{c['pr_k']}, KID {c['kid_subsets']} subsets of <= {c['kid_subset_size']} "
            f"(seed {c['seed']}); all of it in `diffusion eval --json`")
    keys = ("gfid", "sfid", "inception_score", "inception_score_std", "precision", "recall",
            "kid", "kid_std")
    entry = {"data": data, "protocol": line,
             "metrics": {k: result[k] for k in keys if result.get(k) is not None}}
    if result.get("notes"):
        entry["notes"] = list(result["notes"])
    return entry | {"command": command_line(), "latentae_version": __version__}


def add_generation(folder: Path, entry: dict[str, Any]) -> Path:
    """Merge ``entry`` into the card of the diffusion model ``folder`` (atomically; a
    folder from before cards gets one, its writer unknown)."""
    fields = card_for_update(folder)
    if fields is None:
        fields = {k: v for k, v in card_fields(load(folder)).items() if k != "command"}
    return write_card(folder, with_evaluation(fields, entry))

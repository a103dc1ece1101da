"""What a finished training run writes into its model card (``latentae.cards``): the
recipe and its phases, steps and images, the data fingerprint, the final validation and
the model it started from. Written by ``AutoencoderTask.export`` (rank 0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentae.cards import data_fingerprint, files_fingerprint
from latentae.engine.data import Source, sources_fingerprint
from latentae.engine.loop import images
from latentae.engine.monitor import read_metrics
from latentae.train.config import TrainConfig
from latentae.train.diffusability import last_values
from latentae.train.recipes import Recipe
from latentae.train.validation import first_images

__all__ = ["training_card", "training_data_fingerprint"]

STREAM_KIND = "webdataset shard URLs (a stream: its shards are fingerprinted, not its images)"


def training_data_fingerprint(cfg: TrainConfig, sources: list[Source] | None,
                              urls: list[str] | None) -> dict[str, Any]:
    """The fingerprint of ``--data``: its image files or shard members (``sources``), or
    for a webdataset stream the list of its shard URLs (``urls``)."""
    if sources is None:
        return data_fingerprint(cfg.data, urls or [], STREAM_KIND)
    return sources_fingerprint(cfg.data, sources)


def training_card(cfg: TrainConfig, recipe: Recipe, run: Path, data: dict[str, Any]
                  ) -> dict[str, Any]:
    """The card fields of the run in ``run`` that trained every phase of ``recipe``
    (``steps``: optimizer steps; ``nimg``: images over all processes, as the loop counts
    them); ``data`` is :func:`training_data_fingerprint`."""
    phases = [{"name": p.name, "steps": p.steps, "batch_size": p.batch_size,
               "resolution": p.resolution, "train_groups": list(p.train_groups),
               "discriminator": p.discriminator_on} for p in recipe.phases]
    return {"base_model": cfg.model if Path(cfg.model).is_dir() else None,
            "recipe": recipe.name, "recipe_overrides": dict(cfg.recipe_overrides) or None,
            "phases": phases, "steps": sum(p.steps for p in recipe.phases),
            "nimg": sum(images(p.steps, p) for p in recipe.phases), "data": data,
            "validation": final_validation(cfg, run),
            "diffusability": last_diffusability(run)}


def last_diffusability(run: Path) -> dict[str, Any] | None:
    """The last diffusability diagnostics and generation probe of the run, if logged."""
    if not (run / "metrics.jsonl").is_file():
        return None
    return last_values(read_metrics(run))


def final_validation(cfg: TrainConfig, run: Path) -> dict[str, Any] | None:
    """The last validation record of ``run/metrics.jsonl`` (the end-of-run one) with
    the fingerprint of the held-out images, or ``None`` without validation."""
    if not cfg.val_data or not (run / "metrics.jsonl").is_file():
        return None
    records = [r for r in read_metrics(run) if any(k.startswith("val_") for k in r)]
    if not records:
        return None
    last = records[-1]
    return {"nimg": last.get("nimg"),
            "data": files_fingerprint(cfg.val_data, first_images(cfg.val_data,
                                                                 cfg.val_images)),
            "metrics": {k[len("val_"):]: v for k, v in last.items() if k.startswith("val_")}}

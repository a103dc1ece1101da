"""``latentae eval MODEL --data D --diffusion-proxy STEPS``: a small DiT trained for STEPS
on the evaluation set's latents, its samples decoded by the autoencoder and measured
(gFID, KID, precision/recall) against the same images: "is this latent space good for
diffusion?" at a cost the user chooses.

Nothing here is a second training loop or sampler: the latents of ``latentae eval``'s one
pass (``eval.reconstruction.KeptData``: posterior modes, not encoded again) are written as
latent shards (``latentae.latents``) and trained on as cached data by ``diffusion.train``
(the generic loop), sampled by ``diffusion.generate.sample_folder`` and measured by
``eval.generation.evaluate_samples`` against the Inception features the pass computed
for rFID. Unconditional (the images have no classes), DDPM objective with learned sigma
and the DiT recipe's AdamW (lr 1e-4, no warm-up, the loop's EMA ramp); DiT-S with the
patch whose token count ``(h/p)²`` is nearest 256 (in log ratio; the smaller patch on a
tie). The latents are standardised per channel on the evaluation set by default, so the
proxy measures the latent space and not whether the model's ``scaling_factor`` is set.

Kept in ``OUT/diffusion_proxy/``: ``config.yaml`` and ``metrics.jsonl`` of the run,
``curve.png`` (the learning curve, ``latentae plot``'s drawing) and ``samples.png``; the
latent shards, checkpoints, exported DiT and sample PNGs are deleted (they are large).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from latentae.diffusion.base import count_params
from latentae.diffusion.config import DiffusionConfig, make_diffusion_config
from latentae.diffusion.generate import sample_folder
from latentae.diffusion.registry import create_diffusion, get_preset
from latentae.diffusion.samplers import SAMPLERS
from latentae.diffusion.train import train
from latentae.engine.monitor import read_metrics
from latentae.engine.plot import plot_run
from latentae.errors import InputError, TrainingStopped
from latentae.eval.generation import GenerationConfig, evaluate_samples
from latentae.eval.generation_data import ReferenceStats
from latentae.eval.inception import VERSION as INCEPTION_VERSION
from latentae.eval.reconstruction import KeptData
from latentae.io import image_grid, save_image
from latentae.latents import shard_metadata, write_shard

TARGET_TOKENS = 256
FOLDER = "diffusion_proxy"
SHARD_SIZE = 1024  # latents per shard file
CAVEAT = ("The proxy's gFID/KID after a short run rank latent spaces only relative to each "
          "other, at equal settings (steps, batch, model, patch or tokens, sampler, number of "
          "images); they are not comparable with published generation numbers.")


@dataclasses.dataclass(frozen=True)
class ProxySettings:
    """What ``--diffusion-proxy`` and its ``--proxy-*`` flags set."""

    steps: int
    model: str = "dit-s"           # diffusion preset (tests: dit-tiny)
    patch: int | None = None       # None: tokens nearest TARGET_TOKENS
    batch_size: int = 64
    samples: int | None = None     # None: as many as evaluated images
    sampler: str = "dpm++2m"
    sampling_steps: int = 50
    latent_norm: str = "channel"   # "channel" (measured on the eval set) | "model"
    lr: float = 1e-4               # the DiT recipe's
    seed: int = 0
    fid_protocol: str = "tf1"
    progress: bool = True


def proxy_patch(latent_size: int, target: int = TARGET_TOKENS) -> int:
    """The patch ``p`` dividing ``latent_size`` whose ``(latent_size/p)²`` tokens are
    nearest ``target`` in log ratio (the smaller patch, more tokens, on a tie)."""
    if latent_size < 1:
        raise InputError(f"latent size must be positive, got {latent_size}")
    patches = [p for p in range(1, latent_size + 1) if latent_size % p == 0]
    return min(patches, key=lambda p: (abs(math.log((latent_size // p) ** 2 / target)), p))


def check_settings(s: ProxySettings) -> None:
    """Refuse bad values before the evaluation pass starts."""
    get_preset(s.model)
    if s.model.split("-")[0] != "dit":
        raise InputError(f"--proxy-model {s.model!r}: the proxy trains a DiT (dit-s, "
                         "dit-b, …, dit-tiny)")
    for name in ("steps", "batch_size", "sampling_steps"):
        if getattr(s, name) < 1:
            raise InputError(f"{name} must be at least 1, got {getattr(s, name)}")
    if s.samples is not None and s.samples < 2:
        raise InputError(f"--proxy-samples must be at least 2 (KID), got {s.samples}")
    if s.sampler not in SAMPLERS["ddpm"]:
        raise InputError(f"--proxy-sampler {s.sampler!r}: choose one of "
                         f"{', '.join(SAMPLERS['ddpm'])}")


def write_latent_shards(latents: torch.Tensor, autoencoder: nn.Module, name: str,
                        folder: Path) -> Path:
    """Raw latents ``(N, C, h, w)`` as unconditional latent shards in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = shard_metadata(autoencoder, name, scaling_applied=False, posterior="mode")
    side = latents.shape[-1] * autoencoder.spatial_compression_ratio
    for k, start in enumerate(range(0, len(latents), SHARD_SIZE)):
        part = {f"{i:08d}": latents[i] for i in range(start, min(start + SHARD_SIZE,
                                                                   len(latents)))}
        write_shard(folder / f"proxy-{k:05d}.safetensors", part,
                    {key: (side, side) for key in part}, meta)
    return folder


def proxy_config(s: ProxySettings, spec: str, random_init: bool, data: Path, run: Path,
                 shape: tuple[int, ...], f: int, n: int, device: torch.device,
                 **overrides) -> DiffusionConfig:
    """The run's config: cached unconditional latents, the DiT recipe with these steps
    and batch, a log record every 1/50 of the run, no periodic checkpoints or grids;
    ``overrides`` (config fields) win (the diffusion studies resume instead of
    overwriting, and set the U-ViT recipe's values)."""
    steps = s.steps
    return make_diffusion_config(dict(
        autoencoder=spec, autoencoder_random_init=random_init, data=str(data), cached=True,
        out=str(run), model=s.model, patch_size=s.patch or proxy_patch(shape[-1]),
        resolution=shape[-1] * f, steps=steps, batch_size=s.batch_size, lr=s.lr,
        warmup_steps=0, grad_clip=1.0, latent_norm=s.latent_norm, norm_images=n,
        log_every=max(1, steps // 50), val_every=0, ckpt_every=0, keep_checkpoints=1,
        grid_images=min(8, s.samples or n), grid_steps=min(25, s.sampling_steps),
        device=str(device), seed=s.seed, overwrite=True, progress=s.progress), overrides)


def train_and_sample(latents: torch.Tensor, autoencoder: nn.Module, spec: str,
                     random_init: bool, work: Path, settings: ProxySettings,
                     device: torch.device, **overrides) -> tuple[DiffusionConfig, Path, dict]:
    """Latents ``(N, C, h, w)`` (raw, square) as shards in ``work/latents``, a diffusion
    run on them in ``work/run``, ``settings.samples`` (default N) samples decoded by
    ``autoencoder`` in ``work/samples``. Returns the config, the samples' npz and the
    seconds of training and sampling. ``overrides``: see :func:`proxy_config`."""
    n, f = len(latents), autoencoder.spatial_compression_ratio
    if latents.shape[-1] != latents.shape[-2]:
        raise InputError("the diffusion proxy needs square latents (square --resolution)")
    t0 = time.time()
    data = write_latent_shards(latents, autoencoder, spec, work / "latents")
    cfg = proxy_config(settings, spec, random_init, data, work / "run",
                       tuple(latents.shape[1:]), f, n, device, **overrides)
    if train(cfg, autoencoder) is None:  # SIGTERM or a limit: nothing to measure
        raise TrainingStopped(f"the diffusion run in {work / 'run'} stopped before step "
                              f"{cfg.steps}; run it again to continue")
    t1 = time.time()
    npz = sample_folder(work / "run", work / "samples", n=settings.samples or n,
                        guidance=1.0, sampler=settings.sampler,
                        steps=settings.sampling_steps, batch_size=settings.batch_size,
                        seed=settings.seed, device=str(device), progress=settings.progress,
                        autoencoder=autoencoder)
    return cfg, npz, {"train": t1 - t0, "sample": time.time() - t1}


def run_proxy(autoencoder: nn.Module, spec: str, random_init: bool, kept: KeptData,
              out: Path, settings: ProxySettings, device: torch.device) -> tuple[dict, list[str]]:
    """Train, sample, measure; the record for metrics.json and the report.md lines.
    ``spec``/``random_init``: how the autoencoder was named (recorded with the run)."""
    latents = torch.cat(kept.latents)                                  # (N, C, h, w)
    folder = out / FOLDER
    work = folder / "work"
    try:
        cfg, npz, seconds = train_and_sample(latents, autoencoder, spec, random_init, work,
                                             settings, device)
    except TrainingStopped:
        raise TrainingStopped(f"the diffusion proxy stopped before step {settings.steps}; "
                              "the evaluation wrote nothing (run it again)") from None
    t2 = time.time()
    side = latents.shape[-1] * autoencoder.spatial_compression_ratio
    metrics = _measure(npz, kept, side, settings, device)
    record = _record(cfg, settings, metrics, read_metrics(work / "run"),
                     tuple(latents.shape[1:]), seconds | {"metrics": time.time() - t2})
    _keep(work, folder, npz)
    return record, proxy_markdown(record)


def _measure(npz: Path, kept: KeptData, resolution: int, s: ProxySettings,
             device: torch.device) -> dict:
    """gFID/KID/PR of the samples against the pass's own real Inception features."""
    features = torch.cat(kept.features)
    ref = ReferenceStats(kept.real, features, s.fid_protocol, INCEPTION_VERSION, resolution,
                         "center", "the evaluated images (latentae eval's pass)")
    m = max(2, min(1000, len(features) // 2, (s.samples or len(features)) // 2))
    config = GenerationConfig(fid_protocol=s.fid_protocol, kid_subset_size=m, seed=s.seed)
    return evaluate_samples(npz, ref, device=device, batch_size=s.batch_size, config=config,
                            progress=s.progress)


def _record(cfg: DiffusionConfig, s: ProxySettings, metrics: dict, log: list[dict],
            shape: tuple[int, ...], seconds: dict[str, float]) -> dict:
    c, h, _ = shape
    with torch.device("meta"):  # the parameter count only
        params = count_params(create_diffusion(cfg.model, patch_size=cfg.patch_size,
                                               in_channels=c, input_size=h, num_classes=0))
    curve = [{"step": r["step"], "loss": r["loss"]} for r in log if "loss" in r]
    return {"model": cfg.model, "patch": cfg.patch_size, "tokens": (h // cfg.patch_size) ** 2,
            "patch_rule": (f"the patch nearest {TARGET_TOKENS} tokens" if s.patch is None
                           else "set by --proxy-patch"),
            "latent_shape": list(shape), "params": params, "steps": cfg.steps,
            "batch_size": cfg.batch_size, "lr": cfg.lr, "objective": cfg.objective,
            "learn_sigma": cfg.learn_sigma, "latent_norm": cfg.latent_norm,
            "ema_decay": cfg.ema_decay, "train_latents": cfg.norm_images,
            "sampler": s.sampler, "sampling_steps": s.sampling_steps,
            "metrics": {k: metrics[k] for k in (
                "gfid", "kid", "kid_std", "precision", "recall", "inception_score",
                "inception_score_std", "n", "n_ref")},
            "kid_subset_size": metrics["config"]["kid_subset_size"],
            "generation_protocol": metrics["protocol"], "notes": metrics["notes"],
            "curve": curve, "seconds": seconds, "caveat": CAVEAT}


def _keep(work: Path, folder: Path, npz: Path, grid: int = 16) -> None:
    """The small files into ``folder`` (config, log, curve, a grid of the first samples);
    the work folder deleted."""
    run = work / "run"
    for name in ("config.yaml", "metrics.jsonl"):
        shutil.copyfile(run / name, folder / name)
    plot_run(run, folder / "curve.png")
    with np.load(npz) as z:
        images = torch.from_numpy(z["arr_0"][:grid]).permute(0, 3, 1, 2)  # (k, 3, H, W)
    cells = [im.float() / 127.5 - 1 for im in images]
    save_image(image_grid([cells[i:i + 8] for i in range(0, len(cells), 8)]),
               folder / "samples.png")
    shutil.rmtree(work)


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def proxy_summary(r: dict) -> str:
    """The printed line of a proxy record."""
    m = r["metrics"]
    return (f"diffusion proxy ({r['model']}, patch {r['patch']}, {r['tokens']} tokens, "
            f"{r['steps']} steps): gFID {_fmt(m['gfid'], '.2f')}, KID "
            f"{_fmt(m['kid'], '.5f')} ± {_fmt(m['kid_std'], '.5f')} ({m['n']} samples vs "
            f"{m['n_ref']} images); ranks latent spaces at equal settings only")


def proxy_markdown(r: dict) -> list[str]:
    """The report.md section of a proxy record."""
    m, c = r["metrics"], r["curve"]
    pick = sorted({round(i * (len(c) - 1) / 9) for i in range(10)}) if c else []
    rows = [f"| {c[i]['step']} | {c[i]['loss']:.4f} |" for i in pick]
    return [
        "## Diffusion proxy", "",
        f"{r['model']} with patch {r['patch']} ({r['tokens']} tokens on the "
        f"{'×'.join(map(str, r['latent_shape']))} latents; {r['patch_rule']}), "
        f"{r['params']:,} parameters, unconditional, "
        f"{r['objective']} objective (learned sigma {r['learn_sigma']}), trained "
        f"{r['steps']} steps at batch {r['batch_size']}, AdamW lr {r['lr']:g}, EMA "
        f"{r['ema_decay']} (ramped), on the {r['train_latents']} evaluation latents "
        f"(posterior modes of this pass, latent norm: {r['latent_norm']}). Sampled "
        f"{m['n']} images ({r['sampler']}, {r['sampling_steps']} steps, no guidance), "
        f"decoded by the autoencoder, measured against the {m['n_ref']} evaluated images.",
        "", f"**{CAVEAT}**", "",
        "| gFID ↓ | KID ↓ | precision ↑ | recall ↑ |", "|---|---|---|---|",
        f"| {_fmt(m['gfid'], '.2f')} | {_fmt(m['kid'], '.5f')} ± "
        f"{_fmt(m['kid_std'], '.5f')} (subsets of {r['kid_subset_size']}) | "
        f"{_fmt(m['precision'], '.3f')} | {_fmt(m['recall'], '.3f')} |", "",
        f"![learning curve]({FOLDER}/curve.png) ![samples]({FOLDER}/samples.png)", "",
        "Learning curve (training loss, mean over each logging window):", "",
        "| step | loss |", "|---|---|", *rows, "",
        f"Seconds: train {r['seconds']['train']:.1f}, sample {r['seconds']['sample']:.1f}, "
        f"metrics {r['seconds']['metrics']:.1f}. Notes: " + "; ".join(r["notes"] or ["none"])
        + ".", ""]

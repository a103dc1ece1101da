"""The diffusion part of the two diffusion studies (``dcae_table1``: DC-AE table 1;
``litevae_table7``: LiteVAE table 7). The harness trains and tests each (arm, seed)
autoencoder as in every study (``runner.train_and_test``); then the study's
``generation_metrics`` hook (:func:`generation_metrics`) trains a diffusion model on that
autoencoder's latents, samples it and measures the samples against held-out crops:

- **Training data**: ``train_crops`` random native-scale crops of the 350 training
  images (the 50 held-out images never), in blocks of one crop of every training image
  at seeded positions (block k: seed ``seed_from(4, k)``; seeds 1–3 are the val, test
  and kodak crops), the same crops for every arm and seed. Encoded once by the run's
  autoencoder (posterior mode) and written as latent shards (``proxy.write_latent_shards``).
  Native-scale crops, as the test crops are: a resized image would be a different
  distribution from the one the samples are compared with.
- **Diffusion run** (``proxy.train_and_sample``: ``diffusion.train`` on the cached
  latents, then ``diffusion.generate.sample_folder``): the scale's preset with the patch
  that gives every arm the same tokens (``patch = stride / f``), unconditional, DDPM
  objective, the model family's recipe (DiT release: AdamW lr 1e-4, no warm-up, learned
  σ; U-ViT / DC-AE release: AdamW lr 2e-4, weight decay 0.03, betas (0.99, 0.99), ε only,
  the warm-up scaled to 1% of the steps as 5K of 500K), no gradient clipping (neither
  release clips), the loop's EMA (0.9999 ramped). Latents normalised per channel on the
  training latents, so the study measures the latent space and not whether a tiny
  model's ``scaling_factor`` is set. Seeded by the run's paired seed: the same
  initialisation (where the shapes agree) and data order for every arm of a seed index.
- **Samples**: ``samples`` images, DPM-Solver++(2M) with ``sampling_steps`` steps, no
  guidance, decoded by the autoencoder.
- **Measure** (``eval.generation.evaluate_samples``, the ``latentae diffusion eval``
  protocol): KID ×10³ (unbiased; 100 subsets of ``samples // 2``) against the first
  ``samples`` held-out test crops (``design.crop_set('test')``, the Inception statistics
  cached in ``OUT/data``), and gFID/precision/recall for context (gFID below 2,048
  images is biased upwards: never a decision). Keys ``gen_*``, apart from the
  reconstruction KID ``kid_x1e3`` of the runner.

Cached and resumable: ``OUT/ARM/sI/diffusion/result.json`` holds the result; an
interrupted run continues from its checkpoint (``resume='auto'``) and its samples from
the PNGs already drawn. The shards and PNGs are deleted once measured.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from latentae.diffusion.proxy import ProxySettings, train_and_sample
from latentae.diffusion.recipes import get_recipe
from latentae.diffusion.registry import get_preset
from latentae.engine.state import seed_from
from latentae.eval.generation import GenerationConfig, evaluate_samples, extract
from latentae.eval.generation_data import ReferenceStats, load_reference, save_reference
from latentae.eval.inception import VERSION as INCEPTION_VERSION
from latentae.eval.inception import load_inception
from latentae.files import atomic_write_text
from latentae.io import list_images
from latentae.pretrained import load
from latentae.studies import common, design

TRAIN_CROP_SEED = 4  # 1-3: the val, test and kodak crops (design.crop_set)


@dataclasses.dataclass(frozen=True)
class DiffusionScale(design.Scale):
    """A study scale with the diffusion run's sizes: ``diffusion_steps`` optimizer steps
    of ``diffusion_batch`` latents of ``train_crops`` training crops; ``samples`` images
    drawn with ``sampling_steps`` steps, compared with as many held-out test crops."""

    diffusion_model: str = "dit-tiny"
    diffusion_steps: int = 2
    diffusion_batch: int = 4
    train_crops: int = 8
    samples: int = 4
    sampling_steps: int = 2


def effective(scale: DiffusionScale) -> DiffusionScale:
    """``scale``, or under ``--dry-run`` one step, two samples, two sampler steps."""
    if not scale.dry_run:
        return scale
    return dataclasses.replace(scale, diffusion_steps=1, diffusion_batch=2, train_crops=2,
                               samples=2, sampling_steps=2)


@torch.no_grad()
def train_latents(model: torch.nn.Module, data: Path, n: int, size: int, device: str
                  ) -> torch.Tensor:
    """Posterior modes ``(n, C, h, w)`` of ``n`` native-scale ``size``² crops of the
    training images (module docstring: blocks of one crop per image)."""
    files = design.split_bsds(list_images(data))[0]
    model = model.to(device).eval()
    out, k = [], 0
    while sum(len(z) for z in out) < n:
        m = min(len(files), n - sum(len(z) for z in out))
        crops = design.random_crops(files, m, size, seed_from(TRAIN_CROP_SEED, k) % 2**31)
        out += [model.encode(b.to(device)).mode().float().cpu() for b in crops.split(32)]
        k += 1
    return torch.cat(out)


def reference(data: Path, cache: Path, n: int, size: int, device: str) -> ReferenceStats:
    """Inception statistics of the first ``n`` held-out test crops, cached in ``cache``."""
    path = cache / f"gen-ref-test-{n}-{size}.npz"
    if path.is_file():
        return load_reference(path)
    crops = design.crop_set("test", data, n, size, cache)
    ext = extract(crops.split(50), load_inception(torch.device(device)), torch.device(device))
    ref = ReferenceStats(ext.stats, ext.features, "tf1", INCEPTION_VERSION, size,
                         "native-scale random crops", f"{n} held-out test crops of {data}")
    save_reference(ref, path)
    return ref


def run_settings(scale: DiffusionScale, patch: int, seed: int
                 ) -> tuple[ProxySettings, dict[str, Any]]:
    """The diffusion run's settings and the config fields that differ from the proxy's
    (module docstring: the family recipe, no clipping, resumed not overwritten)."""
    family = get_preset(scale.diffusion_model)[0]
    recipe = get_recipe(family)
    steps = scale.diffusion_steps
    settings = ProxySettings(steps=steps, model=scale.diffusion_model, patch=patch,
                             batch_size=scale.diffusion_batch, samples=scale.samples,
                             sampler="dpm++2m", sampling_steps=scale.sampling_steps,
                             lr=recipe.lr, seed=seed, progress=False)
    overrides = dict(resume="auto", restart=True, overwrite=False, grad_clip=0.0,
                     warmup_steps=round(steps * recipe.warmup_steps / recipe.steps),
                     learn_sigma=family == "dit", ckpt_every=max(1, steps // 4))
    return settings, overrides


def generation_metrics(model_path: Path, scale: DiffusionScale, data: Path, cache: Path,
                       folder: Path, seed: int, stride: int) -> dict[str, Any]:
    """The hook of the diffusion studies (``runner.train_and_test``, on the final model):
    a diffusion model on the latents of ``model_path`` with patch ``stride / f`` (equal
    tokens ``(R / stride)²`` for every arm), its samples' KID ×10³ and context metrics."""
    cached = folder / "result.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    scale = effective(scale)
    model = load(model_path).eval()
    f = model.spatial_compression_ratio
    if stride % f:
        raise ValueError(f"token stride {stride} is not a multiple of the compression {f}")
    latents = train_latents(model, data, scale.train_crops, scale.resolution, scale.device)
    settings, overrides = run_settings(scale, stride // f, seed)
    device = torch.device(scale.device)
    cfg, npz, seconds = train_and_sample(latents, model, str(model_path), False, folder,
                                         settings, device, **overrides)
    ref = reference(data, cache, scale.samples, scale.resolution, scale.device)
    m = evaluate_samples(npz, ref, device=device, batch_size=50, config=GenerationConfig(
        kid_subset_size=max(2, scale.samples // 2), seed=seed))
    res = {"gen_kid_x1e3": 1e3 * m["kid"], "gen_kid_std_x1e3": (
               None if m["kid_std"] is None else 1e3 * m["kid_std"]),
           "gen_fid": m["gfid"], "gen_precision": m["precision"], "gen_recall": m["recall"],
           "diffusion": {"model": cfg.model, "patch": cfg.patch_size, "latent_shape":
                         list(latents.shape[1:]),
                         "tokens": (latents.shape[-1] // cfg.patch_size) ** 2,
                         "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
                         "learn_sigma": cfg.learn_sigma, "train_latents": len(latents),
                         "samples": m["n"], "reference_crops": m["n_ref"],
                         "seconds": seconds, "notes": m["notes"]}}
    atomic_write_text(cached, json.dumps(res, indent=1))
    shutil.rmtree(folder / "latents", ignore_errors=True)
    for png in (folder / "samples").glob("*.png"):
        png.unlink()
    return res


def hook(stride: int):
    """A study's ``generation_metrics(model_path, scale, data, cache, folder, seed)`` hook
    (``runner.train_and_test``): :func:`generation_metrics` at token stride ``stride``."""
    return functools.partial(generation_metrics, stride=stride)


def plot_results(out: Path, record: dict[str, Any]) -> None:
    """``OUT/generation.png``: the mean generation KID ×10³ of each arm (final budget)."""
    per_arm: dict[str, list[float]] = {}
    for r in record["runs"]:
        last = r["budgets"][max(r["budgets"], key=int)]["test"]
        if "gen_kid_x1e3" in last:
            per_arm.setdefault(r["arm"], []).append(last["gen_kid_x1e3"])
    labels = list(per_arm)
    common.bars(out / "generation.png", labels, [sum(v) / len(v) for v in per_arm.values()],
                "generation KID ×10³ (lower is better)",
                f"{record['study']}: samples vs held-out crops ({record['scale']['name']})",
                from_zero=True)

"""The generation probe of ``latentae train --generation-probe-every N``: "how well does
a diffusion model learn *these* latents?", asked while the autoencoder trains.

A tiny DiT with the diffusion proxy's settings (``diffusion/proxy.py``: DiT recipe,
unconditional, DDPM with learned σ, latents standardised per channel, DPM-Solver++(2M))
is trained for a fixed budget (``generation_probe_steps``) on the cached latents
(posterior modes) of a fixed image set -- the first ``generation_probe_images`` files of
``--data``, center crops at the last phase's resolution, loaded once by the training
process (``train/diffusability.py``) -- then sampled, decoded and measured against as
many held-out images (the first files of ``--val-data``, likewise): KID
(unbiased, subsets of n/2) and, where the count allows (n ≥ 2,048), FID. It is repeated
for ``generation_probe_seeds`` DiT seeds; the result gives the mean and the spread over
seeds (sample std), so a difference between two probes can be read against it.

It runs **in a child process** (``python -m latentae.diffusion.probe REQUEST RESULT``):
the training process only saves its EMA model and waits, so the training step's memory,
its RNG streams and its determinism are untouched (a resumed run stays bit-identical with
probes on). The child's seeds are fixed, so a probe repeats for a seed (same thread
count). Files: ``RUN/probe/`` holds the request, the images (``images.safetensors``)
and the held-out images' Inception statistics (both written once), the result of each
probe (``probe-<nimg>.json``); the DiT runs and samples are deleted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from latentae.diffusion.proxy import ProxySettings, train_and_sample
from latentae.eval.generation import GenerationConfig, evaluate_samples, extract
from latentae.eval.generation_data import ReferenceStats, load_reference, save_reference
from latentae.eval.inception import VERSION as INCEPTION_VERSION
from latentae.eval.inception import load_inception
from latentae.files import atomic_write_text
from latentae.pretrained import load

FID_MIN = 2048  # below this many samples FID is biased upwards: reported as None


@dataclasses.dataclass(frozen=True)
class ProbeRequest:
    """What the child needs: the saved autoencoder, the image sets and the budget."""

    model: str          # a saved model directory (the EMA weights at this step)
    images: str         # safetensors: "train" (N, 3, R, R) encoded, "held_out" the reference
    steps: int          # DiT optimizer steps
    dit: str = "dit-s"
    seeds: tuple[int, ...] = (0, 1)
    batch_size: int = 64
    sampling_steps: int = 50
    work: str = "probe/work"
    device: str = "cpu"
    threads: int = 1


@torch.no_grad()
def encode_modes(model, crops: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Posterior modes ``(N, C, h, w)`` of ``crops``, float32 on the CPU."""
    return torch.cat([model.encode(b.to(device)).mode().float().cpu()
                      for b in crops.split(16)])


def reference(req: ProbeRequest, held_out: torch.Tensor, device: torch.device
              ) -> ReferenceStats:
    """Inception statistics of the held-out images, cached beside their file (the
    parent writes the images once per run)."""
    path = Path(req.images).with_suffix(".reference.npz")
    if path.is_file():
        return load_reference(path)
    ext = extract(held_out.split(50), load_inception(device), device)
    ref = ReferenceStats(ext.stats, ext.features, "tf1", INCEPTION_VERSION,
                         held_out.shape[-1], "center crop",
                         f"the first {len(held_out)} --val-data images")
    save_reference(ref, path)
    return ref


def run_probe(req: ProbeRequest) -> dict[str, Any]:
    """Train, sample and measure one DiT per seed; the mean and the spread over seeds."""
    torch.set_num_threads(req.threads)
    t0, device = time.perf_counter(), torch.device(req.device)
    model = load(req.model, device).eval()
    images = load_file(req.images)
    latents = encode_modes(model, images["train"], device)
    ref = reference(req, images["held_out"], device)
    runs = []
    for seed in req.seeds:
        work = Path(req.work) / f"seed{seed}"
        settings = ProxySettings(steps=req.steps, model=req.dit, batch_size=req.batch_size,
                                 samples=len(latents), sampling_steps=req.sampling_steps,
                                 seed=seed, progress=False)
        _, npz, _ = train_and_sample(latents, model, req.model, False, work, settings, device)
        m = evaluate_samples(npz, ref, device=device, batch_size=50, config=GenerationConfig(
            kid_subset_size=max(2, min(1000, len(latents) // 2, len(ref.features) // 2)),
            seed=seed))
        runs.append({"seed": seed, "kid": m["kid"], "kid_std": m["kid_std"], "fid": m["gfid"]})
        shutil.rmtree(work, ignore_errors=True)
    kids = [r["kid"] for r in runs]
    n = len(latents)
    return {"kid": statistics.fmean(kids),
            "kid_seed_std": statistics.stdev(kids) if len(kids) > 1 else None,
            "fid": statistics.fmean(r["fid"] for r in runs) if n >= FID_MIN else None,
            "runs": runs, "images": n, "latent_shape": list(latents.shape[1:]),
            "seconds": time.perf_counter() - t0, "request": dataclasses.asdict(req)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m latentae.diffusion.probe",
                                description="the child process of the generation probe")
    p.add_argument("request", help="ProbeRequest as JSON")
    p.add_argument("result", help="where to write the result JSON")
    args = p.parse_args(argv)
    fields = json.loads(Path(args.request).read_text())
    req = ProbeRequest(**{**fields, "seeds": tuple(fields["seeds"])})
    atomic_write_text(args.result, json.dumps(run_probe(req), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

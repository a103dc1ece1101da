"""CPU encode+decode throughput of latentae DC-AE vs diffusers AutoencoderDC, same weights.

Usage: ``python scripts/dcae_cpu_throughput.py [--preset dcae-f32c32] [--size 512]
[--threads 2] [--repeats 3]``. Builds a diffusers AutoencoderDC with random weights,
converts it with ``dcae_from_diffusers``, checks the two agree, then times
``decode(encode(x))`` at batch 1, float32, alternating the two models each repeat so
machine load hits both alike. Prints images/s (median over repeats).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="dcae-f32c32")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import AutoencoderDC

    from latentae.convert.dc import config_to_diffusers, dcae_from_diffusers
    from latentae.models.dcae import PRESETS

    torch.manual_seed(0)
    ref = AutoencoderDC(**config_to_diffusers(PRESETS[args.preset])).eval()
    ours = dcae_from_diffusers(ref)
    x = torch.rand(1, 3, args.size, args.size) * 2 - 1
    runs = {"latentae": lambda v: ours.decode(ours.encode(v).mode()),
            "diffusers": lambda v: ref.decode(ref.encode(v).latent).sample}
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        diff = (runs["latentae"](x) - runs["diffusers"](x)).abs().max().item()  # also warm-up
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn, x))
    print(f"{args.preset} {args.size}x{args.size} batch 1 float32, {args.threads} threads, "
          f"torch {torch.__version__}; max |recon diff| {diff:.2e}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:9s} {1 / med:7.3f} images/s  (median {med:.2f} s of "
              f"{', '.join(f'{t:.2f}' for t in ts)})")


if __name__ == "__main__":
    main()

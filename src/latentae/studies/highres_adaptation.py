"""Study 6 — DC-AE decoupled high-resolution adaptation (DC-AE §3.3, Fig. 6).

Claim tested: after low-resolution training, adapting only the latent-facing layers at
high resolution (phase 2: ``encoder.project_out`` + ``decoder.project_in``) and refining
only the decoder head with a GAN at low resolution (phase 3) improves high-resolution
reconstruction without hurting the low resolution, at a small cost.

Setup: ``dcae-tiny-f32`` (plain autoencoder, L1 only, no LPIPS), batch 8, seed fixed.
- ``phase1``: full training at 64² (AdamW lr 5e-4, wd 0.1 as DC-AE's phase 1 uses wd);
- ``phases1-3``: the same weights, then phase 2 at 128² (AdamW lr 1.6e-4, wd 1e-3,
  only the two latent-facing convs) and phase 3 at 64² (only ``decoder.head``,
  PatchGAN (32 ch) hinge loss λ_adv 0.1, Adam betas (0.5, 0.9));
- ``phase1-long``: phase 1 for as many steps as phases 1–3 together (equal-step control).
Each is evaluated on the 24 kodak24 center crops at 64² and 128² (and 256²).
Learning rates are scaled up from the paper's (6.4e-5 / 1.6e-5 / 5.4e-5) for the
short run; step counts are ours.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch

from latentae.registry import create_model
from latentae.studies import common
from latentae.train.recipes import LossWeights, Phase

NAME = "highres_adaptation"


def phases(steps: tuple[int, int, int], low: int, high: int, batch: int) -> tuple:
    """DC-AE's three phases at our scale."""

    rec = LossWeights(perceptual=0.0, kl=0.0)
    return (
        Phase("lowres", steps[0], low, batch, 5e-4, "adamw", weight_decay=0.1, losses=rec),
        Phase("highres-adapt", steps[1], high, batch, 1.6e-4, "adamw", weight_decay=1e-3,
              train_groups=("encoder.project_out", "decoder.project_in"), losses=rec),
        Phase("refine", steps[2], low, batch, 5e-4, "adamw", betas=(0.5, 0.9),
              train_groups=("decoder.head",), discriminator_on=True,
              losses=dataclasses.replace(rec, adversarial=0.1)),
    )


def run(args) -> list[dict]:


    started, out = time.perf_counter(), common.setup(args, NAME)
    if args.quick:
        steps, low, high, batch, evals = (args.steps or 2, 1, 1), 32, 64, 2, (32, 64)
    else:
        steps, low, high, batch, evals = (args.steps or 200, 50, 50), 64, 128, 8, (64, 128, 256)
    p1, p2, p3 = phases(steps, low, high, batch)
    limit = args.eval_limit or (2 if args.quick else None)
    torch.manual_seed(args.seed)
    init = common.save_init(create_model("dcae-tiny-f32"), out / "init" / "dcae-tiny-f32")
    runs = {"phase1": common.train_model(init, out / "phase1", (p1,), args.seed)}
    runs["phases1-3"] = common.train_model(runs["phase1"]["model"], out / "phases2-3",
                                           (p2, p3), args.seed)
    runs["phases1-3"]["seconds"] += runs["phase1"]["seconds"]
    long = dataclasses.replace(p1, steps=sum(steps))
    runs["phase1-long"] = common.train_model(init, out / "phase1-long", (long,), args.seed)
    rows = []
    for name, trained in runs.items():
        row = {"variant": name, "train_s": trained["seconds"], "model_dir": trained["model"]}
        for res in evals:
            m = common.evaluate_dir(trained["model"], res, limit)
            row.update({f"{k}@{res}": m[k] for k in ("psnr", "ssim", "lpips", "rfid")})
        rows.append(row)
        print(row, flush=True)
    cols = ["variant", *[f"{k}@{r}" for r in evals for k in ("psnr", "lpips")],
            *[f"rfid@{r}" for r in evals], "train_s"]
    common.write_results(out, NAME, args, rows, cols, extra={"steps": steps}, started=started)
    series = {r["variant"]: (list(evals), [r[f"psnr@{e}"] for e in evals]) for r in rows}
    common.plot(out / "psnr_vs_resolution.png", series, "evaluation resolution",
                "PSNR (kodak24 center crops)", "DC-AE tiny f32: phase 1 vs phases 1–3",
                logx=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    common.pin_hash_seed()
    run(common.parser(NAME, __doc__).parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Study 4 — recipe ablations (LiteVAE §4, Tables 4, 5, 8, 9).

Claims tested, one pair of runs each, everything else equal (``litevae-tiny``, 64²,
batch 8, Adam lr 5e-4, L1 + KL 1e-6, no LPIPS, same steps and seed):

- ``wavelet``: + Charbonnier loss on the Haar high bands and Gaussian high-pass L1
  (0.1 each) vs neither (LiteVAE §4: both improve reconstruction);
- ``smc``: self-modulated convolutions vs GroupNorm in the decoder (Table 4);
- ``progressive``: half the steps at 32², half at 64² vs all at 64² (Table 5's
  128→256 vs 256-only, halved);
- ``adaptive``: adaptive (Esser et al.) vs constant adversarial weight, UNet
  discriminator from half-way (Table 8);
- ``patchgan``: PatchGAN vs UNet discriminator, constant weight (Table 9).

``base`` (no extra loss, GroupNorm, 64² only, no GAN) is the "off" side of the first
three; ``gan-unet-const`` is the reference of the last two. Each model is evaluated on the
24 kodak24 center crops at 64². ``--only a,b`` runs a subset.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch

from latentae.registry import create_model
from latentae.studies import common
from latentae.train.recipes import LossWeights, Phase

NAME = "recipe_ablations"
VARIANTS = ("base", "wavelet", "smc", "progressive", "gan-unet-const", "gan-unet-adaptive",
            "gan-patchgan-const")
QUICK = ("base", "wavelet")


def variant(name: str, steps: int, res: int, batch: int) -> tuple[str, dict, tuple, str]:
    """(preset, overrides, phases, discriminator) of one variant."""

    base = LossWeights(perceptual=0.0, kl=1e-6)
    main = Phase("main", steps, res, batch, 5e-4, losses=base)
    gan = dataclasses.replace(main, discriminator_on=True, disc_start=steps // 2,
                              losses=dataclasses.replace(base, adversarial=0.1))
    table = {
        "base": ({}, (main,), "unet"),
        "wavelet": ({}, (dataclasses.replace(
            main, losses=dataclasses.replace(base, wavelet=0.1, highpass=0.1)),), "unet"),
        "smc": ({"decoder_norm": "smc"}, (main,), "unet"),
        "progressive": ({}, (dataclasses.replace(main, name="low", steps=steps // 2,
                                                 resolution=res // 2),
                             dataclasses.replace(main, steps=steps - steps // 2)), "unet"),
        "gan-unet-const": ({}, (gan,), "unet"),
        "gan-unet-adaptive": ({}, (dataclasses.replace(gan, losses=dataclasses.replace(
            gan.losses, adversarial=0.5, adaptive=True)),), "unet"),  # LDM disc_weight
        "gan-patchgan-const": ({}, (gan,), "patchgan"),
    }
    overrides, phases, disc = table[name]
    return "litevae-tiny", overrides, phases, disc


def run(args) -> list[dict]:


    started, out = time.perf_counter(), common.setup(args, NAME)
    steps, res, batch = (args.steps or 2, 32, 2) if args.quick else (args.steps or 200, 64, 8)
    names = args.only.split(",") if args.only else (QUICK if args.quick else VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    limit = args.eval_limit or (2 if args.quick else None)
    rows = []
    for name in names:
        preset, overrides, phases, disc = variant(name, steps, res, batch)
        torch.manual_seed(args.seed)
        init = common.save_init(create_model(preset, **overrides), out / "init" / name)
        trained = common.train_model(init, out / name, phases, args.seed, discriminator=disc)
        rows.append({"variant": name, "train_s": trained["seconds"],
                     "model_dir": trained["model"],
                     **common.evaluate_dir(trained["model"], res, limit)})
        print(rows[-1], flush=True)
    cols = ["variant", "psnr", "ssim", "lpips", "rfid", "train_s"]
    common.write_results(out, NAME, args, rows, cols, extra={"steps": steps}, started=started)
    common.bars(out / "psnr_by_variant.png", [r["variant"] for r in rows],
                [r["psnr"] for r in rows], "PSNR (kodak24 center)",
                f"LiteVAE-tiny recipe ablations, {res}², {steps} steps")
    return rows


def main(argv: list[str] | None = None) -> int:
    common.pin_hash_seed()
    p = common.parser(NAME, __doc__)
    p.add_argument("--only", default=None, help="comma-separated variants: " + ", ".join(VARIANTS))
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Recipe ablations (LiteVAE tables 4, 8, 9, 10), ``litevae-tiny``, LiteVAE optimiser.

Claims and the paper's effects (ImageNet 128²/256²):

- ``wavelet``: + wavelet Charbonnier and Gaussian high-pass losses (0.1 each) vs none:
  +0.40 dB PSNR (table 9);
- ``smc``: self-modulated convolutions vs GroupNorm in the decoder: +0.08 dB (table 4);
- ``gan-unet-const`` vs ``gan-unet-adaptive``: a constant adversarial weight is as good
  as the adaptive one (table 8: +0.09 dB, LPIPS equal);
- ``gan-unet-adaptive`` vs ``gan-patchgan-adaptive``: the U-Net discriminator gives the
  better rFID (table 10: 1.01 vs 1.61; PatchGAN has the better LPIPS) — KID, direction.

Design: ``base`` (L1 + LPIPS-VGG + KL, GroupNorm) trains to its plateau; the three GAN
arms warm-start from base's final model of the same seed (``PARENTS``) and run the GAN
phase for the budgets. The constant weight is set to the median adaptive weight the
``gan-unet-adaptive`` run of that seed logged, when it exists (else 0.1: run the adaptive
arm first, as ``--jobs 1`` does). GAN arms are judged by LPIPS and KID.

Sizes (``SCALES``): ``--scale cpu`` is ``design.SCALES["cpu"]`` (64², batch 8, budgets
200/400/800, 3 paired seeds) at lr × 16 (the ``litevae-vs-sdvae`` sweep's best for
``litevae-tiny``) with the PSNR-judged arms only (``SCALE_ARMS``: base, wavelet, smc;
L1 + KL, no LPIPS: rule 5). The GAN arms need LPIPS-VGG in the loss of base and of the
GAN phase, which on this CPU costs several times an L1 step: they run at ``--scale gpu``.

Equal budgets (issue 27 defect 4): every arm trains the full budgets (``PLATEAU =
design.NEVER``): a run the plateau rule stops early (two of three SMC runs stalled at
300/400 steps) would otherwise be compared at its stop against an 800-step base. The SMC
decoder gets its own lr from its own sweep (``--arm-lr-mult smc=M``: the sweep is
``--arms smc --seeds 1 --budgets 200 --lr-mult M`` for M in 1, 4, 16).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path

from latentae.errors import InputError
from latentae.registry import create_model
from latentae.studies import common, design
from latentae.studies.design import Scale, litevae_phase
from latentae.studies.runner import Contrast
from latentae.train.recipes import Recipe

NAME = "recipe_ablations"
CLAIM = ("LiteVAE tables 4, 8–10: wavelet/high-pass losses +0.40 dB, SMC +0.08 dB, a "
         "constant GAN weight ≈ the adaptive one, U-Net D better rFID than PatchGAN")
ARMS = {"base": "L1 + KL (+ LPIPS at gpu), GroupNorm", "wavelet": "+ wavelet 0.1 + high-pass 0.1",
        "smc": "SMC decoder", "gan-unet-adaptive": "base → U-Net D, adaptive weight",
        "gan-unet-const": "base → U-Net D, constant weight",
        "gan-patchgan-adaptive": "base → PatchGAN D, adaptive weight"}
QUICK_ARMS = ("base", "wavelet")
PARENTS = {a: "base" for a in ARMS if a.startswith("gan-")}
AFTER = {"gan-unet-const": ("gan-unet-adaptive",)}  # its weight: the adaptive run's median
SCALES = {**design.SCALES, "cpu": dataclasses.replace(design.SCALES["cpu"], lr_mult=16.0)}
SCALE_ARMS = {"cpu": ("base", "wavelet", "smc")}  # the GAN arms need LPIPS: --scale gpu
CONTRASTS = (
    Contrast("wavelet", "base", "psnr", 0.40, "LiteVAE table 9"),
    Contrast("smc", "base", "psnr", 0.08, "LiteVAE table 4"),
    Contrast("gan-unet-const", "gan-unet-adaptive", "lpips", 0.0, "table 8: equal", sign=-1.0),
    Contrast("gan-unet-const", "gan-unet-adaptive", "psnr", 0.09, "LiteVAE table 8"),
    Contrast("gan-unet-adaptive", "gan-patchgan-adaptive", "kid_x1e3", 0.0,
             "table 10 rFID: direction only", sign=-1.0),
)
DEFAULT_CONSTANT = 0.1
PLATEAU = design.NEVER  # equal budgets for every arm (module docstring)


def adaptive_median(init_from: Path) -> float:
    """Median logged adaptive weight of this seed's ``gan-unet-adaptive`` run."""
    log = init_from.parents[2] / "gan-unet-adaptive" / init_from.parents[1].name / "run" / \
        "metrics.jsonl"
    if not log.is_file():
        return DEFAULT_CONSTANT
    values = [r["adaptive_weight"] for r in map(json.loads, log.read_text().splitlines())
              if "adaptive_weight" in r]
    return statistics.median(values) if values else DEFAULT_CONSTANT


def build(arm: str, scale: Scale, init_from: Path | None = None):
    steps, r = scale.budgets[-1], scale.resolution
    if arm in ("base", "wavelet", "smc"):
        extra = dict(wavelet=0.1, highpass=0.1) if arm == "wavelet" else {}
        model = create_model("litevae-tiny", **({"decoder_norm": "smc"} if arm == "smc"
                                                else {}))
        return model, Recipe(arm, (litevae_phase("main", steps, r, scale, **extra),))
    if not scale.perceptual:
        raise InputError(f"arm {arm} warm-starts from an L1+LPIPS base and is judged by "
                         "LPIPS/KID: run it at a scale with LPIPS-VGG in the loss "
                         "(--scale gpu)")
    const = arm == "gan-unet-const"
    weight = adaptive_median(init_from) if const else 0.5  # LDM disc_weight 0.5 × adaptive
    phase = litevae_phase("gan", steps, r, scale, adversarial=weight, adaptive=not const,
                          discriminator_on=True, perceptual=1.0)
    disc = "patchgan" if "patchgan" in arm else "unet"
    return None, Recipe(arm, (phase,), discriminator=disc, discriminator_channels=32)


def main(argv: list[str] | None = None) -> int:
    common.run_study(sys.modules[__name__], argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

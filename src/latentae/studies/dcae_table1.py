"""DC-AE table 1: at equal token count, reaching the spatial compression with the
autoencoder beats reaching it with the diffusion model's patch.

Claim (DC-AE §3.3, table 1: UViT-S, ImageNet 512², 64 tokens, FID without CFG):
SD-VAE-f8 p8 125.08, SD-VAE-f16 p4 115.32, SD-VAE-f32 p2 107.33, DC-AE-f64 p1 67.30 —
DC-AE better than every SD-VAE arm, and the larger the autoencoder's share, the better.
Scaled down to the tiny presets: total stride 32 (``stride = f · patch``) with
SD-VAE-style f8c4 p4, f16c16 p2, f32c32 p1 against ``dcae-tiny-f32`` p1 (the tiny DC-AE
family has f32 and f64; f32 keeps 16 tokens at 128²). The paper's FID gaps on ImageNet
512² do not convert into KID of a tiny U-ViT on BSDS crops: **direction only** (paper
effect 0 in our units).

Design: each autoencoder arm trained as the ``dcae_shortcuts`` study trains it
(``dcae_shortcuts.build``: DC-AE phase-1 AdamW, L1, + LPIPS-VGG at ``--scale gpu``,
lr × 8 as its pilot) to its plateau or the cap, paired seeds; the SD-VAE-style f8/f16
arms have the f32 arm's stage widths, cut after 4 and 5 stages. Then, per (arm, seed),
``uvit-tiny`` (``uvit-s`` at ``--scale gpu``) on the latents of native-scale training
crops, sampled and measured by KID against held-out test crops
(``diffusion_studies``). Decided by the generation KID ×10³ (``gen_kid_x1e3``, lower is
better); reconstruction PSNR/LPIPS in the table for context.

Sizes (``SCALES``): ``--scale cpu`` 128² (16 tokens in every arm), AE batch 8, cap 150
steps (validation every 50), 3 seeds, 256 test / 64 kodak crops; U-ViT 1,000 steps of
batch 32 on 1,050 training crops (3 per image), 256 samples (25 steps) against 256
held-out crops, KID subsets of 128 — 43 minutes at ``--jobs 2`` on the 2-core CPU
(measured; docs/results.md). ``--scale gpu`` 256² (64 tokens, the
paper's count), AE batch 32 for 2,000 steps with LPIPS, ``uvit-s`` 20,000 steps of
batch 256 on 8,750 crops, 2,048 samples (30 steps) against 2,048 crops (not run).
"""

from __future__ import annotations

import sys
from pathlib import Path

from latentae.studies import common, dcae_shortcuts, diffusion_studies
from latentae.studies.design import Scale
from latentae.studies.diffusion_studies import DiffusionScale
from latentae.studies.runner import Contrast

NAME = "dcae_table1"
CLAIM = ("DC-AE table 1: at equal tokens (stride 32), a U-ViT on DC-AE-f32 p1 latents "
         "generates better (KID) than on SD-VAE-f8 p4 / f16 p2 / f32 p1 (direction only)")
STRIDE = 32  # autoencoder compression × patch: the same tokens (R / 32)² in every arm
WIDTHS = dcae_shortcuts.SD_F32["encoder_channels"]
SD_F16 = dict(encoder_channels=WIDTHS[:5], decoder_channels=WIDTHS[:5], latent_channels=16,
              use_quant_conv=False)
SD_F8 = dict(encoder_channels=WIDTHS[:4], decoder_channels=WIDTHS[:4], latent_channels=4,
             use_quant_conv=False)
MODELS = {"dcae-f32": dcae_shortcuts.MODELS["dcae-f32"],
          "sdvae-f32": dcae_shortcuts.MODELS["sdvae-f32"],
          "sdvae-f16": ("sdvae-tiny", SD_F16), "sdvae-f8": ("sdvae-tiny", SD_F8)}
PATCH = {"dcae-f32": 1, "sdvae-f32": 1, "sdvae-f16": 2, "sdvae-f8": 4}  # STRIDE / f (the
# run derives it from the model: diffusion_studies.generation_metrics)
ARMS = {name: f"{preset} {overrides or ''} + U-ViT patch {PATCH[name]}".strip()
        for name, (preset, overrides) in MODELS.items()}
QUICK_ARMS = ("dcae-f32", "sdvae-f8")
SRC = "DC-AE table 1 (FID 67.30 vs 107.33–125.08): direction only"
CONTRASTS = tuple(Contrast("dcae-f32", sd, "gen_kid_x1e3", 0.0, SRC, sign=-1.0)
                  for sd in ("sdvae-f32", "sdvae-f16", "sdvae-f8"))
SCALES = {
    "quick": DiffusionScale("quick", 64, 2, (1,), 1, 2, 4, 2, 0, 2, lr_mult=8.0,
                            diffusion_model="uvit-tiny", diffusion_steps=2,
                            diffusion_batch=4, train_crops=8, samples=4, sampling_steps=2),
    "cpu": DiffusionScale("cpu", 128, 8, (150,), 50, 32, 256, 64, 0, 3, lr_mult=8.0,
                          diffusion_model="uvit-tiny", diffusion_steps=1000,
                          diffusion_batch=32, train_crops=1050, samples=256,
                          sampling_steps=25),
    "gpu": DiffusionScale("gpu", 256, 32, (2000,), 250, 256, 2048, 512, 2048, 3,
                          device="cuda", dtype="bfloat16", perceptual=True, workers=3,
                          lr_mult=8.0, diffusion_model="uvit-s", diffusion_steps=20000,
                          diffusion_batch=256, train_crops=8750, samples=2048,
                          sampling_steps=30),
}
generation_metrics = diffusion_studies.hook(STRIDE)  # the U-ViT on each AE's latents
plot_results = diffusion_studies.plot_results


def build(arm: str, scale: Scale, init_from: Path | None = None):
    """The autoencoder of ``arm`` with the shortcut study's recipe."""
    return dcae_shortcuts.build(arm, scale, init_from, MODELS)


def main(argv: list[str] | None = None) -> int:
    common.run_study(sys.modules[__name__], argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

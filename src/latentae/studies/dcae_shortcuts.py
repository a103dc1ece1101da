"""DC-AE residual autoencoding (DC-AE §3.2, fig. 3a).

Claim: at high spatial compression the non-parametric space-to-channel / channel-to-
space shortcuts make the autoencoder easier to optimise: at a fixed latent size
(f32c32, f64c128: the same number of latent values), reconstruction with them is better
than without. Fig. 3a plots rFID on ImageNet 256² (no PSNR in the text); table 6 gives
+6.7 dB PSNR for both DC-AE techniques together at f64. The effect this study must be
able to see is taken as **+1.0 dB PSNR** (our conservative reading; the paper's
figure-level gaps are larger).

Design: ``dcae-tiny-f32`` / ``dcae-tiny-f64`` with all three shortcut switches on or
off (same initial weights: the switches add no parameters), SD-VAE-style baselines with
the same stage widths and latent size; the paper's phase-1 optimiser (AdamW, betas
(0.9, 0.999), weight decay 0.1, constant lr 6.4e-5 × ``--lr-mult``), L1 (+ LPIPS-VGG at
``--scale gpu``), no gradient clipping. Decided by held-out PSNR.
"""

from __future__ import annotations

import sys
from pathlib import Path

from latentae.registry import create_model
from latentae.studies import common
from latentae.studies.design import Scale
from latentae.studies.runner import Contrast
from latentae.train.recipes import LossWeights, Phase, Recipe

NAME = "dcae_shortcuts"
CLAIM = ("DC-AE fig. 3a: residual autoencoding (shortcuts) improves reconstruction at "
         "high spatial compression (f32c32, f64c128) — effect to detect: +1.0 dB PSNR")
NO_SHORTCUTS = dict(stage_shortcuts=False, encoder_out_shortcut=False,
                    decoder_in_shortcut=False)
SD_F32 = dict(encoder_channels=(16, 32, 64, 64, 128, 128),
              decoder_channels=(16, 32, 64, 64, 128, 128), latent_channels=32,
              use_quant_conv=False)
SD_F64 = dict(encoder_channels=(16, 32, 64, 64, 128, 128, 256),
              decoder_channels=(16, 32, 64, 64, 128, 128, 256), latent_channels=128,
              use_quant_conv=False)
MODELS = {  # arm -> (preset, overrides)
    "dcae-f32": ("dcae-tiny-f32", {}),
    "dcae-f32-noshortcut": ("dcae-tiny-f32", NO_SHORTCUTS),
    "dcae-f64": ("dcae-tiny-f64", {}),
    "dcae-f64-noshortcut": ("dcae-tiny-f64", NO_SHORTCUTS),
    "sdvae-f32": ("sdvae-tiny", SD_F32),
    "sdvae-f64": ("sdvae-tiny", SD_F64),
}
ARMS = {name: f"{preset} {overrides or ''}".strip() for name, (preset, overrides) in
        MODELS.items()}
QUICK_ARMS = ("dcae-f32", "dcae-f32-noshortcut")
CONTRASTS = (
    Contrast("dcae-f32", "dcae-f32-noshortcut", "psnr", 1.0, "DC-AE fig. 3a (our reading)"),
    Contrast("dcae-f64", "dcae-f64-noshortcut", "psnr", 1.0, "DC-AE fig. 3a (our reading)"),
    Contrast("dcae-f32", "sdvae-f32", "psnr", 1.0, "DC-AE fig. 3a / table 6"),
    Contrast("dcae-f64", "sdvae-f64", "psnr", 1.0, "DC-AE fig. 3a / table 6"),
)
LR = 6.4e-5  # DC-AE App. E, phase 1


def build(arm: str, scale: Scale, init_from: Path | None = None,
          models: dict[str, tuple[str, dict]] | None = None):
    """A fresh model of ``arm`` (of ``models``, default :data:`MODELS`) and the one-phase
    recipe (paper phase-1 optimiser)."""
    preset, overrides = (models or MODELS)[arm]
    phase = Phase("main", scale.budgets[-1], scale.resolution, scale.batch_size,
                  LR * scale.lr_mult, optimizer="adamw", betas=(0.9, 0.999),
                  weight_decay=0.1,
                  losses=LossWeights(perceptual=1.0 if scale.perceptual else 0.0, kl=0.0))
    return create_model(preset, **overrides), Recipe(arm, (phase,))


def main(argv: list[str] | None = None) -> int:
    common.run_study(sys.modules[__name__], argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

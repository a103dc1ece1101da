"""LiteVAE table 7: a diffusion model on LiteVAE latents generates as well as one on
SD-VAE latents (an equivalence claim).

Claim (LiteVAE §5, table 7: the LDM UNet on FFHQ / CelebA-HQ 256²): FID 8.03 vs 8.11
and 5.73 vs 5.92 (LiteVAE vs the standard VAE) — "both models perform similarly"; the
differences are 1–3% of the FID. Tested as equivalence: the 95% CI of the paired KID
difference must lie inside **±20% of SD-VAE's mean KID** (``MARGIN``). The margin is
ours: the paper's 1–3% are far below what three seeds of a tiny DiT can resolve, and
20% is the smallest difference we would still call a different generation quality at
this scale; stated before any run. The direction (LiteVAE better) is reported as usual
(paper effect 0: direction only), and reconstruction PSNR with a ±2.5% (≈ 0.5 dB)
margin checks the premise "latents of similar reconstruction quality".

Design: the ``lite-tiny`` and ``sd-enc`` arms of ``litevae_vs_sdvae`` (its ``build``:
the same decoder and initial decoder weights, LiteVAE's Adam, L1 + KL 1e-6, + LPIPS-VGG
at ``--scale gpu``) at its scales, so the same runs serve both studies; both f8c4. Then,
per (arm, seed), the same ``dit-tiny`` (``dit-s`` at ``--scale gpu``) with patch 2
(stride 16: 16 tokens at 64², 64 at 128²) on the latents of native-scale training
crops, sampled and measured by KID against held-out test crops (``diffusion_studies``).

Sizes (``DIFFUSION``; the autoencoders: ``design.SCALES``): ``--scale cpu`` 64², AE
budgets 200/400/800, 3 seeds; DiT 2,000 steps of batch 32 on 2,100 training crops (6 per
image), 512 samples (25 steps) against 512 held-out crops, KID subsets of 256 — about
30 minutes at ``--jobs 2`` on the 2-core CPU (estimated from component timings, not a
run). ``--scale gpu`` 128² (64 tokens), ``dit-s`` 20,000 steps of batch 256 on 8,750
crops, 2,048 samples (30 steps) against 2,048 crops (not run).
"""

from __future__ import annotations

import dataclasses
import sys

from latentae.studies import common, design, diffusion_studies, litevae_vs_sdvae
from latentae.studies.diffusion_studies import DiffusionScale
from latentae.studies.runner import Contrast

NAME = "litevae_table7"
CLAIM = ("LiteVAE table 7: the same DiT on LiteVAE and SD-VAE latents generates similarly "
         "(FID 8.03 vs 8.11, 5.73 vs 5.92): equivalence of KID within ±20%")
STRIDE = 16  # f8 × patch 2 for both arms
MARGIN = 0.20  # of the reference's mean generation KID (module docstring)
PSNR_MARGIN = 0.025  # ≈ 0.5 dB at 20 dB: "similar reconstruction quality"
ARMS = {a: f"{litevae_vs_sdvae.ARMS[a]} + DiT patch 2" for a in ("lite-tiny", "sd-enc")}
QUICK_ARMS = ("lite-tiny", "sd-enc")
SRC = "LiteVAE table 7: similar FID"
CONTRASTS = (
    Contrast("lite-tiny", "sd-enc", "gen_kid_x1e3", 0.0, SRC, sign=-1.0, margin=MARGIN),
    Contrast("lite-tiny", "sd-enc", "psnr", 0.0, "table 7 premise: similar reconstruction",
             margin=PSNR_MARGIN),
)
DIFFUSION = {  # scale -> the diffusion run's sizes (the autoencoders: design.SCALES)
    "quick": dict(diffusion_model="dit-tiny", diffusion_steps=2, diffusion_batch=4,
                  train_crops=8, samples=4, sampling_steps=2),
    "cpu": dict(diffusion_model="dit-tiny", diffusion_steps=2000, diffusion_batch=32,
                train_crops=2100, samples=512, sampling_steps=25),
    "gpu": dict(diffusion_model="dit-s", diffusion_steps=20000, diffusion_batch=256,
                train_crops=8750, samples=2048, sampling_steps=30),
}
SCALES = {name: DiffusionScale(**dataclasses.asdict(design.SCALES[name]), **sizes)
          for name, sizes in DIFFUSION.items()}
build = litevae_vs_sdvae.build
TRAINS_AS = litevae_vs_sdvae.NAME  # so --runs-from can reuse that study's runs
generation_metrics = diffusion_studies.hook(STRIDE)  # the DiT on each AE's latents
plot_results = diffusion_studies.plot_results


def main(argv: list[str] | None = None) -> int:
    common.run_study(sys.modules[__name__], argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

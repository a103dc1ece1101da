"""Does EQ-VAE's equivariance loss make a latent space easier to diffuse, and at what
reconstruction cost? (EQ-VAE, Kouzelis et al. 2025: fine-tuning SD-VAE with it makes
DiT-XL/2 converge ~7× faster; direction only here.)

Design: a small autoencoder ``base`` (``sdvae-tiny`` without quant convs, the ``sd-enc``
arm of ``litevae_vs_sdvae``: LiteVAE optimiser, Adam lr 1e-4 × ``--lr-mult``, L1 + KL
1e-6, + LPIPS-VGG at ``--scale gpu``) trained from scratch; then two fine-tunes of that
same model, paired seeds and equal steps, the only difference the loss:
``ft`` (the base loss) and ``ft-eq`` (plus ``losses.equivariance`` 1.0 with EQ-VAE's
p = 0.5: ``losses/regularisers.py``). Both train encoder and decoder at the base lr.

Judged, per (arm, seed), on held-out test crops, by

- the online diagnostics (``eval/diagnostics.py``, keys ``diff_*``): latent energy above
  half Nyquist, equivariance PSNR at x2, whole-code MMD² to N(0, I) (σ = √d), decoder
  robustness PSNR at σ = 0.3;
- the generation probe at a fixed DiT budget: ``dit-tiny`` on the latents of native-scale
  training crops, sampled and measured by KID ×10³ against held-out test crops
  (``diffusion_studies.generation_metrics``, the same run for both arms; patch 2, i.e.
  16 tokens at 64²);
- the reconstruction cost beside it: PSNR (and LPIPS / SSIM) of the two fine-tunes.

Sizes (``SCALES``): ``--scale cpu`` 64², batch 8, ``base`` 400 steps, fine-tunes 200
steps, lr × 4 (the ``sd-enc`` arm's best of the ``litevae_vs_sdvae`` sweep), 3 seeds,
256 test / 64 kodak crops; ``dit-tiny`` 600 steps of batch 32 on 700 training crops (2 per
image), 256 samples (25 steps) against 256 held-out crops, KID subsets of 128.
``--scale gpu``: 128², batch 32, base 2,000 / fine-tunes 1,000 steps with LPIPS,
``dit-s`` 10,000 steps of batch 256 on 8,750 crops, 2,048 samples (not run).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from latentae.eval.diagnostics import diagnostics
from latentae.registry import create_model
from latentae.studies import common, design, diffusion_studies
from latentae.studies.design import Scale, litevae_phase
from latentae.studies.diffusion_studies import DiffusionScale
from latentae.studies.runner import Contrast
from latentae.train.recipes import Recipe

NAME = "diffusability_regularisers"
CLAIM = ("EQ-VAE: fine-tuning with the equivariance loss gives latents a diffusion model "
         "learns better (generation KID at a fixed DiT budget), at little reconstruction "
         "cost (direction only)")
ARMS = {"base": "sdvae-tiny (no quant convs) from scratch",
        "ft": "base -> fine-tune, the base loss",
        "ft-eq": "base -> fine-tune, + losses.equivariance 1.0 (p 0.5)"}
QUICK_ARMS = ("ft", "ft-eq")  # base trains as their parent
PARENTS = {"ft": "base", "ft-eq": "base"}
PLATEAU = design.NEVER  # equal steps: no early stop
STRIDE = 16  # f8 × patch 2: (R / 16)² tokens
DIAG_CROPS = 64  # test crops the diagnostics use (one fixed batch, as online)
BASE_STEPS = {"quick": 1, "cpu": 400, "gpu": 2000}
SRC = "EQ-VAE (Kouzelis et al. 2025): direction only"
CONTRASTS = (
    Contrast("ft-eq", "ft", "gen_kid_x1e3", 0.0, SRC, sign=-1.0),
    Contrast("ft-eq", "ft", "diff_equivariance_psnr_x2", 0.0, SRC),
    Contrast("ft-eq", "ft", "diff_latent_hf_fraction", 0.0,
             "Skorokhodov et al. 2025: less high-frequency latent energy", sign=-1.0),
    Contrast("ft-eq", "ft", "diff_mmd2", 0.0, "closer to N(0, I)", sign=-1.0),
    Contrast("ft-eq", "ft", "diff_noise_psnr_sigma0.3", 0.0, "decoder robustness"),
    Contrast("ft-eq", "ft", "psnr", 0.0, "the reconstruction cost (EQ-VAE: 'without "
             "degrading reconstruction')", margin=0.02),
)
SCALES = {
    "quick": DiffusionScale("quick", 32, 2, (1,), 1, 2, 4, 2, 0, 2, lr_mult=4.0,
                            diffusion_model="dit-tiny", diffusion_steps=2,
                            diffusion_batch=4, train_crops=8, samples=4, sampling_steps=2),
    "cpu": DiffusionScale("cpu", 64, 8, (200,), 50, 32, 256, 64, 0, 3, lr_mult=4.0,
                          diffusion_model="dit-tiny", diffusion_steps=600,
                          diffusion_batch=32, train_crops=700, samples=256,
                          sampling_steps=25),
    "gpu": DiffusionScale("gpu", 128, 32, (1000,), 250, 256, 2048, 512, 0, 3,
                          device="cuda", dtype="bfloat16", perceptual=True, workers=3,
                          lr_mult=4.0, diffusion_model="dit-s", diffusion_steps=10000,
                          diffusion_batch=256, train_crops=8750, samples=2048,
                          sampling_steps=30),
}


def build(arm: str, scale: Scale, init_from: Path | None = None):
    """``base``: a fresh model and its from-scratch recipe; the fine-tunes: ``None``
    (continue the base model) and ``budgets[-1]`` steps with or without the loss."""
    if arm == "base":
        phase = litevae_phase("base", BASE_STEPS[scale.name], scale.resolution, scale)
        return create_model("sdvae-tiny", use_quant_conv=False), Recipe(arm, (phase,))
    extra = {"equivariance": 1.0, "equivariance_p": 0.5} if arm == "ft-eq" else {}
    phase = litevae_phase(arm, scale.budgets[-1], scale.resolution, scale, **extra)
    return None, Recipe(arm, (phase,))


def extra_metrics(model, scale: Scale, data: Path, cache: Path) -> dict[str, float]:
    """The online diagnostics on the first ``DIAG_CROPS`` held-out test crops."""
    n = min(DIAG_CROPS, scale.test_crops)
    crops = design.crop_set("test", data, scale.test_crops, scale.resolution, cache)[:n]
    values = diagnostics(model.to(scale.device).eval(), crops.to(scale.device))
    return {f"diff_{k}": v for k, v in values.items() if v is not None}


def generation_metrics(model_path: Path, scale: DiffusionScale, data: Path, cache: Path,
                       folder: Path, seed: int) -> dict[str, Any]:
    """The generation probe on the fine-tunes (``folder`` is ``OUT/ARM/sI/diffusion``;
    the base model is not a contrast arm, so it is not probed)."""
    if folder.parent.parent.name == "base":
        return {}
    return diffusion_studies.generation_metrics(model_path, scale, data, cache, folder, seed,
                                                stride=STRIDE)


plot_results = diffusion_studies.plot_results


def main(argv: list[str] | None = None) -> int:
    common.run_study(sys.modules[__name__], argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

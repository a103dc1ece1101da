"""Progressive training (LiteVAE table 5): 128² pre-training then 256² fine-tuning at
equal total steps beats training at 256² only (+0.12 dB PSNR, −0.006 LPIPS), and is
cheaper (the low-resolution steps cost a quarter).

Design, scaled down by the scale's resolution R: ``full`` trains every step at R;
``progressive`` trains 2/3 of the steps at R/2 and 1/3 at R (the paper's 2:1 split),
same total steps, same initial weights, ``litevae-tiny``, LiteVAE optimiser. Budgets
are fixed (no early stop across the resolution switch). Decided by held-out PSNR at R;
the runs table gives the wall-clock (``train_s``) saved.
"""

from __future__ import annotations

import sys
from pathlib import Path

from latentae.registry import create_model
from latentae.studies import common
from latentae.studies.design import NEVER, Scale, litevae_phase
from latentae.studies.runner import Contrast
from latentae.train.recipes import Recipe

NAME = "progressive"
CLAIM = ("LiteVAE table 5: low-res pre-training + high-res fine-tuning (2:1 split, equal "
         "steps) beats high-res only (+0.12 dB PSNR, −0.006 LPIPS) at less wall-clock")
ARMS = {"full": "all steps at R", "progressive": "2/3 of the steps at R/2, 1/3 at R"}
QUICK_ARMS = ("full", "progressive")
CONTRASTS = (Contrast("progressive", "full", "psnr", 0.12, "LiteVAE table 5"),
             Contrast("progressive", "full", "lpips", 0.006, "LiteVAE table 5", sign=-1.0))
PLATEAU = NEVER


def build(arm: str, scale: Scale, init_from: Path | None = None):
    total, r = scale.budgets[-1], scale.resolution
    if arm == "full":
        phases = (litevae_phase("full", total, r, scale),)
    else:
        low = max(1, 2 * total // 3)
        phases = (litevae_phase("low", low, r // 2, scale),
                  litevae_phase("high", max(1, total - low), r, scale))
    return create_model("litevae-tiny"), Recipe(arm, phases)


def main(argv: list[str] | None = None) -> int:
    common.run_study(sys.modules[__name__], argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

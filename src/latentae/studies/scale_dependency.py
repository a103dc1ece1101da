"""Scale dependency (LiteVAE fig. 5, App. D.7): evaluated away from its training
resolution, LiteVAE degrades less than a standard VAE encoder.

Design: the ``lite-tiny`` and ``sd-enc`` arms of ``litevae_vs_sdvae`` (same decoder,
same init per seed), trained at the scale's resolution R, then tested on held-out BSDS
crops taken at native scale (no resize, so the image statistics per pixel are the same
at every size) of R, 2R and 4R. The per-arm metric ``psnr_drop_4R`` is PSNR at 4R minus
PSNR at R (a change at one resolution, so comparable across arms); the contrast is
LiteVAE's drop minus SD's (fig. 5 gives curves, no number: direction only).
"""

from __future__ import annotations

import sys
from pathlib import Path

from latentae.eval.psnr_ssim import psnr_per_image
from latentae.studies import common, design, litevae_vs_sdvae
from latentae.studies.runner import Contrast, reconstruct

NAME = "scale_dependency"
CLAIM = ("LiteVAE fig. 5: LiteVAE degrades less than an SD-VAE encoder when evaluated "
         "at resolutions above its training one (direction only: fig. 5 has no numbers)")
ARMS = {a: litevae_vs_sdvae.ARMS[a] for a in ("lite-tiny", "sd-enc")}
QUICK_ARMS = ("lite-tiny", "sd-enc")
CONTRASTS = (Contrast("lite-tiny", "sd-enc", "psnr_drop_2R", 0.0, "fig. 5, direction"),
             Contrast("lite-tiny", "sd-enc", "psnr_drop_4R", 0.0, "fig. 5, direction"))
build = litevae_vs_sdvae.build
TRAINS_AS = litevae_vs_sdvae.NAME  # so --runs-from can reuse that study's runs
CROPS_PER_SIZE = {"quick": 2, "cpu": 128, "gpu": 512, "h200": 512}


def extra_metrics(model, scale: design.Scale, data: Path, cache: Path) -> dict[str, float]:
    """PSNR at R, 2R, 4R on native-scale held-out crops, and the drops from R."""
    n, out = 2 if scale.dry_run else CROPS_PER_SIZE.get(scale.name, 128), {}
    for k in (k for k in (1, 2, 4) if k * scale.resolution <= 320):  # BSDS: 481×321
        crops = design.crop_set("test", data, n, k * scale.resolution, cache)
        out[f"psnr_{k}R"] = float(psnr_per_image(
            crops, reconstruct(model, crops, scale.device, batch=8)).mean())
    for k in (k for k in (2, 4) if f"psnr_{k}R" in out):
        out[f"psnr_drop_{k}R"] = out[f"psnr_{k}R"] - out["psnr_1R"]
    return out


def plot_results(out: Path, record: dict) -> None:
    """``OUT/psnr_vs_resolution.png``: mean test PSNR at R, 2R, 4R per arm."""
    r = record["scale"]["resolution"]
    common.plot_metric_series(out / "psnr_vs_resolution.png", record,
                              {k * r: f"psnr_{k}R" for k in (1, 2, 4)},
                              "evaluation crop size (px)", "PSNR (dB), held-out crops",
                              logx=True)


def main(argv: list[str] | None = None) -> int:
    common.run_study(sys.modules[__name__], argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

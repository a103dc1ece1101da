"""Study 2 — scale dependency (LiteVAE Fig. 5, App. D.7).

Claim tested: evaluated away from its training resolution, LiteVAE degrades less than
a standard VAE encoder in every metric.

Setup: the models trained by study 1 (``litevae_vs_sdvae``, trained at 64²; run first
if absent), each evaluated on the 24 kodak24 images resized (shortest side) and
center-cropped to every resolution in ``RESOLUTIONS``: PSNR, SSIM, LPIPS-Alex, rFID.
rFID on 24 images is heavily biased upwards (far below 2048 images) and only its
*trend* across resolutions means anything. The plot shows PSNR and rFID against
resolution; the table also gives each model's PSNR drop from 64² to the largest size.
"""

from __future__ import annotations

import sys
import time

from latentae.studies import common

NAME = "scale_dependency"
RESOLUTIONS = (64, 96, 128, 192, 256)


def run(args) -> list[dict]:
    started, out = time.perf_counter(), common.setup(args, NAME)
    resolutions = (32, 64) if args.quick else RESOLUTIONS
    limit = args.eval_limit or (2 if args.quick else None)
    models = common.trained_models(args, args.source)
    rows = []
    for name, model_dir in models.items():
        for res in resolutions:
            rows.append({"model": name, "resolution": res,
                         **common.evaluate_dir(model_dir, res, limit)})
            print(rows[-1], flush=True)
    summary = []
    for name in models:
        mine = [r for r in rows if r["model"] == name]
        summary.append({"model": name, **{f"psnr@{r['resolution']}": r["psnr"] for r in mine},
                        "psnr_drop": mine[0]["psnr"] - mine[-1]["psnr"],
                        **{f"rfid@{r['resolution']}": r["rfid"] for r in mine}})
    cols = ["model", *[f"psnr@{r}" for r in resolutions], "psnr_drop",
            *[f"rfid@{r}" for r in resolutions]]
    common.write_results(out, NAME, args, summary, cols, extra={"per_resolution": rows},
                         started=started)
    for metric in ("psnr", "rfid", "lpips"):
        series = {n: ([r["resolution"] for r in rows if r["model"] == n],
                      [r[metric] for r in rows if r["model"] == n]) for n in models}
        common.plot(out / f"{metric}_vs_resolution.png", series, "evaluation resolution",
                    f"{metric} (kodak24 center crops)", "trained at 64², evaluated at N²",
                    logx=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    common.pin_hash_seed()
    p = common.parser(NAME, __doc__)
    p.add_argument("--source", default=None,
                   help="folder of a finished litevae_vs_sdvae run (default: its OUT)")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

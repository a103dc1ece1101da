"""Study 3 — latent MMD to N(0, I) (LiteVAE Table 6, App. "Analysis of the latent space").

Claim tested: LiteVAE's (standardized) latents are statistically closer to a standard
Gaussian than SD-VAE's, for every RBF bandwidth (the paper: σ = 25…500 on whole latents).

Setup: the models trained by study 1 (``litevae_vs_sdvae``; run first if absent).
Latents (posterior mean) of ``crops`` random 64² crops taken at native resolution from
the 24 kodak24 images (seeded), standardized by their global mean and std. MMD²
(unbiased, Gretton et al. 2012) against as many N(0, I) draws, (a) on whole flattened
latents (d = 4·8·8 = 256) with the paper's bandwidths rescaled to our dimension,
σ = σ_paper·sqrt(d / 4096) (their 256² latents have d = 4096), and (b) on per-position
vectors (d = 4) with ``latentae.eval.mmd``'s default bandwidths. Mean ± std over
``trials`` reference draws. Values are ×10³.
"""

from __future__ import annotations

import math
import sys
import time

import torch

from latentae.eval.mmd import mmd2_unbiased
from latentae.io import list_images, load_image, to_tensor
from latentae.pretrained import load
from latentae.studies import common

NAME = "latent_mmd"
PAPER_SIGMAS = (25, 50, 100, 250, 500)


def random_crops(n: int, size: int, seed: int):
    """``n`` random ``size``² crops (native resolution) from kodak24, ``(n, 3, s, s)``."""


    images = [to_tensor(load_image(f)) for f in list_images(common.EVAL_DATA)]
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        img = images[i % len(images)]
        top = int(torch.randint(0, img.shape[1] - size + 1, (), generator=g))
        left = int(torch.randint(0, img.shape[2] - size + 1, (), generator=g))
        out.append(img[:, top:top + size, left:left + size])
    return torch.stack(out)


def mmd_table(z, trials: int) -> dict:
    """MMD² ×10³ (mean, std over reference draws) for whole-latent and per-position vectors."""


    z = (z - z.mean()) / z.std()  # standardized, as a diffusion model would see them
    flat = z.flatten(1).double()  # (n, c·h·w)
    pos = z.movedim(1, -1).reshape(-1, z.shape[1]).double()[:2048]  # (≤2048, c)
    scale = math.sqrt(flat.shape[1] / 4096)
    result = {}
    for name, x, sigmas in [(f"flat_s{s}", flat, (s * scale,)) for s in PAPER_SIGMAS] + [
            ("per_position", pos, None)]:
        vals = []
        for t in range(trials):
            ref = torch.randn(x.shape, generator=torch.Generator().manual_seed(t),
                              dtype=torch.float64)
            vals.append(1e3 * mmd2_unbiased(x, ref, sigmas))
        v = torch.tensor(vals)
        result[name] = (float(v.mean()), float(v.std()) if trials > 1 else 0.0)
    return result


def run(args) -> list[dict]:


    started, out = time.perf_counter(), common.setup(args, NAME)
    crops_n, trials = (16, 2) if args.quick else (480, 5)
    size = 32 if args.quick else 64
    models = common.trained_models(args, args.source)
    x = random_crops(crops_n, size, args.seed)
    rows = []
    for name, model_dir in models.items():
        model = load(model_dir).eval()
        with torch.no_grad():
            z = torch.cat([model.encode(b).mode() for b in x.split(32)])
        res = mmd_table(z, trials)
        row = {"model": name, "crops": crops_n, "latent_dim": z[0].numel()}
        row.update({k: f"{m:.3f} ± {s:.3f}" for k, (m, s) in res.items()})
        row["_raw"] = res
        rows.append(row)
        print(row, flush=True)
    cols = ["model", "crops", "latent_dim", *[f"flat_s{s}" for s in PAPER_SIGMAS],
            "per_position"]
    common.write_results(out, NAME, args, rows, cols, started=started)
    series = {r["model"]: (list(PAPER_SIGMAS), [r["_raw"][f"flat_s{s}"][0]
                                                for s in PAPER_SIGMAS]) for r in rows}
    common.plot(out / "mmd_vs_sigma.png", series, "σ (paper units, rescaled to d)",
                "MMD² ×10³ to N(0, I)", "standardized latents vs N(0, I)", logx=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    common.pin_hash_seed()
    p = common.parser(NAME, __doc__)
    p.add_argument("--source", default=None,
                   help="folder of a finished litevae_vs_sdvae run (default: its OUT)")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Study 5 — DC-AE residual autoencoding (DC-AE §3.2, Fig. 4 and the shortcut ablation).

Claim tested: at high spatial compression (f32, f64) the space-to-channel /
channel-to-space shortcuts make the autoencoder much easier to optimise: with them,
reconstruction is better at every step than without them, and better than an
SD-VAE-style autoencoder with the same compression.

Scaled down: tiny DC-AE structures (``dcae-tiny-f32``: latent 32 ch, ``dcae-tiny-f64``:
latent 128 ch) with all three shortcut switches on or off, and SD-VAE-style baselines
with the same stage widths (one ResBlock per level, mid attention) and latent channels.
At 64² input the f32 latent is 2×2×32 and the f64 latent 1×1×128: the same 96×
compression of the pixel values as f32c32/f64c128 at any size. Plain autoencoders
(L1 only, no KL/LPIPS/GAN), Adam lr 5e-4, batch 8, equal steps and seed; the EMA model
is validated on the 24 kodak24 center crops every ``steps/8`` steps.
"""

from __future__ import annotations

import sys
import time

import torch

from latentae.registry import create_model, parameter_counts
from latentae.studies import common
from latentae.train.recipes import LossWeights, Phase

NAME = "dcae_shortcuts"
NO_SHORTCUTS = dict(stage_shortcuts=False, encoder_out_shortcut=False,
                    decoder_in_shortcut=False)
SD_F32 = dict(encoder_channels=(16, 32, 64, 64, 128, 128),
              decoder_channels=(16, 32, 64, 64, 128, 128), latent_channels=32,
              use_quant_conv=False)
SD_F64 = dict(encoder_channels=(16, 32, 64, 64, 128, 128, 256),
              decoder_channels=(16, 32, 64, 64, 128, 128, 256), latent_channels=128,
              use_quant_conv=False)
MODELS = {  # name -> (preset, overrides)
    "dcae-f32": ("dcae-tiny-f32", {}),
    "dcae-f32-noshortcut": ("dcae-tiny-f32", NO_SHORTCUTS),
    "sdvae-f32": ("sdvae-tiny", SD_F32),
    "dcae-f64": ("dcae-tiny-f64", {}),
    "dcae-f64-noshortcut": ("dcae-tiny-f64", NO_SHORTCUTS),
    "sdvae-f64": ("sdvae-tiny", SD_F64),
}
QUICK_MODELS = ("dcae-f32", "dcae-f32-noshortcut")


def settings(args) -> dict:
    if args.quick:
        return dict(steps=args.steps or 2, resolution=32, batch=2, val_every=1,
                    val_images=2, models=QUICK_MODELS, eval_limit=args.eval_limit or 2)
    steps = args.steps or 200
    chosen = getattr(args, "models", None)
    models = tuple(chosen.split(",")) if chosen else tuple(MODELS)
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; valid: {', '.join(MODELS)}")
    return dict(steps=steps, resolution=64, batch=8, val_every=max(1, steps // 8),
                val_images=24, models=models, eval_limit=args.eval_limit)


def run(args) -> list[dict]:
    """Train every model for the same steps; table of final metrics + PSNR curves."""


    started, out, s = time.perf_counter(), common.setup(args, NAME), settings(args)
    phase = Phase("main", s["steps"], s["resolution"], s["batch"], 5e-4,
                  losses=LossWeights(perceptual=0.0, kl=0.0))
    rows, curves = [], {}
    for name in s["models"]:
        preset, overrides = MODELS[name]
        torch.manual_seed(args.seed)
        model = create_model(preset, **overrides)
        init = common.save_init(model, out / "init" / name)
        trained = common.train_model(init, out / name, (phase,), args.seed, s["val_every"],
                                     s["val_images"])
        metrics = common.evaluate_dir(trained["model"], s["resolution"], s["eval_limit"])
        curve = trained["curve"]
        curves[name] = ([c["step"] for c in curve], [c["psnr"] for c in curve])
        half = [c["psnr"] for c in curve if c["step"] == s["steps"] // 2]
        rows.append({"model": name, "f": model.spatial_compression_ratio,
                     "latent_ch": model.latent_channels,
                     "params_M": parameter_counts(model)["total"] / 1e6,
                     "psnr_half": half[0] if half else None, "train_s": trained["seconds"],
                     "model_dir": trained["model"], **metrics})
        print(f"{name}: {rows[-1]}", flush=True)
    cols = ["model", "f", "latent_ch", "params_M", "psnr_half", "psnr", "ssim", "lpips",
            "rfid", "train_s"]
    common.write_results(out, NAME, args, rows, cols, extra={"settings": s,
                                                             "curves": curves}, started=started)
    common.plot(out / "psnr_vs_steps.png", curves, "training step",
                "val PSNR (kodak24 center, EMA)",
                f"DC-AE shortcuts vs none vs SD-VAE style, {s['resolution']}²")
    return rows


def main(argv: list[str] | None = None) -> int:
    common.pin_hash_seed()
    p = common.parser(NAME, __doc__)
    p.add_argument("--models", default=None,
                   help="comma-separated subset of " + ", ".join(MODELS))
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

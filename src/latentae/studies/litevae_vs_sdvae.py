"""Study 1 — LiteVAE vs SD-VAE encoders behind the same decoder (LiteVAE tables 1–2).

Claim tested: a LiteVAE encoder with about 1/5 of the VAE encoder's parameters matches
or beats it, and beats an equally small VAE encoder. Scaled down: every model shares the
``sdvae-tiny`` decoder (channels 32-32-64-64, one ResBlock per level, mid attention,
4 latent channels) with the *same initial decoder weights*; only the encoder differs:

- ``sd-enc``     the SD-VAE encoder mirroring the decoder (32-32-64-64), the "VAE";
- ``sd-enc-small`` an SD-VAE encoder shrunk to LiteVAE-tiny's size (16-16-32-32);
- ``lite-tiny``  the ``litevae-tiny`` wavelet encoder (~1/4 of ``sd-enc``);
- ``lite-s``     the LiteVAE-S encoder (Table 23 widths), larger than ``sd-enc`` here.

No quant convs anywhere (so the decoders are identical modules). Losses: L1 + KL 1e-6,
no LPIPS and no GAN (CPU budget); Adam lr 5e-4, batch 8, same steps and seed for all.
"""

from __future__ import annotations

import sys
import time

import torch

from latentae.registry import create_model, parameter_counts
from latentae.studies import common
from latentae.train.recipes import LossWeights, Phase

NAME = "litevae_vs_sdvae"
DECODER = dict(decoder_channels=(32, 32, 64, 64))
MODELS = {  # name -> (preset, overrides)
    "sd-enc": ("sdvae-tiny", dict(use_quant_conv=False)),
    "sd-enc-small": ("sdvae-tiny", dict(use_quant_conv=False,
                                        encoder_channels=(16, 16, 32, 32))),
    "lite-tiny": ("litevae-tiny", {}),
    "lite-s": ("litevae-s", dict(decoder_layers_per_block=1, **DECODER)),
}
QUICK_MODELS = ("sd-enc-small", "lite-tiny")


def settings(args) -> dict:
    """Steps, resolution and batch of the run (``--quick``: a smoke run)."""
    if args.quick:
        return dict(steps=args.steps or 3, resolution=32, batch=2, val_every=0,
                    models=QUICK_MODELS, eval_limit=args.eval_limit or 2)
    steps = args.steps or 300
    chosen = getattr(args, "models", None)
    models = tuple(chosen.split(",")) if chosen else tuple(MODELS)
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; valid: {', '.join(MODELS)}")
    return dict(steps=steps, resolution=64, batch=8, val_every=max(1, steps // 6),
                models=models, eval_limit=args.eval_limit)


def build_models(names, seed: int) -> dict:
    """The models, all with the decoder initialisation of the first one."""


    models, ref = {}, None
    for name in names:
        preset, overrides = MODELS[name]
        torch.manual_seed(seed)
        model = create_model(preset, **overrides)
        if ref is None:
            ref = model.decoder.state_dict()
        model.decoder.load_state_dict(ref)  # same decoder, same starting point
        models[name] = model
    return models


def run(args) -> list[dict]:
    """Train and evaluate every model; returns the table rows."""

    started, out, s = time.perf_counter(), common.setup(args, NAME), settings(args)
    phase = Phase("main", s["steps"], s["resolution"], s["batch"], 5e-4,
                  losses=LossWeights(perceptual=0.0, kl=1e-6))
    rows, curves = [], {}
    for name, model in build_models(s["models"], args.seed).items():
        init = common.save_init(model, out / "init" / name)
        trained = common.train_model(init, out / name, (phase,), args.seed, s["val_every"])
        metrics = common.evaluate_dir(trained["model"], s["resolution"], s["eval_limit"])
        counts = parameter_counts(model)  # the count `latentae models` prints
        rows.append({"model": name, "encoder_M": counts["encoder"] / 1e6,
                     "decoder_M": counts["decoder"] / 1e6,
                     "enc_img_s": common.encode_rate(model, 2 * s["resolution"]),
                     "train_s": trained["seconds"], "model_dir": trained["model"], **metrics})
        curves[name] = ([c["step"] for c in trained["curve"]],
                        [c["psnr"] for c in trained["curve"]])
        print(f"{name}: {rows[-1]}", flush=True)
    cols = ["model", "encoder_M", "psnr", "ssim", "lpips", "rfid", "mmd2_std", "enc_img_s",
            "train_s"]
    common.write_results(out, NAME, args, rows, cols, extra={"settings": s,
                                                             "curves": curves}, started=started)
    common.plot(out / "psnr_vs_steps.png", curves, "training step",
                "val PSNR (kodak24 center, EMA)", f"same decoder, {s['resolution']}²")
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

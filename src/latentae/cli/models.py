"""``latentae models``, ``latentae convert``."""

from __future__ import annotations

import argparse

import torch

from latentae.cli import args as shared
from latentae.diffusion.registry import describe_presets
from latentae.errors import InputError
from latentae.pretrained import FORMATS, convert_directory
from latentae.registry import create_model, list_models, parameter_counts


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model presets with parameter counts")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'litevae-*'")
    p.add_argument("--diffusion", action="store_true",
                   help="list the diffusion presets (params, tokens, GFLOPs) for latents of "
                        "--resolution images through an f --f, --latent-channels autoencoder")
    p.add_argument("--resolution", type=shared.positive_int, default=256)
    p.add_argument("--f", type=shared.positive_int, default=8, help="autoencoder spatial factor")
    p.add_argument("--latent-channels", type=shared.positive_int, default=4)
    p.add_argument("--patch-size", "--patch", dest="patch", type=shared.positive_int, default=2)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("convert", help="convert weights between diffusers and latentae")
    p.add_argument("src", help="a diffusers AutoencoderKL/AutoencoderDC directory, or a "
                               "saved latentae model directory")
    p.add_argument("out", help="output folder (missing or empty, or --overwrite)")
    p.add_argument("--to", choices=FORMATS, default=None,
                   help="target format (default: the other one)")
    shared.add_overwrite(p, "a non-empty output folder")
    p.set_defaults(func=cmd_convert)


def model_summary(name: str) -> dict:
    """Parameter counts (``registry.parameter_counts``) etc. of a preset, built on the
    meta device (no memory)."""
    with torch.device("meta"):
        m = create_model(name)
    counts = parameter_counts(m)
    return {"name": name, "family": m.family, **counts, "f": m.spatial_compression_ratio,
            "latent_channels": m.latent_channels, "scaling_factor": m.scaling_factor}


def cmd_diffusion_models(args: argparse.Namespace) -> int:
    rows = describe_presets(resolution=args.resolution, compression=args.f,
                            patch_size=args.patch, in_channels=args.latent_channels)
    print(f"{args.resolution}² images, f{args.f}c{args.latent_channels} latents, patch "
          f"{args.patch}, 1000 classes")
    print(f"{'name':<10} {'family':<6} {'params':>14} {'tokens':>7} {'GFLOPs':>9}")
    for r in rows:
        print(f"{r['name']:<10} {r['family']:<6} {r['params']:>14,} {r['tokens']:>7} "
              f"{r['gflops']:>9.2f}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    if args.diffusion:
        return cmd_diffusion_models(args)
    names = list_models(args.pattern)
    if not names:
        raise InputError(f"no preset matches {args.pattern!r}; `latentae models` lists them "
                         "all")
    print(f"{'name':<20} {'family':<8} {'encoder':>13} {'decoder':>13} {'f':>4} {'nz':>4} "
          f"{'scale':>8}")
    for n in names:
        s = model_summary(n)
        print(f"{n:<20} {s['family']:<8} {s['encoder']:>13,} {s['decoder']:>13,} {s['f']:>4} "
              f"{s['latent_channels']:>4} {s['scaling_factor']:>8.5g}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    kind = convert_directory(args.src, args.out, to=args.to, overwrite=args.overwrite)
    print(f"wrote {kind} model to {args.out}")
    return 0

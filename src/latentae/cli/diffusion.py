"""``latentae diffusion convert``: official DiT / U-ViT / DC-AE checkpoints -> a saved
latentae diffusion model (``config.json`` + ``model.safetensors``)."""

from __future__ import annotations

import argparse
import pickle

import torch

from latentae.diffusion.base import count_params
from latentae.diffusion.convert import load_official
from latentae.diffusion.registry import list_diffusion
from latentae.errors import InputError
from latentae.files import atomic_dir, prepare_output_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diffusion", help="diffusion models (DiT, U-ViT) on autoencoder latents")
    dsub = p.add_subparsers(dest="diffusion_command", metavar="ACTION", required=True)
    add_convert(dsub)


def add_convert(dsub: argparse._SubParsersAction) -> None:
    c = dsub.add_parser("convert", help="convert an official DiT or U-ViT/DC-AE checkpoint "
                                        "(.pt) into a latentae model folder")
    c.add_argument("src", help="checkpoint (.pt/.pth): a state dict, or one under "
                               "'model'/'ema'")
    c.add_argument("out", help="output folder (config.json + model.safetensors)")
    c.add_argument("--model", required=True, choices=list_diffusion(),
                   help="latentae preset with the checkpoint's depth and width")
    c.add_argument("--patch-size", type=int, required=True)
    c.add_argument("--input-size", type=int, required=True,
                   help="latent height = width the model was trained on (image / f)")
    c.add_argument("--in-channels", type=int, required=True, help="latent channels")
    c.add_argument("--num-classes", type=int, required=True,
                   help="classes without the null class (ImageNet: 1000; 0: unconditional)")
    c.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    c.set_defaults(func=cmd_convert)


def read_checkpoint(path: str):
    """``torch.load(path, weights_only=True)``; an unreadable file is an ``InputError``.
    ``argparse.Namespace`` is allowed: the DiT release stores its ``args`` as one."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file") from e
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable PyTorch checkpoint of plain tensors "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from e


def cmd_convert(args: argparse.Namespace) -> int:
    prepare_output_dir(args.out, overwrite=args.overwrite)  # refuse before the slow part
    model = load_official(read_checkpoint(args.src), args.model, patch_size=args.patch_size,
                          input_size=args.input_size, in_channels=args.in_channels,
                          num_classes=args.num_classes)
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        model.save_pretrained(tmp)
    c = model.config
    print(f"wrote {args.out}: {args.model}/{c.patch_size} on {c.in_channels}x{c.input_size}"
          f"x{c.input_size} latents, {c.num_classes} classes, learned sigma "
          f"{'on' if c.learn_sigma else 'off'}, {count_params(model):,} parameters, "
          f"{model.tokens} tokens")
    return 0

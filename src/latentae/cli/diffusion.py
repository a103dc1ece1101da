"""``latentae diffusion {train,sample,eval,ref-stats,convert}``: diffusion models (DiT,
U-ViT) on an autoencoder's latents — train, draw samples, measure them, and convert
official DiT / U-ViT / DC-AE checkpoints into latentae model folders."""

from __future__ import annotations

import argparse
import pickle

import torch

from latentae.cli import args as shared
from latentae.cli.diffusion_eval import add_eval_parser, add_ref_stats_parser
from latentae.cli.train import run_training
from latentae.diffusion.base import count_params
from latentae.diffusion.config import make_diffusion_config
from latentae.diffusion.convert import load_official
from latentae.diffusion.generate import sample_folder
from latentae.diffusion.registry import list_diffusion
from latentae.diffusion.train import train
from latentae.engine.config import load_yaml
from latentae.errors import InputError
from latentae.files import atomic_dir, prepare_output_dir

# Flags that map one-to-one onto DiffusionConfig fields (None = not given: the recipe's
# value or the default). (flag, type, config field, help)
TRAIN_FLAGS = (
    ("--autoencoder", str, "autoencoder", "saved latentae or diffusers autoencoder folder"),
    ("--model", str, "model", "diffusion preset (latentae models --diffusion), default dit-s"),
    ("--patch", int, "patch", "patch size (tokens = (resolution / f / patch)²), default 2"),
    ("--data", str, "data", "image folder (DIR/CLASS/image for classes) or, with --cached, "
     "the shards of `latentae encode --labels`"),
    ("--out", str, "out", "run folder"),
    ("--objective", str, "objective", "ddpm (ε, DiT) | flow (velocity, SiT); default ddpm"),
    ("--resolution", int, "resolution", "image size (default 256; --cached: the latents')"),
    ("--batch-size", int, "batch_size", "GLOBAL batch over all processes (recipe: DiT 256, "
     "U-ViT 1024)"),
    ("--steps", int, "steps", "optimizer steps (recipe: DiT 400K, U-ViT 500K)"),
    ("--lr", float, "lr", "learning rate (recipe: DiT 1e-4, U-ViT 2e-4)"),
    ("--warmup-steps", int, "warmup_steps", "linear lr warm-up (recipe: DiT 0, U-ViT 5000)"),
    ("--weight-decay", float, "weight_decay", None),
    ("--recipe", str, "recipe", "dit | uvit (default: the model's family)"),
    ("--t-sampling", str, "t_sampling", "flow: uniform | logit_normal"),
    ("--class-dropout", float, "class_dropout", "label -> null class rate (default 0.1)"),
    ("--crop", str, "crop", "on the fly: random | center (default random, with flips)"),
    ("--crop-scale", float, "crop_scale", "random crop: shortest side resized to R·U(1, S)"),
    ("--posterior", str, "posterior", "on the fly: sample (DiT) | mode"),
    ("--latent-norm", str, "latent_norm", "model (the autoencoder's scaling/shift factor) | "
     "channel (per-channel mean/std of the first --norm-images latents)"),
    ("--norm-images", int, "norm_images", None),
    ("--workers", int, "workers", "image loader processes (on the fly)"),
    ("--sample-every", int, "val_every", "draw a sample grid into OUT/samples every N steps "
     "(0: only at the end; default 5000)"),
    ("--grid-images", int, "grid_images", None), ("--grid-sampler", str, "grid_sampler", None),
    ("--grid-steps", int, "grid_steps", None), ("--grid-guidance", float, "grid_guidance", None),
    ("--resume", str, "resume", "'auto': continue from the newest checkpoint in OUT"),
    ("--seed", int, "seed", None),
    ("--device", str, "device", "auto (this process's GPU if any, else cpu) | cpu | cuda:N"),
    ("--ema-decay", float, "ema_decay", "(recipe: 0.9999)"),
    ("--grad-clip", float, "grad_clip", "max gradient norm (recipe: 0 = off)"),
    ("--ckpt-every", int, "ckpt_every", "checkpoint every N steps (default 5000)"),
    ("--log-every", int, "log_every", "log every N steps (default 100)"),
    ("--keep-checkpoints", int, "keep_checkpoints", None),
    ("--max-minutes", float, "max_minutes", "checkpoint and stop after this long"),
    ("--max-steps", int, "max_steps", "checkpoint and stop after this many steps"),
    ("--max-images", int, "max_images", None),
)
SWITCHES = (("--cached", "cached", "DATA holds latent shards"),
            ("--autoencoder-random-init", "autoencoder_random_init",
             "allow a preset name for --autoencoder (random weights; smoke tests)"),
            ("--gradient-checkpointing", "gradient_checkpointing",
             "recompute transformer blocks in backward (less memory)"),
            ("--overwrite", "overwrite", "OUT holds a run: delete it and start over"),
            ("--restart", "restart", "with --resume auto: start over if no checkpoint reads"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diffusion", help="diffusion models (DiT, U-ViT) on autoencoder latents")
    dsub = p.add_subparsers(dest="diffusion_command", metavar="ACTION", required=True)
    add_train(dsub)
    add_sample(dsub)
    add_eval_parser(dsub)
    add_ref_stats_parser(dsub)
    add_convert(dsub)


def add_train(dsub: argparse._SubParsersAction) -> None:
    t = dsub.add_parser("train", help="train a DiT / U-ViT on an autoencoder's latents",
                        description="One process, or `torchrun --nproc_per_node N -m latentae "
                        "diffusion train ...` (DDP). Missing values come from the release "
                        "recipe of the model's family (docs/diffusion.md).")
    for flag, typ, dest, help_ in TRAIN_FLAGS:
        t.add_argument(flag, type=typ, dest=dest, default=None, help=help_)
    for flag, dest, help_ in SWITCHES:
        t.add_argument(flag, dest=dest, action="store_true", default=None, help=help_)
    t.add_argument("--learn-sigma", dest="learn_sigma", action=argparse.BooleanOptionalAction,
                   default=None, help="ddpm: learned variance (default on, as DiT)")
    t.add_argument("--no-flip", dest="flip", action="store_false", default=None,
                   help="on the fly: no random horizontal flips")
    t.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    t.add_argument("--config", help="YAML file of config keys (the command line wins)")
    t.set_defaults(func=cmd_train)


def add_sample(dsub: argparse._SubParsersAction) -> None:
    s = dsub.add_parser("sample", help="draw class-balanced samples of a trained run: PNGs "
                                       "+ samples.npz (resumable)")
    s.add_argument("run", help="the --out folder of `latentae diffusion train`")
    s.add_argument("--out", required=True, help="folder for {index:06d}.png and samples.npz")
    s.add_argument("--n", type=shared.positive_int, required=True, help="number of samples")
    s.add_argument("--guidance", type=shared.non_negative_float, default=None,
                   help="classifier-free guidance scale (default: the recipe's, 1.5; 1 = off)")
    s.add_argument("--sampler", default=None,
                   help="ddpm | ddim | dpm++2m (ddpm objective), euler | heun (flow); "
                        "default: the recipe's")
    s.add_argument("--steps", type=shared.positive_int, default=None, help="sampling steps")
    shared.add_batch_size(s, 16)
    s.add_argument("--seed", type=shared.non_negative_int, default=0,
                   help="sample i's noise is seeded by (seed, i)")
    shared.add_device(s)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_sample)


def cmd_train(args: argparse.Namespace) -> int:
    """Exit 0 when finished or stopped with a checkpoint; 130 after Ctrl-C."""
    file = load_yaml(args.config) if args.config else {}
    fields = [dest for _, _, dest, _ in TRAIN_FLAGS] + [dest for _, dest, _ in SWITCHES]
    cli = {k: getattr(args, k) for k in fields + ["learn_sigma", "flip", "progress"]}
    return run_training(lambda: train(make_diffusion_config(file, cli)),
                        lambda out: f"model: {out}  (sample with `latentae diffusion sample "
                                    f"{out.parent} --n 64 --out SAMPLES`)")


def cmd_sample(args: argparse.Namespace) -> int:
    npz = sample_folder(args.run, args.out, n=args.n, guidance=args.guidance,
                        sampler=args.sampler, steps=args.steps, batch_size=args.batch_size,
                        seed=args.seed, device=args.device, progress=not args.no_progress)
    print(f"wrote {args.n} samples to {args.out} and {npz}")
    return 0


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

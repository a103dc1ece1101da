"""``latentae diffusion {train,sample,eval,ref-stats,convert,attach}``: diffusion models
(DiT, U-ViT) on an autoencoder's latents — train, draw samples, measure them, convert
official DiT / U-ViT / DC-AE checkpoints into latentae model folders and attach their
run record (autoencoder, latent scale, the release's sampling defaults)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from latentae.cli import args as shared
from latentae.cli.diffusion_eval import add_eval_parser, add_ref_stats_parser
from latentae.cli.train import run_training
from latentae.diffusion.attach import (
    ARCH_FIELDS,
    RELEASES,
    TEMPLATES,
    attach,
    release_defaults,
    write_release,
)
from latentae.diffusion.base import count_params
from latentae.diffusion.config import make_diffusion_config
from latentae.diffusion.convert import load_official
from latentae.diffusion.generate import sample_folder
from latentae.diffusion.registry import list_diffusion
from latentae.diffusion.train import train
from latentae.engine.config import load_yaml
from latentae.errors import InputError
from latentae.files import atomic_dir, prepare_output_dir
from latentae.locks import hold
from latentae.runtime import set_threads

# Flags that map one-to-one onto DiffusionConfig fields (None = not given: the recipe's
# value or the default). (flag, type, config field, help)
TRAIN_FLAGS = (
    ("--autoencoder", str, "autoencoder", "saved latentae or diffusers autoencoder folder"),
    ("--model", str, "model", "diffusion preset (latentae models --diffusion), default dit-s"),
    ("--patch-size", int, "patch_size", "patch size (tokens = (resolution / f / patch)²), "
     "default 2; also --patch"),
    ("--data", str, "data", "image folder (DIR/CLASS/image for classes) or, with --cached, "
     "the shards of `latentae encode --labels`"),
    ("--out", str, "out", "run folder"),
    ("--objective", str, "objective", "ddpm (ε, DiT/U-ViT) | flow (ours: x_t=(1-t)x+tε) | "
     "flow-sit (SiT/USiT: x_t=tx+(1-t)ε); default: the recipe's"),
    ("--schedule", str, "schedule", "ddpm noise schedule: linear (DiT) | scaled-linear "
     "(SD, U-ViT, DC-AE) | cosine, +zero-snr; default: the recipe's"),
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
    ("--val-every", int, "val_every", "draw a sample grid into OUT/samples every N steps "
     "(0: only at the end; default 5000), as `train --val-every`; also --sample-every"),
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


RANDOM_INIT = "for random weights of a preset --autoencoder pass --autoencoder-random-init"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diffusion", help="diffusion models (DiT, U-ViT) on autoencoder latents")
    dsub = p.add_subparsers(dest="diffusion_command", metavar="ACTION", required=True)
    add_train(dsub)
    add_sample(dsub)
    add_eval_parser(dsub)
    add_ref_stats_parser(dsub)
    add_convert(dsub)
    add_attach(dsub)


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
    shared.add_compile(t)
    shared.add_not_here(t, "--random-init", RANDOM_INIT)
    t.add_argument("--config", help="YAML file of config keys (the command line wins)")
    t.add_argument("--patch", type=int, dest="patch_size", default=None,
                   help=argparse.SUPPRESS)  # the earlier spelling of --patch-size
    t.add_argument("--sample-every", type=int, dest="val_every", default=None,
                   help=argparse.SUPPRESS)  # the earlier spelling of --val-every
    shared.add_threads(t)
    t.set_defaults(func=cmd_train)


def _record_flags(p: argparse.ArgumentParser) -> None:
    """What a model folder without a run record (a converted checkpoint) needs, or what
    overrides its record: shared by `sample` and `attach`."""
    p.add_argument("--autoencoder", default=None,
                   help="a converted model: the autoencoder folder it was trained on "
                        "(latentae or diffusers)")
    p.add_argument("--autoencoder-random-init", action="store_true",
                   help="--autoencoder is a preset name with random weights (smoke tests)")
    shared.add_not_here(p, "--random-init", RANDOM_INIT)
    p.add_argument("--latent-scale", type=float, default=None,
                   help="z' = (z - shift)·scale (default: the release's, else the "
                        "autoencoder's scaling_factor)")
    p.add_argument("--latent-shift", type=float, default=None)
    p.add_argument("--resolution", type=int, default=None,
                   help="image size (default: latent size × the autoencoder's factor)")
    p.add_argument("--objective", default=None, choices=["ddpm", "flow", "flow-sit"],
                   help="default: the record's (a converted release remembers its own)")
    p.add_argument("--schedule", default=None,
                   help="ddpm noise schedule: linear | scaled-linear | cosine[+zero-snr]")
    p.add_argument("--guidance-channels", type=shared.positive_int, default=None,
                   help="guide only the first N channels (3: the DiT release's "
                        "forward_with_cfg); default: the record's, all")


def _record(args: argparse.Namespace) -> dict:
    return {"autoencoder_random_init": args.autoencoder_random_init,
            "latent_scale": args.latent_scale, "latent_shift": args.latent_shift,
            "resolution": args.resolution, "objective": args.objective,
            "schedule": args.schedule}


def add_sample(dsub: argparse._SubParsersAction) -> None:
    s = dsub.add_parser("sample", help="draw samples of a trained run or a converted model: "
                                       "PNGs, samples.npz, grid.png (resumable, torchrun)",
                        description="One process, or `torchrun --nproc_per_node N -m latentae "
                        "diffusion sample ...`: each process draws its own blocks of "
                        "indices (its GPU: LOCAL_RANK); the folder is the same either way.")
    s.add_argument("run", help="the --out folder of `latentae diffusion train`, or a model "
                               "folder of `latentae diffusion convert`")
    s.add_argument("--out", required=True, help="folder for {index:06d}.png, samples.npz "
                                                "and grid.png")
    s.add_argument("--n", "--num-samples", dest="n", type=shared.positive_int, default=None,
                   help="number of samples (default: the rows of --noise); under torchrun "
                        "spell it --num-samples (torchrun reads --n as its own option)")
    s.add_argument("--guidance", type=shared.non_negative_float, default=None,
                   help="classifier-free guidance scale (default: the record's; 1 = off)")
    s.add_argument("--sampler", default=None,
                   help="ddpm | ddim | dpm++2m | dpm++3m | dpm++s (ddpm objective), euler | "
                        "heun | dopri5 | euler-maruyama (flow); default: the record's")
    s.add_argument("--steps", type=shared.positive_int, default=None, help="sampling steps")
    s.add_argument("--labels", choices=["random", "balanced"], default="random",
                   help="random: uniform classes, as the DiT/DC-AE samplers (default); "
                        "balanced: class i mod K")
    s.add_argument("--noise", default=None, metavar="FILE.npy",
                   help="initial latents (N, C, h, w) instead of drawing them")
    for flag, typ, help_ in (("--eta", float, "ddim: 0 deterministic … 1"),
                             ("--order", int, "dpm++s: 1-3 (DC-AE: 3)"),
                             ("--grid", str, "dpm++s: time_uniform | logSNR | time_quadratic"),
                             ("--atol", float, "dopri5 (SiT: 1e-6)"),
                             ("--rtol", float, "dopri5 (SiT: 1e-3)")):
        s.add_argument(flag, type=typ, default=None, help=help_ + "; default: the record's")
    _record_flags(s)
    shared.add_batch_size(s, 16)
    s.add_argument("--seed", type=shared.non_negative_int, default=0,
                   help="sample i's noise is seeded by (seed, i), its label by (seed, i, 1)")
    shared.add_device(s)
    shared.add_threads(s)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_sample)


def add_attach(dsub: argparse._SubParsersAction) -> None:
    a = dsub.add_parser("attach", help="write a converted model's run record (autoencoder, "
                                       "latent scale, sampling defaults) once")
    a.add_argument("model", help="a model folder of `latentae diffusion convert`")
    _record_flags(a)
    a.add_argument("--sampler", default=None)
    a.add_argument("--steps", type=shared.positive_int, default=None)
    a.add_argument("--guidance", type=shared.non_negative_float, default=None)
    a.set_defaults(func=cmd_attach)


def cmd_train(args: argparse.Namespace) -> int:
    """Exit 0 when finished or stopped with a checkpoint; 130 after Ctrl-C."""
    set_threads(args.threads)
    file = load_yaml(args.config) if args.config else {}
    fields = [dest for _, _, dest, _ in TRAIN_FLAGS] + [dest for _, dest, _ in SWITCHES]
    cli = {k: getattr(args, k) for k in fields + ["learn_sigma", "flip", "progress", "compile"]}
    return run_training(lambda: train(make_diffusion_config(file, cli)),
                        lambda out: f"model: {out}  (sample with `latentae diffusion sample "
                                    f"{out.parent} --n 64 --out SAMPLES`)")


OPTIONS = ("eta", "order", "grid", "atol", "rtol")  # samplers.sample(**options)


def cmd_sample(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    n = args.n
    if n is None:
        if args.noise is None:
            raise InputError("pass --n (or --noise FILE.npy, whose rows it then is)")
        n = int(np.load(args.noise, mmap_mode="r", allow_pickle=False).shape[0])
    # One writer per folder; under torchrun rank 0 holds the lock for the whole group.
    first = os.environ.get("RANK", "0") == "0"
    with hold(args.out) if first else contextlib.nullcontext():
        npz = sample_folder(args.run, args.out, n=n, guidance=args.guidance,
                            sampler=args.sampler, steps=args.steps, batch_size=args.batch_size,
                            seed=args.seed, device=args.device, progress=not args.no_progress,
                            labels=args.labels, noise=args.noise,
                            guidance_channels=args.guidance_channels,
                            sampler_options={k: getattr(args, k) for k in OPTIONS
                                             if getattr(args, k) is not None},
                            autoencoder=args.autoencoder, **_record(args))
    if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 speaks (the group is gone)
        print(f"wrote {n} samples to {args.out}: {npz} (arr_0, labels, latents) and "
              f"{Path(args.out) / 'grid.png'}")
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    info = attach(args.model, autoencoder=args.autoencoder, **_record(args),
                  guidance_channels=args.guidance_channels, sampler=args.sampler,
                  sample_steps=args.steps, guidance=args.guidance)
    print(f"wrote {Path(args.model) / 'diffusion_run.json'}: autoencoder {info.autoencoder}, "
          f"latent scale {info.latent_norm.scale[0]:g}, {info.objective} on "
          f"{info.schedule}, {info.sampler} {info.sample_steps} steps, guidance "
          f"{info.guidance:g} (sample with `latentae diffusion sample {args.model} --n N "
          "--out SAMPLES`)")
    return 0


def add_convert(dsub: argparse._SubParsersAction) -> None:
    c = dsub.add_parser("convert", help="convert an official DiT, U-ViT or DC-AE "
                                        "(efficientvit) checkpoint into a latentae model folder")
    c.add_argument("src", help="checkpoint: .pt/.pth (a state dict, or one under 'model'/"
                               "'ema'), .safetensors, or a Hugging Face folder of "
                               "efficientvit's (model.safetensors + config.json)")
    c.add_argument("out", help="output folder (config.json + model.safetensors [+ "
                               "release.json])")
    c.add_argument("--release", default=None,
                   help="the release it comes from (its architecture and sampling defaults): "
                        f"{', '.join(RELEASES)}; or a convention for other checkpoints: "
                        f"{', '.join(TEMPLATES)} (default: the folder's config.json "
                        "model_name)")
    c.add_argument("--model", default=None, choices=list_diffusion(),
                   help="latentae preset with the checkpoint's depth and width")
    # range-checked here, before the checkpoint is read (sweep DC04/DC05)
    c.add_argument("--patch-size", type=shared.positive_int, default=None)
    c.add_argument("--input-size", type=shared.positive_int, default=None,
                   help="latent height = width the model was trained on (image / f)")
    c.add_argument("--in-channels", type=shared.positive_int, default=None,
                   help="latent channels")
    c.add_argument("--num-classes", type=shared.non_negative_int, default=None,
                   help="classes without the null class (ImageNet: 1000; 0: unconditional)")
    c.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    c.set_defaults(func=cmd_convert)


def read_checkpoint(path: str):
    """``torch.load(path, weights_only=True)``, or a ``.safetensors`` file (a folder: its
    ``model.safetensors``); an unreadable file is an ``InputError``. ``argparse.Namespace``
    is allowed: the DiT release stores its ``args`` as one."""
    p = Path(path)
    if p.is_dir() or p.suffix == ".safetensors":
        p = p / "model.safetensors" if p.is_dir() else p
        try:
            return load_file(str(p))
        except (OSError, SafetensorError) as e:
            raise InputError(f"{p} is not a readable safetensors file ({e})") from e
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file") from e
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable PyTorch checkpoint (.pt/.pth of "
                         f"tensors): {_load_failure(e)}") from e


def _load_failure(e: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, without torch's advice to re-run it
    with ``weights_only=False`` (code execution; sweep DC07: said for a PNG)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:  # the reason follows torch's advice
        text = text.split("WeightsUnpickler error:", 1)[1]
        text = text.split(" Please use", 1)[0]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _release(args: argparse.Namespace) -> dict:
    """The release's fields (``--release``, else an HF folder's config.json model_name),
    with the architecture flags given winning; all five must be known."""
    name = args.release
    meta = Path(args.src) / "config.json"
    if name is None and meta.is_file():
        name = json.loads(meta.read_text()).get("model_name")
    defaults = release_defaults(name) if name else {}
    arch = {k: getattr(args, k) if getattr(args, k) is not None else defaults.get(k)
            for k in ARCH_FIELDS}
    missing = [f"--{k.replace('_', '-')}" for k, v in arch.items() if v is None]
    if missing:
        raise InputError(f"pass {' '.join(missing)} (or --release NAME of a known "
                         f"checkpoint: {', '.join(RELEASES)})")
    return {**defaults, **arch}


def cmd_convert(args: argparse.Namespace) -> int:
    fields = _release(args)
    # refuse before the slow part
    prepare_output_dir(args.out, overwrite=args.overwrite, inputs=[args.src])
    model = load_official(read_checkpoint(args.src), fields["model"],
                          patch_size=fields["patch_size"], input_size=fields["input_size"],
                          in_channels=fields["in_channels"], num_classes=fields["num_classes"])
    with atomic_dir(args.out, overwrite=args.overwrite, inputs=[args.src]) as tmp:
        model.save_pretrained(tmp)
        if "release" in fields:
            write_release(tmp, {k: v for k, v in fields.items() if k not in ARCH_FIELDS})
    c = model.config
    print(f"wrote {args.out}: {args.model}/{c.patch_size} on {c.in_channels}x{c.input_size}"
          f"x{c.input_size} latents, {c.num_classes} classes, learned sigma "
          f"{'on' if c.learn_sigma else 'off'}, {count_params(model):,} parameters, "
          f"{model.tokens} tokens"
          + (f"; samples as {fields['release']} ({fields['objective']}, {fields['sampler']} "
             f"{fields['sample_steps']} steps, guidance {fields['guidance']:g}): `latentae "
             f"diffusion sample {args.out} --autoencoder AE --n N --out SAMPLES`"
             if "release" in fields else ""))
    return 0

"""``latentae train``, ``latentae plot``, ``latentae shards``, ``latentae demo``."""

from __future__ import annotations

import argparse

import yaml

from latentae.cli.args import add_compile, add_threads, byte_size, positive_int
from latentae.errors import InputError
from latentae.files import refuse_file

# Command-line flags that map one-to-one onto TrainConfig fields (None = not given).
FLAGS = (("--model", str, "preset name, or a saved latentae or diffusers model directory "
          "to start from (default litevae-tiny)"),
         ("--recipe", str, "litevae | dcae | sdvae | finetune-decoder | finetune-full | "
          "eqvae-finetune (default litevae)"),
         ("--data", str, "training images (recursive folder), a folder of .tar shards, or a "
          "webdataset stream: shards/train-{000000..000099}.tar, https:// URLs, 'pipe:CMD' "
          "(streams resume at a shard boundary)"),
         ("--shuffle-buffer", int, "samples in the shuffle buffer of a stream (default 1000)"),
         ("--val-data", str, "held-out images for validation"),
         ("--val-images", int, "validate on the first N of them (default 8)"),
         ("--reference-data", str, "general images for the regression report of a "
          "fine-tune (--model DIR): RUN/regression.md"),
         ("--reference-images", int, "use the first N reference images (default 64)"),
         ("--regression-tolerance", float, "flag the report when the reference PSNR falls "
          "by more than this many dB (default 0.1)"),
         ("--out", str, "run folder, e.g. runs/NAME"),
         ("--steps-scale", float, "multiply every phase's steps, e.g. 0.01"),
         ("--resume", str, "'auto': continue from the newest valid checkpoint in OUT "
          "(a new run if OUT has none)"),
         ("--seed", int, None), ("--ema-decay", float, None),
         ("--grad-clip", float, "max gradient norm (0: off)"),
         ("--accumulation", int, "gradient accumulation rounds per step"),
         ("--val-every", int, "validate every N steps of a phase (0: only at the end)"),
         ("--ckpt-every", int, "checkpoint every N steps of a phase (0: only at phase "
          "ends and stops)"),
         ("--log-every", int, "log every N steps of a phase (0: only at phase ends)"),
         ("--keep-checkpoints", int, None),
         ("--max-minutes", float, "checkpoint and stop after this long (resume later)"),
         ("--max-steps", int, "checkpoint and stop after this many steps in this process "
          "(steps of the phase it starts in)"),
         ("--max-images", int, "checkpoint and stop after this many images in this process"),
         ("--workers", int, "data loader processes"),
         ("--small-images", str, "upscale | skip images smaller than the crop"),
         ("--crop-scale", float, "shortest side resized to res × U(1, S) before cropping"),
         ("--device", str, "auto | cpu | cuda | cuda:N"),
         ("--diffusability-every", int, "log the latent diffusability diagnostics of the "
          "EMA model on the --val-images held-out images every N steps (0: off)"),
         ("--generation-probe-every", int, "every N steps train a tiny DiT on the latents "
          "of the first --generation-probe-images of --data in a child process and log "
          "its KID against as many --val-data images (0: off)"),
         ("--generation-probe-images", int, "images of the probe (default 256)"),
         ("--generation-probe-steps", int, "DiT steps per probe (default 1000)"),
         ("--generation-probe-model", str, "the probe's DiT preset (default dit-s)"),
         ("--generation-probe-seeds", int, "DiT seeds per probe, their spread is logged "
          "(default 2)"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an autoencoder with a paper's recipe",
                       description="Train on a folder of images with a phased recipe; "
                       "one process or `torchrun --nproc_per_node N -m latentae train`.")
    for flag, typ, help_ in FLAGS:
        p.add_argument(flag, type=typ, default=None, help=help_)
    p.add_argument("--config", help="YAML file with config keys (and recipe_overrides)")
    p.add_argument("--discriminator", dest="init_discriminator", default=None, metavar="DIR",
                   help="start the discriminator from an earlier run's "
                   "OUT/model/discriminator (continue GAN fine-tuning)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field: lr=2e-4, p256.batch_size=8, losses.kl=0")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="GLOBAL batch over all processes, every phase (= --set batch_size=N; "
                        "default: the recipe's)")
    add_threads(p)
    p.add_argument("--channels-last", action="store_true", default=None)
    add_compile(p)
    p.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="recompute block activations in backward (less memory)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="OUT holds a run: delete it (config, log, checkpoints, model) and "
                   "start a new one")
    p.add_argument("--restart", action="store_true", default=None,
                   help="with --resume auto: start over when no checkpoint is readable "
                   "(without it that is an error)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("plot", help="draw the loss and metric curves of a run")
    p.add_argument("run", help="run folder (holds metrics.jsonl)")
    p.add_argument("--out", help="PNG path (default RUN/curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("shards", help="pack an image folder into webdataset tar shards")
    p.add_argument("folder")
    p.add_argument("out")
    p.add_argument("--size", type=byte_size, default="1GB",
                   help="maximum shard size, e.g. 1GB, 500MB (default 1GB)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what a non-empty OUT holds")
    p.set_defaults(func=cmd_shards)

    p = sub.add_parser("demo", help="train litevae-tiny on CPU (a fixed 750 steps, ~4 min "
                                    "on an idle 2-core machine), write a report "
                                    "(--diffusion: then a tiny DiT on its latents)")
    p.add_argument("--out", default="demo")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="training steps, the same on every machine (default 750; with "
                        "--diffusion 300 for the DiT)")
    p.add_argument("--diffusion", action="store_true",
                   help="train a tiny DiT on the demo autoencoder's latents, sample it, "
                        "report KID/FID (OUT/diffusion/report.md; ~5 min on 2 CPU cores)")
    p.add_argument("--autoencoder", default=None,
                   help="with --diffusion: this autoencoder folder instead of OUT/model")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads (default 1: the same numbers on every machine; "
                        "another count changes the last digits)")
    p.add_argument("--perceptual", action="store_true",
                   help="add the LPIPS-VGG loss (slower; needs more than 4 minutes)")
    p.set_defaults(func=cmd_demo)


def parse_sets(items: list[str]) -> dict[str, object]:
    """``--set KEY=VALUE`` items, each value read as YAML (``0.5,0.9`` stays a string)."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise InputError(f"--set {key.strip()}: cannot read {value!r} ({e})") from e
    return out


def cmd_train(args: argparse.Namespace) -> int:
    """Exit 0 when finished or stopped with a checkpoint (SIGTERM, --max-*); 130 after
    Ctrl-C (checkpoint written on the first, none on a second)."""
    from latentae.engine.config import load_yaml
    from latentae.runtime import set_threads
    from latentae.train.autoencoder import train
    from latentae.train.config import make_config
    set_threads(args.threads)
    file = load_yaml(args.config) if args.config else {}
    cli = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
           for flag, _, _ in FLAGS}
    cli.update(channels_last=args.channels_last, compile=args.compile,
               gradient_checkpointing=args.gradient_checkpointing, progress=args.progress,
               overwrite=args.overwrite, restart=args.restart,
               init_discriminator=args.init_discriminator,
               recipe_overrides={**({"batch_size": args.batch_size} if args.batch_size
                                    else {}), **parse_sets(args.set)})
    return run_training(lambda: train(make_config(file, cli)),
                        lambda out: f"model: {out}  (load with latentae.load('{out}'))")


def run_training(start, done) -> int:
    """Run ``start()`` (a training run returning its export or ``None`` when stopped
    early), print ``done(export)`` on rank 0; exit 0, or 130 after Ctrl-C (checkpoint
    written on the first, none on a second). Leaves the process group in any case."""
    from latentae.engine import dist
    try:
        out = start()
        if out is not None:
            dist.print0(done(out))
    except KeyboardInterrupt:
        dist.print0("interrupted: `--resume auto` continues from the newest checkpoint")
        return 130
    finally:
        dist.destroy()
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from latentae.engine.monitor import read_metrics
    from latentae.engine.plot import plot_run
    from latentae.eval.diagnostics import plot_diagnostics
    out = plot_run(args.run, args.out)
    print(out)
    # a run with --diffusability-every: its diagnostics beside the curves
    drawn = plot_diagnostics(read_metrics(args.run),
                             Path(out).with_name(Path(out).stem + "-diffusability.png"))
    if drawn is not None:
        print(drawn)
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from latentae.engine.webdata import write_shards
    shards = write_shards(args.folder, args.out, args.size,  # bytes (args.byte_size)
                          overwrite=args.overwrite)
    print(f"wrote {len(shards)} shard(s) to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    refuse_file(args.out)  # before the data is written into it (sweep DEMO01)
    if args.diffusion:
        from latentae.demos.diffusion import DIT_STEPS, run_diffusion_demo
        report = run_diffusion_demo(args.out, args.steps or DIT_STEPS, args.autoencoder,
                                    threads=args.threads)
        print(f"demo finished: report {report}")
        return 0
    from latentae.demos.autoencoder import STEPS, run_demo
    report = run_demo(args.out, args.steps or STEPS, perceptual=args.perceptual,
                      threads=args.threads)
    print(f"demo finished: report {report}\nrecon grid: {report.parent / 'recon_grid.png'}\n"
          f"loss curve: {report.parent / 'loss_curve.png'}")
    return 0

"""``latentae bench --diffusion MODEL --autoencoders NAME:pP,...``: the diffusion-side
speed each autoencoder's latent buys (tokens, GFLOP, sampling and training images/s).

``add_diffusion_args(parser)`` adds the options to a parser; ``run_diffusion_bench(args)``
runs the bench from the parsed namespace. With ``common=False`` only the diffusion
options are added, for a parser that already has ``--resolution``, ``--batch``,
``--dtype``, ``--device``, ``--threads``, ``--warmup``, ``--repeats``, ``--json``,
``--markdown`` and ``--baseline`` (``latentae bench``'s own).
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from latentae.bench.diffusion import measure_diffusion
from latentae.bench.diffusion_columns import (
    DTYPE_NAMES,
    MODES,
    SPEC_FORMS,
    DiffusionBenchSettings,
    parse_autoencoders,
)
from latentae.bench.diffusion_report import check_writable, write_report
from latentae.devices import resolve_device
from latentae.diffusion import list_diffusion
from latentae.errors import InputError


def add_diffusion_args(parser: argparse.ArgumentParser, *, common: bool = True) -> None:
    """Add ``--diffusion``, ``--autoencoders``, ``--on-the-fly`` (and, with ``common``,
    the options shared with the autoencoder bench, with the diffusion bench's defaults)."""
    g = parser.add_argument_group("diffusion bench")
    g.add_argument("--diffusion", default=None, metavar="MODEL",
                   help=f"diffusion preset to benchmark: {', '.join(list_diffusion())}")
    g.add_argument("--autoencoders", default=None, metavar="NAME:pP,...",
                   help=f"the columns, one per latent: {SPEC_FORMS}")
    g.add_argument("--on-the-fly", action="store_true",
                   help="also time training with the latents computed on the fly: the "
                        "frozen encoder's forward on images, then the training step")
    g.add_argument("--diffusion-modes", default=None, metavar="M,...",
                   help=f"time only these of {','.join(MODES)} (default: all; e2e needs "
                        "--on-the-fly)")
    if not common:
        return
    g.add_argument("--resolution", type=int, default=512, help="image size (default 512)")
    g.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    g.add_argument("--dtype", default="float32",
                   help=f"one of {', '.join(DTYPE_NAMES)} (non-float32 by autocast)")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--warmup", type=int, default=1, help="untimed calls per column and mode")
    g.add_argument("--repeats", type=int, default=3,
                   help="timed calls per column and mode, interleaved (median reported)")
    g.add_argument("--baseline", default=None, metavar="COLUMN",
                   help="column the ratios refer to, e.g. sdvae-f8:p2 (default: the first)")
    g.add_argument("--json", default=None, metavar="F", help="write the rows here (a list)")
    g.add_argument("--markdown", default=None, metavar="F", help="write the table here")


def command_line(args: argparse.Namespace) -> str:
    """The ``latentae bench --diffusion ...`` command that reproduces this run."""
    parts = ["latentae", "bench", "--diffusion", args.diffusion,
             "--autoencoders", args.autoencoders]
    for flag in ("diffusion_modes", "resolution", "batch", "dtype", "device", "threads",
                 "warmup", "repeats", "baseline", "json", "markdown"):
        value = getattr(args, flag, None)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    if args.on_the_fly:
        parts.append("--on-the-fly")
    return shlex.join(parts)


def settings_from_args(args: argparse.Namespace) -> DiffusionBenchSettings:
    """Validated settings; bad input raises :class:`InputError` before any measuring."""
    if not args.diffusion or not args.autoencoders:
        raise InputError("the diffusion bench needs --diffusion MODEL and --autoencoders "
                         f"{SPEC_FORMS}")
    if "," in args.dtype:
        raise InputError(f"the diffusion bench takes one --dtype, got {args.dtype!r}")
    if args.diffusion not in list_diffusion():
        raise InputError(f"unknown diffusion model {args.diffusion!r}; valid: "
                         f"{', '.join(list_diffusion())}")
    settings = DiffusionBenchSettings(
        diffusion=args.diffusion, autoencoders=parse_autoencoders(args.autoencoders),
        resolution=args.resolution, batch=args.batch, dtype=args.dtype,
        device=str(resolve_device(args.device)), warmup=args.warmup, repeats=args.repeats,
        on_the_fly=args.on_the_fly,
        mode_subset=tuple(m for m in (args.diffusion_modes or "").split(",") if m))
    settings.check()
    labels = [s.label for s in settings.autoencoders]
    if args.baseline is not None and args.baseline not in labels:
        raise InputError(f"--baseline {args.baseline!r} is not among the columns: "
                         f"{', '.join(labels)}")
    return settings


def run_diffusion_bench(args: argparse.Namespace) -> int:
    """Run the diffusion bench from parsed arguments; prints the Markdown, writes
    ``--json`` / ``--markdown``. Returns the exit code (0)."""
    settings = settings_from_args(args)
    for path in (args.json, getattr(args, "markdown", None)):
        if path is not None:
            check_writable(path)  # fail before minutes of measuring, not after
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    report = measure_diffusion(settings, progress=lambda m: print(m, file=sys.stderr))
    report["command"] = command_line(args)
    print(write_report(report, args.json, getattr(args, "markdown", None),
                       baseline=args.baseline))
    return 0

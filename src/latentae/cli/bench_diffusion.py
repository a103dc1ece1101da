"""``latentae bench --diffusion MODEL --autoencoders NAME:pP,...``: the diffusion-side
speed each autoencoder's latent buys (tokens, GFLOP, sampling and training images/s).

``add_diffusion_args(parser)`` adds the diffusion options to ``latentae bench``'s parser
(which has ``--resolution``, ``--batch-size``, ``--dtype``, ``--device``, ``--threads``,
``--compile``, ``--warmup``, ``--repeats``, ``--json``, ``--markdown`` and
``--baseline``); ``run_diffusion_bench(args)`` runs the bench from the parsed namespace.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from latentae.bench.batch_search import add_best_batches, best_batches, default_memory_limit
from latentae.bench.diffusion import measure_columns
from latentae.bench.diffusion_columns import (
    MODES,
    SPEC_FORMS,
    DiffusionBenchSettings,
    build_columns,
    parse_autoencoders,
)
from latentae.bench.diffusion_report import write_report
from latentae.devices import resolve_device
from latentae.diffusion import list_diffusion
from latentae.errors import InputError
from latentae.files import check_writable


def add_diffusion_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--diffusion``, ``--autoencoders``, ``--on-the-fly`` and ``--diffusion-modes``
    to ``latentae bench``'s parser (the other options are the bench's own)."""
    g = parser.add_argument_group("diffusion bench")
    g.add_argument("--diffusion", default=None, metavar="MODEL",
                   help=f"diffusion preset to benchmark: {', '.join(list_diffusion())}")
    g.add_argument("--autoencoders", default=None, metavar="NAME:pP,...",
                   help=f"the columns, one per latent: {SPEC_FORMS}")
    g.add_argument("--on-the-fly", action="store_true",
                   help="also time training with the latents computed on the fly: the "
                        "frozen encoder's forward on images, then the training step")
    g.add_argument("--best-batch", action="store_true",
                   help="also search each column's throughput-optimal batch (doubling from "
                        "1 while it fits in --memory-limit; the papers' saturating batch)")
    g.add_argument("--memory-limit", type=float, default=None, metavar="MIB",
                   help="--best-batch stops before a batch whose peak memory exceeds this "
                        "(default: 90%% of the GPU's memory, or half the available RAM)")
    g.add_argument("--diffusion-modes", default=None, metavar="M,...",
                   help=f"time only these of {','.join(MODES)} (default: all; e2e needs "
                        "--on-the-fly)")


def command_line(args: argparse.Namespace) -> str:
    """The ``latentae bench --diffusion ...`` command that reproduces this run."""
    parts = ["latentae", "bench", "--diffusion", args.diffusion,
             "--autoencoders", args.autoencoders]
    for flag in ("diffusion_modes", "resolution", "batch", "dtype", "device", "threads",
                 "warmup", "repeats", "compile", "baseline", "json", "markdown"):
        value = getattr(args, flag, None)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    if args.on_the_fly:
        parts.append("--on-the-fly")
    if getattr(args, "best_batch", False):
        parts.append("--best-batch")
        if args.memory_limit is not None:
            parts += ["--memory-limit", str(args.memory_limit)]
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
        on_the_fly=args.on_the_fly, compile=getattr(args, "compile", None),
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
    progress = lambda m: print(m, file=sys.stderr)  # noqa: E731
    torch.manual_seed(settings.seed)
    columns = build_columns(settings, progress)
    report = measure_columns(columns, settings, progress)
    if args.best_batch:
        limit = default_memory_limit(settings.device) if args.memory_limit is None \
            else int(args.memory_limit * 2**20)
        add_best_batches(report, best_batches(columns, settings, limit, progress))
    report["command"] = command_line(args)
    print(write_report(report, args.json, getattr(args, "markdown", None),
                       baseline=args.baseline))
    return 0

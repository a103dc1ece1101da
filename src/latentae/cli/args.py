"""The command-line arguments every ``latentae`` command shares, defined once.

- ``MODEL`` (+ ``--random-init``, ``--seed``): what ``latentae.load`` takes.
- ``--device`` defaults to ``auto`` everywhere (this process's GPU if there is one,
  else the CPU; ``latentae/devices.py``); ``cpu``, ``cuda``, ``cuda:N`` are checked.
- ``--dtype`` float32 | bfloat16 | float16: autocast of the model's forward passes.
- ``--batch-size`` (the old ``--batch`` spelling is a hidden alias), ``--threads``,
  ``--limit``, ``--tile`` / ``--overlap`` / ``--max-batch``, ``--pad``, ``--overwrite``.
- ``--json PATH`` always means "write the JSON document to PATH" (``-``: standard output).

Every numeric flag is range-checked here, by its argparse ``type``: a bad value is a
usage error (exit code 2) before any work starts.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import torch

from latentae.argtypes import (  # the range-checked number types, shared with the studies
    checked_number,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from latentae.devices import resolve_device
from latentae.errors import InputError
from latentae.files import atomic_write_text
from latentae.loader import load
from latentae.models.autoencoder import Autoencoder
from latentae.runtime import COMPILE_BACKENDS, DTYPES, ModelRunner, set_threads

__all__ = ["add_batch_size", "add_device", "add_dtype", "add_json", "add_limit", "add_model",
           "add_not_here", "add_overwrite", "add_pad", "add_runtime", "add_threads", "add_tiles",
           "byte_size", "dtype_list", "load_model", "make_runner", "non_negative_float",
           "non_negative_int", "positive_float", "positive_int", "write_json"]


# --- types: parse and range-check one value (numbers: latentae/argtypes.py) ---------
class _NotHere(argparse.Action):
    """A flag of other commands given to one that spells it differently: a usage error
    naming the right flag (sweep DN14b: `diffusion train --random-init` read
    "unrecognized arguments")."""

    def __init__(self, option_strings, dest, instead: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS, **kwargs)
        self.instead = instead

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} is not a flag of `{parser.prog}`: {self.instead}")


def add_not_here(p: argparse.ArgumentParser, flag: str, instead: str) -> None:
    """A hidden ``flag`` that fails with ``instead`` (what to pass)."""
    p.add_argument(flag, action=_NotHere, instead=instead)


_UNITS = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def byte_size(text: str) -> int:
    """``"1GB"``, ``"500MB"``, ``"64KB"`` or a byte count -> a positive number of bytes."""
    m = re.fullmatch(r"\s*([-+]?[0-9.]+)\s*([KMGT]?B?)\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size like 1GB, 500MB, 64KB or a "
                                         f"byte count, got {text!r}")
    size = checked_number(m.group(1), float, lambda v: v > 0, "a positive size")
    size *= _UNITS[m.group(2)]
    if size < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text}")
    return int(size)


def _dtype(text: str) -> str:
    if text not in DTYPES:
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r}; valid: {', '.join(DTYPES)}")
    return text


def dtype_list(text: str) -> list[str]:
    """One dtype name, or several comma-separated (``latentae bench``'s columns)."""
    names = [d for d in text.split(",") if d]
    if not names:
        raise argparse.ArgumentTypeError(f"expected dtype names, got {text!r}")
    for name in names:
        _dtype(name)
    return names


# --- the shared arguments --------------------------------------------------------------
def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="saved latentae or diffusers (AutoencoderKL/AutoencoderDC) "
                                 "model directory, or a preset name with --random-init")
    p.add_argument("--random-init", action="store_true",
                   help="allow a preset name: random weights (smoke runs)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of --random-init weights (and of sampling, where used)")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (this process's GPU if any, else cpu) | cpu | cuda | cuda:N")


def add_dtype(p: argparse.ArgumentParser, several: bool = False) -> None:
    if several:
        p.add_argument("--dtype", type=dtype_list, default=["float32"],
                       help=f"one of {', '.join(DTYPES)} (non-float32 by autocast), or "
                            "several comma-separated: one column each (e.g. float32,bfloat16)")
    else:
        p.add_argument("--dtype", default="float32", choices=list(DTYPES),
                       help="autocast dtype of the model's forward passes (metrics and "
                            "outputs stay float32)")


def add_batch_size(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--batch-size", type=positive_int, default=default,
                   help=f"images per batch (default {default})")
    p.add_argument("--batch", dest="batch_size", type=positive_int, help=argparse.SUPPRESS)


def add_compile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", nargs="?", const="inductor", default=None,
                   choices=list(COMPILE_BACKENDS), metavar="BACKEND",
                   help="run the model through torch.compile (default backend inductor; "
                        "'eager' only captures the graph). Compiling takes seconds on a GPU "
                        "but minutes on a small CPU: see docs/benchmarks.md")


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice)")


def add_limit(p: argparse.ArgumentParser, what: str = "images") -> None:
    p.add_argument("--limit", type=positive_int, default=None,
                   help=f"use the first N {what} only")


def add_tiles(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tile", type=positive_int, default=None,
                   help="tile size in pixels (a multiple of the compression factor): larger "
                        "images are processed in overlapping, blended tiles, one tile per "
                        "forward pass unless --max-batch (peak memory: about one tile's)")
    p.add_argument("--overlap", type=non_negative_int, default=64,
                   help="tile overlap in pixels (default 64)")
    p.add_argument("--max-batch", type=positive_int, default=None,
                   help="at most this many images/tiles per forward pass (caps memory; "
                        "tiles default to 1, whole images to --batch-size)")


def add_pad(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pad", action="store_true",
                   help="reflect-pad images to a multiple of the compression factor and "
                        "crop the outputs back (default: such images are an error)")


def add_overwrite(p: argparse.ArgumentParser, what: str = "outputs") -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace existing {what}")


def add_json(p: argparse.ArgumentParser, what: str = "the results") -> None:
    p.add_argument("--json", metavar="PATH", default=None,
                   help=f"write {what} as JSON to PATH ('-': standard output)")


def add_runtime(p: argparse.ArgumentParser, batch_size: int = 8, pad: bool = True) -> None:
    """Device, dtype, batch size, threads, tiles, memory format and (for commands that
    read images of any size) padding: what ``make_runner`` reads."""
    add_device(p)
    add_dtype(p)
    add_batch_size(p, batch_size)
    add_threads(p)
    add_tiles(p)
    if pad:
        add_pad(p)
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   default=None, help="keep the default memory format (default: the "
                   "family's faster one: channels_last, DC-AE contiguous)")
    add_compile(p)


# --- what the commands do with them ----------------------------------------------------
def load_model(args: argparse.Namespace, device: str | torch.device = "cpu") -> Autoencoder:
    """``latentae.load(args.model)`` (a model folder, a run folder or checkpoint file: its
    EMA weights), an autoencoder; ``--random-init`` weights come from ``--seed``."""
    if args.random_init:
        torch.manual_seed(args.seed)  # the same random weights in every run (smoke tests)
    return load(args.model, device, random_init=args.random_init, kind="autoencoder")


def make_runner(args: argparse.Namespace, model: Autoencoder | None = None) -> ModelRunner:
    """The ``runtime.ModelRunner`` that ``add_runtime``'s flags describe."""
    set_threads(args.threads)
    device = resolve_device(args.device)  # a missing GPU fails before the model loads
    runner_model = load_model(args) if model is None else model
    return ModelRunner(runner_model, device, args.dtype,
                       channels_last=args.channels_last, tile=args.tile,
                       overlap=args.overlap, max_batch=args.max_batch,
                       pad=getattr(args, "pad", False), compile=args.compile)


def write_json(path: str | None, doc: Any) -> None:
    """``--json PATH``: the document to ``PATH`` (atomically) or to stdout for ``-``."""
    if path is None:
        return
    text = json.dumps(doc, indent=2, default=str) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        atomic_write_text(path, text)
    except FileNotFoundError as e:
        raise InputError(f"cannot write {path}: its folder does not exist") from e

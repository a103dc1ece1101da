"""``latentae`` command line: one module per group of subcommands, each with
``register(subparsers)`` that adds its parsers and sets ``func``."""

from __future__ import annotations

import argparse
import sys

from latentae.cli import bench as _bench
from latentae.cli import eval as _eval
from latentae.cli import models as _models
from latentae.cli import study as _study
from latentae.cli import tools as _tools
from latentae.cli import train as _train
from latentae.cli import weights as _weights
from latentae.version import __version__

COMMAND_MODULES = (_models, _weights, _bench, _eval, _tools, _study, _train,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentae",
        description="Image autoencoders for latent diffusion: build, train, evaluate, "
                    "benchmark, convert.")
    parser.add_argument("--version", action="version", version=f"latentae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as e:  # bad input: a clear message and a non-zero exit, no traceback
        print(f"latentae {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

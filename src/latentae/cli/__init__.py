"""``latentae`` command line: one module per group of subcommands, each with
``register(subparsers)`` that adds its parsers and sets ``func``; the shared arguments
live in ``cli/args.py``. ``cli/`` parses arguments and prints; the work is done by the
library (``docs/architecture.md``).

The one error boundary is :func:`main`: an expected failure (``latentae.errors``,
``ValueError``, ``OSError`` including a full disk, a corrupt safetensors file) prints
``latentae CMD: error: MESSAGE`` on one line and exits 2; any other exception is a bug
and keeps its traceback (exit 1); ``--debug`` shows tracebacks always; Ctrl-C exits 130;
a reader that closes standard output early (``latentae study list | head -1``) ends the
command quietly with 141, as a program killed by SIGPIPE does.
A usage error (a bad flag or value, rejected by argparse and the ``type=`` checks of
``cli/args.py``) prints the usage and exits 2 too; ``main`` returns every exit code.
"""

from __future__ import annotations

import argparse
import os
import select
import sys

from safetensors import SafetensorError

from latentae.cards import recorded_command
from latentae.cli import bench as _bench
from latentae.cli import diffusion as _diffusion
from latentae.cli import eval as _eval
from latentae.cli import models as _models
from latentae.cli import study as _study
from latentae.cli import tools as _tools
from latentae.cli import train as _train
from latentae.cli import weights as _weights
from latentae.errors import LatentaeError
from latentae.io import set_max_image_pixels
from latentae.version import __version__

COMMAND_MODULES = (_models, _weights, _bench, _eval, _tools, _study, _train, _diffusion)
EXPECTED = (LatentaeError, ValueError, OSError, SafetensorError)  # exit 2, one line
EXIT_ERROR, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 130, 128 + 13  # 13: SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentae",
        description="Image autoencoders for latent diffusion: build, train, evaluate, "
                    "benchmark, convert.")
    parser.add_argument("--version", action="version", version=f"latentae {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of every error")
    parser.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                        help="refuse images with more pixels than N as possible "
                             "decompression bombs (default: PIL's limit)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    _add_debug_everywhere(sub)
    return parser


def _add_debug_everywhere(sub: argparse._SubParsersAction) -> None:
    """``--debug`` and ``--max-image-pixels`` after the command too (``latentae eval ...
    --debug``); SUPPRESS keeps a subcommand from resetting a value given before it."""
    for parser in sub.choices.values():
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)
        parser.add_argument("--max-image-pixels", type=int, default=argparse.SUPPRESS,
                            metavar="N", help=argparse.SUPPRESS)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_debug_everywhere(action)


def one_line(e: BaseException) -> str:
    """The exception's message on one line (its type name when it has none)."""
    text = " ".join(part.strip() for part in str(e).splitlines() if part.strip())
    return text or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error (argparse printed it), --help or --version
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        set_max_image_pixels(args.max_image_pixels)  # images from the wild (issue 28)
        with recorded_command(sys.argv[1:] if argv is None else argv):  # for model cards
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        if args.debug or not _stdout_closed():  # another pipe (a helper process): an error
            raise
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"latentae {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except EXPECTED as e:  # a user's mistake or a broken file: a message, no traceback
        if args.debug:
            raise
        print(f"latentae {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_ERROR


def _stdout_closed() -> bool:
    """Whether standard output's reader went away (poll reports an error on the pipe);
    if so, point it at /dev/null, so the interpreter's last flush at exit prints no
    second error."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        if not any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0)):
            return False
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no real stdout
        pass
    return True


if __name__ == "__main__":
    sys.exit(main())

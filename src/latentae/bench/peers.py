"""The peer-comparison scripts' shared body (``scripts/library_vs_diffusers.py``:
``latentae.load`` against diffusers; ``scripts/official_vs_latentae.py``: DiT / U-ViT
against the official code): their common flags, the rows they measure, and the table
they print and write (JSON + Markdown through the bench's one report writer)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from latentae.bench.report import write_files


def peer_parser(doc: str, rows: Sequence[str]) -> argparse.ArgumentParser:
    """The flags every peer script has: ``--rows``, ``--repeats``, ``--threads``,
    ``--seed``, ``--out`` (a script adds its own)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--rows", default=",".join(rows), help=f"comma list of {', '.join(rows)}")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here (and .md)")
    return p


def peer_row_names(p: argparse.ArgumentParser, args: argparse.Namespace,
                   rows: Sequence[str]) -> list[str]:
    """The rows ``--rows`` names (an unknown one is ``p``'s usage error); sets
    ``--threads``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(names) - set(rows))
    if unknown:
        p.error(f"unknown rows {unknown}; valid: {', '.join(rows)}")
    return names


def peer_rows(names: list[str], measure: Callable[[str], dict], machine: dict,
              markdown: Callable[[list[dict], dict], str], out: str | None) -> int:
    """The body of a peer-comparison script (``scripts/library_vs_diffusers.py``,
    ``scripts/official_vs_latentae.py``): measure each named row, add the load at the end
    and the wall time to ``machine``, print the Markdown table and write it with the
    rows as JSON (``OUT`` and ``OUT.md``) when ``out`` is given."""
    t0 = time.time()
    rows = [measure(n) for n in names]
    machine.update(load_average_1m_end=Path("/proc/loadavg").read_text().split()[0],
                   wall_s=round(time.time() - t0, 1))
    text = markdown(rows, machine)
    print(text)
    if out:
        write_files(out, {"machine": machine, "rows": rows}, Path(out).with_suffix(".md"), text)
    return 0


def peer_header(script: str, argv: list[str], machine: dict) -> list[str]:
    """The command and machine lines above a peer-comparison table."""
    return [f"`python {script} {' '.join(argv)}`", "",
            f"- machine: {machine['cpu']} ({machine['cpu_count']} CPUs), torch "
            f"{machine['torch']}, {machine['threads']} thread(s), {machine['date']}; load "
            f"average (1 min) {machine['load_average_1m']} at start", ""]

"""Shared harness of the small-scale reproduction studies (``docs/results.md``).

Every study script builds models, trains them with the public training API
(``latentae.train``: ``make_config``, ``Recipe``/``Phase``/``LossWeights``, ``train``),
evaluates them with ``latentae.eval.reconstruction.evaluate_reconstruction`` on kodak24
crops, and writes
``OUT/results.json`` + ``OUT/table.md`` (+ a PNG plot). Runs are deterministic given
``--seed``. The scripts pin ``PYTHONHASHSEED=0`` (re-executing themselves if needed):
the trainer that produced most of docs/results.md seeded with Python's ``hash``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from latentae.errors import InputError
from latentae.eval.inception import load_inception
from latentae.eval.lpips import load_lpips
from latentae.eval.reconstruction import EvalConfig, evaluate_reconstruction
from latentae.files import atomic_path, atomic_write_text
from latentae.pretrained import load
from latentae.train.autoencoder import train
from latentae.train.config import dump_yaml, make_config
from latentae.train.monitor import read_metrics
from latentae.train.recipes import Recipe

# Relative to the working directory, so an installed latentae (a wheel) behaves like the
# source checkout run from its root: data in ../shared/data, results in runs/studies/.
DATA = Path(os.environ.get("LATENTAE_STUDY_DATA", Path("..") / "shared" / "data"))
TRAIN_DATA = DATA / "bsds400-train"
EVAL_DATA = DATA / "kodak24"
DEFAULT_OUT = Path("runs") / "studies"


def pin_hash_seed() -> None:
    """Re-execute the current command with ``PYTHONHASHSEED=0`` unless already pinned.

    Why: ``latentae.train`` before commit 60bf628 seeded crops and latent noise with
    ``hash((seed, ...))``, which Python salts per process for tuples holding strings;
    pinning keeps those results reproducible and costs nothing with later trainers."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        # sys.orig_argv keeps ``-m latentae.studies.NAME`` and the console script alike
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The options every study takes."""
    p = argparse.ArgumentParser(prog=f"latentae study {name.replace('_', '-')}",
                                description=doc)
    p.add_argument("--quick", action="store_true",
                   help="tiny settings (a few steps, 32² images): a smoke run, not a result")
    p.add_argument("--out", default=None, help=f"output folder (default {DEFAULT_OUT}/{name})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="override the training steps")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest on a shared 2-core machine)")
    p.add_argument("--retrain", action="store_true",
                   help="train again even where OUT holds a finished run of the same config")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="evaluate on the first N kodak24 images only")
    return p


def setup(args: argparse.Namespace, name: str) -> Path:
    """Threads, seed, data check; returns the output folder."""
    torch.set_num_threads(args.threads)
    REUSE["on"] = not args.retrain
    torch.manual_seed(args.seed)
    for d in (TRAIN_DATA, EVAL_DATA):
        if not d.is_dir():
            raise InputError(f"{d} is missing: the studies read ../shared/data (relative to "
                             "the working directory) or $LATENTAE_STUDY_DATA")
    out = Path(args.out) if args.out else DEFAULT_OUT / name
    out.mkdir(parents=True, exist_ok=True)
    return out


def machine() -> str:
    """A one-line description of where the numbers were measured."""
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores visible, "
            f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}")


def save_init(model: torch.nn.Module, path: Path) -> Path:
    """Save a freshly built model so ``train`` starts from exactly these weights."""
    model.save_pretrained(str(path))
    return path


def train_model(start: Path | str, run_dir: Path, phases: tuple, seed: int,
                val_every: int = 0, val_images: int = 24, discriminator: str = "patchgan",
                discriminator_channels: int = 32, ema_decay: float = 0.999) -> dict[str, Any]:
    """Train ``start`` (a saved model dir) through ``phases`` with ``latentae.train``.

    Returns ``{"model": exported EMA dir, "seconds": wall time, "img_s": images/s,
    "curve": [validation records]}``. Validation (``val_every`` > 0) runs the EMA model on
    the first ``val_images`` kodak24 center crops at the last phase's resolution."""

    cfg = make_config({
        "model": str(start), "data": str(TRAIN_DATA), "out": str(run_dir), "seed": seed,
        "val_data": str(EVAL_DATA) if val_every else None, "val_images": val_images,
        "val_every": val_every, "ckpt_every": 10**9, "keep_checkpoints": 1,
        "log_every": 25, "progress": False, "ema_decay": ema_decay,
        "overwrite": True})  # a fresh run: an unfinished or different one in run_dir goes
    recipe = Recipe(run_dir.name, tuple(phases), discriminator=discriminator,
                    discriminator_channels=discriminator_channels)
    done = finished_run(run_dir, cfg, recipe)
    if done is not None:
        print(f"reusing the finished run {run_dir} (same config; --retrain to redo it)")
        return done
    t0 = time.perf_counter()
    exported = train(cfg, recipe)
    seconds = time.perf_counter() - t0
    if exported is None:
        raise RuntimeError(f"training of {run_dir} stopped early")
    atomic_write_text(run_dir / "train_seconds.txt", f"{seconds:.1f}\n")
    return summarize_run(run_dir)


REUSE = {"on": True}  # cleared by --retrain


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """Exported model, wall time, mean images/s and validation curve of a finished run."""

    records = read_metrics(run_dir)
    rates = [r["img_s"] for r in records if "img_s" in r]
    curve = [{"step": r["step"], **{k[4:]: v for k, v in r.items() if k.startswith("val_")}}
             for r in records if "val_psnr" in r]
    secs = run_dir / "train_seconds.txt"
    return {"model": str(run_dir / "model"),
            "seconds": float(secs.read_text()) if secs.is_file() else None,
            "img_s": round(sum(rates) / len(rates), 2) if rates else None, "curve": curve}


def finished_run(run_dir: Path, cfg, recipe) -> dict[str, Any] | None:
    """The summary of an earlier run in ``run_dir`` that finished with exactly this
    configuration (same ``config.yaml``, exported model, last step reached), else None."""

    if not REUSE["on"] or not (run_dir / "model" / "config.json").is_file():
        return None
    path = run_dir / "config.yaml"
    if not path.is_file() or path.read_text() != dump_yaml(cfg, recipe):
        return None
    steps = [json.loads(line).get("step", 0) for line in
             (run_dir / "metrics.jsonl").read_text().splitlines()[-3:] if line.strip()]
    return summarize_run(run_dir) if steps and max(steps) >= sum(
        p.steps for p in recipe.phases) else None


_NETS: dict[str, Any] = {}


def evaluate_dir(model_dir: str | Path, resolution: int, limit: int | None = None,
                 crop: str = "center") -> dict[str, Any]:
    """PSNR/SSIM/LPIPS(Alex)/rFID/latent MMD² of a saved model on kodak24 crops at
    ``resolution`` (shortest side resized, then cropped), as ``latentae eval`` measures."""

    if not _NETS:
        _NETS["lpips"], _NETS["inception"] = load_lpips("alex"), load_inception()
    model = load(model_dir)
    torch.manual_seed(0)  # random crops, when asked for, are the same for every model
    cfg = EvalConfig(resolution=resolution, crop=crop, limit=limit, batch_size=8,
                     progress=False)
    res = evaluate_reconstruction(model, EVAL_DATA, cfg, torch.device("cpu"), _NETS["lpips"],
                                  _NETS["inception"])
    s = res.summary
    return {"images": len(res.rows), "psnr": s["psnr"], "ssim": s["ssim"],
            "lpips": s["lpips"], "rfid": s["rfid"], "mmd2_std": s["mmd2_standardized"],
            "latent_std": res.latents.get("std"), "notes": res.notes}


@torch.no_grad()
def encode_rate(model: torch.nn.Module, resolution: int, batch: int = 8,
                repeats: int = 3) -> float:
    """Encoder throughput in images/s (median of ``repeats`` timed batches after one
    warm-up), posterior mode, float32 on CPU. Noisy on a shared machine."""
    model.eval()
    x = torch.zeros(batch, 3, resolution, resolution)
    model.encode(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.encode(x).mode()
        times.append(time.perf_counter() - t)
    return batch / sorted(times)[len(times) // 2]


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub markdown table of ``rows`` restricted to ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(out: Path, study: str, args: argparse.Namespace, rows: list[dict],
                  columns: list[str], extra: dict | None = None, started: float = 0.0) -> None:
    """``OUT/results.json`` (everything) and ``OUT/table.md`` (the table + the command)."""
    via_cli = Path(sys.argv[0]).name == "latentae"  # `latentae study NAME ...`
    command = (("latentae " if via_cli else f"python -m latentae.studies.{study} ")
               + " ".join(sys.argv[1:]))
    meta = {"study": study, "command": command.strip(), "seed": args.seed,
            "quick": args.quick, "machine": machine(),
            "wall_seconds": round(time.perf_counter() - started, 1) if started else None,
            "train_data": str(TRAIN_DATA.name), "eval_data": str(EVAL_DATA.name)}
    atomic_write_text(out / "results.json", json.dumps({**meta, **(extra or {}), "rows": rows},
                                                       indent=1, default=str))
    table = markdown_table(rows, columns)
    atomic_write_text(out / "table.md", f"`{meta['command']}` ({meta['machine']}, "
                                        f"{meta['wall_seconds']} s)\n\n{table}")
    print(table)


def plot(path: Path, series: dict[str, tuple[list, list]], xlabel: str, ylabel: str,
         title: str, logx: bool = False) -> None:
    """A small line plot (PNG, ~40 KB) of ``{label: (xs, ys)}``."""
    import matplotlib  # deferred: a heavy optional dependency, only for the plots
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=90)
    for label, (xs, ys) in series.items():
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if logx:
        ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def trained_models(args, source: str | None, study: str = "litevae_vs_sdvae") -> dict[str, str]:
    """``{name: model_dir}`` of the models trained by ``study`` (its ``results.json`` in
    ``source`` or its default folder); runs that study first (same flags) when absent."""
    folder = Path(source) if source else (
        Path(args.out) / study if args.out else DEFAULT_OUT / study)
    path = folder / "results.json"
    if not path.is_file():
        print(f"{path} not found: running the {study} study first", flush=True)
        sub = argparse.Namespace(**{**vars(args), "out": str(folder)})
        importlib.import_module(f"latentae.studies.{study}").run(sub)
    rows = json.loads(path.read_text())["rows"]
    return {r["model"]: r["model_dir"] for r in rows}


def bars(path: Path, labels: list[str], values: list[float | None], ylabel: str,
         title: str) -> None:
    """A small bar chart (PNG) of one value per label."""
    import matplotlib  # deferred: a heavy optional dependency, only for the plots
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=90)
    ax.bar(range(len(labels)), [v if v is not None else 0.0 for v in values])
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
    lo = min((v for v in values if v is not None), default=0.0)
    ax.set_ylim(bottom=lo - 1.0 if lo > 1 else 0.0)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

"""Shared harness of the reproduction studies (``docs/results.md``, issue 17).

A study module declares its claim, arms, contrasts and ``build`` (``runner.py``); this
module gives it the command line (``--quick``, ``--scale cpu|gpu``, ``--seeds``,
``--jobs``, ``--resume``, ``--arms``, ``--dry-run``), runs it (``runner.run_all``) and
writes ``OUT/results.json`` (every run, every contrast), ``OUT/table.md`` (the
contrasts with CIs, MDE and verdict, and the runs) and ``OUT/curves.png`` (the held-out
validation curves). Runs are cached per (arm, seed) and resumable (``design.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from latentae.argtypes import at_least
from latentae.errors import InputError
from latentae.files import atomic_path, atomic_write_text, refuse_file
from latentae.studies import design, runner

# Relative to the working directory, so an installed latentae (a wheel) behaves like the
# source checkout run from its root: data in ../shared/data, results in runs/studies/.
DATA = Path(os.environ.get("LATENTAE_STUDY_DATA", Path("..") / "shared" / "data"))
TRAIN_DATA = DATA / "bsds400-train"
EVAL_DATA = DATA / "kodak24"
DEFAULT_OUT = Path("runs") / "studies"


def parser(name: str, doc: str, scales: dict | None = None) -> argparse.ArgumentParser:
    """The options every study takes (``--scale`` from ``scales``, a study's own, or
    ``design.SCALES``)."""
    p = argparse.ArgumentParser(prog=f"latentae study {name.replace('_', '-')}",
                                description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny settings (--scale quick: 32², a few steps): a smoke run")
    p.add_argument("--scale", default="cpu", choices=sorted(scales or design.SCALES),
                   help="cpu: 64², this 2-core machine; gpu: 128², bf16, one large GPU; "
                        "h200: gpu without LPIPS-VGG/KID, 20 seeds (scripts/gpu_evidence.sh) "
                        "(a study may size its own: see its description)")
    p.add_argument("--out", default=None, help=f"output folder (default {DEFAULT_OUT}/{name})")
    p.add_argument("--seed", type=int, default=0, help="study seed (paired seeds derive from it)")
    p.add_argument("--seeds", type=at_least(1), default=None,
                   help="paired seeds per arm (≥ 3 for a verdict)")
    p.add_argument("--budgets", type=design.step_budgets, default=None,
                   help="comma-separated step budgets (the last is the step cap)")
    p.add_argument("--eval-every", type=at_least(1), default=None,
                   help="steps between validations")
    p.add_argument("--test-crops", type=at_least(1), default=None)
    p.add_argument("--kid-crops", type=at_least(0), default=None, help="0 turns KID off")
    p.add_argument("--lr-mult", type=float, default=None,
                   help="multiply the paper's learning rate (the small lr sweep)")
    p.add_argument("--arm-lr-mult", default=None, metavar="ARM=M,...",
                   help="per-arm lr multipliers overriding --lr-mult (each arm at its best "
                        "lr of the sweep)")
    p.add_argument("--arms", default=None, help="comma-separated subset of the arms")
    p.add_argument("--jobs", type=at_least(1), default=1,
                   help="runs at a time, one torch thread each (2 on this 2-core machine)")
    p.add_argument("--resume", action="store_true",
                   help="continue the study in OUT (finished runs are reused)")
    p.add_argument("--fresh", action="store_true", help="delete OUT's runs and start over")
    p.add_argument("--runs-from", default=None, metavar="DIR",
                   help="reuse the finished training runs of an earlier study in DIR (one "
                        "that trains the same arms the same way, same scale and seeds): "
                        "only the testing runs here")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the scale's)")
    p.add_argument("--workers", type=at_least(0), default=None,
                   help="data-loader processes per run (default: the scale's)")
    p.add_argument("--dry-run", action="store_true",
                   help="build every run of the scale and train one step on the CPU, two "
                        "seeds, two crops per set: checks the study runs, measures nothing")
    return p


def scale_from(args: argparse.Namespace, scales: dict | None = None) -> design.Scale:
    """The scale of ``--quick``/``--scale`` (from ``scales``, a study's own, or
    ``design.SCALES``) with the command line's overrides."""
    if args.dry_run:
        base = design.get_scale("quick" if args.quick else args.scale, scales)
        return design.get_scale(base.name, scales, budgets=(1,), eval_every=1, val_crops=2,
                                test_crops=2, kodak_crops=2, seeds=2, device="cpu",
                                kid_crops=2 if base.kid_crops else 0,
                                batch_size=min(base.batch_size, 2), workers=0, dry_run=True)
    return design.get_scale("quick" if args.quick else args.scale, scales, seeds=args.seeds,
                            budgets=args.budgets, eval_every=args.eval_every,
                            test_crops=args.test_crops, kid_crops=args.kid_crops,
                            device=args.device, lr_mult=args.lr_mult, workers=args.workers,
                            arm_lr_mult=arm_multipliers(args.arm_lr_mult))


def arm_multipliers(text: str | None) -> tuple[tuple[str, float], ...] | None:
    """``"sd-enc=4,lite-s=16"`` -> ``(("lite-s", 16.0), ("sd-enc", 4.0))``."""
    if not text:
        return None
    try:
        pairs = [item.split("=") for item in text.split(",")]
        return tuple(sorted((arm.strip(), float(m)) for arm, m in pairs))
    except ValueError:
        raise InputError(f"--arm-lr-mult {text!r}: expected ARM=MULT[,ARM=MULT...]") from None


def setup(args: argparse.Namespace, name: str) -> Path:
    """Data check and the output folder (refuses to mix with an earlier study unless
    ``--resume`` or ``--fresh``)."""
    for d in (TRAIN_DATA, EVAL_DATA):
        if not d.is_dir():
            raise InputError(f"{d} is missing: the studies read ../shared/data (relative to "
                             "the working directory) or $LATENTAE_STUDY_DATA")
    out = refuse_file(args.out) if args.out else DEFAULT_OUT / name
    if args.fresh and out.is_dir():
        shutil.rmtree(out)
    holds = out.is_dir() and any(p.is_dir() and p.name != "data" for p in out.iterdir())
    if holds and not args.resume:
        raise InputError(f"{out} holds runs of an earlier study: --resume continues it, "
                         "--fresh deletes it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


# Scale fields a resumed study may change: more seeds add runs; data workers do not
# change what a run computes.
RESUMABLE_FIELDS = ("seeds", "workers")


def keep_scale(out: Path, scale: design.Scale) -> None:
    """Record how ``out``'s runs are made (``OUT/scale.json``), or check a resumed study
    against it: finished runs are reused as they are, so a resume with other budgets, lr,
    crops... would mix two designs under one label -> InputError naming the fields."""
    path = out / "scale.json"
    ours = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(scale))).items()
            if k not in RESUMABLE_FIELDS}
    if not path.is_file():
        atomic_write_text(path, json.dumps(ours, indent=1))
        return
    theirs = json.loads(path.read_text())
    differ = [f"{k} {theirs.get(k)} ≠ {v}" for k, v in ours.items() if theirs.get(k) != v]
    if differ:
        raise InputError(f"{out} holds runs made with other settings ({'; '.join(differ)}): "
                         "--resume with the same options, --fresh to start over, or "
                         "another --out")


def chosen_arms(mod: ModuleType, args: argparse.Namespace, scale: design.Scale
                ) -> tuple[str, ...]:
    """``--arms``, else ``QUICK_ARMS`` (``--quick``), else the study's ``SCALE_ARMS`` for
    this scale (arms that only a bigger scale can train), else every arm."""
    default = getattr(mod, "SCALE_ARMS", {}).get(scale.name, tuple(mod.ARMS))
    arms = tuple(args.arms.split(",")) if args.arms else (
        mod.QUICK_ARMS if args.quick else default)
    named = dict(arm_multipliers(args.arm_lr_mult) or ())
    unknown = sorted((set(arms) | set(named)) - set(mod.ARMS))
    if unknown:
        raise InputError(f"unknown arm(s) {unknown}; valid: {', '.join(mod.ARMS)}")
    return arms


def run_study(mod: ModuleType, argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, run every (arm, seed), write results.json/table.md/curves.png."""
    scales = getattr(mod, "SCALES", None)  # a study's own sizes, else design.SCALES
    args = parser(mod.NAME, mod.__doc__, scales).parse_args(argv)
    started, scale = time.perf_counter(), scale_from(args, scales)
    out, arms = setup(args, mod.NAME), chosen_arms(mod, args, scale)
    keep_scale(out, scale)
    if args.runs_from:
        link_runs(Path(args.runs_from), out, mod, arms, scale, args.seed)
    results = runner.run_all(mod, arms, scale, out, args.seed, TRAIN_DATA, EVAL_DATA,
                             1 if args.dry_run else args.jobs)
    rows = runner.contrasts(mod, results, scale, arms)
    record = runner.study_record(mod, scale, results, rows, started)
    record |= {"command": command_line(mod.NAME), "machine": machine(scale.device),
               "arms": {a: mod.ARMS[a] for a in arms}}
    atomic_write_text(out / "results.json", json.dumps(record, indent=1, default=str))
    atomic_write_text(out / "table.md", render(record))
    plot_curves(out / "curves.png", results, f"{mod.NAME}: held-out val PSNR ({scale.name})")
    if hasattr(mod, "plot_results"):  # a study's own figure (e.g. generation KID per arm)
        mod.plot_results(out, record)
    print(render(record))
    return record


# Scale fields that change how a run trains (the test-set sizes do not).
TRAINING_FIELDS = ("resolution", "batch_size", "budgets", "eval_every", "val_crops",
                   "perceptual", "lr_mult", "arm_lr_mult", "dtype")


def link_runs(source: Path, out: Path, mod: ModuleType, arms: tuple[str, ...],
              scale: design.Scale, study_seed: int) -> None:
    """Link ``source/ARM/sI/run`` (finished training runs of an earlier study that builds
    these arms the same way: ``mod.TRAINS_AS`` or the same study) into ``out``, after
    checking that it trained at the same scale and paired seeds. Testing then runs here
    (``runner.train_and_test`` finds the run done and only measures)."""
    record_path = source / "results.json"
    if not record_path.is_file():
        raise InputError(f"--runs-from {source}: no results.json (not a finished study)")
    record = json.loads(record_path.read_text())
    trains_as = getattr(mod, "TRAINS_AS", mod.NAME)
    if record["study"] not in (trains_as, mod.NAME):
        raise InputError(f"--runs-from {source}: its runs are of study {record['study']!r}; "
                         f"{mod.NAME} trains like {trains_as!r}")
    theirs, ours = record["scale"], dataclasses.asdict(scale)
    differ = [f"{k} {theirs.get(k)} ≠ {ours[k]}" for k in TRAINING_FIELDS
              if json.dumps(theirs.get(k)) != json.dumps(ours[k])]
    if differ:
        raise InputError(f"--runs-from {source} trained differently: {'; '.join(differ)}")
    seeds = {(r["arm"], r["seed_index"]): r["seed"] for r in record["runs"]}
    for arm in arms:
        for i in range(scale.seeds):
            if seeds.get((arm, i)) != design.paired_seed(study_seed, i):
                raise InputError(f"--runs-from {source} has no run of {arm} seed {i} with "
                                 f"study seed {study_seed}")
            link = out / arm / f"s{i}" / "run"
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink((source / arm / f"s{i}" / "run").resolve(), link)


def command_line(study: str) -> str:
    via_cli = Path(sys.argv[0]).name == "latentae"  # `latentae study NAME ...`
    return (("latentae " if via_cli else f"python -m latentae.studies.{study} ")
            + " ".join(sys.argv[1:])).strip()


def machine(device: str = "cpu") -> str:
    """A one-line description of where the numbers were measured."""
    where = (torch.cuda.get_device_name() if device.startswith("cuda")
             and torch.cuda.is_available() else f"{platform.machine()} CPU")
    return (f"{where}, {os.cpu_count()} cores visible, torch {torch.__version__}, "
            "one torch thread per run")


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


def render(record: dict[str, Any]) -> str:
    """The Markdown of a study: claim, command, contrasts (CIs, MDE, verdict), runs."""
    cols = ["contrast", "metric", "budget", "set", "arm_mean", "ref_mean", "mean", "sd",
            "ci95", "ci95_images", "mde", "paper_effect", "verdict_holm"]
    for extra in ("equivalence", "noninferiority"):
        cols += [extra] if any(extra in r for r in record["contrasts"]) else []
    rows = [{**r, **{k: "[{:.3f}, {:.3f}]".format(*r[k]) for k in ("ci95", "ci95_images")
                     if k in r}} for r in record["contrasts"]]
    runs = [{"arm": r["arm"], "seed": r["seed_index"], "plateau": r["plateau"],
             "steps": r["curve"][-1]["step"] if r["curve"] else 0,
             "val_psnr": r["curve"][-1]["val"] if r["curve"] else None,
             "train_s": r["train_s"], "params_M": r["params"] / 1e6,
             "enc_gflop": r.get("encoder_gflop")} for r in record["runs"]]
    return (f"**Claim.** {record['claim']}\n\n`{record['command']}` — {record['machine']}, "
            f"{record['wall_seconds']} s wall\n\n"
            "Differences are arm − reference, signed so + is the paper's direction; CI: "
            "the union of the paired bootstrap and t 95% intervals over seeds; ci95_images: "
            "seeds and test images resampled (crops cluster by image); MDE at 80% power, "
            "estimated from the observed spread. Verdicts are read after Holm's adjustment "
            "of the paired t-test p-values over all of this study's rows (m in each "
            "verdict). Sets: test = held-out test images at native scale, test_rs = the "
            "same images at the training scale (short side = crop size), kodak = kodak24."
            "\n\n" + markdown_table(rows, cols) + "\n" +
            markdown_table(arm_summary(record["runs"]), ["arm", "budget", "set", "psnr",
                                                         "ssim", "lpips"]) + "\n" +
            markdown_table(runs, ["arm", "seed", "steps", "plateau", "val_psnr", "train_s",
                                  "params_M", "enc_gflop"]))


def arm_summary(runs: list[dict]) -> list[dict]:
    """Per (arm, budget, set): ``mean ± sd`` over seeds of PSNR (dB), SSIM and LPIPS."""
    groups: dict[tuple, dict[str, list[float]]] = {}
    for r in runs:
        for b, tested in r["budgets"].items():
            for where in (w for w in ("test", "test_rs", "kodak") if w in tested):
                g = groups.setdefault((r["arm"], int(b), where), {})
                for k in ("psnr", "ssim", "lpips"):
                    if k in tested[where]:
                        g.setdefault(k, []).append(tested[where][k])

    def cell(v: list[float]) -> str:
        digits = 2 if np.mean(v) > 1 else 4
        sd = f" ± {np.std(v, ddof=1):.{digits}f}" if len(v) > 1 else ""
        return f"{np.mean(v):.{digits}f}{sd}"
    return [{"arm": a, "budget": b, "set": w, **{k: cell(v) for k, v in g.items()}}
            for (a, b, w), g in sorted(groups.items(), key=lambda kv: (
                kv[0][1], kv[0][2] != "test", kv[0][0]))]


def plot_metric_series(path: Path, record: dict[str, Any], keys: dict[Any, str],
                       xlabel: str, ylabel: str, logx: bool = False) -> None:
    """Per arm, the mean over seeds (final budget, test set) of ``keys`` (x -> metric
    name) against x: e.g. PSNR against evaluation resolution, MMD against σ."""
    series: dict[str, tuple[list, list]] = {}
    for arm in dict.fromkeys(r["arm"] for r in record["runs"]):
        finals = [r["budgets"][max(r["budgets"], key=int)]["test"] for r in record["runs"]
                  if r["arm"] == arm]
        xs = [x for x, k in keys.items() if all(k in f for f in finals)]
        series[arm] = (xs, [float(np.mean([f[keys[x]] for f in finals])) for x in xs])
    plot(path, series, xlabel, ylabel, f"{record['study']} ({record['scale']['name']})", logx)


def curve_means(results: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Per arm, the mean validation PSNR at each step that **every** seed of the arm
    reached: a run that stopped early (plateau) ends its arm's curve there, so no point
    averages fewer seeds than the arm has (issue 27 defect 4)."""
    values: dict[str, dict[int, list[float]]] = {}
    seeds: dict[str, int] = {}
    for r in results:
        seeds[r["arm"]] = seeds.get(r["arm"], 0) + 1
        for c in r["curve"]:
            values.setdefault(r["arm"], {}).setdefault(c["step"], []).append(c["val"])
    out = {}
    for arm, by_step in values.items():
        steps = sorted(s for s, v in by_step.items() if len(v) == seeds[arm])
        out[arm] = (steps, [float(np.mean(by_step[s])) for s in steps])
    return out


def plot_curves(path: Path, results: list[dict], title: str) -> None:
    """Mean held-out validation PSNR against steps, one line per arm (complete seed sets
    only: :func:`curve_means`)."""
    plot(path, curve_means(results), "training step",
         "val PSNR (held-out selection crops; all seeds)", title)


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


def bars(path: Path, labels: list[str], values: list[float | None], ylabel: str,
         title: str, from_zero: bool = False) -> None:
    """A small bar chart (PNG) of one value per label; the axis starts just below the
    smallest value (PSNR-like values), or at 0 with ``from_zero`` (KID)."""
    import matplotlib  # deferred: a heavy optional dependency, only for the plots
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=90)
    ax.bar(range(len(labels)), [v if v is not None else 0.0 for v in values])
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
    lo = min((v for v in values if v is not None), default=0.0)
    ax.set_ylim(bottom=0.0 if from_zero or lo <= 1 else lo - 1.0)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

"""The GPU evidence (issue 27), run by ``scripts/gpu_evidence.sh`` on the GPU machine as
it is: ``python3`` with its own torch, ``PYTHONPATH=src``, the data and LPIPS-Alex weights
from the carried ``.gpu/`` (``scripts/gpu_prepare.sh``), caches under /tmp, results in
``$OUT``: ``log.txt`` (the shell's ``tee``), ``results.json``, ``tables.md``,
``figure.png``, ``bench.md``, ``bench.json`` (six files, rewritten after every step).

Sections, each ending cleanly at its own deadline with what it has (a run cut short is
dropped; the study is re-aggregated over the seeds whose every arm finished):

1. ``litevae_vs_sdvae`` at ``--scale h200`` (128², bf16, L1 + KL): lite-tiny vs the full
   SD encoder and the equally small one, up to 20 paired seeds, ``--jobs`` runs sharing
   the GPU. A calibration (a few short runs at full concurrency) measures the seconds per
   training step; the step cap is then the largest of ``LADDER`` at which 20 seeds fit the
   section's time, else fewer seeds at the smallest cap.
2. ``scale_dependency`` and ``latent_mmd`` on the same runs (``--runs-from``).
3. ``scripts/gpu_bench.sh S`` (w29's: LiteVAE table 3, DC-AE phase-2 memory, the bench
   columns), if the file exists, with what is left minus a 30 s margin.

``--rehearse`` (:func:`rehearse`): on this CPU, a fresh clone of HEAD with only the carried
folder, diffusers/webdataset blocked, no network, the smallest size (``--smallest``:
``--dry-run`` studies), then :func:`check_limits` on what came back.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRY = ".gpu"
WORK = Path(tempfile.gettempdir()) / "gpu_evidence"  # large caches: never under $OUT
DECISIVE = "litevae_vs_sdvae"
ARMS = "lite-tiny,sd-enc-small,sd-enc"
LR = ["--lr-mult", "16", "--arm-lr-mult", "sd-enc=4"]  # the CPU sweep's choice (results.md)
SEEDS, MIN_SEEDS = 20, 3
LADDER = (1600, 1200, 1000, 800, 600, 400, 300, 200)  # step caps, largest first
MARGIN_S = 30
REST = 0.4  # of the time: scale-dependency, latent-mmd and the bench, after section 1
BENCH_S = 75  # kept for the bench (LiteVAE table 3 ~20 s, phase-2 memory ~10 s: w29)
# The GPU machine's limits (/work/.library/device/README.md).
MAX_FILES, MAX_FILE, MAX_BACK, MAX_TREE, MAX_DEPTH = 8, 16 << 20, 64 << 20, 64 << 20, 2
NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")
OUT_FILES = ("log.txt", "results.json", "tables.md", "figure.png")


def log(msg: str) -> None:
    print(f"[gpu_evidence {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- the limits ----------------------------------------------------------------------
def check_out(out: Path, required: tuple[str, ...] = OUT_FILES) -> list[str]:
    """What in ``out`` would not come back from the GPU machine (empty: all is well):
    more than 8 files, a file over 16 MiB or 64 MiB together, deeper than two folders,
    odd names, links or special files, a required file missing, an unreadable
    results.json."""
    problems, files, total = [], [], 0
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if not all(NAME_OK.match(part) for part in rel.parts):
            problems.append(f"{rel}: a name with characters other than letters, digits, ._-")
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            problems.append(f"{rel}: not a plain file or folder")
        elif p.is_file():
            files.append(rel)
            total += p.stat().st_size
            if p.stat().st_size > MAX_FILE:
                problems.append(f"{rel}: {p.stat().st_size} bytes > 16 MiB")
            if len(rel.parts) - 1 > MAX_DEPTH:
                problems.append(f"{rel}: more than {MAX_DEPTH} folders down")
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files > {MAX_FILES}")
    if total > MAX_BACK:
        problems.append(f"{total} bytes together > 64 MiB")
    problems += [f"{name}: missing" for name in required if not (out / name).is_file()]
    if (out / "results.json").is_file():
        try:
            json.loads((out / "results.json").read_text())
        except ValueError as e:
            problems.append(f"results.json: not JSON ({e})")
    return problems


def travelling_bytes(repo: Path, carry: tuple[str, ...] = (CARRY,)) -> int:
    """Bytes of what a ``run`` sends: tracked and untracked-not-ignored files, plus the
    carried folders."""
    names = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True, check=True).stdout
    total = sum((repo / n).stat().st_size for n in names.decode().split("\0")
                if n and (repo / n).is_file() and not (repo / n).is_symlink())
    for c in carry:
        total += sum(p.stat().st_size for p in (repo / c).rglob("*")
                     if p.is_file() and not p.is_symlink())
    return total


def check_limits(repo: Path, out: Path, carry: tuple[str, ...] = (CARRY,)) -> list[str]:
    """:func:`check_out` plus the size of the tree that travels (<= 64 MiB)."""
    size = travelling_bytes(repo, carry)
    tree = [f"the travelling tree is {size} bytes > 64 MiB"] if size > MAX_TREE else []
    return tree + check_out(out)


# --- running a study -------------------------------------------------------------------
def complete_seeds(folder: Path, arms: list[str]) -> int:
    """Seed indices 0..k-1 with every arm's result.json (the first gap ends the count)."""
    k = 0
    while all((folder / a / f"s{k}" / "result.json").is_file() for a in arms):
        k += 1
    return k


def run_study(name: str, args: list[str], deadline: float, env: dict) -> tuple[str, float]:
    """``python -m latentae.studies.NAME ARGS`` in its own process group, stopped at
    ``deadline`` (SIGTERM: runs keep their checkpoints; then SIGKILL). -> (status, wall)."""
    cmd = [sys.executable, "-m", f"latentae.studies.{name}", *args]
    log(" ".join(cmd[1:]))
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        proc.wait(timeout=max(1.0, deadline - time.time()))
        status = "done" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        status = "stopped at its deadline"
    return status, time.time() - t0


def finish_study(name: str, args: list[str], folder: Path, arms: list[str], status: str,
                 env: dict, smallest: bool) -> dict:
    """The study's record; a study cut short is re-aggregated over its complete seeds
    (all cached: no training)."""
    if status != "done" and not smallest:
        k = complete_seeds(folder, arms)
        if k < 2:
            return {"status": f"{status}; {k} complete seed(s): no paired contrast"}
        log(f"{name}: {status}; aggregating its {k} complete seeds")
        again, _ = run_study(name, reaggregate_args(args, k), time.time() + 120, env)
        status = f"{status}; aggregated over {k} complete seeds ({again})"
    record_path = folder / "results.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    return {"status": status, "record": record}


def reaggregate_args(args: list[str], seeds: int) -> list[str]:
    """``args`` with ``--seeds seeds`` and ``--jobs 1`` (every run is cached: only the
    record is written)."""
    out, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
        elif a in ("--seeds", "--jobs") and i + 1 < len(args):
            skip = True
        else:
            out.append(a)
    return [*out, "--seeds", str(seeds), "--jobs", "1"]


# --- the plan ----------------------------------------------------------------------------
def plan(step_s: float, run_overhead_s: float, jobs: int, seconds: float, arms: int = 3
         ) -> dict:
    """The step cap and seeds that fit ``seconds``: runs go ``jobs`` at a time, each
    ``cap·step_s + run_overhead_s``; the largest cap of ``LADDER`` with 20 seeds, else
    the most seeds (>= 3) at the smallest cap."""
    def need(cap: int, seeds: int) -> float:
        return math.ceil(arms * seeds / jobs) * (cap * step_s + run_overhead_s)
    for cap in LADDER:
        if need(cap, SEEDS) <= seconds:
            return {"cap": cap, "seeds": SEEDS, "estimate_s": round(need(cap, SEEDS))}
    cap = LADDER[-1]
    seeds = max(MIN_SEEDS, max((s for s in range(MIN_SEEDS, SEEDS + 1)
                                if need(cap, s) <= seconds), default=MIN_SEEDS))
    return {"cap": cap, "seeds": seeds, "estimate_s": round(need(cap, seeds))}


def calibrate(common: list[str], jobs: int, env: dict, deadline: float) -> dict:
    """Seconds per training step with ``jobs`` runs at once (two chunks of 25 steps per
    run, the second timed: model load, data, steps, validation) and per-run overhead
    (start, test)."""
    folder = WORK / "calibration"
    shutil.rmtree(folder, ignore_errors=True)
    seeds = max(2, jobs // 3)
    args = [*common, "--arms", ARMS, "--seeds", str(seeds), "--budgets", "50",
            "--eval-every", "25", "--jobs", str(jobs), "--out", str(folder)]
    status, wall = run_study(DECISIVE, args, deadline, env)
    chunks = []  # seconds per step of each run (training and validation, both chunks)
    for arm_json in folder.glob("*/s*/run/arm.json"):
        rec = json.loads(arm_json.read_text())
        if rec["curve"]:
            chunks.append(rec["seconds"] / rec["curve"][-1]["step"])
    if not chunks:
        raise RuntimeError(f"calibration measured nothing ({status})")
    step_s = sorted(chunks)[len(chunks) // 2]
    waves = math.ceil(3 * seeds / jobs)
    steps = json.loads(next(folder.glob("*/s*/run/arm.json")).read_text())["curve"][-1]["step"]
    overhead = max(5.0, wall / waves - steps * step_s)  # start, test, aggregation
    return {"status": status, "wall_s": round(wall, 1), "seconds_per_step": step_s,
            "run_overhead_s": round(overhead, 1), "runs": len(chunks), "jobs": jobs}


# --- what comes back -----------------------------------------------------------------------
def write_back(out: Path, report: dict) -> None:
    """Rewrite results.json, tables.md and figure.png in ``out`` from ``report`` (each
    written to a temporary name, then renamed: a kill leaves the previous version)."""
    def put(name: str, text: str) -> None:
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)

    put("results.json", json.dumps(report, indent=1, default=str))
    lines = [f"# GPU evidence ({report['machine']}, {report['date']})", "",
             f"Plan: {json.dumps(report.get('plan'))}", "",
             f"Calibration: {json.dumps(report.get('calibration'))}", ""]
    for name, sec in report["sections"].items():
        lines += [f"## {name}: {sec.get('status')} ({sec.get('wall_s', '?')} s)", ""]
        folder = WORK / name
        if (folder / "table.md").is_file() and sec.get("record"):
            lines += [(folder / "table.md").read_text(), ""]
    put("tables.md", "\n".join(lines))
    figure(out / "figure.png", [p for n in report["sections"] for p in  # curves: once
                                sorted((WORK / n).glob("*.png"))
                                if n == DECISIVE or p.name != "curves.png"])


def figure(path: Path, pngs: list[Path]) -> None:
    """One figure: the studies' own plots side by side (curves, PSNR vs resolution,
    MMD vs σ)."""
    import matplotlib  # deferred: only for the figure
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs = pngs[:6] or [None]
    cols = min(3, len(pngs))
    rows = math.ceil(len(pngs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), dpi=90,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, png in zip(axes.flat, pngs):
        if png is None:
            ax.text(0.5, 0.5, "no study finished yet", ha="center")
        else:
            ax.imshow(plt.imread(png))
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def bench(out: Path, seconds: float, env: dict, smallest: bool = False) -> dict:
    """``scripts/gpu_bench.sh S`` (w29's, if present; it stops within S) into /tmp, folded into
    ``out/bench.md`` and ``out/bench.json`` (two files, whatever it writes)."""
    script = ROOT / "scripts" / "gpu_bench.sh"
    if not script.is_file():
        return {"status": "skipped: no scripts/gpu_bench.sh"}
    if seconds < 20:
        return {"status": f"skipped: {seconds:.0f} s left"}
    folder = WORK / "bench"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.time()
    try:
        done = subprocess.run(["bash", str(script), str(int(seconds)),  # w29's call
                               *(["--rehearse"] if smallest else [])],
                              env={**env, "OUT": str(folder), "PYTHON": sys.executable},
                              timeout=seconds + 15,
                              capture_output=True, text=True, cwd=ROOT)
        status = "done" if done.returncode == 0 else f"failed (exit {done.returncode})"
        tail = (done.stdout + done.stderr)[-4000:]
    except subprocess.TimeoutExpired as e:
        status, tail = "stopped at its deadline", str(e.stdout or "")[-4000:]
    print(tail, flush=True)
    md = [f"# gpu_bench.sh: {status}", ""]
    blob: dict = {"status": status}
    for p in sorted(folder.rglob("*")):
        if p.suffix == ".json":
            try:
                blob[str(p.relative_to(folder))] = json.loads(p.read_text())
            except ValueError:
                blob[str(p.relative_to(folder))] = p.read_text()[:100_000]
        elif p.is_file() and p.suffix in (".md", ".txt", ".csv"):
            md += [f"## {p.relative_to(folder)}", "", p.read_text()[:200_000], ""]
    (out / "bench.md").write_text("\n".join(md))
    (out / "bench.json").write_text(json.dumps(blob, indent=1, default=str))
    return {"status": status, "wall_s": round(time.time() - t0, 1)}


# --- the sections ------------------------------------------------------------------------
def environment() -> dict:
    """The studies' environment: data and weights from the carried folder, src first."""
    src = str(ROOT / "src")
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "LATENTAE_STUDY_DATA": str(ROOT / CARRY / "data"),
            "LATENTAE_WEIGHTS": str(ROOT / CARRY / "weights"), "MPLBACKEND": "Agg",
            "PYTHONPATH": src if not path else f"{src}:{path}", "PYTHONUNBUFFERED": "1"}


def evidence(out: Path, budget: float, jobs: int | None, smallest: bool) -> dict:
    """Run the three sections within ``budget`` seconds, writing ``out`` as it goes."""
    import torch  # the machine's own; only to detect CUDA

    start = time.time()
    end = start + budget - MARGIN_S
    device = "cuda" if torch.cuda.is_available() else "cpu"
    jobs = jobs or (max(1, min(15, (os.cpu_count() or 2) - 1)) if device == "cuda" else 2)
    env = environment()
    for need in (ROOT / CARRY / "data" / "bsds400-train", ROOT / CARRY / "weights"):
        if not need.exists():
            raise SystemExit(f"gpu_evidence: {need} is missing: run scripts/gpu_prepare.sh "
                             f"and carry {CARRY}")
    report = {"machine": torch.cuda.get_device_name() if device == "cuda" else "CPU",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                time.gmtime()),
              "device": device, "jobs": jobs, "budget_s": budget, "smallest": smallest,
              "sections": {}}
    WORK.mkdir(parents=True, exist_ok=True)
    write_back(out, report)
    common = ["--scale", "h200", "--device", device, "--workers", "0", "--resume", *LR]
    common += ["--dry-run"] if smallest else []  # every size forced tiny, on the CPU
    section_end = end - REST * (end - start)  # the rest: sections 2 and 3
    try:
        report["calibration"] = cal = calibrate(common, jobs, env,
                                                start + min(120, budget / 4))
        report["plan"] = plan(cal["seconds_per_step"], cal["run_overhead_s"], jobs,
                              0.9 * (section_end - time.time()))
    except Exception as e:  # no measurement: a middling plan; the deadline still holds
        report["calibration"] = {"status": f"failed: {type(e).__name__}: {e}"}
        report["plan"] = {"cap": 400, "seeds": SEEDS, "estimate_s": None}
    if smallest:
        report["plan"] |= {"planned": dict(report["plan"]), "cap": 1, "seeds": 2}
    log(f"plan: {report['plan']}; calibration: {report.get('calibration')}")
    write_back(out, report)
    cap, seeds = report["plan"]["cap"], report["plan"]["seeds"]
    sized = ["--budgets", f"{max(1, cap // 2)},{cap}", "--eval-every", str(max(1, cap // 8))]
    decisive = [*common, *sized, "--arms", ARMS, "--seeds", str(seeds), "--jobs", str(jobs),
                "--out", str(WORK / DECISIVE)]
    section(report, out, DECISIVE, lambda: finish_study(
        DECISIVE, decisive, WORK / DECISIVE, ARMS.split(","),
        run_study(DECISIVE, decisive, section_end, env)[0], env, smallest))
    k = complete_seeds(WORK / DECISIVE, ARMS.split(",")) if not smallest else 2
    for i, name in enumerate(("scale_dependency", "latent_mmd")):
        if k < 2:
            report["sections"][name] = {"status": "skipped: fewer than 2 complete seeds"}
            continue
        args = [*common, *sized, "--seeds", str(k), "--jobs", str(jobs), "--runs-from",
                str(WORK / DECISIVE), "--out", str(WORK / name)]
        share = (end - BENCH_S - time.time()) / (2 - i)
        section(report, out, name, lambda n=name, a=args, d=share: finish_study(
            n, a, WORK / n, ["lite-tiny", "sd-enc"],
            run_study(n, a, time.time() + max(20, d), env)[0], env, smallest))
    section(report, out, "gpu_bench", lambda: bench(out, end - time.time(), env, smallest))
    report["wall_s"] = round(time.time() - start, 1)
    write_back(out, report)
    log(f"done in {report['wall_s']} s; results in {out}")
    return report


def section(report: dict, out: Path, name: str, body) -> None:
    """``report["sections"][name] = body()`` timed; an exception is recorded, not raised
    (a failed section must not stop the next), and ``out`` is rewritten."""
    t0 = time.time()
    try:
        result = body()
    except Exception as e:
        result = {"status": f"failed: {type(e).__name__}: {e}"}
        log(f"{name}: {result['status']}")
    report["sections"][name] = {**result, "wall_s": round(time.time() - t0, 1)}
    write_back(out, report)


# --- the rehearsal ----------------------------------------------------------------------
def rehearse(python: str, budget: float) -> int:
    """The whole script at its smallest size in a fresh clone of HEAD that has only the
    carried folder (no ../shared, no weights cache, diffusers/webdataset blocked, no
    network where ``unshare -n`` works), then :func:`check_limits`. 0 when all is well."""
    if not (ROOT / CARRY).is_dir():
        raise SystemExit(f"gpu_evidence --rehearse: no {CARRY}: run scripts/gpu_prepare.sh")
    base = Path(tempfile.mkdtemp(prefix="gpu-rehearse-"))
    repo, out, block, tmp = base / "repo", base / "out", base / "block", base / "tmp"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", head], check=True)
    shutil.copytree(ROOT / CARRY, repo / CARRY)
    for name in ("diffusers", "webdataset"):  # not on the GPU machine
        (block / name).mkdir(parents=True)
        (block / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not on the GPU machine')\n")
    for d in (out, tmp, base / "home"):
        d.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base / "home"),
           "PYTHON": python, "PYTHONPATH": str(block), "OUT": str(out), "TMPDIR": str(tmp),
           "LANG": "C.UTF-8"}
    cmd = ["bash", "scripts/gpu_evidence.sh", "--smallest", "--budget", str(int(budget))]
    isolated = subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    log(f"rehearsal in {repo} ({'no network' if isolated else 'network not isolated'})")
    done = subprocess.run((["unshare", "-rn"] if isolated else []) + cmd, cwd=repo, env=env)
    problems = check_limits(repo, out) + [q for q in check_limits(ROOT, out)
                                          if q.startswith("the travelling tree")]
    report = json.loads((out / "results.json").read_text()) if (out / "results.json"
                                                                 ).is_file() else {}
    for name, sec in report.get("sections", {}).items():
        if name != "gpu_bench" and not sec.get("record"):
            problems.append(f"section {name}: no results ({sec.get('status')})")
    problems += [] if done.returncode == 0 else [f"the script exited {done.returncode}"]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    log(f"rehearsal: {len(files)} files back {files}; travelling tree "
        f"{travelling_bytes(ROOT) / 2**20:.1f} MiB (this checkout, with {CARRY})")
    for p in problems:
        log(f"PROBLEM: {p}")
    log("rehearsal passed" if not problems else f"rehearsal FAILED ({len(problems)})")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_evidence"))
    p.add_argument("--budget", type=float, default=480,
                   help="seconds for everything (the machine's command limit is 600)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs sharing the GPU (default: CPU cores - 1, at most 15)")
    p.add_argument("--smallest", action="store_true",
                   help="every study as --dry-run on the CPU: checks the script, measures "
                        "nothing")
    p.add_argument("--rehearse", action="store_true",
                   help="the smallest run in a fresh clone with only the carried folder, "
                        "then the GPU machine's limits checked")
    args = p.parse_args(argv)
    if args.rehearse:
        return rehearse(os.environ.get("PYTHON", sys.executable), max(args.budget, 900))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    evidence(out, args.budget, args.jobs, args.smallest)
    return 0


if __name__ == "__main__":
    sys.exit(main())

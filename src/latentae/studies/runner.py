"""Run a study: every (arm, paired seed) trained to its plateau or cap (cached and
resumable), tested at each budget on the held-out and kodak crops, then the paired
contrasts with bootstrap CIs, the MDE and the verdict (``stats.py``).

A study module declares ``NAME``, ``CLAIM`` (text), ``ARMS`` (name -> description),
``QUICK_ARMS``, ``CONTRASTS`` (:class:`Contrast` records), optionally ``SCALE_ARMS``
(scale name -> the arms run by default there), ``SCALES`` (its own sizes), ``PARENTS``
(arm -> the arm whose final model it starts from, e.g. GAN arms warm-started from the
converged L1+LPIPS run), ``AFTER`` (arm -> arms that must be finished first, e.g. the
one whose logged adaptive weight sets this arm's constant) and
``build(arm, scale, init_from) -> (model | None, Recipe)`` (a fresh model, built after
``torch.manual_seed(run seed)``; ``None`` with ``init_from`` continues the parent's
model). Optional hooks, merged into the tested ``test`` metrics:
``extra_metrics(model, scale, data, cache)`` at every budget, and
``generation_metrics(model_path, scale, data, cache, folder, seed)`` on the final model
only (the diffusion studies: a diffusion model trained on its latents, in ``folder``).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from latentae.bench.measure import count_flops
from latentae.errors import StateError
from latentae.eval.fid import resize_for_inception
from latentae.eval.generation_metrics import kid
from latentae.eval.inception import load_inception
from latentae.eval.lpips import load_lpips
from latentae.eval.psnr_ssim import psnr_per_image, ssim_per_image
from latentae.files import atomic_write_text
from latentae.pretrained import load
from latentae.studies import design, stats


@dataclass(frozen=True)
class Contrast:
    """``arm − reference`` on ``metric`` (``sign`` −1 where lower is better); the paper's
    effect in the same signed units, and where it is from. ``margin`` (a fraction of the
    reference arm's mean) adds an equivalence verdict: the CI of the difference inside
    ±margin·|reference mean| (``stats.equivalence``). ``noninferiority`` (> 0, in the
    metric's signed units, stated before any run) adds the one-sided test that the arm is
    worse by less than it (``stats.noninferiority``: "matches the reference")."""

    arm: str
    reference: str
    metric: str
    paper_effect: float
    source: str
    sign: float = 1.0
    margin: float | None = None
    noninferiority: float | None = None


@dataclass(frozen=True)
class DiffInDiff:
    """A difference of two paired differences, per seed: ``(first) − (second)``, each
    ``(arm, reference, metric)`` on the test set, e.g. the high-resolution penalty net of
    the high-resolution arm's advantage at R, or f32's penalty minus f8's (direction
    only: + = the first difference is the larger)."""

    name: str
    first: tuple[str, str, str]
    second: tuple[str, str, str]
    source: str


_NETS: dict[str, Any] = {}


def nets(device: str, need_kid: bool) -> dict[str, Any]:
    if "lpips" not in _NETS:
        _NETS["lpips"] = load_lpips("alex", device)
    if need_kid and "inception" not in _NETS:
        _NETS["inception"] = load_inception(device)
    return _NETS


@torch.no_grad()
def reconstruct(model: torch.nn.Module, x: torch.Tensor, device: str, batch: int = 32
                ) -> torch.Tensor:
    """Posterior-mode reconstructions, float32 on the CPU, clamped to [-1, 1]."""
    model = model.to(device).eval()
    out = [model.decode(model.encode(b.to(device)).mode()).float().clamp(-1, 1).cpu()
           for b in x.split(batch)]
    return torch.cat(out)


def val_psnr(crops: torch.Tensor, device: str):
    """The validation value of the plateau rule: mean PSNR on the val crops."""
    return lambda model: float(psnr_per_image(crops, reconstruct(model, crops, device)).mean())


@torch.no_grad()
def inception_features(x: torch.Tensor, device: str, batch: int = 32) -> torch.Tensor:
    net = nets(device, True)["inception"]
    return torch.cat([net(resize_for_inception(b.to(device))).double().cpu()
                      for b in x.split(batch)])


@torch.no_grad()
def measure(model: torch.nn.Module, crops: torch.Tensor, device: str, kid_crops: int,
            real_features: torch.Tensor | None = None) -> dict[str, Any]:
    """Per-crop PSNR/SSIM/LPIPS(Alex) lists, their means, and KID (×1e3) on the first
    ``kid_crops`` crops when > 0 (FID only when ≥ 2048 crops)."""
    r = reconstruct(model, crops, device)
    lp = nets(device, False)["lpips"]
    lpips = torch.cat([lp(a.to(device), b.to(device)).flatten().cpu()
                       for a, b in zip(crops.split(32), r.split(32))])
    rows = {"psnr": psnr_per_image(crops, r), "ssim": ssim_per_image(crops, r), "lpips": lpips}
    out: dict[str, Any] = {k: float(v.mean()) for k, v in rows.items()}
    out["per_crop"] = {k: v.double().numpy().round(5).tolist() for k, v in rows.items()}
    if kid_crops:
        real = real_features if real_features is not None else inception_features(
            crops[:kid_crops], device)
        fake = inception_features(r[:kid_crops], device)
        out["kid_x1e3"] = 1e3 * kid(real, fake)[0]
    return out


def run_one(module_name: str, arm: str, seed_index: int, scale: design.Scale, out: str,
            study_seed: int, data: str, kodak: str, threads: int) -> dict[str, Any]:
    """Train one (arm, seed) run (its parents first) and test it at every budget;
    cached in ``OUT/ARM/sI/result.json``. Runs in a worker process."""
    torch.set_num_threads(threads)
    mod = importlib.import_module(f"latentae.studies.{module_name}")
    folder = Path(out) / arm / f"s{seed_index}"
    cached = folder / "result.json"
    with run_lock(folder):  # a worker that needs this run as a parent waits for it
        if cached.is_file():
            return json.loads(cached.read_text())
        for before in getattr(mod, "AFTER", {}).get(arm, ()):  # runs whose logs it reads
            run_one(module_name, before, seed_index, scale, out, study_seed, data, kodak,
                    threads)
        parent = getattr(mod, "PARENTS", {}).get(arm)
        init_from = None
        if parent:
            pres = run_one(module_name, parent, seed_index, scale, out, study_seed, data,
                           kodak, threads)
            init_from = Path(pres["final_model"])
        res = train_and_test(mod, arm, seed_index, scale, Path(out), study_seed, Path(data),
                             Path(kodak), init_from)
        atomic_write_text(cached, json.dumps(res))
        return res


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` (``flock``, exclusive) while one process trains the run: two
    workers may reach the same parent run (``PARENTS``: p2-2 for p3 while another worker
    trains it); the second waits and then finds it cached. Locks are taken child before
    parent, never the other way, so they cannot deadlock; the OS drops them if a worker
    dies."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def train_and_test(mod: ModuleType, arm: str, seed_index: int, scale: design.Scale,
                   out: Path, study_seed: int, data: Path, kodak: Path,
                   init_from: Path | None) -> dict[str, Any]:
    seed = design.paired_seed(study_seed, seed_index)
    folder, cache = out / arm / f"s{seed_index}", out / "data"
    torch.manual_seed(seed)  # the same initial weights for every arm of this seed index
    model, recipe = mod.build(arm, design.for_arm(scale, arm), init_from)
    init = folder / "init"
    if model is not None:
        model.save_pretrained(str(init))
    else:
        init = init_from
    res = scale.resolution
    val = design.crop_set("val", data, scale.val_crops, res, cache)
    images = design.train_folder(data, cache, design.one_resolution(recipe))
    rec = design.train_arm(folder / "run", init, recipe, images,
                           seed, scale, val_psnr(val, scale.device),
                           getattr(mod, "PLATEAU", design.Plateau()))
    sets = test_sets(scale, data, kodak, cache)
    saved = sorted((int(k), v) for k, v in rec["budgets"].items())
    tested = {}
    for b in scale.budgets:
        step, path = max(((s, p) for s, p in saved if s <= b), default=saved[0])
        m = load(path)
        tested[str(b)] = {"step": step} | {
            where: measure(m, crops, scale.device, scale.kid_crops if where == "test" else 0)
            | {"n_images": n_images} for where, (crops, n_images) in sets.items()}
        if hasattr(mod, "extra_metrics"):  # e.g. other crop sizes, latent MMD
            tested[str(b)]["test"].update(mod.extra_metrics(m, scale, data, cache))
        if hasattr(mod, "generation_metrics") and b == scale.budgets[-1]:  # the final
            # model only: a diffusion model trained on its latents costs more than the AE
            tested[str(b)]["test"].update(mod.generation_metrics(
                Path(path), scale, data, cache, folder / "diffusion", seed))
    final = load(saved[-1][1])
    return {"arm": arm, "seed_index": seed_index, "seed": seed, "curve": rec["curve"],
            "plateau": rec.get("plateau", False), "train_s": rec["seconds"],
            "final_model": saved[-1][1], "budgets": tested,
            "params": sum(p.numel() for p in final.parameters()),
            "encoder_gflop": encoder_gflop(final, res)}


TEST_RS_PER_IMAGE = 8  # test_rs: the resized test images leave few distinct positions


def test_sets(scale: design.Scale, data: Path, kodak: Path, cache: Path
              ) -> dict[str, tuple[torch.Tensor, int]]:
    """``{set: (crops, images they come from)}``: ``test`` (native scale), ``test_rs``
    (the test images at the training scale: issue 27 defect 2) and ``kodak``."""
    res, n_test = scale.resolution, len(design.crop_files("test", data))
    n_rs = min(scale.test_crops, TEST_RS_PER_IMAGE * n_test)
    return {"test": (design.crop_set("test", data, scale.test_crops, res, cache), n_test),
            "test_rs": (design.crop_set("test_rs", data, n_rs, res, cache), n_test),
            "kodak": (design.crop_set("kodak", kodak, scale.kodak_crops, res, cache),
                      len(design.crop_files("kodak", kodak)))}


def encoder_gflop(model: torch.nn.Module, resolution: int) -> float:
    """GFLOPs of encoding one ``resolution``² image (FlopCounterMode: convs, matmuls)."""
    x = torch.zeros(1, 3, resolution, resolution)
    return count_flops(lambda: model.encode(x)) / 1e9


def run_all(mod: ModuleType, arms: tuple[str, ...], scale: design.Scale, out: Path,
            study_seed: int, data: Path, kodak: Path, jobs: int) -> list[dict]:
    """Every (arm, seed index), ``jobs`` at a time in single-thread worker processes. A
    run that fails does not stop the others (their results are cached); the failures are
    raised together at the end, naming each run."""
    tasks = [(mod.NAME, a, i, scale, str(out), study_seed, str(data),
              str(kodak), 1) for i in range(scale.seeds) for a in arms]
    if jobs <= 1:
        return [run_one(*t) for t in tasks]
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_one, *t) for t in tasks]
        wait(futures)
    failed = [f"{t[1]} s{t[2]}: {type(f.exception()).__name__}: {f.exception()}"
              for t, f in zip(tasks, futures) if f.exception() is not None]
    if failed:
        raise StateError(f"{len(failed)} of {len(tasks)} runs failed (the others are kept; "
                         "--resume runs only the missing ones): " + "; ".join(failed))
    return [f.result() for f in futures]


SETS = ("test", "test_rs", "kodak")


def contrasts(mod: ModuleType, results: list[dict], scale: design.Scale,
              arms: tuple[str, ...]) -> list[dict]:
    """Each declared contrast (both arms run) at each budget, on every test set, then
    Holm's adjustment over all of the study's rows (:func:`adjust`)."""
    by = {(r["arm"], r["seed_index"]): r for r in results}
    rows = []
    for c in mod.CONTRASTS:
        if c.arm not in arms or c.reference not in arms:
            continue
        for b in scale.budgets:
            for where in SETS:
                pick = [(by[(c.arm, i)]["budgets"][str(b)].get(where),
                         by[(c.reference, i)]["budgets"][str(b)].get(where))
                        for i in range(scale.seeds)]
                if pick[0][0] is None or c.metric not in pick[0][0]:
                    continue
                rows.append(contrast_row(c, b, where, pick))
    for d in getattr(mod, "DIFF_IN_DIFF", ()):
        if {d.first[0], d.first[1], d.second[0], d.second[1]} <= set(arms):
            rows += [did_row(d, b, by, scale.seeds) for b in scale.budgets]
    rows = adjust([r for r in rows if r is not None])
    return [no_verdict(r) for r in rows] if scale.dry_run else rows


DRY_RUN = "dry run: no verdict"


def no_verdict(row: dict) -> dict:
    """A dry run's row: one step, two crops measure nothing, so no verdict of any kind
    (sweep ST10: its table read "not reproduced (CI excludes the paper's effect)")."""
    return row | {k: DRY_RUN for k in ("verdict", "verdict_holm", "equivalence",
                                       "noninferiority") if k in row}


def did_row(d: DiffInDiff, budget: int, by: dict, seeds: int) -> dict | None:
    """The row of a :class:`DiffInDiff` at ``budget`` (None when a metric is missing)."""
    def diff(arm: str, ref: str, metric: str) -> list[float] | None:
        tested = [(by[(arm, i)]["budgets"][str(budget)]["test"],
                   by[(ref, i)]["budgets"][str(budget)]["test"]) for i in range(seeds)]
        if metric not in tested[0][0]:
            return None
        return [a[metric] - r[metric] for a, r in tested]
    first, second = diff(*d.first), diff(*d.second)
    if first is None or second is None:
        return None
    return {"contrast": d.name, "metric": f"{d.first[2]} − {d.second[2]}", "budget": budget,
            "set": "test", "source": d.source, "arm_mean": float(np.mean(first)),
            "ref_mean": float(np.mean(second)), **stats.compare(first, second, 0.0)}


def contrast_row(c: Contrast, budget: int, where: str, pick: list[tuple[dict, dict]]
                 ) -> dict:
    """One row: ``pick`` is ``[(arm's tested set, reference's tested set)]`` per seed."""
    a, r = ([p[k][c.metric] for p in pick] for k in (0, 1))
    items = images = None
    if c.metric in pick[0][0].get("per_crop", {}):
        items = c.sign * (np.array([p[0]["per_crop"][c.metric] for p in pick])
                          - np.array([p[1]["per_crop"][c.metric] for p in pick]))
        n_img = pick[0][0].get("n_images")
        images = np.arange(items.shape[1]) % n_img if n_img else None  # design.random_crops
    row = {"contrast": f"{c.arm} − {c.reference}", "metric": c.metric, "budget": budget,
           "set": where, "source": c.source, "arm_mean": float(np.mean(a)),
           "arm_sd": float(np.std(a, ddof=1)) if len(a) > 1 else None,
           "ref_mean": float(np.mean(r)),
           **stats.compare(a, r, c.paper_effect, c.sign, items, images)}
    if c.margin is not None and "ci95" in row:
        row["margin"] = c.margin * abs(row["ref_mean"])
        row["equivalence"] = stats.equivalence(row["ci95"], row["margin"])
    if c.noninferiority is not None and len(a) > 1:
        row |= stats.noninferiority(row["diffs"], c.noninferiority)
    return row


DIRECTIONAL = ("reproduced", "not reproduced (CI excludes the paper's direction)")


def adjust(rows: list[dict]) -> list[dict]:
    """Holm over the study's rows (one family: every metric, budget and set), and over
    its non-inferiority tests (a second family). ``verdict_holm``: the verdict, with a
    directional one kept only if its adjusted p < 0.05 — said beside it."""
    tested = [r for r in rows if "p" in r]
    for r, q in zip(tested, stats.holm([r["p"] for r in tested])):
        r["p_holm"], m = q, len(tested)
        keep = r["verdict"] not in DIRECTIONAL or q < 1 - stats.LEVEL
        r["verdict_holm"] = (f"{r['verdict']} (Holm p {q:.2g}, m={m})" if keep else
                             f"not significant after Holm (p {q:.2g}, m={m}; unadjusted: "
                             f"{r['verdict']})")
    ni = [r for r in rows if "ni_p" in r]
    for r, q in zip(ni, stats.holm([r["ni_p"] for r in ni])):
        r["ni_p_holm"] = q
        r["noninferiority"] += f", Holm p {q:.2g} (m={len(ni)})"
        if q >= 1 - stats.LEVEL and r["ni_p"] < 1 - stats.LEVEL:
            r["noninferiority"] = "not shown after Holm: " + r["noninferiority"]
    return rows


def study_record(mod: ModuleType, scale: design.Scale, results: list[dict],
                 rows: list[dict], started: float) -> dict[str, Any]:
    slim = [{k: v for k, v in r.items() if k != "budgets"} | {"budgets": {
        b: {"step": t["step"], **{w: {k: v for k, v in t[w].items() if k != "per_crop"}
                                   for w in SETS if w in t}}
        for b, t in r["budgets"].items()}} for r in results]
    return {"study": mod.NAME, "claim": mod.CLAIM, "scale": asdict(scale),
            "contrasts": rows, "runs": slim,
            "wall_seconds": round(time.perf_counter() - started, 1)}

"""The reproduction studies (``latentae.studies``): the statistics against closed forms
and synthetic data, the held-out rule, each study's ``--quick`` mode end to end, and the
GPU evidence script's ``--dry-run``."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

from latentae.cli import main
from latentae.errors import InputError
from latentae.studies import common, dcae_shortcuts, design, stats

ROOT = Path(__file__).resolve().parent.parent


def test_bootstrap_ci_covers_a_known_paired_difference():
    rng, delta, covered, reps = np.random.default_rng(0), 0.3, 0, 300
    for r in range(reps):
        seed_effect = rng.normal(0, 1, 20)  # shared by both arms: the pairing
        a = seed_effect + delta + rng.normal(0, 0.2, 20)
        b = seed_effect + rng.normal(0, 0.2, 20)
        lo, hi = stats.bootstrap_ci(a - b, n_boot=1000, seed=r)
        covered += lo <= delta <= hi
    assert covered / reps >= 0.9


def test_mde_matches_the_t_quantile_formula():
    sd, n = 0.7, 5
    direct = (sps.t.ppf(0.975, n - 1) + sps.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    assert stats.mde(sd, n) == pytest.approx(direct, rel=1e-12)
    assert stats.mde(1.0, 3) == pytest.approx(3.10, abs=0.01)  # the docstring's number


def test_verdict_can_come_out_every_way():
    assert stats.verdict((0.1, 0.5), 0.3, 0.2) == "reproduced"
    assert stats.verdict((-0.5, -0.1), 0.3, 0.2).startswith("not reproduced (CI excludes "
                                                             "the paper's direction")
    assert stats.verdict((-0.5, 0.6), 0.3, 1.0).startswith("untestable at this scale (MDE 1")
    assert stats.verdict((-0.1, 0.1), 0.3, 0.2).startswith("not reproduced (CI excludes "
                                                            "the paper's effect")
    assert stats.verdict((-0.1, 0.4), 0.3, 0.2) == "inconclusive"


def test_compare_pairs_seeds_and_signs_lower_is_better():
    res = stats.compare([0.10, 0.12, 0.11], [0.20, 0.21, 0.22], 0.05, sign=-1.0)
    assert res["mean"] == pytest.approx(0.1) and res["verdict"] == "reproduced"
    assert res["ci95"][0] <= res["ci95_boot"][0] and res["ci95"][0] <= res["ci95_t"][0]


def test_held_out_rule_is_fifty_lowest_name_hashes(shared_data):
    files = sorted((shared_data / "bsds400-train").glob("*.jpg"))
    train, held = design.split_bsds(files)
    again = design.split_bsds(list(reversed(files)))
    assert len(held) == 50 and len(train) == 350 and (train, held) == again
    worst = max(hashlib.sha256(f.name.encode()).hexdigest() for f in held)
    assert all(hashlib.sha256(f.name.encode()).hexdigest() > worst for f in train)


def test_random_crops_are_seeded_and_native_scale(shared_data):
    files = design.split_bsds(sorted((shared_data / "bsds400-train").glob("*.jpg")))[1]
    a, b = (design.random_crops(files, 6, 48, seed=5) for _ in range(2))
    assert a.shape == (6, 3, 48, 48) and torch.equal(a, b)
    assert not torch.equal(a, design.random_crops(files, 6, 48, seed=6))


def test_workers_starting_together_share_one_train_folder_and_crop_set(shared_data, tmp_path):
    # study workers start at once and each asks for the link folder and the crop cache:
    # the first version raced (one worker died of FileExistsError on a link)
    from concurrent.futures import ThreadPoolExecutor
    data = shared_data / "bsds400-train"
    with ThreadPoolExecutor(6) as pool:
        folders = list(pool.map(lambda _: design.train_folder(data, tmp_path), range(6)))
        crops = list(pool.map(lambda _: design.crop_set("val", data, 3, 32, tmp_path),
                              range(6)))
    assert len(set(folders)) == 1 and len(list(folders[0].iterdir())) == 350
    assert all(torch.equal(c, crops[0]) for c in crops)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bsds-train", "crops-val-3-32.pt"]


@pytest.mark.slow
def test_a_checkpoint_ahead_of_the_curve_is_not_trained_past(shared_data, fetched, tmp_path,
                                                             monkeypatch):
    # stopped after a chunk's training but before its evaluation was recorded (SIGTERM
    # mid-chunk is the same: the checkpoint holds more steps than the curve): resuming
    # trains only to the next evaluation step (it used to add a whole chunk)
    scale = design.get_scale("quick", budgets=(8,), eval_every=2)
    torch.manual_seed(0)
    model, recipe = dcae_shortcuts.build("dcae-f32", scale)
    model.save_pretrained(str(tmp_path / "init"))
    data, run = design.train_folder(shared_data / "bsds400-train", tmp_path), tmp_path / "run"
    calls = []

    def stop_at_second(m):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return 1.0
    with pytest.raises(KeyboardInterrupt):
        design.train_arm(run, tmp_path / "init", recipe, data, 0, scale, stop_at_second)
    assert design.trained_steps(run, recipe)[0] == 4  # the curve holds only step 2
    chunks, real = [], design.train
    monkeypatch.setattr(design, "train", lambda cfg, r: chunks.append(cfg.max_steps) or
                        real(cfg, r))
    again = design.train_arm(run, tmp_path / "init", recipe, data, 0, scale, lambda m: 1.0)
    assert [c["step"] for c in again["curve"]] == [2, 4, 6, 8] and chunks == [2, 2]
    assert design.trained_steps(run, recipe)[0] == 8


def test_paired_seed_ignores_the_arm_and_plateau_rule_fires():
    assert design.paired_seed(0, 1) == design.paired_seed(0, 1) != design.paired_seed(0, 2)
    rule = design.Plateau(rel_tol=0.01, window=2)
    assert not rule.reached([10, 12, 14, 16])
    assert rule.reached([10, 14, 14.01, 14.02])


STUDIES = ["dcae_shortcuts", "litevae_vs_sdvae", "progressive", "recipe_ablations",
           "scale_dependency", "latent_mmd", "highres_adaptation", "dcae_table1",
           "litevae_table7", "diffusability_regularisers"]


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_study_quick_mode_writes_contrasts_with_cis(name, shared_data, fetched, tmp_path,
                                                   monkeypatch):
    monkeypatch.setattr(common, "TRAIN_DATA", shared_data / "bsds400-train")
    monkeypatch.setattr(common, "EVAL_DATA", shared_data / "kodak24")
    mod = __import__(f"latentae.studies.{name}", fromlist=["run"])
    record = common.run_study(mod, ["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["contrasts"] and all("verdict" in r and len(r["ci95"]) == 2
                                      for r in saved["contrasts"])
    assert len(record["runs"]) == 2 * len(mod.QUICK_ARMS)
    assert (tmp_path / "table.md").read_text().count("|") > 10
    assert "±" in (tmp_path / "table.md").read_text()  # per-arm mean ± sd over seeds
    figure = {"scale_dependency": "psnr_vs_resolution.png", "latent_mmd": "mmd_vs_sigma.png",
              "dcae_table1": "generation.png", "litevae_table7": "generation.png",
              "diffusability_regularisers": "generation.png"}.get(name)
    assert figure is None or (tmp_path / figure).stat().st_size > 1000
    # --resume reuses every finished run: the same numbers, no training
    again = common.run_study(mod, ["--quick", "--out", str(tmp_path), "--resume"])
    assert again["contrasts"] == record["contrasts"]
    if hasattr(mod, "generation_metrics"):
        check_diffusion_study(mod, record, tmp_path)


def check_diffusion_study(mod, record: dict, out: Path) -> None:
    """Every arm's diffusion model sees the same tokens; a diffusion run that lost its
    result continues (checkpoint, samples deterministic per index) to the same KID."""
    tokens = {r["budgets"]["1"]["test"]["diffusion"]["tokens"] for r in record["runs"]}
    assert len(tokens) == 1 and (out / "generation.png").stat().st_size > 1000
    run = out / mod.QUICK_ARMS[-1] / "s1"
    (run / "result.json").unlink()
    (run / "diffusion" / "result.json").unlink()
    again = common.run_study(mod, ["--quick", "--out", str(out), "--resume"])
    assert again["contrasts"] == record["contrasts"]


@pytest.mark.slow
def test_runs_from_reuses_another_studys_training(shared_data, fetched, tmp_path,
                                                  monkeypatch):
    from latentae.studies import litevae_vs_sdvae, scale_dependency
    monkeypatch.setattr(common, "TRAIN_DATA", shared_data / "bsds400-train")
    monkeypatch.setattr(common, "EVAL_DATA", shared_data / "kodak24")
    arms = ["--quick", "--arms", "lite-tiny,sd-enc"]
    first = common.run_study(litevae_vs_sdvae, arms + ["--out", str(tmp_path / "a")])
    with pytest.raises(InputError, match="lr_mult"):  # trained differently: refused
        common.run_study(scale_dependency, arms + ["--out", str(tmp_path / "x"),
                                                   "--runs-from", str(tmp_path / "a"),
                                                   "--lr-mult", "2"])
    reused = common.run_study(scale_dependency, arms + ["--out", str(tmp_path / "b"),
                                                        "--runs-from", str(tmp_path / "a")])
    assert (tmp_path / "b" / "lite-tiny" / "s1" / "run").is_symlink()
    assert [r["curve"] for r in reused["runs"]] == [r["curve"] for r in first["runs"]]
    assert any(r["metric"] == "psnr_drop_2R" for r in reused["contrasts"])


def test_arm_lr_multipliers_override_the_shared_one(shared_data, tmp_path, monkeypatch):
    from latentae.studies import litevae_vs_sdvae
    args = common.parser("x", "").parse_args(["--lr-mult", "16", "--arm-lr-mult", "sd-enc=4"])
    scale = common.scale_from(args)
    lrs = {a: litevae_vs_sdvae.build(a, design.for_arm(scale, a))[1].phases[0].lr
           for a in ("sd-enc", "lite-tiny")}
    assert lrs == {"sd-enc": pytest.approx(4e-4), "lite-tiny": pytest.approx(1.6e-3)}
    monkeypatch.setattr(common, "TRAIN_DATA", shared_data / "bsds400-train")
    monkeypatch.setattr(common, "EVAL_DATA", shared_data / "kodak24")
    for bad in ("sd-enc:4", "nope=2"):
        with pytest.raises(InputError, match="arm-lr-mult|unknown arm"):
            common.run_study(litevae_vs_sdvae, ["--quick", "--arm-lr-mult", bad, "--out",
                                                str(tmp_path)])


def test_arms_that_need_lpips_are_left_to_the_gpu_scale_and_refused_without_it():
    from latentae.studies import highres_adaptation as hr
    from latentae.studies import recipe_ablations as ra
    for mod, gpu_only in ((hr, {"p3"}), (ra, {a for a in ra.ARMS if a.startswith("gan-")})):
        cpu = common.chosen_arms(mod, common.parser("x", "").parse_args([]),
                                 mod.SCALES["cpu"])
        gpu = common.chosen_arms(mod, common.parser("x", "").parse_args(["--scale", "gpu"]),
                                 mod.SCALES["gpu"])
        assert set(gpu) == set(mod.ARMS) and set(gpu) - set(cpu) == gpu_only
        arm = sorted(gpu_only)[0]
        with pytest.raises(InputError, match="LPIPS"):
            mod.build(arm, mod.SCALES["cpu"], Path("parent/s0/run/model"))
        assert mod.build(arm, mod.SCALES["gpu"], Path("parent/s0/run/model"))[0] is None
    # the cpu scales: L1 only (PSNR-judged), each architecture at its pilot lr
    assert ra.SCALES["cpu"].lr_mult == 16.0 and hr.SCALES["cpu"].lr_mult == 8.0
    phase = hr.build("high", hr.SCALES["cpu"])[1].phases[0]
    assert phase.losses.perceptual == 0.0 and phase.resolution == 128


def test_failed_runs_are_reported_together_naming_each(tmp_path):
    from latentae.errors import StateError
    from latentae.studies import runner
    scale = design.get_scale("quick")
    with pytest.raises(StateError, match=r"2 of 2 runs failed.*dcae-f32 s0.*dcae-f32 s1"):
        runner.run_all(dcae_shortcuts, ("dcae-f32",), scale, tmp_path, 0,
                       tmp_path / "no-data", tmp_path / "no-kodak", jobs=2)


def test_a_run_is_trained_by_one_worker_while_another_waits_for_it(tmp_path):
    # two workers can need the same parent run (highres-adaptation: p3 on p2-2 while
    # another worker trains p2-2); the second must wait, not train the folder too
    import threading

    from latentae.studies.runner import run_lock
    log, inside, release = [], threading.Event(), threading.Event()

    def first():
        with run_lock(tmp_path / "p2-2" / "s0"):
            inside.set()
            release.wait(10)
            log.append("first done")

    def second():
        inside.wait(10)
        with run_lock(tmp_path / "p2-2" / "s0"):
            log.append("second in")

    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    inside.wait(10)
    threads[1].join(0.5)  # without the lock, "second in" is logged here
    assert log == []
    release.set()
    for t in threads:
        t.join(10)
    assert log == ["first done", "second in"]


def test_the_constant_gan_arm_runs_after_the_adaptive_one_whose_log_it_reads(tmp_path,
                                                                         monkeypatch):
    # with two workers, gan-unet-const could start while gan-unet-adaptive still writes
    # the log its constant weight is the median of (a partial log: another weight)
    from latentae.studies import runner
    order = []
    monkeypatch.setattr(runner, "train_and_test", lambda mod, arm, *a: order.append(arm)
                        or {"final_model": str(tmp_path / arm)})
    runner.run_one("recipe_ablations", "gan-unet-const", 0, design.get_scale("quick"),
                   str(tmp_path), 0, "data", "kodak", 1)
    assert order == ["base", "gan-unet-adaptive", "gan-unet-const"]


def test_study_refuses_an_old_folder_without_resume(shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "TRAIN_DATA", shared_data / "bsds400-train")
    monkeypatch.setattr(common, "EVAL_DATA", shared_data / "kodak24")
    (tmp_path / "dcae-f32").mkdir()
    with pytest.raises(InputError, match="--resume"):
        common.run_study(dcae_shortcuts, ["--quick", "--out", str(tmp_path)])


def test_a_resume_with_other_settings_is_refused_but_more_seeds_are_not(shared_data, tmp_path,
                                                                       monkeypatch):
    # finished runs are reused as they are: a resume that changed the lr (or budgets,
    # crops...) would have labelled the old runs with the new settings
    monkeypatch.setattr(common, "TRAIN_DATA", shared_data / "bsds400-train")
    monkeypatch.setattr(common, "EVAL_DATA", shared_data / "kodak24")
    common.keep_scale(tmp_path, design.get_scale("quick"))
    (tmp_path / "dcae-f32").mkdir()
    for extra, field in ((["--lr-mult", "2"], "lr_mult"), (["--budgets", "1,2"], "budgets")):
        with pytest.raises(InputError, match=field):
            common.run_study(dcae_shortcuts, ["--quick", "--out", str(tmp_path), "--resume",
                                              *extra])
    common.keep_scale(tmp_path, design.get_scale("quick", seeds=5))  # more seeds: allowed


def test_study_list_shows_the_diffusion_studies_runnable(capsys):
    assert main(["study", "list"]) == 0
    out = capsys.readouterr().out
    assert "latentae.studies.dcae_table1" in out and "latentae.studies.litevae_table7" in out
    assert "not runnable" not in out


def test_equivalence_verdict_can_come_out_every_way():
    assert stats.equivalence((-0.1, 0.2), 0.3).startswith("equivalent")
    assert stats.equivalence((0.4, 0.9), 0.3).startswith("not equivalent")
    assert stats.equivalence((-0.9, -0.35), 0.3).startswith("not equivalent")
    assert stats.equivalence((-0.1, 0.5), 0.3).startswith("inconclusive")
    assert stats.equivalence((-0.5, 0.5), 0.3).startswith("inconclusive")  # wider than ±m
    with pytest.raises(InputError, match="margin"):
        stats.equivalence((-0.1, 0.1), 0.0)


@pytest.mark.slow
def test_gpu_evidence_dry_run_builds_every_run(shared_data, fetched, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "LATENTAE_STUDY_DATA":
           str(shared_data)}
    env["PYTHON"] = sys.executable
    env["OMP_NUM_THREADS"] = "1"  # its runs go 3-4 at a time: one thread each, no oversubscription
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_evidence.sh"), "--dry-run",
                           str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for study in ("litevae_vs_sdvae", "dcae_shortcuts"):
        record = json.loads((tmp_path / study / "results.json").read_text())
        assert record["scale"]["name"] == "gpu" and record["contrasts"]

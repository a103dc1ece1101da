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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bsds-train", "crops-val-3-32-split2.pt"]


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


def gpu_evidence():
    """scripts/gpu_evidence.py as a module (its limit checks, plan and arguments)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_evidence",
                                                  ROOT / "scripts" / "gpu_evidence.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rehearsal_checks_catch_each_limit_of_the_gpu_machine(tmp_path):
    g = gpu_evidence()
    out = tmp_path / "out"
    out.mkdir()
    for name in g.OUT_FILES:
        (out / name).write_text("{}")
    assert g.check_out(out) == []
    (out / "a" / "b").mkdir(parents=True)
    (out / "a" / "b" / "ok.txt").write_text("x")  # two folders down: comes back
    assert g.check_out(out) == []
    (out / "a" / "b" / "c").mkdir()
    (out / "a" / "b" / "c" / "deep.txt").write_text("x")
    with open(out / "big.bin", "wb") as f:
        f.truncate(17 << 20)
    (out / "bad name.txt").write_text("x")
    (out / "extra.txt").write_text("x")
    os.symlink(out / "big.bin", out / "link")
    (out / "results.json").write_text("{not json")
    problems = "\n".join(g.check_out(out))
    for expected in ("more than 2 folders down", "> 16 MiB", "a name with", "not a plain",
                     "files > 8", "not JSON"):
        assert expected in problems, (expected, problems)
    (out / "tables.md").unlink()
    assert "tables.md: missing" in g.check_out(out)


def test_rehearsal_counts_the_travelling_tree_with_the_carried_folder(tmp_path):
    g = gpu_evidence()
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/.gpu/\nbuild/\n")
    (repo / "a.txt").write_bytes(b"x" * 1000)                   # untracked, not ignored
    (repo / "build").mkdir()
    (repo / "build" / "big").write_bytes(b"x" * 5000)           # ignored, not carried
    (repo / ".gpu").mkdir()
    (repo / ".gpu" / "data.bin").write_bytes(b"x" * 3000)       # ignored, carried
    assert g.travelling_bytes(repo) == 1000 + 3000 + len("/.gpu/\nbuild/\n")
    with open(repo / ".gpu" / "huge.bin", "wb") as f:
        f.truncate(65 << 20)
    (tmp_path / "out").mkdir()
    assert any("travelling tree" in p for p in g.check_limits(repo, tmp_path / "out"))


def test_gpu_plan_fits_twenty_seeds_or_as_many_as_fit():
    g = gpu_evidence()
    # 60 runs, 15 at a time: 4 waves of (cap · 0.05 s + 10 s)
    assert g.plan(0.05, 10.0, 15, 300)["cap"] == 1200 and g.plan(0.05, 10, 15, 300)[
        "seeds"] == 20
    short = g.plan(0.05, 10.0, 15, 60)  # 200 steps: 20 s a wave -> 3 waves: 15 seeds
    assert short == {"cap": 200, "seeds": 15, "estimate_s": 60}
    assert g.plan(1.0, 10.0, 15, 1)["seeds"] == g.MIN_SEEDS
    assert g.reaggregate_args(["--seeds", "20", "--jobs", "15", "--out", "x"], 7) == [
        "--out", "x", "--seeds", "7", "--jobs", "1"]


def test_complete_seeds_stop_at_the_first_seed_missing_an_arm(tmp_path):
    g = gpu_evidence()
    for arm, seeds in (("a", (0, 1, 2, 3)), ("b", (0, 1, 3))):
        for i in seeds:
            (tmp_path / arm / f"s{i}").mkdir(parents=True)
            (tmp_path / arm / f"s{i}" / "result.json").write_text("{}")
    assert g.complete_seeds(tmp_path, ["a", "b"]) == 2


def test_the_gpu_path_imports_neither_diffusers_nor_webdataset(tmp_path):
    for name in ("diffusers", "webdataset"):  # as on the GPU machine: not installed
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('no {name}')\n")
    code = ("import sys, runpy; sys.argv = ['x', '--help'];"
            "import latentae.studies.litevae_vs_sdvae, latentae.studies.scale_dependency,"
            " latentae.studies.latent_mmd, latentae.studies.runner;"
            f"runpy.run_path({str(ROOT / 'scripts' / 'gpu_evidence.py')!r}, run_name='__main__')")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{tmp_path}"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--rehearse" in proc.stdout, proc.stderr[-2000:]


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.04]
    assert np.allclose(stats.holm(p), multipletests(p, method="holm")[1])
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # by hand


def test_holm_is_said_beside_every_verdict_and_can_undo_one():
    rows = [{"verdict": "reproduced", "p": 0.03}, {"verdict": "reproduced", "p": 0.001},
            {"verdict": "inconclusive", "p": 0.5}]
    from latentae.studies.runner import adjust
    out = adjust(rows)
    assert out[1]["verdict_holm"].startswith("reproduced (Holm p 0.003, m=3)")
    assert out[0]["verdict_holm"].startswith("not significant after Holm (p 0.06")
    assert out[2]["verdict_holm"].startswith("inconclusive (Holm p 0.5")


def test_image_bootstrap_resamples_images_not_crops():
    rng = np.random.default_rng(0)
    per_image = rng.normal(0.2, 1.0, size=10) + rng.normal(0, 0.1, size=(5, 10))  # (5, 10)
    crops = np.repeat(per_image, 8, axis=1)                      # 8 identical crops each
    images = np.repeat(np.arange(10), 8)
    ci = stats.image_ci(crops, images)
    # the same as bootstrapping the images themselves: duplicated crops add nothing
    assert ci == pytest.approx(stats.image_ci(per_image, np.arange(10)))
    # whereas crops resampled as if independent give a narrower (wrong) interval
    means = [crops[rng.integers(0, 5, 5)][:, rng.integers(0, 80, 80)].mean()
             for _ in range(2000)]
    naive = np.quantile(means, [0.025, 0.975])
    assert ci[1] - ci[0] > 2 * (naive[1] - naive[0])
    # order of crops does not matter, only which image each belongs to
    perm = rng.permutation(80)
    assert stats.image_ci(crops[:, perm], images[perm]) == pytest.approx(ci, abs=0.05)


def test_noninferiority_and_tost_against_a_hand_computed_case():
    d = [0.1, 0.3, 0.2, 0.4]  # mean 0.25, sd 0.1291, se 0.06455, df 3
    se = math.sqrt(sum((x - 0.25) ** 2 for x in d) / 3) / 2
    t_lower, t_upper = (0.25 + 0.2) / se, (0.25 - 0.2) / se        # 6.971, 0.775
    res = stats.noninferiority(d, 0.2)
    assert res["ni_p"] == pytest.approx(sps.t.sf(t_lower, 3)) and res["ni_p"] < 0.01
    assert res["noninferiority"].startswith("non-inferior")
    assert stats.tost(d, 0.2) == pytest.approx(sps.t.cdf(t_upper, 3))  # ≈ 0.75: not equal
    assert stats.noninferiority([-0.5, -0.3, -0.4], 0.2)["noninferiority"].startswith(
        "non-inferiority not shown")


def test_held_out_split_selects_on_images_the_test_never_sees(shared_data):
    data = shared_data / "bsds400-train"
    train, held = design.split_bsds(design.list_images(data))
    selection, test = design.split_held_out(held)
    assert len(selection) == 25 and len(test) == 25
    assert not set(selection) & set(test) and set(selection) | set(test) == set(held)
    assert not set(train) & set(held)
    assert design.crop_files("val", data) == selection
    assert design.crop_files("test", data) == design.crop_files("test_rs", data) == test


def test_a_resized_train_folder_streams_the_same_pixels(shared_data, tmp_path):
    from latentae.engine.data import TrainImages, list_sources
    data = shared_data / "bsds400-train"
    links = design.train_folder(data, tmp_path)
    resized = design.train_folder(data, tmp_path, 48)
    assert [p.stem for p in sorted(resized.iterdir())] == [p.stem for p in
                                                            sorted(links.iterdir())]
    a, b = (TrainImages(list_sources(f), 48, seed=3) for f in (links, resized))
    for i in (0, 1, 351):
        assert torch.equal(a[i][0], b[i][0])


def test_curves_average_complete_seed_sets_only():
    runs = [{"arm": "a", "curve": [{"step": 50, "val": 10.0}, {"step": 100, "val": 12.0},
                                   {"step": 150, "val": 13.0}]},
            {"arm": "a", "curve": [{"step": 50, "val": 12.0}, {"step": 100, "val": 14.0}]},
            {"arm": "b", "curve": [{"step": 50, "val": 9.0}]}]
    assert common.curve_means(runs) == {"a": ([50, 100], [11.0, 13.0]), "b": ([50], [9.0])}


def test_highres_controls_give_the_difference_in_differences(shared_data, fetched, tmp_path,
                                                              monkeypatch):
    from latentae.studies import highres_adaptation as hr
    monkeypatch.setattr(common, "TRAIN_DATA", shared_data / "bsds400-train")
    monkeypatch.setattr(common, "EVAL_DATA", shared_data / "kodak24")
    torch.manual_seed(0)
    assert hr.f8_model().spatial_compression_ratio == 8
    record = common.run_study(hr, ["--quick", "--arms", "low,high,high-px,low-f8,high-f8",
                                   "--out", str(tmp_path)])
    rows = {r["contrast"]: r for r in record["contrasts"]}
    did = rows["penalty f32 − penalty f8"]
    first = np.subtract(*[[r["budgets"]["1"]["test"]["psnr_2R"] for r in record["runs"]
                           if r["arm"] == a] for a in ("high", "low")])
    second = np.subtract(*[[r["budgets"]["1"]["test"]["psnr_2R"] for r in record["runs"]
                            if r["arm"] == a] for a in ("high-f8", "low-f8")])
    assert did["diffs"] == pytest.approx((first - second).round(5).tolist(), abs=1e-4)
    assert "Holm" in did["verdict_holm"] and "(high-px − low) at 2R − at R" in rows
    cpu = hr.SCALES["cpu"]
    (low,), (px,) = (hr.build(a, cpu)[1].phases for a in ("low", "high-px"))
    assert px.resolution == 2 * low.resolution and px.batch_size * 4 == low.batch_size

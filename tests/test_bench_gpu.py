"""scripts/gpu_bench.sh, the GPU tables' script, rehearsed on the CPU at tiny sizes so it
cannot rot before the GPU runs it: every table finishes, both files are written, a budget
too short for a table skips it (and says so)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from latentae.bench import paper_tables

ROOT = Path(__file__).resolve().parents[1]


def _script(budget: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bench.sh"), budget,
                           "--rehearse"], env=env, capture_output=True, text=True,
                          timeout=600)


def test_rehearsal_runs_every_table_into_two_files(tmp_path):
    done = _script("400", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_bench.json", "gpu_bench.md"]
    state = json.loads((tmp_path / "gpu_bench.json").read_text())
    names = [i["name"] for i in state["items"]]
    assert names == [n for n, _, _ in paper_tables.items(paper_tables.REHEARSAL)]
    assert {i["name"]: i["status"] for i in state["items"]} == dict.fromkeys(names, "done")
    lite = state["items"][0]["report"]["results"]
    assert {"sdvae-tiny", "litevae-tiny@bfloat16"} <= set(lite)
    assert lite["litevae-tiny"]["encode"]["images_per_s"] > 0
    phase2 = next(i["report"] for i in state["items"] if i["name"] == "dcae_phase2_memory")
    assert phase2["phase2_params_m"] < phase2["full_params_m"]
    compiled = next(i["report"] for i in state["items"] if i["name"].endswith("compiled"))
    assert compiled["infer"]["settings"]["compile"] == "eager"
    md = (tmp_path / "gpu_bench.md").read_text()
    assert "| LiteVAE t3 | litevae-tiny / sdvae-tiny encoder, bfloat16: images/s |" in md
    assert "19.1×" in md and "0.44×" in md  # the papers' ratios beside ours


def test_a_short_budget_skips_tables_and_still_writes_both_files(tmp_path):
    plan = dataclasses.replace(paper_tables.REHEARSAL, seconds_per_item=1e6)
    state = paper_tables.run(plan, tmp_path, budget_s=60, command="test",
                             progress=lambda m: None)
    assert {i["status"] for i in state["items"]} == {"skipped"}
    assert "needs" in state["items"][0]["note"]
    assert "litevae_table3 (skipped)" in (tmp_path / "gpu_bench.md").read_text()
    assert _script("5", tmp_path / "none").stdout.startswith("gpu_bench: a budget of 5 s")

"""``scripts/official_vs_latentae.py`` (issue 29's diffusion rows: latentae's DiT and U-ViT
against the official code). The official code is not in this repository: the rows run
only when checkouts are given through LATENTAE_DIT_REPO (facebookresearch/DiT),
LATENTAE_EFFICIENTVIT_REPO (mit-han-lab/efficientvit), LATENTAE_TIMM (an unpacked timm
wheel) and, where einops is not installed, LATENTAE_EINOPS; the rest runs everywhere."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "official_vs_latentae.py"
ENV = {"--dit-repo": "LATENTAE_DIT_REPO", "--efficientvit-repo": "LATENTAE_EFFICIENTVIT_REPO",
       "--timm": "LATENTAE_TIMM", "--einops": "LATENTAE_EINOPS"}
# what loading the official code adds to the process (removed again after each test)
OFFICIAL_MODULES = ("models", "diffusion", "efficientvit", "timm", "torchvision", "einops")


def _script():
    spec = importlib.util.spec_from_file_location("official_vs_latentae", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def isolated_imports():
    """Restore sys.path, the import finders (the torchvision stub) and drop the official
    modules, so that later tests see the process as it was."""
    path, finders, before = list(sys.path), list(sys.meta_path), set(sys.modules)
    yield
    sys.path[:], sys.meta_path[:] = path, finders
    for name in set(sys.modules) - before:
        if name.split(".")[0] in OFFICIAL_MODULES:
            del sys.modules[name]


def _sources(flags: tuple[str, ...]) -> list[str]:
    missing = [ENV[f] for f in flags if not os.environ.get(ENV[f])]
    if missing:
        pytest.skip(f"the official code is not given: set {', '.join(missing)} (see "
                    "scripts/official_vs_latentae.py)")
    return [a for f in flags for a in (f, os.environ[ENV[f]])]


def _einops() -> tuple[str, ...]:
    return () if importlib.util.find_spec("einops") else ("--einops",)


@pytest.mark.parametrize("rows, flags", [
    ("dit-forward,dit-train,dit-sample", ("--dit-repo", "--timm")),
    ("uvit-forward,uvit-train", ("--efficientvit-repo", "--timm"))])
def test_rows_at_tiny_size_match_the_official_code(rows, flags, tmp_path, isolated_imports):
    flags = flags + (_einops() if rows.startswith("uvit") else ())
    args = _sources(flags)
    out = tmp_path / "official.json"
    mod = _script()
    assert mod.main(["--tiny", "--rows", rows, "--repeats", "1", "--threads", "1",
                     "--out", str(out), *args]) == 0
    result = json.loads(out.read_text())
    assert [r["row"] for r in result["rows"]] == rows.split(",")
    for r in result["rows"]:
        assert r["max_abs_diff"] <= 1e-4, r
        assert all(len(v) == 1 for v in r["seconds"].values())
    assert "official / latentae" in out.with_suffix(".md").read_text()


def test_a_missing_checkout_is_a_one_line_error(tmp_path, isolated_imports):
    mod = _script()
    with pytest.raises(SystemExit) as e:
        mod.main(["--tiny", "--rows", "dit-forward"])
    text = str(e.value)
    assert "\n" not in text and "--dit-repo" in text
    assert "git clone https://github.com/facebookresearch/DiT" in text
    with pytest.raises(SystemExit) as e:  # a folder that is not the checkout
        mod.main(["--tiny", "--rows", "uvit-train", "--efficientvit-repo", str(tmp_path)])
    assert f"{tmp_path} has no efficientvit/diffusioncore/models/uvit.py" in str(e.value)
    with pytest.raises(SystemExit):
        mod.main(["--rows", "dit-everything"])  # unknown row: argparse's error


def test_ratios_and_the_table():
    mod = _script()
    times = {"latentae": [1.0, 2.0, 3.0], "official": [3.0, 4.0, 1.5]}
    row = mod.summarize("dit-forward", "DiT forward", 8, times, 2.5e-7)
    assert row["ratio_median"] == pytest.approx(3.0 / 2.0)  # official / latentae
    assert row["ratio_best"] == pytest.approx(1.5 / 1.0)
    machine = {"cpu": "cpu", "cpu_count": 2, "torch": "2", "threads": 1, "date": "today",
               "load_average_1m": 0.5}
    text = mod.markdown([row], machine, ["--repeats", "3"])
    assert "| dit-forward | DiT forward | 8 | 2.000 | 3.000 | **1.50×** (1.50×) | 2.5e-07 |" in text

"""``scripts/library_vs_diffusers.py`` (issue 29's library-path table) runs end to end on
tiny models, times all three columns interleaved and finds the outputs equal."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "library_vs_diffusers.py"


def test_the_library_path_table_runs_and_compares_outputs(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("library_vs_diffusers", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "ROWS", {"kl-decode": ("sdvae-tiny", "decode", 32, 1),
                                      "dc-encode": ("dcae-tiny-f32", "encode", 64, 1)})
    out = tmp_path / "lib.json"
    assert mod.main(["--rows", "kl-decode,dc-encode", "--repeats", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["row"] for r in rows] == ["kl-decode", "dc-encode"]
    for r in rows:
        assert r["max_abs_diff"] < 1e-4
        assert all(len(v) == 2 for v in r["seconds"].values())
    assert "latentae / diffusers" in out.with_suffix(".md").read_text()

"""``pip install .`` (not editable) gives a working latentae: the package finds nothing
by its position in a source checkout (the studies are the ``latentae.studies``
subpackage, the bench child process imports the installed package).

The install goes into a fresh virtual environment that sees this interpreter's
site-packages (torch, setuptools, pip) through a ``.pth`` file, with ``--no-deps
--no-build-isolation``, so nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_non_editable_install_runs_models_and_study_list(tmp_path):
    src = tmp_path / "src-copy"  # pip builds in the tree: keep the checkout clean
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns(
        "__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv),
                                                        "platbase": str(venv)}))
    (purelib / "parent-site.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    python, bindir = venv / "bin" / "python", venv / "bin"
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
          "--disable-pip-version-check", str(src)], tmp_path, env)
    where = _run([str(python), "-c", "import latentae, latentae.studies.common as c; "
                  "print(latentae.__file__)"], tmp_path, env)
    assert Path(where.strip()).is_relative_to(venv), where  # the installed copy, not src/
    models = _run([str(bindir / "latentae"), "models", "sdvae-*"], tmp_path, env)
    assert "sdvae-f8" in models and "34,163,664" in models
    studies = _run([str(bindir / "latentae"), "study", "list"], tmp_path, env)
    assert "litevae-vs-sdvae" in studies and "latent-mmd" in studies
    helptext = _run([str(bindir / "latentae"), "study", "latent-mmd", "--help"], tmp_path, env)
    assert "--quick" in helptext  # the study module itself runs from the installed package

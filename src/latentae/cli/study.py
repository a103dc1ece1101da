"""``latentae study NAME [options]``: run one of the small-scale reproduction studies of
``studies/`` (issue 8; results in ``docs/results.md``). The options go to the script:
``--quick``, ``--out DIR``, ``--seed N``, ``--steps N``, ``--threads N``, ... ."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

STUDIES = {  # command name -> script in studies/
    "litevae-vs-sdvae": "litevae_vs_sdvae",
    "scale-dependency": "scale_dependency",
    "latent-mmd": "latent_mmd",
    "recipe-ablations": "recipe_ablations",
    "dcae-shortcuts": "dcae_shortcuts",
    "highres-adaptation": "highres_adaptation",
}


def studies_dir() -> Path:
    """``$LATENTAE_STUDIES``, else ``studies/`` of the source checkout this package is in."""
    folder = Path(os.environ.get("LATENTAE_STUDIES",
                                 Path(__file__).resolve().parents[3] / "studies"))
    if not (folder / "common.py").is_file():
        raise ValueError(f"no study scripts in {folder}: run from a source checkout "
                         "(pip install -e .) or set LATENTAE_STUDIES to its studies/ folder")
    return folder


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run a small-scale reproduction study (docs/results.md)",
                       description=__doc__)
    names = sorted(STUDIES) + sorted(STUDIES.values())
    p.add_argument("name", choices=["list", *names], metavar="NAME",
                   help="a study (" + ", ".join(STUDIES) + ") or 'list'")
    p.add_argument("options", nargs=argparse.REMAINDER,
                   help="passed to the study script (see NAME --help)")
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    if args.name == "list":
        for name, script in STUDIES.items():
            print(f"{name:<20} studies/{script}.py")
        return 0
    folder = studies_dir()
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    module = importlib.import_module(STUDIES.get(args.name, args.name))
    return int(module.main(list(args.options)) or 0)

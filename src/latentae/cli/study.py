"""``latentae study NAME [options]``: run one of the reproduction studies of
``latentae.studies`` (design and results in ``docs/results.md``). The options go to the
study: ``--quick``, ``--scale cpu|gpu``, ``--seeds N``, ``--jobs N``, ``--resume``,
``--out DIR``, ``--arms a,b``, ``--dry-run`` ... (``latentae study NAME --help``)."""

from __future__ import annotations

import argparse
import importlib

STUDIES = {  # command name -> module of latentae.studies
    "litevae-vs-sdvae": "litevae_vs_sdvae",
    "progressive": "progressive",
    "recipe-ablations": "recipe_ablations",
    "scale-dependency": "scale_dependency",
    "latent-mmd": "latent_mmd",
    "dcae-shortcuts": "dcae_shortcuts",
    "highres-adaptation": "highres_adaptation",
    "dcae-table1": "dcae_table1",
    "litevae-table7": "litevae_table7",
    "diffusability-regularisers": "diffusability_regularisers",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run a reproduction study (docs/results.md)",
                       description=__doc__)
    names = sorted(STUDIES) + sorted(set(STUDIES.values()))
    p.add_argument("name", choices=["list", *names], metavar="NAME",
                   help="a study (" + ", ".join(STUDIES) + ") or 'list'")
    p.add_argument("options", nargs=argparse.REMAINDER,
                   help="passed to the study (see NAME --help)")
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    if args.name == "list":
        for name, module in STUDIES.items():
            print(f"{name:<20} python -m latentae.studies.{module}")
        return 0
    # Imported on demand: a study pulls in the training loop, and the module is picked by
    # name at run time.
    module = importlib.import_module(f"latentae.studies.{STUDIES.get(args.name, args.name)}")
    try:
        return int(module.main(list(args.options)) or 0)
    except SystemExit as e:  # the study's own parser: a usage error (printed) or --help
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2

"""``latentae diffusion eval SAMPLES --ref REAL_DIR|STATS.npz``: gFID, Inception Score,
precision/recall and KID of generated samples, and ``ref-stats`` to cache the reference.

``add_eval_parser(sub)`` and ``add_ref_stats_parser(sub)`` attach the two commands to a
``diffusion`` command group's subparsers; ``register(sub)`` adds them at the top level
as ``diffusion-eval`` and ``diffusion-ref-stats`` until that group exists.
"""

from __future__ import annotations

import argparse
import json

from latentae.cli.args import add_threads
from latentae.devices import resolve_device
from latentae.diffusion.card import add_generation, generation_entry, samples_model_folder
from latentae.eval.generation import (
    GenerationConfig,
    evaluate_samples,
    format_result,
    reference_protocol,
    reference_stats,
)
from latentae.files import atomic_write_text, check_writable
from latentae.runtime import set_threads


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=50, help="images per Inception batch")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--fid-protocol", choices=["tf1", "pytorch-fid"], default=None,
                   help="resize/scaling before Inception (tf1 = TF graph, torch-fidelity, "
                        "ADM's evaluator; pytorch-fid = efficientvit's). Default: the "
                        "reference file's own, tf1 for a folder")
    p.add_argument("--max-ref-features", type=int, default=10_000,
                   help="real features kept for precision/recall and KID (random subset)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the KID subsets and of the kept reference features")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads(p)


def _configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("samples", help="folder of generated images, or an .npz of uint8 "
                                   "(N, H, W, 3) images (key arr_0, images or samples)")
    p.add_argument("--ref", required=True,
                   help="folder of real images (ADM's center_crop_arr to the samples' "
                        "size), a statistics .npz of `diffusion ref-stats`, an ADM "
                        "reference batch (VIRTUAL_imagenet256_labeled.npz: arr_0 and/or "
                        "mu, sigma, mu_s, sigma_s) or efficientvit's {mu, sigma} npz")
    p.add_argument("--save-ref", default=None, metavar="STATS.npz",
                   help="with a folder --ref: cache its statistics here")
    p.add_argument("--is-splits", type=int, default=10, help="Inception Score splits")
    p.add_argument("--pr-k", type=int, default=3, help="k of the precision/recall k-NN")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--inception-logits", default=None, metavar="FILE",
                   help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth, for the "
                        "Inception Score (default: looked up in the caches)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the result as JSON")
    p.add_argument("--update-card", action="store_true",
                   help="merge the metrics and their protocol into the model card of the "
                        "run that drew SAMPLES (named by SAMPLES' sampling.json)")
    _common(p)
    p.set_defaults(func=cmd_eval)


def _configure_ref_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument("real_dir", help="folder of real images (searched recursively)")
    p.add_argument("--out", required=True, metavar="STATS.npz", help="statistics file")
    p.add_argument("--resolution", type=int, required=True,
                   help="ADM's center_crop_arr to this size (box-halve while >= 2x, "
                        "bicubic shortest side, centre square): the samples' size")
    p.add_argument("--crop", choices=["center", "random"], default="center")
    _common(p)
    p.set_defaults(func=cmd_ref_stats)


def add_eval_parser(sub: argparse._SubParsersAction, name: str = "eval") -> None:
    """Add the sample-evaluation command to ``sub`` (a ``diffusion`` group)."""
    _configure_eval(sub.add_parser(name, help="gFID, Inception Score, precision/recall and "
                                              "KID of generated samples"))


def add_ref_stats_parser(sub: argparse._SubParsersAction, name: str = "ref-stats") -> None:
    """Add the reference-statistics command to ``sub`` (a ``diffusion`` group)."""
    _configure_ref_stats(sub.add_parser(name, help="cache Inception statistics of real "
                                                   "images for `diffusion eval --ref`"))


def register(sub: argparse._SubParsersAction) -> None:
    add_eval_parser(sub, "diffusion-eval")
    add_ref_stats_parser(sub, "diffusion-ref-stats")


def _config(args: argparse.Namespace, **extra):
    ref = getattr(args, "ref", None)
    protocol = args.fid_protocol or (reference_protocol(ref) if ref else "tf1")
    return GenerationConfig(fid_protocol=protocol, seed=args.seed,
                            ref_max_features=args.max_ref_features, **extra)


def cmd_eval(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    cfg = _config(args, is_splits=args.is_splits, pr_k=args.pr_k,
                  kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size)
    target = samples_model_folder(args.samples) if args.update_card else None  # before work
    for path in (args.json, args.save_ref):
        check_writable(path)  # before the Inception pass, not after (sweep RO10)
    result = evaluate_samples(args.samples, args.ref, device=resolve_device(args.device),
                              batch_size=args.batch_size, config=cfg,
                              logits_path=args.inception_logits, save_ref=args.save_ref,
                              progress=not args.no_progress)
    print(format_result(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.save_ref:
        print(f"wrote {args.save_ref}")
    if target is not None:
        card = add_generation(target[0], generation_entry(args.ref, result, target[1]))
        print(f"wrote the metrics and their protocol into {card}")
    return 0


def cmd_ref_stats(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    check_writable(args.out)  # before the Inception pass, not after (sweep RO10)
    ref = reference_stats(args.real_dir, args.out, resolution=args.resolution,
                          crop=args.crop, device=resolve_device(args.device),
                          batch_size=args.batch_size, config=_config(args),
                          progress=not args.no_progress)
    print(f"wrote {args.out}: {ref.stats.n} images at {args.resolution}², "
          f"{ref.features.shape[0]} features kept, FID protocol {ref.protocol}"
          + (f", {len(ref.skipped)} unreadable skipped" if ref.skipped else ""))
    return 0

"""``latentae eval MODEL --data DIR``: reconstruction metrics under a stated protocol
(``eval/reconstruction.py``, ``eval/report.py``, ``docs/evaluation.md``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from latentae.cli import args as shared
from latentae.devices import resolve_device
from latentae.eval.fid import PROTOCOLS
from latentae.eval.reconstruction import EvalConfig, evaluate_reconstruction
from latentae.eval.report import FILES, card_entry, protocol, summary_table, write_report
from latentae.files import atomic_dir, prepare_output_dir
from latentae.pretrained import add_evaluation, card_for_update
from latentae.runtime import set_threads


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="rFID, LPIPS, PSNR, SSIM and latent statistics of an "
                                    "autoencoder on a folder of images")
    shared.add_model(p)
    p.add_argument("--data", required=True, help="folder of images (searched recursively)")
    p.add_argument("--resolution", type=shared.positive_int, default=256,
                   help="square side after resize + crop (a multiple of the compression "
                        "factor, or any size with --pad)")
    p.add_argument("--out", default=None, help="report folder (default: eval-<model name>)")
    shared.add_overwrite(p, "a non-empty report folder")
    shared.add_limit(p)
    shared.add_batch_size(p, 4)
    shared.add_device(p)
    shared.add_dtype(p)
    shared.add_threads(p)
    shared.add_tiles(p)
    shared.add_pad(p)
    p.add_argument("--crop", choices=["center", "random"], default="center",
                   help="crop to a square after resizing the shortest side")
    p.add_argument("--fid-protocol", choices=PROTOCOLS, default="tf1",
                   help="resize/scaling before Inception (tf1 = TF graph, torch-fidelity)")
    p.add_argument("--grid-images", type=shared.non_negative_int, default=4,
                   help="rows in recon_grid.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--update-card", action="store_true",
                   help="also merge the metrics and their protocol into MODEL/README.md, "
                        "the model card (MODEL must be a model directory)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    cfg = EvalConfig(resolution=args.resolution, crop=args.crop, batch_size=args.batch_size,
                     limit=args.limit, dtype=args.dtype, fid_protocol=args.fid_protocol,
                     grid_images=args.grid_images, progress=not args.no_progress,
                     pad=args.pad, tile=args.tile, overlap=args.overlap,
                     max_batch=args.max_batch)
    set_threads(args.threads)
    device = resolve_device(args.device)
    name = Path(args.model).name or str(args.model)
    if args.update_card:
        card_for_update(args.model)  # refuse a preset or a foreign README.md before work
    out = prepare_output_dir(args.out or f"eval-{name}", args.overwrite)  # fail before work
    model = shared.load_model(args)
    torch.manual_seed(args.seed)  # reproducible --crop random
    result = evaluate_reconstruction(model, args.data, cfg, device)
    proto = protocol(cfg, name + (" (random init)" if args.random_init else ""), model,
                     str(device), len(result.rows), len(result.corrupt))
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        write_report(tmp, result, proto)
    print(summary_table(result, proto))
    print(f"wrote {out}/" + ", ".join(FILES))
    if args.update_card:
        card = add_evaluation(args.model, model, card_entry(args.data, result, proto))
        print(f"wrote the metrics and their protocol into {card}")
    return 0

"""``latentae eval MODEL --data DIR``: reconstruction metrics under a stated protocol."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="rFID, LPIPS, PSNR, SSIM and latent statistics of an "
                                    "autoencoder on a folder of images")
    p.add_argument("model", help="saved latentae directory, diffusers directory, or a "
                                 "preset name with --random-init")
    p.add_argument("--data", required=True, help="folder of images (searched recursively)")
    p.add_argument("--resolution", type=int, default=256,
                   help="square side after resize + crop (multiple of the compression ratio)")
    p.add_argument("--out", default=None, help="report folder (default: eval-<model name>)")
    p.add_argument("--random-init", action="store_true",
                   help="build a preset with random weights (smoke runs)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="the model's dtype; metrics always run in float32")
    p.add_argument("--crop", choices=["center", "random"], default="center",
                   help="crop to a square after resizing the shortest side")
    p.add_argument("--fid-protocol", choices=["tf1", "pytorch-fid"], default="tf1",
                   help="resize/scaling before Inception (tf1 = TF graph, torch-fidelity)")
    p.add_argument("--grid-images", type=int, default=4, help="rows in recon_grid.png")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-init weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from latentae.devices import resolve_device
    from latentae.eval.report import protocol, summary_table, write_report
    from latentae.eval.run import EvalConfig, evaluate
    from latentae.pretrained import load

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    cfg = EvalConfig(resolution=args.resolution, crop=args.crop, batch_size=args.batch_size,
                     limit=args.limit, dtype=args.dtype, fid_protocol=args.fid_protocol,
                     grid_images=args.grid_images, progress=not args.no_progress)
    device = resolve_device(args.device)
    import torch
    torch.manual_seed(args.seed)  # reproducible --random-init weights
    model = load(args.model, random_init=args.random_init)
    result = evaluate(model, args.data, cfg, device)
    name = Path(args.model).name or str(args.model)
    proto = protocol(cfg, name + (" (random init)" if args.random_init else ""), model,
                     str(device), len(result.rows), len(result.corrupt))
    out = Path(args.out or f"eval-{name}")
    write_report(out, result, proto)
    print(summary_table(result, proto))
    print(f"wrote {out}/metrics.json, report.md, per_image.csv, recon_grid.png")
    return 0

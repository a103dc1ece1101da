"""``latentae encode | decode | reconstruct | latent-stats | export | info``: the tools a
diffusion user needs (``info`` of a DiT / U-ViT folder: ``diffusion/card.py``), on
``latentae/folders.py`` and ``latentae/runtime.py``. Batched,
resumable (a folder holding an earlier run of the same command, input, model and
settings is continued, its files skipped; any other non-empty folder is refused unless
``--overwrite``), any image size with ``--pad`` (reflect padding, cropped back) or tiles
(``--tile``), ``--dtype bfloat16`` autocast; every output file is written atomically."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from latentae import folders
from latentae.cards import card_fields, flatten, write_card
from latentae.cli import args as shared
from latentae.convert.onnx import export_onnx, require_onnx
from latentae.diffusion.card import diffusion_folder, diffusion_info
from latentae.errors import InputError
from latentae.files import atomic_dir, check_writable, prepare_output_dir
from latentae.loader import find_run, is_onnx_folder, onnx_info, run_info
from latentae.locks import hold
from latentae.pretrained import (
    FORMATS,
    model_info,
    save_pretrained,
    source_card,
    write_scaling_factors,
)
from latentae.runtime import set_threads

EXPORT_FORMATS = (*FORMATS, "onnx")  # onnx: latentae/convert/onnx.py, two graphs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode a folder of images to latent shards",
                       description="Encode images into latents-NNNNN.safetensors shards. "
                       "Resumable by shard: rerun the same command after a kill and the "
                       "complete shards are kept (a kill loses at most the shard being "
                       "encoded, up to --shard-size images; a smaller --shard-size loses "
                       "less). A folder of another model's or settings' shards is refused.")
    shared.add_model(p)
    shared.add_runtime(p)
    shared.add_overwrite(p, "outputs: empty OUT first")
    p.add_argument("images", help="folder of images (searched recursively)")
    p.add_argument("out", help="output folder for latents-NNNNN.safetensors shards")
    p.add_argument("--shard-size", type=shared.positive_int, default=1000,
                   help="images per shard file, and the unit of resume (default 1000)")
    p.add_argument("--apply-scaling", action="store_true",
                   help="store (z - shift_factor) · scaling_factor (diffusion-ready)")
    p.add_argument("--sample", action="store_true",
                   help="store a posterior sample (seeded by --seed) instead of the mode")
    p.add_argument("--labels", action="store_true",
                   help="class labels from the subfolders (IMAGES/CLASS/...) into the shards "
                        "(for `latentae diffusion train --cached`)")
    frame = p.add_mutually_exclusive_group()
    frame.add_argument("--resize", type=shared.positive_int, default=0, metavar="N",
                       help="resize the shortest side to N, then take the central N×N "
                            "square (ADM's center_crop_arr): every latent the same shape, "
                            "as `diffusion train --cached` needs")
    frame.add_argument("--crop", type=shared.positive_int, default=0, metavar="N",
                       help="take the central N×N square without resizing (an image with "
                            "a side under N is first resized up to N)")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode latent shards to PNG images (cropped to "
                                      "the sizes the shards record)")
    shared.add_model(p)
    shared.add_runtime(p, pad=False)
    shared.add_overwrite(p, "outputs: empty OUT first")
    p.add_argument("latents", help="a latent .safetensors file or a folder of them")
    p.add_argument("out", help="output folder for PNGs")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("reconstruct", help="encode + decode images; writes reconstructions "
                                           "and side-by-side comparisons")
    shared.add_model(p)
    shared.add_runtime(p)
    shared.add_overwrite(p, "outputs: empty OUT first")
    p.add_argument("images")
    p.add_argument("out")
    p.set_defaults(func=cmd_reconstruct)
    _register_model_tools(sub)


def _register_model_tools(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latent-stats", help="per-channel latent statistics and the "
                                            "suggested scaling_factor / shift_factor")
    shared.add_model(p)
    shared.add_runtime(p, pad=False)  # images are center-cropped to a multiple of f
    shared.add_limit(p)
    shared.add_json(p, "the statistics")
    p.add_argument("images")
    p.add_argument("--resolution", type=shared.positive_int, default=None,
                   help="resize (shortest side) and center-crop images to this size; "
                        "default: center-crop to a multiple of the compression factor")
    p.add_argument("--use-shift", action="store_true",
                   help="suggest shift_factor = mean and 1/std (SD3/FLUX style; the "
                        "default where the model's config already has a shift)")
    p.add_argument("--write", action="store_true",
                   help="write the suggested factors into the model directory's config")
    p.set_defaults(func=cmd_latent_stats)

    p = sub.add_parser("export", help="write a model in diffusers, latentae or ONNX format",
                       description="Write MODEL to OUT. --format onnx: OUT/encoder.onnx "
                       "(images (B, 3, H, W) in [-1, 1] -> unscaled latents: the posterior "
                       "mean / DC-AE latent) and OUT/decoder.onnx (latents -> images), "
                       "dynamic batch and size (multiples of the compression factor), "
                       "checked against PyTorch with onnxruntime (docs/deployment.md).")
    shared.add_model(p)
    shared.add_overwrite(p, "a non-empty output folder")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="diffusers",
                   help="diffusers (the default: AutoencoderKL / AutoencoderDC folders that "
                        "diffusers loads), latentae, or onnx")
    p.add_argument("out", help="output folder (missing or empty, or --overwrite)")
    shared.add_threads(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="family, preset, parameters, compression, scaling "
                                    "factor, model card and provenance of a model (an "
                                    "autoencoder, or a diffusion model folder or run)")
    shared.add_model(p)
    shared.add_json(p, "the information")
    p.set_defaults(func=cmd_info)


def model_name(args: argparse.Namespace) -> str:
    """The model as shard metadata and run records name it (random weights with seed)."""
    return f"{args.model} (random init, seed {args.seed})" if args.random_init else args.model


def cmd_encode(args: argparse.Namespace) -> int:
    runner = shared.make_runner(args)
    side, f = args.resize or args.crop, runner.model.spatial_compression_ratio
    if side % f and not args.pad:
        raise InputError(f"--{'resize' if args.resize else 'crop'} {side} is not a multiple "
                         f"of the compression factor {f}: use {max(f, side - side % f)} or "
                         f"{side - side % f + f}")
    with hold(args.out):  # one writer per folder
        done, skipped = folders.encode_folder(
            runner, args.images, args.out, model_name(args), shard_size=args.shard_size,
            batch_size=args.batch_size, apply_scaling=args.apply_scaling, sample=args.sample,
            seed=args.seed, overwrite=args.overwrite, labels=args.labels, resize=args.resize,
            crop=args.crop)
    print(f"encoded {done} images into {args.out} ({skipped} already there, skipped)")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    runner = shared.make_runner(args)
    done, skipped = folders.decode_folder(runner, args.latents, args.out, args.batch_size,
                                          overwrite=args.overwrite,
                                          model_name=model_name(args))
    print(f"decoded {done} images into {args.out} ({skipped} already there, skipped)")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    runner = shared.make_runner(args)
    psnrs, skipped = folders.reconstruct_folder(runner, args.images, args.out,
                                                args.batch_size, overwrite=args.overwrite,
                                                model_name=model_name(args))
    mean = f", mean PSNR {sum(psnrs) / len(psnrs):.2f} dB" if psnrs else ""
    print(f"reconstructed {len(psnrs)} images into {args.out} ({skipped} already there, "
          f"skipped){mean}")
    return 0


def cmd_latent_stats(args: argparse.Namespace) -> int:
    if args.write and not Path(args.model).is_dir():
        raise InputError("--write needs a saved model directory, not a preset name")
    check_writable(args.json)  # before the statistics, not after (sweep RO08)
    runner = shared.make_runner(args)
    stats = folders.latent_statistics(runner, args.images, args.limit, args.resolution,
                                      use_shift=True if args.use_shift else None)
    print(format_stats(stats, runner.model))
    shared.write_json(args.json, stats)
    if args.write:
        write_scaling_factors(args.model, stats["scaling_factor"], stats["shift_factor"])
        print(f"wrote scaling_factor={stats['scaling_factor']:.6g}, "
              f"shift_factor={stats['shift_factor']:.6g} into {args.model}")
    return 0


def format_stats(stats: dict, model) -> str:
    lines = [f"latent statistics of {model.preset or model.family} over {stats['images']} "
             f"images ({stats['count']} latent elements):",
             f"{'channel':>8} {'mean':>10} {'std':>10} {'rms':>10}"]
    for c, (m, s, r) in enumerate(zip(stats["mean"], stats["std"], stats["rms_per_channel"])):
        lines.append(f"{c:>8} {m:>10.4f} {s:>10.4f} {r:>10.4f}")
    lines += [f"{'all':>8} {stats['global_mean']:>10.4f} {stats['global_std']:>10.4f} "
              f"{stats['rms']:>10.4f}",
              f"suggested scaling_factor = {stats['scaling_factor']:.6g}, "
              f"shift_factor = {stats['shift_factor']:.6g} "
              f"(current: {model.scaling_factor:.6g}, {model.shift_factor:.6g})"]
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "onnx":
        require_onnx()  # a missing package fails before anything slow
    prepare_output_dir(args.out, args.overwrite, inputs=[args.model])  # before loading
    set_threads(args.threads)
    model = shared.load_model(args)
    run = find_run(args.model)  # a finished run's export holds the training card
    card = source_card(run.folder / "model" if run is not None and run.checkpoint is None
                       and (run.folder / "model").is_dir() else args.model)
    with atomic_dir(args.out, overwrite=args.overwrite, inputs=[args.model]) as tmp:
        if args.format == "onnx":
            parity = export_onnx(model, tmp, progress=lambda m: print(m, file=sys.stderr))
            write_card(tmp, card_fields(model, "onnx", keep=card))
        else:
            save_pretrained(model, tmp, format=args.format, card=card)
    print(f"wrote {args.format} model to {args.out}")
    if args.format == "onnx":
        for graph, checks in parity.items():
            shapes = ", ".join(f"{tuple(c['shape'])}: {c['max_abs_diff']:.1e}" for c in checks)
            print(f"  {graph}: onnxruntime vs PyTorch, max abs difference {shapes}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    run = find_run(args.model)
    folder = diffusion_folder(args.model)  # a DiT / U-ViT folder or run, else an autoencoder
    if run is not None and run.kind == "autoencoder" and run.checkpoint is None \
            and (run.folder / "model").is_dir():
        info = model_info(run.folder / "model")  # a finished run: its export and card
    elif run is not None and (run.kind == "autoencoder" or folder is None):
        info = run_info(run)  # a paused autoencoder or diffusion run: a checkpoint's EMA
    elif is_onnx_folder(Path(args.model)):
        info = onnx_info(Path(args.model))
    else:
        info = diffusion_info(folder) if folder else model_info(args.model, args.random_init)
    if args.json:
        shared.write_json(args.json, info)
        if args.json == "-":
            return 0
    for k, v in info.items():
        if isinstance(v, dict):
            print(f"{k:>26}:")
            for kk, vv in flatten(v).items():
                print(f"{kk:>34}: {vv}")
        else:
            print(f"{k:>26}: {v}")
    return 0

"""``latentae encode | decode | reconstruct | latent-stats | export | info``: the tools a
diffusion user needs. Batched, resumable (existing outputs are skipped), any image size
(padding to the compression factor, or tiles with ``--tile``), ``--dtype bfloat16``
autocast. Every output file is written under a temporary name and renamed, so a failed
run leaves complete files only."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from latentae.cli import tools_run as run
from latentae.pretrained import model_info


def _model_args(p: argparse.ArgumentParser, compute: bool = True) -> None:
    p.add_argument("model", help="saved latentae or diffusers model directory, or a preset "
                                 "name with --random-init")
    p.add_argument("--random-init", action="store_true",
                   help="allow a preset name (random weights; for smoke tests)")
    if not compute:
        return
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="autocast dtype of the model's forward passes")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tile", type=int, default=None,
                   help="tile size in pixels (multiple of the compression factor): images "
                        "larger than this are processed in overlapping, blended tiles")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels")
    p.add_argument("--max-batch", type=int, default=None,
                   help="at most this many images/tiles per forward pass (caps memory)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep the default memory format (channels_last is faster on CPU)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode a folder of images to latent shards")
    _model_args(p)
    p.add_argument("images", help="folder of images (searched recursively)")
    p.add_argument("out", help="output folder for latents-NNNNN.safetensors shards")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard file")
    p.add_argument("--apply-scaling", action="store_true",
                   help="store (z - shift_factor) · scaling_factor (diffusion-ready)")
    p.add_argument("--sample", action="store_true",
                   help="store a posterior sample instead of the mode (mean)")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode latent shards to PNG images")
    _model_args(p)
    p.add_argument("latents", help="a latent .safetensors file or a folder of them")
    p.add_argument("out", help="output folder for PNGs")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("reconstruct", help="encode + decode images; writes reconstructions "
                                           "and side-by-side comparisons")
    _model_args(p)
    p.add_argument("images")
    p.add_argument("out")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("latent-stats", help="per-channel latent statistics and the "
                                            "suggested scaling_factor / shift_factor")
    _model_args(p)
    p.add_argument("images")
    p.add_argument("--limit", type=int, default=None, help="use at most N images")
    p.add_argument("--resolution", type=int, default=None,
                   help="resize (shortest side) and center-crop images to this size; "
                        "default: center-crop to a multiple of the compression factor")
    p.add_argument("--use-shift", action="store_true",
                   help="also suggest shift_factor = mean (SD3/FLUX style)")
    p.add_argument("--write", action="store_true",
                   help="write the suggested factors into the model directory's config")
    p.add_argument("--json", default=None, help="write the statistics here")
    p.set_defaults(func=cmd_latent_stats)

    p = sub.add_parser("export", help="write a model in diffusers (or latentae) format")
    _model_args(p, compute=False)
    p.add_argument("--format", choices=["diffusers", "latentae"], default="diffusers")
    p.add_argument("out", help="output directory (must not exist or be empty)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="family, preset, parameters, compression, scaling "
                                    "factor and training provenance of a model")
    _model_args(p, compute=False)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)


def cmd_encode(args: argparse.Namespace) -> int:
    from latentae.latents import read_shard, shard_metadata, write_shard

    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {args.shard_size}")
    files, root = run.image_list(args.images)
    coder = run.Coder.from_args(args)
    out = run.prepare_out(args.out)
    meta = shard_metadata(coder.model, args.model, args.apply_scaling,
                          "sample" if args.sample else "mode")
    gen = torch.Generator(device=coder.device).manual_seed(args.seed) if args.sample else None
    n_done = n_skip = 0
    for i in range(0, len(files), args.shard_size):
        chunk = files[i:i + args.shard_size]
        keys = [run.key_of(f, root) for f in chunk]
        path = out / f"latents-{i // args.shard_size:05d}.safetensors"
        if path.exists():
            if sorted(read_shard(path).latents) != sorted(keys):
                raise ValueError(f"{path} exists but holds other images: use an empty output "
                                 "folder or the same image folder and --shard-size")
            n_skip += len(chunk)
            continue
        latents, sizes = {}, {}
        for batch_keys, x, hw in run.image_batches(chunk, keys, coder):
            z = coder.encode(x, sample=args.sample, generator=gen)  # (B, nz, h, w)
            if args.apply_scaling:
                z = (z - coder.model.shift_factor) * coder.model.scaling_factor
            for k, zk in zip(batch_keys, z):
                latents[k], sizes[k] = zk, hw
        write_shard(path, latents, sizes, meta)
        n_done += len(chunk)
    print(f"encoded {n_done} images into {out} ({n_skip} already there, skipped)")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from latentae.io import save_image
    from latentae.latents import check_compatible, list_shards, read_shard

    shards = [(p, read_shard(p)) for p in list_shards(args.latents)]  # all checked first
    coder = run.Coder.from_args(args)
    for p, shard in shards:
        check_compatible(shard, coder.model, p)
    out = run.prepare_out(args.out)
    n_done = n_skip = 0
    for _, shard in shards:
        todo = [k for k in shard.latents if not run.png_path(out, k).exists()]
        n_skip += len(shard.latents) - len(todo)
        for keys in run.groups_by_shape(todo, shard.latents, args.batch_size):
            z = torch.stack([shard.unscale(k) for k in keys])
            images = coder.decode(z)
            for k, img in zip(keys, images):
                h, w = shard.sizes.get(k, img.shape[-2:])
                save_image(img[:, :h, :w], run.png_path(out, k))
                n_done += 1
    print(f"decoded {n_done} images into {out} ({n_skip} already there, skipped)")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from latentae.io import image_grid, save_image, to_uint8

    files, root = run.image_list(args.images)
    coder = run.Coder.from_args(args)
    out = run.prepare_out(args.out)
    keys = [run.key_of(f, root) for f in files]
    todo = [(f, k) for f, k in zip(files, keys)
            if not (run.png_path(out, k).exists() and run.png_path(out / "compare", k).exists())]
    psnrs = []
    for batch_keys, x, (h, w) in run.image_batches([f for f, _ in todo], [k for _, k in todo],
                                                   coder):
        recon = coder.decode(coder.encode(x))[..., :h, :w]
        for k, xi, ri in zip(batch_keys, x[..., :h, :w], recon):
            mse = (to_uint8(xi).float() - to_uint8(ri).float()).square().mean()
            psnrs.append(float(10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))))
            save_image(ri, run.png_path(out, k))
            save_image(image_grid([[xi, ri]]), run.png_path(out / "compare", k))
    mean = f", mean PSNR {sum(psnrs) / len(psnrs):.2f} dB" if psnrs else ""
    print(f"reconstructed {len(psnrs)} images into {out} "
          f"({len(files) - len(todo)} already there, skipped){mean}")
    return 0


def cmd_latent_stats(args: argparse.Namespace) -> int:
    from latentae.scaling import latent_scaling_factor

    if args.write and not Path(args.model).is_dir():
        raise ValueError("--write needs a saved model directory, not a preset name")
    files, _ = run.image_list(args.images)
    files = files[: args.limit] if args.limit else files
    coder = run.Coder.from_args(args)
    images = run.stats_images(files, coder.model.spatial_compression_ratio, args.resolution)
    with run.autocast(coder):
        stats = latent_scaling_factor(coder.model, images, batch_size=args.batch_size,
                                      use_shift=args.use_shift)
    stats["rms_per_channel"] = [(m * m + s * s) ** 0.5 for m, s in zip(stats["mean"],
                                                                         stats["std"])]
    print(run.format_stats(stats, coder.model))
    if args.json:
        run.write_text(Path(args.json), json.dumps(stats, indent=2) + "\n")
    if args.write:
        run.write_factors(Path(args.model), stats["scaling_factor"], stats["shift_factor"])
        print(f"wrote scaling_factor={stats['scaling_factor']:.6g}, "
              f"shift_factor={stats['shift_factor']:.6g} into {args.model}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from latentae.pretrained import load, save_pretrained

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty directory; choose a new path")
    model = load(args.model, random_init=args.random_init)
    parent = run.prepare_out(out.parent if str(out.parent) else ".")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        save_pretrained(model, tmp, format=args.format)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except OSError as e:
        raise ValueError(f"cannot write {out}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.format} model to {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    info = model_info(args.model, args.random_init)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>26}: {v}")
    return 0


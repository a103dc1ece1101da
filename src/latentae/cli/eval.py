"""``latentae eval MODEL --data DIR``: reconstruction metrics and latent diffusability
under a stated protocol (``eval/reconstruction.py``, ``eval/report.py``,
``docs/evaluation.md``), and with ``--diffusion-proxy STEPS`` a small DiT trained on the
pass's latents (``diffusion/proxy.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from latentae.cli import args as shared
from latentae.devices import resolve_device
from latentae.diffusion.proxy import (
    FOLDER,
    ProxySettings,
    check_settings,
    proxy_summary,
    run_proxy,
)
from latentae.diffusion.samplers import SAMPLERS
from latentae.errors import InputError
from latentae.eval.diffusability import MAX_CODES
from latentae.eval.fid import PROTOCOLS
from latentae.eval.reconstruction import EvalConfig, evaluate_reconstruction
from latentae.eval.report import card_entry, protocol, summary_table, write_report
from latentae.files import atomic_dir, prepare_output_dir
from latentae.pretrained import add_evaluation, card_for_update
from latentae.runtime import set_threads


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="rFID, LPIPS, PSNR, SSIM, latent statistics and latent "
                                    "diffusability of an autoencoder on a folder of images")
    shared.add_model(p)
    p.add_argument("--data", required=True, help="folder of images (searched recursively)")
    p.add_argument("--resolution", type=shared.positive_int, default=256,
                   help="square side after resize + crop (a multiple of the compression "
                        "factor, or any size with --pad)")
    p.add_argument("--out", default=None,
                   help="report folder (default: eval-<model name>-on-<data folder name>)")
    shared.add_overwrite(p, "a non-empty report folder")
    shared.add_limit(p)
    shared.add_batch_size(p, 4)
    shared.add_device(p)
    shared.add_dtype(p)
    shared.add_threads(p)
    shared.add_compile(p)
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
    _add_diffusability(p)
    p.set_defaults(func=cmd_eval)


def _add_diffusability(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("latent diffusability (docs/evaluation.md)")
    g.add_argument("--no-diffusability", action="store_true",
                   help="skip the latent spectrum, scale equivariance and whole-code MMD")
    g.add_argument("--mmd-codes", type=shared.positive_int, default=MAX_CODES,
                   help="whole latent codes (a uniform random subset) for LiteVAE table 6's "
                        "MMD; cost grows as n²")
    g.add_argument("--diffusion-proxy", type=shared.positive_int, default=None,
                   metavar="STEPS", help="train a DiT for STEPS steps on the evaluated "
                                         "latents, report gFID/KID of its samples")
    g.add_argument("--proxy-model", default="dit-s",
                   help="diffusion preset of the proxy (dit-tiny for smoke runs)")
    g.add_argument("--proxy-patch", type=shared.positive_int, default=None,
                   help="patch size (default: tokens nearest 256)")
    g.add_argument("--proxy-batch", type=shared.positive_int, default=64,
                   help="training and sampling batch of the proxy")
    g.add_argument("--proxy-samples", type=shared.positive_int, default=None,
                   help="samples to measure (default: as many as evaluated images)")
    g.add_argument("--proxy-sampler", choices=SAMPLERS["ddpm"], default="dpm++2m")
    g.add_argument("--proxy-sampling-steps", type=shared.positive_int, default=50)
    g.add_argument("--proxy-latent-norm", choices=["channel", "model"], default="channel",
                   help="per-channel statistics of the evaluated latents, or the model's "
                        "scaling/shift factors")


def _proxy_settings(args: argparse.Namespace) -> ProxySettings | None:
    if args.diffusion_proxy is None:
        return None
    s = ProxySettings(steps=args.diffusion_proxy, model=args.proxy_model,
                      patch=args.proxy_patch, batch_size=args.proxy_batch,
                      samples=args.proxy_samples, sampler=args.proxy_sampler,
                      sampling_steps=args.proxy_sampling_steps,
                      latent_norm=args.proxy_latent_norm, seed=args.seed,
                      fid_protocol=args.fid_protocol, progress=not args.no_progress)
    check_settings(s)
    return s


# path parts that name no model: runs/a/model and runs/b/model must not share eval-model
_GENERIC = {"model", "checkpoints", "ema", "run", ".", ""}


def default_out(model: str, data: str) -> str:
    """``eval-<model>-on-<data>``: the model named by its nearest non-generic path parts
    (``runs/a/model`` -> ``a``, ``runs/a/checkpoints/state-00..pt`` -> ``a-state-00..``)."""
    path, is_file = Path(model), Path(model).suffix == ".pt"
    parts = [p for p in (path.with_suffix("") if is_file else path).parts
             if p not in _GENERIC and p != ".."] or ["model"]
    label = "-".join(parts[-2:]) if is_file else parts[-1]
    data_name = Path(str(data).rstrip("/")).name or "data"
    return f"eval-{label}-on-{data_name}"


def cmd_eval(args: argparse.Namespace) -> int:
    proxy = _proxy_settings(args)  # bad proxy flags fail before any work
    cfg = EvalConfig(resolution=args.resolution, crop=args.crop, batch_size=args.batch_size,
                     limit=args.limit, dtype=args.dtype, fid_protocol=args.fid_protocol,
                     grid_images=args.grid_images, progress=not args.no_progress,
                     pad=args.pad, tile=args.tile, overlap=args.overlap,
                     max_batch=args.max_batch, compile=args.compile,
                     diffusability=not args.no_diffusability,
                     mmd_codes=args.mmd_codes, keep_data=proxy is not None)
    set_threads(args.threads)
    device = resolve_device(args.device)
    name = Path(args.model).name or str(args.model)
    if args.update_card:
        card_for_update(args.model)  # refuse a preset or a foreign README.md before work
    inputs = [args.model, args.data]
    out = prepare_output_dir(args.out or default_out(args.model, args.data), args.overwrite,
                             inputs=inputs)
    model = shared.load_model(args)
    if proxy is not None and args.resolution % model.spatial_compression_ratio:
        raise InputError("--diffusion-proxy needs a --resolution that is a multiple of the "
                         f"compression factor {model.spatial_compression_ratio} (no --pad)")
    torch.manual_seed(args.seed)  # reproducible --crop random
    result = evaluate_reconstruction(model, args.data, cfg, device)
    proto = protocol(cfg, name + (" (random init)" if args.random_init else ""), model,
                     str(device), len(result.rows), len(result.corrupt), result.diffusability)
    if proxy is not None and len(result.rows) < 2:
        raise InputError(f"--diffusion-proxy needs at least 2 readable images, got "
                         f"{len(result.rows)}")
    record, lines = None, []
    with atomic_dir(out, overwrite=args.overwrite, inputs=inputs) as tmp:
        if proxy is not None:
            record, lines = run_proxy(model, str(args.model), args.random_init, result.kept,
                                      tmp, proxy, device)
        paths = write_report(tmp, result, proto, {"diffusion_proxy": record} if record
                             else None, lines)
    print(summary_table(result, proto))
    if record is not None:
        print(proxy_summary(record))
    print(f"wrote {out}/" + ", ".join(sorted(paths) + ([FOLDER + "/"] if record else [])))
    if args.update_card:
        card = add_evaluation(args.model, model, card_entry(args.data, result, proto))
        print(f"wrote the metrics and their protocol into {card}")
    return 0

"""``latentae bench``: models side by side (params, GFLOPs, images/s, peak memory);
the measuring is ``latentae/bench/``, the protocol ``docs/benchmarks.md``."""

from __future__ import annotations

import argparse
import os
import sys

import torch

from latentae.bench import MODES, BenchSettings, build_subjects, run_bench, write_report
from latentae.bench.measure import machine_info
from latentae.bench.precision import load_images, psnr_change
from latentae.bench.report import machine_lines
from latentae.bench.runner import check_resolution
from latentae.bench.train_step import markdown as train_step_markdown
from latentae.bench.train_step import train_step_bench
from latentae.cli import args as shared
from latentae.cli.bench_diffusion import add_diffusion_args, run_diffusion_bench
from latentae.devices import resolve_device
from latentae.errors import InputError
from latentae.files import atomic_write_text, check_writable
from latentae.loader import load
from latentae.runtime import set_threads


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure params, GFLOPs, images/s and peak memory side by side",
        description="Benchmark models in one run. MODELS are preset names (random weights) "
                    "or model directories (latentae or diffusers).")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="autoencoders to compare (none with --diffusion)")
    p.add_argument("--resolution", type=shared.positive_int, default=256)
    shared.add_batch_size(p, 4)
    shared.add_dtype(p, several=True)
    shared.add_device(p)
    shared.add_threads(p)
    shared.add_compile(p)
    p.add_argument("--warmup", type=shared.non_negative_int, default=1)
    p.add_argument("--repeats", type=shared.positive_int, default=3)
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--channels-last", choices=["latentae", "all", "none"], default="latentae",
                   help="which models run in channels_last memory format ('latentae': the "
                        "latentae families faster so, all but DC-AE; diffusers twins run as "
                        "shipped unless 'all')")
    p.add_argument("--default-allocator", action="store_true",
                   help="leave glibc's malloc thresholds alone (default: keep freed large "
                        "blocks for reuse, for every column timed in this process)")
    p.add_argument("--compare", default=None,
                   metavar="diffusers[,diffusers-default][,onnxruntime]",
                   help="add the diffusers twin (same weights) of each SD-VAE/DC-AE model "
                        "and check its outputs equal latentae's: 'diffusers' times it in "
                        "this process (allocator tuned like latentae), 'diffusers-default' "
                        "in a fresh process with PyTorch's defaults (as a plain diffusers "
                        "script runs it); 'onnxruntime': every model's ONNX export on "
                        "onnxruntime's CPU provider, same threads, float32 inference "
                        "(needs latentae[onnx]); several: one column each")
    p.add_argument("--baseline", default=None, help="column the ratios refer to "
                   "(default: the first; e.g. diffusers:sdvae-f8)")
    p.add_argument("--psnr-images", default=None, metavar="DIR",
                   help="with --dtype bfloat16/float16: also reconstruct these images in "
                        "float32 and in that dtype and report the PSNR change")
    p.add_argument("--psnr-resolution", type=shared.positive_int, default=None,
                   help="center-crop --psnr-images to this size (default: full images)")
    p.add_argument("--psnr-limit", type=shared.positive_int, default=None,
                   help="use at most N images")
    shared.add_json(p, "the full report")
    p.add_argument("--markdown", metavar="PATH", default=None,
                   help="write the Markdown table to PATH")
    p.add_argument("--train-step", metavar="RECIPE", default=None,
                   help="instead: where one training step of RECIPE (litevae, dcae, sdvae, "
                        "...) on MODEL spends its time, stage by stage, against a plain "
                        "PyTorch step of the same work (--resolution, --batch-size, "
                        "--warmup, --repeats)")
    p.add_argument("--phase", default=None,
                   help="with --train-step: the recipe's phase (default: its first)")
    add_diffusion_args(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench_diffusion(args: argparse.Namespace) -> int:
    """``latentae bench --diffusion``: the shared flags mapped to the diffusion bench's
    (one dtype; the batch default there is 1 image per call)."""
    if args.models:
        raise InputError("--diffusion measures the diffusion model on the --autoencoders' "
                         f"latents; drop the MODEL arguments ({' '.join(args.models)})")
    if len(args.dtype) != 1:
        raise InputError(f"the diffusion bench takes one --dtype, got {','.join(args.dtype)}")
    args.dtype, args.batch = args.dtype[0], args.batch_size
    return run_diffusion_bench(args)


def cmd_train_step(args: argparse.Namespace) -> int:
    """``latentae bench MODEL --train-step RECIPE``: the step's stages, engine vs plain."""
    if len(args.models) != 1:
        raise InputError(f"--train-step times one MODEL, got {len(args.models)}")
    device = resolve_device(args.device)
    set_threads(args.threads)
    for path in (args.json, args.markdown):
        check_writable(path)
    machine = machine_info(device)
    result = train_step_bench(args.models[0], args.train_step, args.resolution,
                              args.batch_size, device, args.warmup, args.repeats, args.phase,
                              progress=lambda m: print(m, file=sys.stderr))
    machine["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    result["machine"] = machine
    title = (f"{args.train_step} recipe, phase {result['phase']}, {args.models[0]}, "
             f"{args.resolution}², batch {args.batch_size}")
    text = "\n".join(machine_lines(machine)) + "\n\n" + train_step_markdown(result, title)
    if args.markdown:
        atomic_write_text(args.markdown, text)
    shared.write_json(args.json, result)
    if args.json != "-":
        print(text)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.train_step:
        return cmd_train_step(args)
    if args.diffusion or args.autoencoders:
        return cmd_bench_diffusion(args)
    if not args.models:
        raise InputError("name at least one MODEL, or pass --diffusion MODEL "
                         "--autoencoders NAME:pP,...")
    args.device = str(resolve_device(args.device))  # a clear error for a missing GPU
    set_threads(args.threads)
    for path in (args.json, args.markdown):
        check_writable(path)  # fail before minutes of measuring, not after
    low = [d for d in args.dtype if d != "float32"]
    if args.psnr_images and not low:
        raise InputError("--psnr-images compares a lower precision with float32: "
                         "pass --dtype bfloat16 or float16")
    settings = BenchSettings(resolution=args.resolution, batch=args.batch_size,
                             dtype=",".join(args.dtype), device=args.device,
                             warmup=args.warmup, repeats=args.repeats,
                             modes=tuple(m for m in args.modes.split(",") if m),
                             channels_last=args.channels_last,
                             tune_allocator=not args.default_allocator,
                             compile=args.compile)
    settings.check()
    models = [(spec, load(spec, random_init=True, kind="autoencoder")) for spec in args.models]
    check_resolution(settings.resolution, [(n, m.spatial_compression_ratio) for n, m in models])
    subjects = build_subjects(models, compare=args.compare,
                              note=lambda m: print(m, file=sys.stderr), dtypes=settings.dtypes)
    baseline = args.baseline or subjects[0].name
    if baseline not in [s.name for s in subjects]:
        raise InputError(f"--baseline {baseline!r} is not among {[s.name for s in subjects]}")
    report = run_bench(subjects, settings, progress=lambda m: print(m, file=sys.stderr))
    if args.psnr_images:
        report["psnr"] = _psnr_section(args, models, settings, low[0])
    report["arguments"] = {k: v for k, v in vars(args).items() if k != "func"}
    text = write_report(report, None if args.json == "-" else args.json, args.markdown,
                        baseline=baseline)
    if args.json == "-":  # stdout holds the JSON document alone
        shared.write_json("-", report)
    else:
        print(text)
    bad = [n for n, r in report["results"].items()
           if r.get("equal_outputs") and not r["equal_outputs"]["equal"]]
    if bad:
        print(f"latentae bench: outputs differ from latentae for {', '.join(bad)}",
              file=sys.stderr)
        return 1
    return 0


def _psnr_section(args: argparse.Namespace, models: list, settings: BenchSettings,
                  dtype: str) -> dict:
    images = load_images(args.psnr_images, args.psnr_resolution, args.psnr_limit)
    out = {}
    for name, model in models:
        print(f"bench: {name}: PSNR float32 vs {dtype}", file=sys.stderr)
        out[name] = psnr_change(model, images, dtype, torch.device(args.device),
                                settings.channels_last != "none")
    return out

"""``latentae demo --diffusion``: a small DiT trained for a few CPU minutes on the latents of
the demo's autoencoder, sampled and measured, with a report that says what the numbers can
and cannot mean. Nothing is downloaded.

Steps: the autoencoder (``--autoencoder``, else ``OUT/model`` from ``latentae demo``, else
a ``latentae demo --steps 200`` first); the ``skimage.data`` training images of that
demo, one class per image (``OUT/diffusion/data/NAME/NAME.png``); ``dit-tiny`` (ours) with
patch 1 on 64² crops encoded on the fly (random crop of the image resized to 64–256 px,
flips, as the autoencoder demo); class-balanced samples; gFID/KID/precision/recall against
random crops of the same images, beside the same numbers for a second set of real crops
(the floor such tiny sets allow); ``OUT/diffusion/report.md``.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from latentae.demos.autoencoder import TRAIN_IMAGES, run_demo, write_skimage_images
from latentae.diffusion.config import make_diffusion_config
from latentae.diffusion.data import ClassImages
from latentae.diffusion.generate import sample_folder
from latentae.diffusion.train import train
from latentae.engine.data import list_sources
from latentae.errors import TrainingStopped
from latentae.eval.generation import GenerationConfig, evaluate_samples, reference_stats
from latentae.files import atomic_write_text
from latentae.io import load_image, resize_shortest, save_image

RESOLUTION = 64
N_SAMPLES = 32  # per set: samples, real reference crops, second real crops
AUTOENCODER_STEPS = 200  # ours: a shorter autoencoder demo when none is there yet
# ours: a fixed budget, the same numbers on every machine (demos/autoencoder.py); ~2 CPU
# minutes at 1 thread (docs/diffusion.md: 92 steps of batch 16 in 0.6 CPU min)
DIT_STEPS = 300
# Ours, for a minutes-long CPU run (the release recipes are for 400K+ GPU steps).
DEMO_TRAINING = dict(model="dit-tiny", patch_size=1, resolution=RESOLUTION, batch_size=16,
                     lr=1e-3, warmup_steps=20, weight_decay=0.0, ema_decay=0.99, grad_clip=1.0,
                     crop_scale=4.0, latent_norm="channel", norm_images=128, log_every=5,
                     val_every=0, ckpt_every=0, grid_images=18, grid_steps=20)
SAMPLING = dict(sampler="dpm++2m", steps=25, guidance=1.5)


def class_folders(train_dir: Path, out: Path) -> Path:
    """One class per training image: ``out/NAME/NAME.png``, its shortest side resized to
    the largest the random crops use (R·crop_scale): the same crops, decoded faster."""
    side = round(RESOLUTION * DEMO_TRAINING["crop_scale"])
    for png in sorted(train_dir.glob("*.png")):
        (out / png.stem).mkdir(parents=True, exist_ok=True)
        save_image(resize_shortest(load_image(png), side), out / png.stem / png.name)
    return out


def real_crops(data: Path, out: Path, n: int, seed: int) -> Path:
    """``n`` training crops (random crop + flip, as training sees them) as PNGs in ``out``."""
    crops = ClassImages(list_sources(data), [0] * len(TRAIN_IMAGES), RESOLUTION, seed,
                        crop_scale=DEMO_TRAINING["crop_scale"])
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        save_image(crops[i][0], out / f"{i:06d}.png")
    return out


def demo_autoencoder(out: Path, autoencoder: str | None, threads: int) -> tuple[str, str]:
    """The autoencoder folder and where it came from (given, found, or trained now)."""
    if autoencoder:
        return autoencoder, "given with --autoencoder"
    if (out / "model" / "config.json").is_file():
        return str(out / "model"), f"found in {out / 'model'} (an earlier `latentae demo`)"
    print(f"diffusion demo: first the autoencoder ({AUTOENCODER_STEPS} steps of "
          "`latentae demo`)", flush=True)
    run_demo(out, AUTOENCODER_STEPS, threads=threads)
    return str(out / "model"), (f"trained now by `latentae demo --steps {AUTOENCODER_STEPS}`"
                                " (report: report.md)")


def run_diffusion_demo(out: str | Path = "demo", steps: int = DIT_STEPS,
                       autoencoder: str | None = None, threads: int = 1, seed: int = 0) -> Path:
    """Train ``steps`` steps, sample, measure; returns ``OUT/diffusion/report.md``. Says
    what it does at each stage (a progress bar, also in a log: ``progress.py``)."""
    t0, out = time.time(), Path(out)
    torch.set_num_threads(threads)  # a fixed count: the same numbers everywhere
    ae, ae_note = demo_autoencoder(out, autoencoder, threads)
    t_ae, work = time.time() - t0, out / "diffusion"
    train_dir, _ = write_skimage_images(work / "images")
    data = class_folders(train_dir, work / "data")
    cfg = make_diffusion_config(dict(autoencoder=ae, data=str(data), out=str(work / "run"),
                                     seed=seed, steps=steps, overwrite=True, device="cpu",
                                     progress=True, **DEMO_TRAINING))
    print(f"diffusion demo: training {DEMO_TRAINING['model']} for {steps} steps of batch "
          f"{cfg.batch_size}", flush=True)
    t1 = time.time()
    if train(cfg) is None:  # stopped by a signal, with a checkpoint
        raise TrainingStopped(f"the diffusion demo stopped before its {steps} steps; run "
                              "it again")
    t_train, t2 = time.time() - t1, time.time()
    print(f"diffusion demo: sampling {N_SAMPLES} images ({SAMPLING['sampler']}, "
          f"{SAMPLING['steps']} steps)", flush=True)
    npz = sample_folder(work / "run", work / "samples", n=N_SAMPLES, device="cpu",
                        progress=True, seed=seed, **SAMPLING)
    t_sample = time.time() - t2
    print(f"diffusion demo: gFID, KID, precision and recall of {N_SAMPLES} samples and of "
          f"{N_SAMPLES} other real crops (Inception on the CPU)", flush=True)
    metrics = measure(npz, data, work, seed)
    info = dict(ae=ae, ae_note=ae_note, t_ae=t_ae, t_train=t_train, t_sample=t_sample,
                t_metrics=time.time() - t2 - t_sample, t_total=time.time() - t0,
                steps=steps, grid=sorted((work / "run" / "samples").glob("*.png"))[-1])
    report = work / "report.md"
    atomic_write_text(report, render_report(metrics, info))
    return report


def measure(npz: Path, data: Path, work: Path, seed: int) -> dict[str, dict]:
    """gFID/KID/PR of the samples and of a second set of real crops, both against one
    reference set of real crops (its Inception features computed once)."""
    config = GenerationConfig(kid_subset_size=N_SAMPLES // 2, seed=seed)  # std over subsets
    ref = reference_stats(real_crops(data, work / "real_ref", N_SAMPLES, seed + 1),
                          resolution=RESOLUTION, batch_size=N_SAMPLES, config=config)
    other = real_crops(data, work / "real_other", N_SAMPLES, seed + 2)
    return {"samples": evaluate_samples(npz, ref, batch_size=N_SAMPLES, config=config),
            "real": evaluate_samples(other, ref, batch_size=N_SAMPLES, config=config)}


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else spec.format(v)


def render_report(m: dict[str, dict], info: dict) -> str:
    """The Markdown report: what ran, the numbers beside their floor, and the caveats
    (one list of lines, read top to bottom as the report; longer than 40 lines for that)."""
    rows = ["| set vs real reference crops | n | gFID | KID | precision | recall |",
            "|---|---|---|---|---|---|"]
    for name, key in (("DiT samples", "samples"), ("other real crops (floor)", "real")):
        r = m[key]
        rows.append(f"| {name} | {r['n']} | {_fmt(r['gfid'], '{:.1f}')} | "
                    f"{_fmt(r['kid'], '{:.4f}')} ± {_fmt(r['kid_std'], '{:.4f}')} | "
                    f"{_fmt(r['precision'], '{:.3f}')} | {_fmt(r['recall'], '{:.3f}')} |")
    c = DEMO_TRAINING
    return "\n".join([
        "# latentae demo: a tiny DiT on the demo autoencoder's latents", "",
        f"Autoencoder: `{info['ae']}` ({info['ae_note']}). Diffusion model: {c['model']} "
        f"(ours: depth 4, width 128, 4 heads), patch {c['patch_size']}, ddpm objective with "
        f"learned sigma, {len(TRAIN_IMAGES)} classes (one per `skimage.data` image: "
        f"{', '.join(TRAIN_IMAGES)}), {RESOLUTION}² crops encoded on the fly (random crop "
        "of the image resized to 64–256 px, flips, posterior draws), per-channel latent "
        f"normalisation. Ours for a minutes-long run: AdamW lr {c['lr']:g}, batch "
        f"{c['batch_size']}, warm-up {c['warmup_steps']} steps, EMA {c['ema_decay']}.", "",
        f"Trained {info['steps']} steps in {info['t_train'] / 60:.1f} min; sampling "
        f"{N_SAMPLES} images ({SAMPLING['sampler']}, {SAMPLING['steps']} steps, guidance "
        f"{SAMPLING['guidance']}) {info['t_sample']:.0f} s; metrics {info['t_metrics']:.0f} s; "
        f"autoencoder step {info['t_ae'] / 60:.1f} min; {info['t_total'] / 60:.1f} min in all "
        f"on {platform.processor() or platform.machine()} with {torch.get_num_threads()} "
        "thread(s). Wall times are of a shared machine: other jobs slow them.", "",
        "## Samples", "", f"![samples](run/samples/{info['grid'].name})", "",
        "The EMA model's training grid (classes round robin, one column per class). All "
        f"{N_SAMPLES} samples: `samples/` (PNGs and `samples.npz`).", "",
        "## Generation metrics", "", *rows, "",
        "How to read these (honestly):",
        f"- {N_SAMPLES} images per set, far below the 2,048 that FID needs and the 50,000 "
        "papers use: gFID here is dominated by its small-sample bias, so only the gap to "
        "the floor row means anything, and only roughly.",
        f"- KID is unbiased at small n; its ± is the std over 100 subsets of "
        f"{N_SAMPLES // 2}, wide at this n: a KID within a few ± of the floor's is no "
        "evidence of a difference.",
        "- The reference and the floor are random crops of the same nine images the model "
        "trained on: this measures memorising a tiny distribution, not generalisation.",
        "- Inception features of 64² crops upsampled to 299² are a poor description of "
        "such images; treat every number as a smoke test that the pipeline runs end to end.",
        f"- Protocol: {m['samples']['protocol']['fid_protocol']} FID protocol "
        "(latentae.eval.generation); notes: " + "; ".join(m["samples"]["notes"]) + ".",
        "", "Run folder: `run/` (config.yaml, metrics.jsonl, TensorBoard, checkpoints, "
        "model/). Sample more with `latentae diffusion sample run --n 90 --out more`.", ""])

"""``latentae demo``: train a LiteVAE-tiny variant (16 latent channels, narrower top
decoder stages: :data:`MODEL_OVERRIDES`) for a few minutes on CPU at 64² on the images
scikit-image and matplotlib ship (two held out), evaluate it against the untrained
model, and write ``OUT/report.md`` with metrics, a recon grid and the loss curves.
Nothing is downloaded.

The run is a fixed budget of :data:`STEPS` steps with a cosine learning-rate decay to 0,
on :data:`THREADS` thread by default: the same seed gives the same numbers on every
machine, whatever its load (a different thread count changes the float sums, and so the
last digits). The time it takes is estimated up front from :data:`STEP_SECONDS`; a busy
machine only makes it slower. The curve (the run's validation) and the table are
measured on the same held-out crops (``OUT/data/val``, 64² PNGs)."""

from __future__ import annotations

import platform
import shutil
import time
from pathlib import Path

import torch
from PIL import Image

from latentae.engine.data import TrainImages, list_sources
from latentae.engine.plot import plot_run
from latentae.errors import InputError, TrainingStopped
from latentae.eval.lpips import load_lpips
from latentae.eval.psnr_ssim import PSNR_VERSION, SSIM_VERSION
from latentae.files import atomic_dir, atomic_write_text
from latentae.io import image_grid, resize_shortest, save_image
from latentae.losses.perceptual import PerceptualLoss
from latentae.models.autoencoder import Autoencoder
from latentae.pretrained import load as latentae_load
from latentae.registry import create_model
from latentae.train.autoencoder import train
from latentae.train.config import make_config
from latentae.train.recipes import LossWeights, Phase, Recipe
from latentae.train.validation import evaluate, load_center_crops

# Mostly colour photographs (with many grayscale ones a minutes-long run learns
# luminance first and the held-out colour photos come back grey), two grayscale ones.
TRAIN_IMAGES = ("cat", "colorwheel", "hubble_deep_field", "immunohistochemistry", "logo",
                "retina", "rocket", "camera", "coins")
# Two more colour photographs for the autoencoder demo (not classes of the diffusion
# demo, which uses TRAIN_IMAGES): more variety for the same minutes (+0.3 dB here).
EXTRA_TRAIN_IMAGES = ("motorcycle", "grace_hopper")
VAL_IMAGES = ("astronaut", "coffee")
RESOLUTION = 64
CROP_SCALE = 4.0  # crops of the image resized to 64–256 px on its shortest side
BATCH = 4
LR = 4e-3  # ours: 1e-3 and 2e-3 reached lower held-out PSNR in 400 steps here
WARMUP_STEPS = 40
MODEL = "litevae-tiny"
# ours: litevae-tiny with two changes, both said in the report.
# - 16 latent channels instead of 4 (f8c16: 12× fewer numbers than pixels, not 48×): at
#   f8c4 even a perfect 8×8 thumbnail of the held-out crops reaches only 18.4 dB / SSIM
#   0.47 (area down, bicubic up).
# - decoder widths (24, 24, 64, 64) instead of (32, 32, 64, 64): GroupNorm's 32 groups
#   over 32 channels normalise each channel alone; 24 channels get 8 groups of 3 (the
#   house rule, nn.norms.num_groups). Measured at 1000 steps: 16.1 dB / SSIM 0.50 held
#   out against 15.0 / 0.41 with 32, at a lower cost per step; a flat grey crop then
#   comes back grey instead of brown (its hue, like every hue, still comes out weak).
MODEL_OVERRIDES = dict(latent_channels=16, decoder_channels=(24, 24, 64, 64))
EMA_DECAY = 0.995  # ours: the cosine decay already settles the weights at the end
VAL_CROPS = 6  # random 64² crops of each held-out image: the curve's and the table's
THREADS = 1  # ours: a fixed count, so the numbers repeat on every machine
STEPS = 750  # ours: ~4 minutes in all on an idle 2-core machine at THREADS (STEP_SECONDS)
# Wall seconds of one demo step at 1 thread (train step, EMA, data, logging, validation
# every 100 steps) on the 2-core machine of docs/benchmarks.md when idle (load ~2):
# `run_demo(steps=100, threads=1)` took 30 s of training, 37 s in all (2026-12-04; under
# a load of 16 the same run took 104 s and gave the same numbers). SETUP_SECONDS: the
# images, the evaluation and the report.
STEP_SECONDS = 0.30
SETUP_SECONDS = 10


def demo_image(name: str) -> Image.Image:
    """A training or held-out image that an installed package ships, as RGB: a
    ``skimage.data`` image, its stereo ``motorcycle`` (left view), or matplotlib's
    ``grace_hopper`` sample."""
    if name == "grace_hopper":
        from matplotlib import cbook  # deferred: optional, heavy
        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return Image.open(f).convert("RGB")
    try:
        import skimage.data
    except ImportError as e:
        raise InputError("the demo needs scikit-image (pip install scikit-image)") from e
    a = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else \
        getattr(skimage.data, name)()
    return Image.fromarray(a.astype("uint8") * (255 if a.dtype == bool else 1)).convert("RGB")


def write_skimage_images(out: Path, extra: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Save :data:`TRAIN_IMAGES` (and ``extra``) as PNG under ``out/train``,
    :data:`VAL_IMAGES` under ``out/val``; the training ones with the shortest side at
    most the largest the random crops use (``RESOLUTION·CROP_SCALE``: the same crops,
    decoded several times faster)."""
    side = round(RESOLUTION * CROP_SCALE)
    for split, names in (("train", TRAIN_IMAGES + extra), ("val", VAL_IMAGES)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            img = demo_image(name)
            if split == "train" and min(img.size) > side:
                img = resize_shortest(img, side)
            img.save(out / split / f"{name}.png")
    return out / "train", out / "val"


def demo_recipe(perceptual: bool, steps: int) -> Recipe:
    """The LiteVAE losses (L1, optional LPIPS-VGG, KL, wavelet, high-pass) at 64², one
    phase of ``steps``. Our choices for a minutes-long CPU run: lr 4e-3 (the paper's 1e-4
    is for 150k steps) after a 40-step warm-up, decayed to 0 by a cosine over the run,
    batch 4, no discriminator (the adversarial term only helps after the reconstruction
    has converged)."""
    losses = LossWeights(perceptual=1.0 if perceptual else 0.0, wavelet=0.1, highpass=0.1)
    phase = Phase("demo", steps, RESOLUTION, BATCH, LR, betas=(0.5, 0.9), losses=losses,
                  warmup_steps=min(WARMUP_STEPS, steps), lr_decay="cosine")
    return Recipe("litevae", (phase,), discriminator="unet", discriminator_channels=16)


def demo_model() -> Autoencoder:
    """The demo's model, random weights from torch's global RNG."""
    return create_model(MODEL, **MODEL_OVERRIDES)


def estimate_minutes(steps: int, perceptual: bool) -> float:
    """The expected minutes on an idle machine at one thread (LPIPS-VGG: ~2.4× a step)."""
    return (SETUP_SECONDS + steps * STEP_SECONDS * (2.4 if perceptual else 1.0)) / 60


def has_lpips(net: str) -> bool:
    try:
        load_lpips(net)
        return True
    except (ValueError, FileNotFoundError, OSError):
        return False


def write_val_crops(images: Path, out: Path, per_image: int = VAL_CROPS) -> Path:
    """``per_image`` random 64² crops of each held-out image in ``images`` (fixed seed) as
    PNGs in ``out``: the run validates on them (the curve) and the report's table too."""
    data = TrainImages(list_sources(images), RESOLUTION, seed=1234, crop_scale=CROP_SCALE)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(per_image * len(data)):
        save_image(data[i][0], out / f"crop{i:03d}.png")
    return out


def run_demo(out: str | Path = "demo", steps: int = STEPS, seed: int = 0,
             perceptual: bool = False, threads: int = THREADS) -> Path:
    """Train ``steps`` steps, evaluate, report. Returns the path of ``report.md``.

    ``perceptual=True`` adds the LPIPS-VGG loss. It is off by default: on a CPU it costs
    ~60% of each step and its gradient dominates early, giving an input-independent
    texture (held-out PSNR 11.8 dB) where L1 alone gives recognisable reconstructions
    (14.5 dB; untrained 9.4 dB) in the same minutes."""
    t0, out = time.time(), Path(out)
    torch.set_num_threads(threads)
    vgg, alex = perceptual and has_lpips("vgg"), has_lpips("alex")
    if perceptual and not vgg:
        print("note: LPIPS weights not cached (run `latentae weights fetch`); "
              "training without the perceptual loss")
    print(f"demo: {steps} steps of batch {BATCH} at {RESOLUTION}², {threads} thread(s): "
          f"about {estimate_minutes(steps, vgg):.1f} min on an idle machine (longer on a "
          "busy one; the numbers do not depend on it)", flush=True)
    train_dir, images_dir = write_skimage_images(out / "data", EXTRA_TRAIN_IMAGES)
    val_dir = write_val_crops(images_dir, out / "data" / "val_crops")
    torch.manual_seed(seed)
    untrained = demo_model()
    # the run starts from these weights; tagged so no fine-tune regression report is made
    untrained.save_pretrained(str(out / "init"), card={"tags": ["untrained"]})
    cfg = make_config(dict(model=str(out / "init"), data=str(train_dir),
                           val_data=str(val_dir), val_images=len(list(val_dir.iterdir())),
                           out=str(out / "run"), seed=seed, val_every=100, ckpt_every=0,
                           log_every=10, ema_decay=EMA_DECAY,
                           overwrite=True,  # a demo always starts over
                           crop_scale=CROP_SCALE))
    exported = train(cfg, demo_recipe(vgg, steps))
    if exported is None:  # stopped by a signal, with a checkpoint
        raise TrainingStopped(f"the demo stopped before its {steps} steps; run it again")
    t_train = time.time() - t0
    copy_model(exported, out / "model")  # the run's model with its full card
    model = latentae_load(out / "model")
    x = load_center_crops(str(val_dir), RESOLUTION, cfg.val_images)
    before, after = compare(untrained, model, x, alex, out / "recon_grid.png")
    plot_run(out / "run", out / "loss_curve.png")
    info = dict(steps=steps, nimg=steps * BATCH, t_train=t_train, t_total=time.time() - t0,
                n_val=len(x), vgg=vgg, threads=threads)
    report = out / "report.md"
    atomic_write_text(report, render_report(before, after, info))
    return report


def copy_model(model_dir: Path, dest: Path) -> None:
    """``dest`` becomes a copy of ``model_dir`` (config, weights and card), atomically."""
    with atomic_dir(dest, overwrite=True) as tmp:
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True)


def compare(untrained: torch.nn.Module, trained: torch.nn.Module, x: torch.Tensor,
            alex: bool, grid: Path) -> tuple[dict, dict]:
    """Metrics of both models on ``x``; a grid of rows in threes (crops, untrained,
    trained reconstructions) to ``grid``."""
    lpips = PerceptualLoss("alex") if alex else None
    before, rec0 = evaluate(untrained.eval(), x, lpips)
    after, rec1 = evaluate(trained.eval(), x, lpips)
    rows = []
    for i in range(0, len(x), 6):
        rows += [list(x[i:i + 6]), list(rec0[i:i + 6].clamp(-1, 1)),
                 list(rec1[i:i + 6].clamp(-1, 1))]
    save_image(image_grid(rows), grid)
    return before, after


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def render_report(before: dict, after: dict, info: dict) -> str:
    """The Markdown report."""
    keys = [k for k in ("psnr", "ssim", "lpips") if k in after]
    table = ["| model | " + " | ".join(k.upper() for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    name = f"{MODEL}, {MODEL_OVERRIDES['latent_channels']} latent channels"
    for label, m in ((f"untrained {name} (same init)", before),
                     (f"trained {name} (EMA)", after)):
        table.append(f"| {label} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |")
    lines = [
        f"# latentae demo: {MODEL} (f8, {MODEL_OVERRIDES['latent_channels']} latent channels) "
        "trained on CPU",
        "", f"Trained {info['steps']} steps, a fixed budget ({info['nimg']} images of 64², "
        f"batch {BATCH}), in {info['t_train'] / 60:.1f} min of training; "
        f"{info['t_total'] / 60:.1f} min in all on {platform.processor() or platform.machine()}"
        f" with {plural(info['threads'], 'thread')}. The same seed and thread count give the "
        "same numbers on any machine, busy or idle (up to the CPU's float kernels); only the "
        "minutes change.", "",
        f"Model: the `{MODEL}` preset with 16 latent channels instead of its 4 (a 64² crop "
        "becomes 8×8×16 numbers, 12× fewer than its pixels; with 4 channels, 48× fewer, "
        "even a perfect 8×8 thumbnail reaches only 18.4 dB / SSIM 0.47 on these crops) and "
        "decoder widths (24, 24, 64, 64) instead of (32, 32, 64, 64) (GroupNorm then has 3 "
        "channels per group instead of 1; +1 dB held out at 1000 steps). In a few minutes "
        "it learns brightness and structure first: hues come out weak (a flat orange crop "
        "comes back brown); they take a longer run.", "",
        f"Training images: `skimage.data` {', '.join(TRAIN_IMAGES)}, its stereo motorcycle "
        "(left) and matplotlib's grace_hopper sample (random 64² crops of the "
        "image resized to 64–256 px on its shortest side, random flips). "
        f"Held out: {', '.join(VAL_IMAGES)}; evaluated on {info['n_val']} fixed random 64² "
        f"crops ({VAL_CROPS} of each, `data/val_crops/`): the table and the curve's "
        "validation points use the same crops, so the curve's last point is the table's "
        "trained row.",
        "", "Losses: L1 + " + ("LPIPS-VGG + " if info["vgg"] else "")
        + "1e-6·KL + 0.1·wavelet Charbonnier + 0.1·Gaussian high-pass L1 (LiteVAE §4); "
        f"Adam lr {LR:g} after a {WARMUP_STEPS}-step warm-up, cosine decay to 0 over the "
        f"{info['steps']} steps, betas (0.5, 0.9); EMA {EMA_DECAY}; no discriminator in a run this "
        "short" + ("" if info["vgg"] else ", and no LPIPS loss (`--perceptual` adds it; it "
                   "needs a longer run)") + ".", "",
        "## Held-out reconstruction", "", *table, "",
        f"Protocol: {PSNR_VERSION}; {SSIM_VERSION}; LPIPS v0.1 AlexNet on uint8-quantized "
        "reconstructions.", "",
        "![recon grid](recon_grid.png)", "",
        "Rows in threes: held-out crops, untrained reconstruction, trained reconstruction.",
        "", "## What a real run needs", "",
        "This is a few thousand images of training on a CPU, to show the tool end to end. "
        "An autoencoder for latent diffusion is trained on a GPU (or several) for 100k–200k "
        "steps at batch 16 (LiteVAE App. F: two GPUs, 200k steps at 128², 100k at 256²; "
        "the `litevae` recipe: 100k steps at 128² then 50k at 256² with LPIPS and a "
        "discriminator), i.e. about a thousand times the images of this demo, on a million "
        "and more varied images; see [docs/training.md](../docs/training.md) for the "
        "command, recipes, resuming and many GPUs.", "",
        "## Training curves", "", "![loss curve](loss_curve.png)", "",
        "Run folder: `run/` (config.yaml, metrics.jsonl, TensorBoard, checkpoints); "
        "exported EMA model: `model/` (a copy of `run/model` with its card; "
        "`latentae.load('model')`); its initial weights: "
        "`init/`.", ""]
    return "\n".join(lines)

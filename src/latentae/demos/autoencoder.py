"""``latentae demo``: train a LiteVAE-tiny variant (16 latent channels, narrower top
decoder stages: :data:`MODEL_OVERRIDES`) for a few minutes on CPU at 64² on the images
scikit-image and matplotlib ship (two held out), evaluate it against the untrained
model, and write ``OUT/report.md`` with metrics, a recon grid and the loss curves.
Nothing is downloaded.

The run is a fixed number of steps with a cosine learning-rate decay to 0, planned from
the speed of a few timed steps on this machine (:func:`plan_steps`), so the schedule
ends when the time does; ``max_minutes`` guards against a machine that slows down
during the run (on a shared machine the plan is off by ±25%: a run planned too long is
stopped when its learning rate is already near 0, one planned too short ends early)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from latentae.engine.data import TrainImages, list_sources
from latentae.engine.plot import plot_run
from latentae.engine.state import load_latest
from latentae.errors import InputError
from latentae.eval.lpips import load_lpips
from latentae.eval.psnr_ssim import PSNR_VERSION, SSIM_VERSION
from latentae.files import atomic_write_text
from latentae.io import image_grid, resize_shortest, save_image
from latentae.losses.perceptual import PerceptualLoss
from latentae.models.autoencoder import Autoencoder
from latentae.registry import create_model
from latentae.train.autoencoder import train
from latentae.train.config import make_config
from latentae.train.recipes import LossWeights, Phase, Recipe
from latentae.train.validation import evaluate

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
STEP_OVERHEAD = 1.2  # data, EMA, losses, logging beyond the timed steps (measured 1.1-1.5 here)


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


def plan_steps(minutes: float, perceptual: bool) -> int:
    """The steps that fit in ``minutes`` here: the median time of a few forward + backward
    + Adam steps of a demo model on a demo batch, times :data:`STEP_OVERHEAD`."""
    model = demo_model()
    x = torch.rand(BATCH, 3, RESOLUTION, RESOLUTION) * 2 - 1
    lpips = PerceptualLoss("vgg") if perceptual else None
    opt = torch.optim.Adam(model.parameters())
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        recon, _ = model(x)
        loss = (recon - x).abs().mean() + (lpips(recon, x) if lpips is not None else 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    per_step = statistics.median(times[1:]) * STEP_OVERHEAD  # the first one warms up
    return max(1, int(60 * minutes / per_step))


def has_lpips(net: str) -> bool:
    try:
        load_lpips(net)
        return True
    except (ValueError, FileNotFoundError, OSError):
        return False


def val_crops(val_dir: Path, per_image: int = 6) -> torch.Tensor:
    """``per_image`` random 64² crops of each held-out image (fixed seed): ``(N, 3, 64, 64)``."""
    data = TrainImages(list_sources(val_dir), RESOLUTION, seed=1234, crop_scale=CROP_SCALE)
    return torch.stack([data[i][0] for i in range(per_image * len(data))])


def idle_cores() -> int:
    """The cores no other process keeps busy (1-minute load average), at least one: on
    a shared machine OpenMP threads that wait on busy cores cost more than they give
    (measured here: 1 thread 2× faster than 2 under load)."""
    cores = os.cpu_count() or 1
    return max(1, min(cores, cores - round(os.getloadavg()[0])))


def run_demo(out: str | Path = "demo", minutes: float = 4.0, seed: int = 0,
             perceptual: bool = False, threads: int = 0) -> Path:
    """Train for about ``minutes``, evaluate, report. Returns the path of ``report.md``.

    ``perceptual=True`` adds the LPIPS-VGG loss. It is off by default: in three CPU
    minutes it costs ~60% of each step (285 instead of 677 steps here) and its gradient
    dominates early, giving an input-independent texture (held-out PSNR 11.8 dB) where
    L1 alone gives recognisable reconstructions (14.5 dB; untrained 9.4 dB)."""
    t0, out = time.time(), Path(out)
    torch.set_num_threads(threads or idle_cores())
    train_dir, val_dir = write_skimage_images(out / "data", EXTRA_TRAIN_IMAGES)
    vgg, alex = perceptual and has_lpips("vgg"), has_lpips("alex")
    if perceptual and not vgg:
        print("note: LPIPS weights not cached (run `latentae weights fetch`); "
              "training without the perceptual loss")
    steps = plan_steps(minutes, vgg)
    torch.manual_seed(seed)
    untrained = demo_model()
    untrained.save_pretrained(str(out / "init"))  # the run starts from these weights
    cfg = make_config(dict(model=str(out / "init"), data=str(train_dir),
                           val_data=str(val_dir), out=str(out / "run"), seed=seed,
                           # only if the machine slows down: the demo stays under 5 minutes
                           max_minutes=minutes + 0.25,
                           val_every=100, ckpt_every=0, log_every=10, ema_decay=EMA_DECAY,
                           overwrite=True,  # a demo always starts over
                           crop_scale=CROP_SCALE))
    train(cfg, demo_recipe(vgg, steps))
    t_train = time.time() - t0
    state = load_latest(out / "run" / "checkpoints")
    model = demo_model()
    model.load_state_dict(state["ema"]["model"])
    model.save_pretrained(str(out / "model"))
    x = val_crops(val_dir)
    before, after = compare(untrained, model, x, alex, out / "recon_grid.png")
    plot_run(out / "run", out / "loss_curve.png")
    nimg = state["state"]["nimg"]
    info = dict(steps=nimg // BATCH, planned=steps, nimg=nimg, t_train=t_train,
                t_total=time.time() - t0, n_val=len(x), vgg=vgg)
    report = out / "report.md"
    atomic_write_text(report, render_report(before, after, info))
    return report


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


def render_report(before: dict, after: dict, info: dict) -> str:
    """The Markdown report."""
    keys = [k for k in ("psnr", "ssim", "lpips") if k in after]
    table = ["| model | " + " | ".join(k.upper() for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    name = f"{MODEL}, {MODEL_OVERRIDES['latent_channels']} latent channels"
    for label, m in ((f"untrained {name} (same init)", before),
                     (f"trained {name} (EMA)", after)):
        table.append(f"| {label} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |")
    stopped = "" if info["steps"] >= info["planned"] else (
        f" (of {info['planned']} planned: stopped by the time limit, the machine having "
        "slowed down, or by a signal, before the learning rate had decayed)")
    lines = [
        f"# latentae demo: {MODEL} (f8, {MODEL_OVERRIDES['latent_channels']} latent channels) "
        "trained on CPU",
        "", f"Trained {info['steps']} steps{stopped} ({info['nimg']} images of 64², batch "
        f"{BATCH}) in {info['t_train'] / 60:.1f} min of training; "
        f"{info['t_total'] / 60:.1f} min in all on {platform.processor() or platform.machine()}"
        f" with {torch.get_num_threads()} threads.", "",
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
        f"Held out: {', '.join(VAL_IMAGES)}; evaluated on {info['n_val']} fixed 64² crops.",
        "", "Losses: L1 + " + ("LPIPS-VGG + " if info["vgg"] else "")
        + "1e-6·KL + 0.1·wavelet Charbonnier + 0.1·Gaussian high-pass L1 (LiteVAE §4); "
        f"Adam lr {LR:g} after a {WARMUP_STEPS}-step warm-up, cosine decay to 0 over the "
        f"planned steps, betas (0.5, 0.9); EMA {EMA_DECAY}; no discriminator in a run this "
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
        "exported EMA model: `model/` (`latentae.load('model')`); its initial weights: "
        "`init/`.", ""]
    return "\n".join(lines)

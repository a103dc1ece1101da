"""A run's state and bookkeeping: the :class:`Run` record, set-up from a config,
restore from a training state, validation, logging, checkpoints and export. The loop
itself is in ``loop.py``."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentae.devices import resolve_device
from latentae.files import atomic_write_bytes
from latentae.losses import build_discriminator
from latentae.train import dist
from latentae.train.config import TrainConfig, dump_yaml
from latentae.train.data import list_sources
from latentae.train.ema import EMA
from latentae.train.monitor import MetricsLog, evaluate, save_grid
from latentae.train.recipes import Phase, Recipe
from latentae.train.state import rng_state, save_state


@dataclasses.dataclass
class Run:
    """The mutable state of a run (modules, optimizers, counters); no behaviour."""

    cfg: TrainConfig
    recipe: Recipe
    dir: Path
    device: torch.device
    model: nn.Module
    ema: EMA
    disc: nn.Module | None
    perceptual: nn.Module | None
    sources: list
    val_images: torch.Tensor | None
    log: MetricsLog | None
    phase: int = 0
    step: int = 0  # step within the phase
    global_step: int = 0
    nimg: int = 0  # images seen by all processes together
    bad_steps: dict = dataclasses.field(default_factory=lambda: {"g": 0, "d": 0})
    skipped: int = 0  # total skipped non-finite steps
    corrupt: int = 0
    small: int = 0
    g_opt: torch.optim.Optimizer | None = None
    d_opt: torch.optim.Optimizer | None = None
    stop: bool = False  # set by SIGTERM
    t_start: float = 0.0
    start_step: int = 0  # global step this process started from
    validated_at: int = -1
    lpips_metric: nn.Module | None = None  # LPIPS-Alex for validation (the metric)


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def over_time(run: Run) -> bool:
    """``max_minutes`` or ``max_steps`` (counted in this process) reached."""
    steps = run.global_step - run.start_step
    return (bool(run.cfg.max_minutes) and time.time() - run.t_start > 60 * run.cfg.max_minutes
            or bool(run.cfg.max_steps) and steps >= run.cfg.max_steps)


def report(run: Run, phase: Phase, window: list[dict], bar, img_s: float) -> None:
    """Average the logged values over the window; progress bar + metrics.jsonl."""
    keys = sorted({k for w in window for k in w})
    mean = {k: sum(w[k] for w in window if k in w) / sum(k in w for w in window) for k in keys}
    bar.set_postfix(loss=f"{mean.get('loss', 0):.4f}", img_s=f"{img_s:.1f}")
    if run.log is not None:
        run.log.write({"step": run.global_step, "phase": phase.name, "phase_step": run.step,
                       "nimg": run.nimg, "img_s": round(img_s, 3), "lr": phase.lr,
                       "skipped_steps": run.skipped, "corrupt_files": run.corrupt,
                       "small_files": run.small, **mean})


def validate(run: Run) -> dict[str, float] | None:
    """EMA model on the held-out images (rank 0): metrics to the log, grid to samples/."""
    if run.val_images is None or not dist.is_main() or run.validated_at == run.global_step:
        return None
    run.validated_at = run.global_step
    metrics, recon = evaluate(run.ema.model, run.val_images, run.lpips_metric)
    save_grid(run.val_images, recon, run.dir / "samples" / f"val-{run.global_step:09d}.png")
    run.log.write({"step": run.global_step, "nimg": run.nimg,
                   **{f"val_{k}": v for k, v in metrics.items()}})
    return metrics


def checkpoint(run: Run) -> None:
    """Write the training state (rank 0) and wait for it on every process."""
    if dist.is_main():
        state = {"model": run.model.state_dict(), "ema": run.ema.state_dict(),
                 "disc": run.disc.state_dict() if run.disc is not None else {},
                 "g_opt": run.g_opt.state_dict() if run.g_opt else {},
                 "d_opt": run.d_opt.state_dict() if run.d_opt else {},
                 "scaler": {},  # bf16 autocast needs no loss scaler
                 "phase": run.phase, "step": run.step, "global_step": run.global_step,
                 "nimg": run.nimg, "skipped": run.skipped, "corrupt": run.corrupt,
                 "small": run.small, "rng": rng_state()}
        save_state(run.dir / "checkpoints", state, run.cfg.keep_checkpoints)
    dist.barrier()


def load_validation(cfg: TrainConfig, resolution: int) -> torch.Tensor | None:
    """Up to ``val_images`` held-out images, center-cropped: ``(N, 3, R, R)``."""
    if not cfg.val_data:
        return None
    from latentae.io import list_images, load_image, resize_center_crop, to_tensor
    files = list_images(cfg.val_data)[: cfg.val_images]
    return torch.stack([to_tensor(resize_center_crop(load_image(f), resolution))
                        for f in files])


def optional_lpips(net: str, device: torch.device, needed: bool) -> nn.Module | None:
    """LPIPS from the local weight cache; required for the loss, optional for validation
    metrics (a missing cache then prints what to run)."""
    if not needed:
        return None
    from latentae.losses.perceptual import PerceptualLoss
    try:
        return PerceptualLoss(net, device)
    except (ValueError, FileNotFoundError) as e:
        if net == "vgg":
            raise ValueError(f"the perceptual loss needs LPIPS-VGG weights ({e}); run "
                             "`latentae weights fetch` or set losses.perceptual=0") from e
        print(f"note: validation LPIPS off ({e}); run `latentae weights fetch`")
        return None


def setup(cfg: TrainConfig, recipe: Recipe) -> Run:
    """Build model, EMA, discriminator, losses, data listing and the run folder."""
    from latentae.pretrained import load
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)  # the same initial weights on every process
    model = load(cfg.model, random_init=True).to(device, memory_format=memory_format(cfg))
    if cfg.gradient_checkpointing:
        from latentae.nn.grad_checkpoint import enable_gradient_checkpointing
        enable_gradient_checkpointing(model)
    disc = None
    if recipe.uses_discriminator:
        disc = build_discriminator(recipe.discriminator,
                                   channels=recipe.discriminator_channels).to(device)
    run_dir = Path(cfg.out)
    needs_vgg = any(p.losses.perceptual > 0 for p in recipe.phases)
    run = Run(cfg, recipe, run_dir, device, model, EMA(model, cfg.ema_decay), disc,
              optional_lpips("vgg", device, needs_vgg), list_sources(cfg.data),
              load_validation(cfg, recipe.phases[-1].resolution), None,
              t_start=time.time())
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        run.log = MetricsLog(run_dir)
        run.lpips_metric = optional_lpips("alex", device, run.val_images is not None)
    return run


def restore(run: Run, state: dict[str, Any]) -> None:
    """Load model, EMA, discriminator and counters from a training state."""
    run.model.load_state_dict(state["model"])
    run.ema.load_state_dict(state["ema"])
    if run.disc is not None and state.get("disc"):
        run.disc.load_state_dict(state["disc"])
    run.phase, run.step, run.global_step = state["phase"], state["step"], state["global_step"]
    run.nimg, run.skipped = state["nimg"], state["skipped"]
    run.start_step = run.global_step
    run.corrupt, run.small = state["corrupt"], state["small"]


def write_config(run: Run, resuming: bool) -> None:
    """Save the resolved config (rank 0); a resumed run must match it."""
    text = dump_yaml(run.cfg, run.recipe)
    path = run.dir / "config.yaml"
    if resuming and path.is_file():
        import yaml
        if yaml.safe_load(path.read_text())["recipe"] != yaml.safe_load(text)["recipe"]:
            raise ValueError(f"the recipe differs from the one in {path}: resume with the "
                             "same options, or start a new run with another --out")
    atomic_write_bytes(path, text.encode())


def export(run: Run) -> Path:
    """Save the EMA weights for users (``save_pretrained``), rank 0."""
    out = run.dir / "model"
    if dist.is_main():
        run.ema.model.save_pretrained(str(out))
        dist.print0(f"exported EMA model to {out} ({run.global_step} steps, {run.nimg} images"
                    f", {run.skipped} skipped steps, {run.corrupt} corrupt files)")
    dist.barrier()
    return out


def main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()

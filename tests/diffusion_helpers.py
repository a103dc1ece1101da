"""Tiny data, autoencoder and run configs shared by the diffusion training and CLI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from latentae import create_model
from latentae.diffusion.config import make_diffusion_config
from latentae.diffusion.train import train

SIZE = 32  # images; litevae-tiny is f8c4, so latents are (4, 4, 4)


def write_images(root: Path, classes: tuple[str, ...] = ("cats", "dogs"), per_class: int = 3,
                 size: int = SIZE, seed: int = 0) -> Path:
    """``root/CLASS/i.png`` random RGB images of ``size``² (flat in ``root`` with no classes);
    each class has its own mean colour so the classes differ."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes or ("",)):
        folder = root / name if name else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.array([60 + 120 * (c % 2), 90, 200 - 120 * (c % 2)])
            a = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(folder / f"{i}.png")
    return root


def save_autoencoder(path: Path) -> Path:
    """A litevae-tiny with fixed random weights, saved as a latentae folder."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        create_model("litevae-tiny").save_pretrained(str(path))
    return path


def tiny_config(out: Path, autoencoder: Path, data: Path, **kw):
    """DiT-tiny/1 on 4×4 latents, global batch 4, 6 steps, a 4-image grid at the end."""
    base = dict(autoencoder=str(autoencoder), data=str(data), out=str(out), model="dit-tiny",
                patch_size=1, resolution=SIZE, batch_size=4, steps=6, lr=1e-3, device="cpu",
                progress=False, log_every=1, val_every=0, ckpt_every=3, grid_images=4,
                grid_steps=2, norm_images=8, ema_decay=0.9)
    return make_diffusion_config({**base, **kw})


def run(out: Path, autoencoder: Path, data: Path, **kw) -> Path | None:
    return train(tiny_config(out, autoencoder, data, **kw))


def exported(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))

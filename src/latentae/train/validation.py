"""Autoencoder validation: held-out images, LPIPS when its weights are cached, and the
EMA model's reconstructions measured (PSNR/SSIM with the uint8 protocol of docs/evaluation.md,
LPIPS) and drawn as a grid."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from latentae.errors import InputError
from latentae.eval.psnr_ssim import mean_finite, psnr_per_image, ssim_per_image
from latentae.io import (
    image_grid,
    list_images,
    load_image,
    resize_center_crop,
    save_image,
    to_tensor,
    to_uint8,
)
from latentae.losses.perceptual import PerceptualLoss
from latentae.train.config import TrainConfig


def load_validation(cfg: TrainConfig, resolution: int) -> torch.Tensor | None:
    """Up to ``val_images`` held-out images, center-cropped: ``(N, 3, R, R)``."""
    if not cfg.val_data:
        return None
    return load_center_crops(cfg.val_data, resolution, cfg.val_images)


def load_center_crops(folder: str, resolution: int, limit: int) -> torch.Tensor:
    """The first ``limit`` images of ``folder`` (sorted paths), shortest side resized to
    ``resolution`` and center-cropped: ``(N, 3, R, R)`` in [-1, 1]."""
    return torch.stack([to_tensor(resize_center_crop(load_image(f), resolution))
                        for f in first_images(folder, limit)])


def first_images(folder: str, limit: int) -> list[Path]:
    """The held-out images a validation set uses: the first ``limit`` sorted paths."""
    return list_images(folder)[:limit]


def optional_lpips(net: str, device: torch.device, needed: bool) -> nn.Module | None:
    """LPIPS from the local weight cache; required for the loss, optional for validation
    metrics (a missing cache then prints what to run)."""
    if not needed:
        return None
    try:
        return PerceptualLoss(net, device)
    except (ValueError, FileNotFoundError) as e:
        if net == "vgg":
            raise InputError(f"the perceptual loss needs LPIPS-VGG weights ({e}); run "
                             "`latentae weights fetch` or set losses.perceptual=0") from e
        print(f"note: validation LPIPS off ({e}); run `latentae weights fetch`")
        return None


@torch.no_grad()
def reconstruct(model, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Deterministic reconstructions (posterior mode) ``(N, 3, H, W)``, float32, CPU."""
    out = []
    for x in images.split(batch_size):
        recon, _ = model(x.to(next(model.parameters()).device), sample=False)
        out.append(recon.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def per_image_metrics(model, images: torch.Tensor, lpips=None
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """PSNR / SSIM (uint8 protocol of docs/evaluation.md) and LPIPS of ``model`` on ``images``
    ``(N, 3, H, W)`` in [-1, 1], per image: ``{name: (N,) float64}``, and the
    reconstructions."""
    recon = reconstruct(model, images)
    a, b = to_uint8(images), to_uint8(recon)
    metrics = {"psnr": psnr_per_image(a, b), "ssim": ssim_per_image(a, b)}
    if lpips is not None:  # the LPIPS network's per-image distances, (B,)
        dev = next(lpips.parameters()).device
        metrics["lpips"] = torch.cat([
            lpips.net(x.to(dev).float(), y.to(dev)).double().cpu() for x, y in
            zip(images.split(8), (b.float() / 127.5 - 1).split(8))])
    return metrics, recon


def evaluate(model, images: torch.Tensor, lpips=None) -> tuple[dict[str, float], torch.Tensor]:
    """:func:`per_image_metrics` averaged over the images (PSNR ``inf`` if some image is
    reconstructed exactly); returns the metrics and the reconstructions."""
    per_image, recon = per_image_metrics(model, images, lpips)
    return {k: mean_finite(v) for k, v in per_image.items()}, recon


def save_grid(images: torch.Tensor, recon: torch.Tensor, path: Path, n: int = 8) -> None:
    """Two rows per group: originals above their reconstructions."""
    rows = []
    for i in range(0, min(n, len(images)), 4):
        rows += [list(images[i:i + 4]), list(recon[i:i + 4].clamp(-1, 1))]
    save_image(image_grid(rows), path)

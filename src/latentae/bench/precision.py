"""What a lower-precision inference path costs in quality: reconstruction PSNR in float32
and under autocast to ``dtype`` on the same images, and their difference (PSNR of
``eval/psnr_ssim.py``: uint8-quantized, peak 255, per image)."""

from __future__ import annotations

from pathlib import Path

import torch

from latentae.eval.psnr_ssim import psnr_per_image
from latentae.io import list_images, load_image, resize_center_crop, to_tensor
from latentae.runtime import ModelRunner


def load_images(folder: str | Path, resolution: int | None, limit: int | None = None
                ) -> list[torch.Tensor]:
    """``(1, 3, H, W)`` images in [-1, 1]; center crops of ``resolution`` if given."""
    files = list_images(folder)[:limit]
    imgs = [load_image(f) for f in files]
    if resolution is not None:
        imgs = [resize_center_crop(i, resolution) for i in imgs]
    return [to_tensor(i)[None] for i in imgs]


def psnr_change(model, images: list[torch.Tensor], dtype: str, device: torch.device,
                channels_last: bool = True) -> dict[str, float]:
    """Mean reconstruction PSNR (posterior mode) in float32 and under ``dtype`` autocast,
    their difference (``dtype`` − float32, dB), and the PSNR between the two
    reconstructions (both through ``runtime.ModelRunner``)."""
    full, low = (ModelRunner(model, device, dt, channels_last=channels_last, allocator=False)
                 for dt in ("float32", dtype))
    p32, plow, pcross = [], [], []
    for x in images:
        r32, rlow = full.reconstruct(x), low.reconstruct(x)
        p32.append(psnr_per_image(x, r32))
        plow.append(psnr_per_image(x, rlow))
        pcross.append(psnr_per_image(r32, rlow))
    m32, mlow = float(torch.cat(p32).mean()), float(torch.cat(plow).mean())
    return {"images": len(images), "dtype": dtype, "psnr_float32": m32, "psnr_low": mlow,
            "psnr_change_db": mlow - m32, "psnr_low_vs_float32": float(torch.cat(pcross).mean())}

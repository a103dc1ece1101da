"""What a lower-precision inference path costs in quality: reconstruction PSNR in float32
and under autocast to ``dtype`` on the same images, and their difference."""

from __future__ import annotations

from pathlib import Path

import torch

from latentae.bench import measure


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (peak 255) of uint8-quantized images in [-1, 1]: ``(B,)``."""
    from latentae.io import to_uint8

    mse = (to_uint8(a).float() - to_uint8(b).float()).square().flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


def load_images(folder: str | Path, resolution: int | None, limit: int | None = None
                ) -> list[torch.Tensor]:
    """``(1, 3, H, W)`` images in [-1, 1]; center crops of ``resolution`` if given."""
    from latentae.io import list_images, load_image, resize_center_crop, to_tensor

    files = list_images(folder)[:limit]
    imgs = [load_image(f) for f in files]
    if resolution is not None:
        imgs = [resize_center_crop(i, resolution) for i in imgs]
    return [to_tensor(i)[None] for i in imgs]


@torch.no_grad()
def psnr_change(model, images: list[torch.Tensor], dtype: torch.dtype,
                device: torch.device, channels_last: bool = True) -> dict[str, float]:
    """Mean reconstruction PSNR (posterior mode) in float32 and under ``dtype`` autocast,
    their difference (``dtype`` − float32, dB), and the PSNR between the two
    reconstructions."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.eval().to(device).to(memory_format=fmt)
    p32, plow, pcross = [], [], []
    for x in images:
        x = x.to(device).contiguous(memory_format=fmt)
        r32 = model.decode(model.encode(x).mode()).float()
        with measure.autocast(device, dtype):
            rlow = model.decode(model.encode(x).mode()).float()
        p32.append(_psnr(x, r32))
        plow.append(_psnr(x, rlow))
        pcross.append(_psnr(r32, rlow))
    m32, mlow = float(torch.cat(p32).mean()), float(torch.cat(plow).mean())
    return {"images": len(images), "dtype": str(dtype).replace("torch.", ""),
            "psnr_float32": m32, "psnr_low": mlow,
            "psnr_change_db": mlow - m32, "psnr_low_vs_float32": float(torch.cat(pcross).mean())}

"""What a run reports: ``metrics.jsonl`` + TensorBoard scalars (rank 0), and
validation on held-out images with the EMA model (PSNR/SSIM/LPIPS + a recon grid)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from latentae.io import image_grid, save_image, to_uint8


class MetricsLog:
    """Appends one JSON object per record to ``run/metrics.jsonl`` and mirrors numeric
    values to TensorBoard (``run/tb``) when the package is available."""

    def __init__(self, run: Path, tensorboard: bool = True) -> None:
        self.path = run / "metrics.jsonl"
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run / "tb"))
            except ImportError:  # tensorboard is a dependency; a broken install only warns
                print("warning: tensorboard unavailable; metrics go to metrics.jsonl only")

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "time"):
                    self.tb.add_scalar(k, v, record["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """Records of ``run/metrics.jsonl`` (a torn last line, from a kill, is ignored)."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} does not exist: is {run} a latentae training run?")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


@torch.no_grad()
def reconstruct(model, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Deterministic reconstructions (posterior mode) ``(N, 3, H, W)``, float32, CPU."""
    out = []
    for x in images.split(batch_size):
        recon, _ = model(x.to(next(model.parameters()).device), sample=False)
        out.append(recon.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def evaluate(model, images: torch.Tensor, lpips=None) -> tuple[dict[str, float], torch.Tensor]:
    """PSNR / SSIM (uint8 protocol of DESIGN.md) and LPIPS of ``model`` on ``images``
    ``(N, 3, H, W)`` in [-1, 1]; returns the metrics and the reconstructions."""
    from latentae.eval.psnr_ssim import mean_finite, psnr_per_image, ssim_per_image
    recon = reconstruct(model, images)
    a, b = to_uint8(images), to_uint8(recon)
    metrics = {"psnr": mean_finite(psnr_per_image(a, b)),
               "ssim": mean_finite(ssim_per_image(a, b))}
    if lpips is not None:
        dev = next(lpips.parameters()).device
        total = sum(float(lpips(x.to(dev), y.to(dev))) * len(x) for x, y in
                    zip(images.split(8), (b.float() / 127.5 - 1).split(8)))
        metrics["lpips"] = total / len(images)
    return metrics, recon


def save_grid(images: torch.Tensor, recon: torch.Tensor, path: Path, n: int = 8) -> None:
    """Two rows per group: originals above their reconstructions."""
    rows = []
    for i in range(0, min(n, len(images)), 4):
        rows += [list(images[i:i + 4]), list(recon[i:i + 4].clamp(-1, 1))]
    save_image(image_grid(rows), path)

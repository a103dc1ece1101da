"""Learned down/up-sampling of the SD-VAE encoder and decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Downsample(nn.Module):
    """Strided conv3 with asymmetric (0, 1, 0, 1) padding, as SD-VAE/LDM.
    ``(B, C, H, W) -> (B, C, H/2, W/2)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest ×2 then conv3. ``(B, C, H, W) -> (B, C, 2H, 2W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

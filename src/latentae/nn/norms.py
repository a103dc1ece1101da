"""Normalization layers shared by every family."""

from __future__ import annotations

import torch
from torch import nn


def num_groups(channels: int) -> int:
    """GroupNorm groups: 32, or 8 where the width is not a multiple of 32.

    This is the rule that reproduces LiteVAE's published encoder parameter counts
    (LiteVAE Table 23/24 widths 16, 48, 96 are not multiples of 32).
    """
    return 32 if channels % 32 == 0 else 8


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with the house group rule and the SD-VAE epsilon (1e-6)."""
    return nn.GroupNorm(num_groups(channels), channels, eps=eps, affine=True)


class RMSNorm2d(nn.Module):
    """RMSNorm over the channels of a ``(B, C, H, W)`` tensor, with affine weight and bias.

    ``y = x / sqrt(mean_c(x²) + eps) · weight + bias`` at every pixel (DC-AE's ``RMSNorm2d``;
    diffusers applies its ``RMSNorm(bias=True)`` to ``x.movedim(1, -1)``, the same numbers).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(dim=1, keepdim=True)  # (B, 1, H, W)
        x = (x * torch.rsqrt(variance + self.eps)).to(self.weight.dtype)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def make_norm(kind: str, channels: int) -> nn.Module:
    """A normalization by DC-AE's name: ``"rms_norm"`` (:class:`RMSNorm2d` over channels)
    or ``"batch_norm"`` (``BatchNorm2d``), both eps 1e-5 (diffusers ``AutoencoderDC``)."""
    if kind == "rms_norm":
        return RMSNorm2d(channels, eps=1e-5)
    if kind == "batch_norm":
        return nn.BatchNorm2d(channels, eps=1e-5)
    raise ValueError(f"norm must be 'rms_norm' or 'batch_norm', got {kind!r}")

"""Normalization layers shared by every family."""

from __future__ import annotations

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

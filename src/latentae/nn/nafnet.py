"""NAFNet blocks (Chen et al. 2022), LiteVAE's alternative feature extractor (App. D.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` tensor, with affine."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    """NAFNet's activation: split channels in two halves and multiply them."""
    a, b = x.chunk(2, dim=1)
    return a * b


class NAFBlock(nn.Module):
    """Nonlinear-activation-free block: LN, 1×1 (×2), depthwise 3×3, SimpleGate,
    simplified channel attention, 1×1; then a gated 1×1 FFN. Residual scales ``beta`` and
    ``gamma`` start at 0, so a fresh block is the identity. ``(B, C, H, W)`` preserved."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c2 = 2 * channels
        self.norm1, self.norm2 = LayerNorm2d(channels), LayerNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, c2, 1)
        self.dwconv = nn.Conv2d(c2, c2, 3, padding=1, groups=c2)
        self.sca = nn.Conv2d(channels, channels, 1)  # after global average pooling
        self.conv2 = nn.Conv2d(channels, channels, 1)
        self.ffn1 = nn.Conv2d(channels, c2, 1)
        self.ffn2 = nn.Conv2d(channels, channels, 1)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = simple_gate(self.dwconv(self.conv1(self.norm1(x))))  # (B, C, H, W)
        h = h * self.sca(F.adaptive_avg_pool2d(h, 1))
        y = x + self.conv2(h) * self.beta
        return y + self.ffn2(simple_gate(self.ffn1(self.norm2(y)))) * self.gamma


class NAFNet(nn.Module):
    """Resolution-preserving NAFNet: conv3 in, ``depth`` NAFBlocks, conv3 out.
    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, channels: int, depth: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(NAFBlock(channels) for _ in range(depth)))
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.blocks(self.conv_in(x)))

"""Single-head spatial self-attention of the SD-VAE mid block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentae.nn.norms import group_norm


class SpatialSelfAttention(nn.Module):
    """GroupNorm, one-head attention over the H·W positions, residual.

    Linear q/k/v/out projections (diffusers ``Attention`` layout, so weights map 1:1).
    ``(B, C, H, W) -> (B, C, H, W)``; uses PyTorch SDPA.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = (f(t).unsqueeze(1) for f in (self.to_q, self.to_k, self.to_v))  # (B,1,HW,C)
        o = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # (B, HW, C)
        o = self.to_out(o).transpose(1, 2).reshape(b, c, h, w)
        return x + o

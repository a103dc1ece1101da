"""A plain ViT over feature-map positions: LiteVAE's alternative aggregator (App. D.5).

Each position of the ``(B, C, h, w)`` map is a token (a linear embedding of its C
features). Learned position embeddings are defined on a ``grid × grid`` lattice and
resized bicubically for other sizes: the paper notes the ViT aggregator makes the
encoder resolution-dependent, which this exposes. Pre-norm transformer blocks, a final
LayerNorm, then the tokens go back to a map and a 3×3 conv gives the outputs, as the
UNet aggregator's output conv does. The paper gives only the parameter count
(Table 20: 0.84M); the widths that reach it are ``LiteVAEConfig``'s ``vit_*`` defaults.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TransformerBlock(nn.Module):
    """Pre-norm multi-head self-attention + GELU MLP (×4). ``(B, N, D)`` preserved."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"ViT width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, D/heads)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(o)
        return x + self.mlp(self.norm2(x))


class ViTAggregator(nn.Module):
    """``(B, in_channels, h, w) -> (B, out_channels, h, w)`` through ``depth`` blocks."""

    def __init__(self, in_channels: int, out_channels: int, dim: int, depth: int,
                 heads: int, grid: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_channels, dim)
        self.pos = nn.Parameter(torch.randn(1, dim, grid, grid) * 0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Conv2d(dim, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        pos = self.pos
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
        t = self.embed(x.flatten(2).transpose(1, 2)) + pos.flatten(2).transpose(1, 2)
        t = self.norm(self.blocks(t))  # (B, hw, dim)
        return self.out(t.transpose(1, 2).reshape(b, -1, h, w))  # (B, out, h, w)

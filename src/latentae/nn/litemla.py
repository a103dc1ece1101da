"""EfficientViT block of DC-AE's low-resolution stages: LiteMLA + GLU MBConv.

LiteMLA (EfficientViT, Cai et al. 2023) is multi-head ReLU *linear* attention over the
H·W positions with head dimension 32, optionally with multi-scale tokens: a depthwise
k×k conv + grouped 1×1 conv applied to q, k, v makes extra heads that see a k×k
neighbourhood. The block is ``x + norm(LiteMLA(x))`` then ``x + norm(GLU-MBConv(x))``.
Numbers agree with diffusers ``SanaMultiscaleLinearAttention`` / ``GLUMBConv``; weights
map 1:1 (see ``latentae.convert.dc``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentae.nn.norms import RMSNorm2d, make_norm


class MultiScaleAggregation(nn.Module):
    """Depthwise k×k conv then a 1×1 conv grouped per head and per q/k/v.
    ``(B, 3D, H, W) -> (B, 3D, H, W)`` with ``D = heads · head_dim``."""

    def __init__(self, channels: int, heads: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
                                   groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, groups=3 * heads, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class LiteMLA(nn.Module):
    """Residual multi-scale ReLU linear attention. ``(B, C, H, W) -> (B, C, H, W)``.

    The qkv 1×1 conv output is read as heads of ``3·head_dim`` consecutive channels
    (q, k, v of one head side by side), as in EfficientViT. Where ``H·W <= head_dim`` the
    same ReLU attention is evaluated in its quadratic form (cheaper at tiny maps).
    """

    def __init__(self, channels: int, head_dim: int = 32, norm: str = "rms_norm",
                 scales: tuple[int, ...] = (), eps: float = 1e-15) -> None:
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"LiteMLA width {channels} must be a multiple of the head "
                             f"dimension {head_dim}")
        heads = channels // head_dim
        self.head_dim, self.eps = head_dim, eps
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.aggreg = nn.ModuleList(MultiScaleAggregation(3 * channels, heads, k) for k in scales)
        self.proj = nn.Conv2d(channels * (1 + len(scales)), channels, 1, bias=False)
        self.norm = make_norm(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        qkv = self.qkv(x)  # (B, 3C, H, W)
        qkv = torch.cat([qkv, *(agg(qkv) for agg in self.aggreg)], dim=1)  # (B, 3C·S, H, W)
        qkv = qkv.reshape(b, -1, 3 * self.head_dim, h * w)  # (B, heads·S, 3d, HW)
        if h * w > self.head_dim:
            qkv = qkv.float()  # the linear form divides by sums over HW: float32
        q, k, v = qkv.chunk(3, dim=2)  # each (B, N, d, HW)
        q, k = F.relu(q), F.relu(k)
        out = self._linear(q, k, v) if h * w > self.head_dim else self._quadratic(q, k, v)
        out = out.to(x.dtype).reshape(b, -1, h, w)  # (B, C·S, H, W)
        return x + self.norm(self.proj(out))

    def _linear(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``(v kᵀ) q / (1ᵀ kᵀ q)`` in O(HW·d²): a row of ones appended to v gives the
        normalizer in the same matmul."""
        v = F.pad(v, (0, 0, 0, 1), value=1.0)  # (B, N, d+1, HW)
        out = (v @ k.transpose(-1, -2)) @ q  # (B, N, d+1, HW)
        return out[:, :, :-1] / (out[:, :, -1:] + self.eps)

    def _quadratic(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The same attention as an explicit (HW × HW) map, normalized over keys."""
        scores = (k.transpose(-1, -2) @ q).float()  # (B, N, HW_k, HW_q)
        scores = scores / (scores.sum(dim=2, keepdim=True) + self.eps)
        return v @ scores.to(v.dtype)  # (B, N, d, HW)


class GLUMBConv(nn.Module):
    """Gated inverted bottleneck: 1×1 to 2·4C, SiLU, depthwise 3×3, ``a · silu(gate)``,
    1×1 back to C, RMSNorm, residual. ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, expand_ratio: int = 4) -> None:
        super().__init__()
        hidden = expand_ratio * channels
        self.inverted = nn.Conv2d(channels, 2 * hidden, 1)
        self.depthwise = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.point = nn.Conv2d(hidden, channels, 1, bias=False)
        self.norm = RMSNorm2d(channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(F.silu(self.inverted(x)))  # (B, 8C, H, W)
        h, gate = h.chunk(2, dim=1)  # each (B, 4C, H, W)
        return x + self.norm(self.point(h * F.silu(gate)))


class EfficientViTBlock(nn.Module):
    """LiteMLA (global context) then GLU MBConv (local). ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, head_dim: int = 32, norm: str = "rms_norm",
                 scales: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.attn = LiteMLA(channels, head_dim, norm, scales)
        self.mbconv = GLUMBConv(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mbconv(self.attn(x))

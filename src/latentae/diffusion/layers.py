"""Pieces shared by DiT and U-ViT: sinusoidal timestep and 2-D sin-cos position
embeddings, patch embedding and its inverse, the class-label embedder with a null class,
multi-head self-attention and the transformer MLP.

Module and parameter names follow the releases (``proj``, ``qkv``, ``fc1``, ``fc2``,
``embedding_table``) so that their checkpoints map onto ours key for key.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from latentae.errors import InputError


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """``(B,)`` timesteps (any real values, DiT convention 0…999) -> ``(B, dim)`` float32.

    The GLIDE/ADM embedding both releases use: frequencies ``max_period^(-i/half)`` for
    ``i < half``, the cosines first, then the sines (a zero column pads an odd ``dim``).
    Note: diffusers' ``DiTTransformer2DModel`` divides by ``half - 1`` instead
    (``downscale_freq_shift=1``), so its stock embedding differs from the DiT release.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``(M,)`` float64 positions -> ``(M, dim)``: sines then cosines of ``pos·ω_k``,
    ``ω_k = 10000^(-k/(dim/2))`` (MAE's ``get_1d_sincos_pos_embed_from_grid``)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device)
                            / (dim / 2))
    out = pos[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding of a ``grid_size²`` token grid, ``(G², dim)``
    float32, tokens in row-major order (DiT §3.1, from MAE). As in the releases, the first
    half of the channels encodes the column and the second half the row."""
    if dim % 4:
        raise InputError(f"a 2-D sin-cos position embedding needs a width divisible by 4; "
                         f"got {dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (G, G) each
    emb = torch.cat([_sincos_1d(dim // 2, cols.reshape(-1)),
                     _sincos_1d(dim // 2, rows.reshape(-1))], dim=1)
    return emb.float()


class PatchEmbed(nn.Module):
    """``(B, C, H, W) -> (B, (H/p)·(W/p), D)``: a stride-p convolution, tokens row-major."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, T, D)


def unpatchify(x: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """``(B, h·w, p·p·C)`` token outputs (square grid, features ordered (p, q, C)) ->
    ``(B, C, h·p, w·p)`` — the inverse of the patch layout both releases use."""
    b, n, _ = x.shape
    g = math.isqrt(n)
    x = x.reshape(b, g, g, patch_size, patch_size, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, channels, g * patch_size, g * patch_size)


class LabelEmbedder(nn.Module):
    """Class labels ``(B,)`` -> ``(B, D)``. Row ``num_classes`` is the null class that
    classifier-free guidance uses for the unconditional branch (Ho & Salimans 2022); in
    training mode each label is replaced by it with probability ``dropout_prob``, as the
    DiT and DC-AE releases do inside the forward. ``null_class=False``: ``num_classes``
    rows only (the releases' table when trained without label dropout), no dropout."""

    def __init__(self, num_classes: int, dim: int, dropout_prob: float,
                 null_class: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob if null_class else 0.0
        self.embedding_table = nn.Embedding(num_classes + int(null_class), dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.dropout_prob
            labels = torch.where(drop, self.num_classes, labels)
        return self.embedding_table(labels)


class Attention(nn.Module):
    """Multi-head self-attention ``(B, N, D) -> (B, N, D)``; ``qkv`` packs q, k, v (each
    all heads) along its output, as timm's ``Attention`` the releases use."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise InputError(f"width {dim} is not divisible by {num_heads} attention heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, D/heads)
        o = F.scaled_dot_product_attention(q, k, v)  # softmax(q·kᵀ/√(D/heads))·v
        return self.proj(o.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """``fc1 -> act -> fc2``, ``(B, N, D) -> (B, N, D)`` with ``hidden`` inner units."""

    def __init__(self, dim: int, hidden: int, act: nn.Module) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

"""U-ViT (Bao et al. 2023, "All are Worth Words: A ViT Backbone for Diffusion Models"),
as in the U-ViT release (thu-ml/U-ViT ``libs/uvit.py``) and the DC-AE diffusion release
(mit-han-lab/efficientvit ``diffusioncore/models/uvit.py``).

Everything is a token (§3): the time (its sinusoidal embedding at full width, optionally
through an MLP), the class label (an embedding with a null class), and the patches; a
learned position embedding covers them all. ``depth // 2`` in-blocks, one mid block and
``depth // 2`` out-blocks; each out-block first fuses a long skip from its mirror
in-block with a linear on the concatenation (``skip_linear``, §3.1). Then a LayerNorm, a
linear to patch pixels, unpatchify and, optionally, a 3×3 convolution (the U-ViT
release's ``conv=True``; the DC-AE release drops it). So the release's "depth 28" has
29 blocks. Module names equal the DC-AE release's. Presets (DC-AE's sizes) at the bottom.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from latentae.diffusion.base import DiffusionModel
from latentae.diffusion.layers import (
    Attention,
    LabelEmbedder,
    Mlp,
    PatchEmbed,
    timestep_embedding,
    unpatchify,
)
from latentae.errors import InputError


@dataclasses.dataclass(frozen=True)
class UViTConfig:
    """UViT-H on DC-AE-f32c32 latents of 512² images, patch 1, by default (DC-AE)."""

    input_size: int = 16
    patch_size: int = 1
    in_channels: int = 32
    hidden_size: int = 1152
    depth: int = 28             # in-blocks + out-blocks (the mid block is extra)
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000     # 0: unconditional, no label token; null class = num_classes
    class_dropout_prob: float = 0.1
    learn_sigma: bool = False   # ours: 2·C outputs (the releases predict ε only)
    qkv_bias: bool = False
    mlp_time_embed: bool = False  # the releases' ImageNet models use the raw embedding
    final_conv: bool = False      # 3×3 conv after unpatchify (U-ViT release: True)
    null_class: bool = True       # label table ends with the null class (False: K rows)


class UViTBlock(nn.Module):
    """Pre-norm attention + GELU MLP; with ``skip`` it first maps ``[x, skip]`` back to
    width ``D`` (the long skip). ``(B, L, D)`` preserved."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                 skip: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), nn.GELU())
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))  # (B, L, 2D) -> (B, L, D)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViT(DiffusionModel):
    """``model(x, t, labels)``: ``(B, C, N, N)`` -> ``(B, C or 2C, N, N)`` (see
    :class:`~latentae.diffusion.base.DiffusionModel`)."""

    family = "uvit"

    def __init__(self, config: UViTConfig) -> None:
        super().__init__(config)
        c = config
        if c.depth < 2 or c.depth % 2:
            raise InputError(f"U-ViT depth counts in- plus out-blocks and must be even and "
                             f">= 2; got {c.depth}")
        d = c.hidden_size
        self.patch_embed = PatchEmbed(c.in_channels, d, c.patch_size)
        self.time_embed = (nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
                           if c.mlp_time_embed else nn.Identity())
        self.label_emb = (LabelEmbedder(c.num_classes, d, c.class_dropout_prob, c.null_class)
                          if c.num_classes > 0 else None)
        self.extras = 2 if self.label_emb is not None else 1  # label token, time token
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + self.tokens, d))

        def block(skip: bool = False) -> UViTBlock:
            return UViTBlock(d, c.num_heads, c.mlp_ratio, c.qkv_bias, skip=skip)

        self.in_blocks = nn.ModuleList(block() for _ in range(c.depth // 2))
        self.mid_block = block()
        self.out_blocks = nn.ModuleList(block(skip=True) for _ in range(c.depth // 2))
        self.norm = nn.LayerNorm(d)
        self.decoder_pred = nn.Linear(d, c.patch_size ** 2 * self.out_channels)
        self.final_layer = (nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)
                            if c.final_conv else nn.Identity())
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """The releases' init: truncated N(0, 0.02) for linears and the position
        embedding, zero biases, unit LayerNorms; convolutions and the label table keep
        PyTorch's defaults."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:  # qkv has none unless qkv_bias
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        t, labels = self.prepare_inputs(x, t, labels)
        h = self.patch_embed(x)                                          # (B, T, D)
        time = self.time_embed(timestep_embedding(t, self.config.hidden_size).to(h.dtype))
        tokens = [time[:, None], h]                                      # time token first
        if self.label_emb is not None:
            tokens.insert(0, self.label_emb(labels)[:, None])            # then label before it
        h = torch.cat(tokens, dim=1) + self.pos_embed                    # (B, extras + T, D)
        skips = []
        for blk in self.in_blocks:
            h = blk(h)
            skips.append(h)
        h = self.mid_block(h)
        for blk in self.out_blocks:
            h = blk(h, skips.pop())                                      # mirror in-block
        h = self.decoder_pred(self.norm(h))[:, self.extras:]             # (B, T, p²·out)
        return self.final_layer(unpatchify(h, self.config.patch_size, self.out_channels))


def flops(config: UViTConfig) -> int:
    """Analytic FLOPs of one forward of one sample (multiply-add = 2; matmuls and
    convolutions, as ``torch.utils.flop_counter`` counts). The blocks and the output
    linear see all ``L = extras + T`` tokens; attention is ``4·L²·D`` per block."""
    c = config
    d, t = c.hidden_size, (c.input_size // c.patch_size) ** 2
    length = t + (2 if c.num_classes > 0 else 1)
    hidden = int(d * c.mlp_ratio)
    out = c.in_channels * (2 if c.learn_sigma else 1)
    blocks = c.depth + 1
    matmul = (c.in_channels * c.patch_size ** 2 * d * t
              + length * (blocks * (4 * d * d + 2 * d * hidden)          # attention + MLP
                          + (c.depth // 2) * 2 * d * d                   # skip_linear
                          + d * c.patch_size ** 2 * out)                 # decoder_pred
              + (8 * d * d if c.mlp_time_embed else 0)
              + (out * out * 9 * c.input_size ** 2 if c.final_conv else 0))
    return 2 * matmul + 4 * length * length * d * blocks


# DC-AE's UViT sizes (the release's dc_ae_uvit_{s,h,2b}_in_512px; UViT-2B in the paper
# "depth 28, hidden dimension 2048, 32 heads"); depth counts in- plus out-blocks.
PRESETS: dict[str, dict] = {
    "uvit-s": {"depth": 12, "hidden_size": 512, "num_heads": 8},
    "uvit-h": {"depth": 28, "hidden_size": 1152, "num_heads": 16},
    "uvit-2b": {"depth": 28, "hidden_size": 2048, "num_heads": 32},
    # Ours, not the paper's: a CPU-sized U-ViT (dit-tiny's widths) for the DC-AE table 1
    # study (latentae.studies.dcae_table1) and smoke runs.
    "uvit-tiny": {"depth": 4, "hidden_size": 128, "num_heads": 4},
}

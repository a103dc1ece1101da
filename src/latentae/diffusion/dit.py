"""DiT: Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers"), as in the release's ``models.py`` (facebookresearch/DiT).

Patchify the latent (§3.1), add a fixed 2-D sin-cos position embedding, run ``depth``
adaLN-Zero blocks conditioned on ``c = timestep embedding + class embedding`` (one
embedder shared by all blocks), then an adaptive final layer and unpatchify. With learned
sigma the output has ``2·C`` channels: ε, then the values interpolating the variance
between β_t and β̃_t (Nichol & Dhariwal 2021). Module names equal the release's, so its
checkpoints load key for key. Presets (depth, width, heads of DiT-S/B/L/XL, table 1) at
the bottom.
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
    sincos_pos_embed_2d,
    timestep_embedding,
    unpatchify,
)

FREQUENCY_DIM = 256  # sinusoidal features fed to the timestep MLP (release default)


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """DiT-XL/2 on 256² images through an f8c4 autoencoder by default."""

    input_size: int = 32        # latent height = width
    patch_size: int = 2
    in_channels: int = 4        # latent channels of the autoencoder
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000     # the null class is index num_classes
    class_dropout_prob: float = 0.1  # label -> null during training (for guidance)
    learn_sigma: bool = True
    # The label table ends with the null class. False: trained without label dropout
    # (K rows, no guidance) or, with num_classes 0, no label embedder at all (DC-AE
    # table 4's unconditional DiTs, efficientvit ``unconditional=True``).
    null_class: bool = True


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x·(1 + scale) + shift`` with per-sample ``(B, D)`` shift and scale."""
    return x * (1 + scale[:, None]) + shift[:, None]


class TimestepEmbedder(nn.Module):
    """``(B,)`` timesteps -> ``(B, D)``: 256 sinusoidal features, then Linear-SiLU-Linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQUENCY_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = timestep_embedding(t, FREQUENCY_DIM)  # float32 (B, 256)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class DiTBlock(nn.Module):
    """Pre-norm attention + MLP, each modulated by (shift, scale) and gated by a
    per-channel gate regressed from ``c`` (adaLN-Zero, §3.2). ``(B, T, D)`` preserved."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), nn.GELU(approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
            self.adaLN_modulation(c).chunk(6, dim=1)  # each (B, D)
        x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a linear to ``p·p·out_channels`` per token."""

    def __init__(self, dim: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, T, p²·out)


class DiT(DiffusionModel):
    """``model(x, t, labels)``: ``(B, C, N, N)`` -> ``(B, 2C or C, N, N)`` (see
    :class:`~latentae.diffusion.base.DiffusionModel`)."""

    family = "dit"

    def __init__(self, config: DiTConfig) -> None:
        super().__init__(config)
        c = config
        self.x_embedder = PatchEmbed(c.in_channels, c.hidden_size, c.patch_size)
        self.t_embedder = TimestepEmbedder(c.hidden_size)
        self.y_embedder = (LabelEmbedder(c.num_classes, c.hidden_size, c.class_dropout_prob,
                                         c.null_class)
                           if c.num_classes or c.null_class else None)
        # Fixed, but an nn.Parameter (frozen) as in the release, so checkpoints and the
        # published parameter counts (675,129,632 for DiT-XL/2) match.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.tokens, c.hidden_size),
                                      requires_grad=False)
        self.blocks = nn.ModuleList(DiTBlock(c.hidden_size, c.num_heads, c.mlp_ratio)
                                    for _ in range(c.depth))
        self.final_layer = FinalLayer(c.hidden_size, c.patch_size, self.out_channels)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """The release's init: xavier-uniform linears (and patch conv, seen as a linear),
        N(0, 0.02) label table and timestep MLP, and zero for every adaLN modulation and
        the final linear — each block starts as the identity (adaLN-Zero, §3.2)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        grid = self.config.input_size // self.config.patch_size
        self.pos_embed.copy_(sincos_pos_embed_2d(self.config.hidden_size, grid)[None])
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)  # the release zeros it too
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for layer in [b.adaLN_modulation[-1] for b in self.blocks] + [
                self.final_layer.adaLN_modulation[-1], self.final_layer.linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        t, labels = self.prepare_inputs(x, t, labels)
        h = self.x_embedder(x) + self.pos_embed              # (B, T, D)
        c = self.t_embedder(t)                               # (B, D)
        if self.y_embedder is not None:
            c = c + self.y_embedder(labels)
        for block in self.blocks:
            h = block(h, c)                                  # (B, T, D)
        h = self.final_layer(h, c)                           # (B, T, p²·out)
        return unpatchify(h, self.config.patch_size, self.out_channels)  # (B, out, N, N)


def flops(config: DiTConfig) -> int:
    """Analytic FLOPs of one forward of one sample (multiply-add = 2), counting what
    ``torch.utils.flop_counter`` counts: matmuls and convolutions (biases, norms and
    elementwise ops excluded). Per token: patch embedding, qkv, proj, MLP, final linear;
    per sample: the timestep MLP and the adaLN regressions; attention ``4·T²·D`` per
    block (q·kᵀ and attn·v)."""
    c = config
    d, t = c.hidden_size, (c.input_size // c.patch_size) ** 2
    hidden = int(d * c.mlp_ratio)
    out = c.patch_size ** 2 * c.in_channels * (2 if c.learn_sigma else 1)
    per_token = c.in_channels * c.patch_size ** 2 * d + d * out + c.depth * (
        4 * d * d + 2 * d * hidden)
    per_sample = FREQUENCY_DIM * d + d * d + c.depth * 6 * d * d + 2 * d * d
    return 2 * (per_token * t + per_sample) + 4 * t * t * d * c.depth


# DiT-S/B/L/XL (Peebles & Xie 2023, table 1); the patch size is chosen per autoencoder.
PRESETS: dict[str, dict] = {
    "dit-s": {"depth": 12, "hidden_size": 384, "num_heads": 6},
    "dit-b": {"depth": 12, "hidden_size": 768, "num_heads": 12},
    "dit-l": {"depth": 24, "hidden_size": 1024, "num_heads": 16},
    "dit-xl": {"depth": 28, "hidden_size": 1152, "num_heads": 16},
    # Ours, not the paper's: a CPU-sized DiT for `latentae demo --diffusion` and smoke runs.
    "dit-tiny": {"depth": 4, "hidden_size": 128, "num_heads": 4},
}

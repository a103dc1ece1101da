"""SD-VAE: the KL autoencoder of Stable Diffusion (LDM, Rombach et al. 2022).

Structure of diffusers ``AutoencoderKL`` (weights convert 1:1, see ``convert.py``):
encoder = conv_in, one stage per width (``layers_per_block`` ResBlocks, strided-conv
downsample except the last), mid (ResBlock, attention, ResBlock), GroupNorm, SiLU,
conv_out to 2·nz moments, optional 1×1 ``quant_conv``; the decoder mirrors it with
``layers_per_block + 1`` ResBlocks per stage and nearest-neighbour upsampling.
The decoder is shared with LiteVAE, which may swap GroupNorm for SMC.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentae.models.autoencoder import Autoencoder
from latentae.models.distributions import DiagonalGaussian
from latentae.nn.attention import SpatialSelfAttention
from latentae.nn.norms import group_norm
from latentae.nn.resample import Downsample, Upsample
from latentae.nn.resblock import ResBlock
from latentae.nn.smc import SMC


@dataclass(frozen=True)
class SDVAEConfig:
    """SD-VAE hyper-parameters. ``encoder_channels`` may differ from ``decoder_channels``
    (the paper's "smaller VAE" baselines shrink only the encoder)."""

    encoder_channels: tuple[int, ...] = (128, 256, 512, 512)
    decoder_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    use_quant_conv: bool = True
    mid_attention: bool = True
    decoder_norm: str = "group"  # "group" or "smc"
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0


class MidBlock(nn.Module):
    """ResBlock, optional single-head attention, ResBlock (SD-VAE mid block)."""

    def __init__(self, channels: int, attention: bool = True, norm: str = "group") -> None:
        super().__init__()
        self.block1 = ResBlock(channels, channels, norm=norm)
        self.attn = SpatialSelfAttention(channels) if attention else nn.Identity()
        self.block2 = ResBlock(channels, channels, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.attn(self.block1(x)))


class Stage(nn.Module):
    """A run of ResBlocks at one resolution followed by an optional resampler."""

    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.resample = resample if resample is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.resample(x)


class Encoder(nn.Module):
    """``(B, 3, H, W) -> (B, 2·nz, H/f, W/f)`` moments, ``f = 2^(len(channels)-1)``."""

    def __init__(self, channels: tuple[int, ...], layers_per_block: int, latent_channels: int,
                 mid_attention: bool = True, in_channels: int = 3) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        stages, ch = [], channels[0]
        for i, width in enumerate(channels):
            blocks = [ResBlock(ch if j == 0 else width, width) for j in range(layers_per_block)]
            last = i == len(channels) - 1
            stages.append(Stage(blocks, None if last else Downsample(width)))
            ch = width
        self.down = nn.ModuleList(stages)
        self.mid = MidBlock(ch, mid_attention)
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, 2 * latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for stage in self.down:
            x = stage(x)
        x = self.mid(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    """``(B, nz, h, w) -> (B, out_channels, h·2^u, w·2^u)`` with ``u = len(channels) - 1``
    upsamplings, or one fewer when ``final_upsample=False`` (LiteVAE wavelet output).

    ``norm="smc"`` replaces every GroupNorm + conv of the ResBlocks and the output head
    by self-modulated convolutions (LiteVAE §4.2); the attention keeps its GroupNorm.
    """

    def __init__(self, channels: tuple[int, ...], layers_per_block: int, latent_channels: int,
                 mid_attention: bool = True, norm: str = "group", out_channels: int = 3,
                 final_upsample: bool = True) -> None:
        super().__init__()
        rev = tuple(reversed(channels))
        self.conv_in = nn.Conv2d(latent_channels, rev[0], 3, padding=1)
        self.mid = MidBlock(rev[0], mid_attention, norm=norm)
        stages, ch = [], rev[0]
        for i, width in enumerate(rev):
            blocks = [ResBlock(ch if j == 0 else width, width, norm=norm)
                      for j in range(layers_per_block + 1)]
            up = i < len(rev) - 1 and (final_upsample or i < len(rev) - 2)
            stages.append(Stage(blocks, Upsample(width) if up else None))
            ch = width
        self.up = nn.ModuleList(stages)
        if norm == "smc":
            self.norm_out, self.conv_out = nn.Identity(), SMC(ch, out_channels)
        else:
            self.norm_out = group_norm(ch)
            self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for stage in self.up:
            x = stage(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class SDVAE(Autoencoder):
    """The SD-VAE (KL-f8 for four widths) with a Gaussian posterior."""

    family = "sdvae"

    def __init__(self, config: SDVAEConfig) -> None:
        super().__init__(config)
        if config.decoder_norm not in ("group", "smc"):
            raise ValueError(f"decoder_norm must be 'group' or 'smc', got {config.decoder_norm!r}")
        if len(config.encoder_channels) != len(config.decoder_channels):
            raise ValueError("encoder_channels and decoder_channels need the same length "
                             "(one stage per resolution)")
        nz = config.latent_channels
        self.encoder = Encoder(config.encoder_channels, config.layers_per_block, nz,
                               config.mid_attention)
        self.decoder = Decoder(config.decoder_channels, config.layers_per_block, nz,
                               config.mid_attention, norm=config.decoder_norm)
        # Optional 1×1 convs on the moments / latents (LDM); diffusers calls them
        # quant_conv / post_quant_conv.
        q = config.use_quant_conv
        self.quant_conv = nn.Conv2d(2 * nz, 2 * nz, 1) if q else nn.Identity()
        self.post_quant_conv = nn.Conv2d(nz, nz, 1) if q else nn.Identity()

    @property
    def spatial_compression_ratio(self) -> int:
        return 2 ** (len(self.config.encoder_channels) - 1)

    def _encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))  # (B, 2nz, H/f, W/f)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def last_layer(self) -> nn.Parameter:
        """The decoder's output conv (or SMC) weight."""
        return self.decoder.conv_out.weight

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = super().param_groups()
        groups["encoder"] += list(self.quant_conv.parameters())
        groups["decoder"] += list(self.post_quant_conv.parameters())
        groups["decoder.head"] = [*self.decoder.norm_out.parameters(),
                                  *self.decoder.conv_out.parameters()]
        return groups


SD = (128, 256, 512, 512)
PRESETS: dict[str, SDVAEConfig] = {
    # The SD 1.x / 2.x / SDXL VAE structure (SDXL uses scaling_factor 0.13025).
    "sdvae-f8": SDVAEConfig(),
    # The LiteVAE paper's "smaller VAE" baselines: the SD decoder with an encoder shrunk
    # to about LiteVAE-S (1.04M) and LiteVAE-B (6.75M) encoder parameters.
    "sdvae-f8-enc-s": SDVAEConfig(encoder_channels=(24, 48, 88, 88)),
    "sdvae-f8-enc-b": SDVAEConfig(encoder_channels=(64, 128, 224, 224)),
    # DC-AE paper baselines: the SD-VAE structure with extra stages (f32, f64).
    "sdvae-f32": SDVAEConfig(encoder_channels=SD + (512, 512), decoder_channels=SD + (512, 512),
                             latent_channels=32),
    "sdvae-f64": SDVAEConfig(encoder_channels=SD + (512, 512, 512),
                             decoder_channels=SD + (512, 512, 512), latent_channels=128),
    # Tiny structure for tests and CPU demos.
    "sdvae-tiny": SDVAEConfig(encoder_channels=(32, 32, 64, 64), decoder_channels=(32, 32, 64, 64),
                              layers_per_block=1),
}

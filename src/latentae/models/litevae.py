"""LiteVAE (Sadat et al. 2024): a wavelet encoder in front of the SD-VAE decoder.

Encoder (§4.1, App. F/G): a 3-level Haar DWT gives 12-channel bands at H/2, H/4, H/8
(level l divided by 2^l); one resolution-preserving UNet per level extracts 12-channel
features; level-1 features are average-pooled ×4 and level-2 ×2 to H/8; the 36
concatenated channels go through an aggregation UNet to 2·nz moments of a diagonal
Gaussian. No 1×1 quant convs (App. D: rFID 2.04 -> 0.87 without them).
Decoder: the SD-VAE decoder, with GroupNorm or self-modulated convolutions (§4.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentae.models.autoencoder import Autoencoder
from latentae.models.distributions import DiagonalGaussian
from latentae.models.sdvae import Decoder
from latentae.nn.nafnet import NAFNet
from latentae.nn.unet import ResolutionPreservingUNet
from latentae.nn.vit import ViTAggregator
from latentae.nn.wavelets import dwt2, haar_dwt, idwt2

LEVELS = 3  # three Haar levels give the SD-VAE's 8× downsampling (§4.1)


@dataclass(frozen=True)
class LiteVAEConfig:
    """LiteVAE hyper-parameters (Tables 23–24 for the S/B/M/L widths)."""

    extractor_channels: int = 32
    extractor_mult: tuple[int, ...] = (1, 2, 3)
    aggregator_channels: int = 32
    aggregator_mult: tuple[int, ...] = (1, 2, 3)
    num_res_blocks: int = 2
    latent_channels: int = 4
    shared_extractor: bool = False  # one UNet for all three levels (App. D.4)
    extractor: str = "unet"  # "unet", or "nafnet" (App. D.3: 2·len(mult) NAFBlocks)
    aggregator: str = "unet"  # "unet", or "vit" (App. D.5; resolution-dependent)
    # ViT aggregator (App. D.5): 0.84M parameters at litevae-b/-m widths and nz=4, as
    # Table 20 (vs 1.69M for their UNet aggregator). The paper states only the count;
    # width 128, depth 4 and a conv3 output head are ours and reach it (840,072).
    vit_dim: int = 128
    vit_depth: int = 4
    vit_heads: int = 2  # head dimension 64
    vit_grid: int = 16  # position lattice: the latent size at 128², the ablations' size (§6)
    decoder_channels: tuple[int, ...] = (128, 256, 512, 512)
    decoder_layers_per_block: int = 2
    decoder_norm: str = "group"  # "group" or "smc" (§4.2)
    output: str = "image"  # "image", or "wavelet": decoder predicts level-1 Haar bands
    scaling_factor: float = 1.0
    shift_factor: float = 0.0


class LiteVAEEncoder(nn.Module):
    """``(B, 3, H, W) -> (B, 2·nz, H/8, W/8)`` moments."""

    def __init__(self, config: LiteVAEConfig) -> None:
        super().__init__()
        c = config

        def extractor() -> nn.Module:
            if c.extractor == "nafnet":
                return NAFNet(12, 12, c.extractor_channels, 2 * len(c.extractor_mult))
            return ResolutionPreservingUNet(12, 12, c.extractor_channels, c.extractor_mult,
                                            c.num_res_blocks)

        n = 1 if c.shared_extractor else LEVELS
        self.extractors = nn.ModuleList(extractor() for _ in range(n))
        moments = 2 * c.latent_channels
        if c.aggregator == "vit":
            self.aggregator = ViTAggregator(12 * LEVELS, moments, c.vit_dim, c.vit_depth,
                                            c.vit_heads, c.vit_grid)
        else:
            self.aggregator = ResolutionPreservingUNet(12 * LEVELS, moments,
                                                       c.aggregator_channels,
                                                       c.aggregator_mult, c.num_res_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = haar_dwt(x, LEVELS)  # level l: (B, 12, H/2^l, W/2^l)
        feats = []
        for lvl, band in enumerate(bands, start=1):
            net = self.extractors[0 if len(self.extractors) == 1 else lvl - 1]
            f = net(band / 2**lvl)  # level l scaled by 1/2^l (App. G)
            pool = 2 ** (LEVELS - lvl)  # ×4, ×2, ×1 down to H/8
            feats.append(F.avg_pool2d(f, pool) if pool > 1 else f)
        return self.aggregator(torch.cat(feats, dim=1))  # (B, 36, H/8, W/8) -> moments


class LiteVAE(Autoencoder):
    """LiteVAE with a Gaussian posterior and an SD-VAE decoder."""

    family = "litevae"

    def __init__(self, config: LiteVAEConfig) -> None:
        super().__init__(config)
        for field, valid in (("extractor", ("unet", "nafnet")), ("aggregator", ("unet", "vit"))):
            if getattr(config, field) not in valid:
                raise ValueError(f"{field} must be one of {valid}, got {getattr(config, field)!r}")
        if config.output not in ("image", "wavelet"):
            raise ValueError(f"output must be 'image' or 'wavelet', got {config.output!r}")
        if config.decoder_norm not in ("group", "smc"):
            raise ValueError(f"decoder_norm must be 'group' or 'smc', got {config.decoder_norm!r}")
        if len(config.decoder_channels) != LEVELS + 1:
            raise ValueError(f"decoder_channels needs {LEVELS + 1} widths (8× upsampling), "
                             f"got {config.decoder_channels}")
        self.encoder = LiteVAEEncoder(config)
        wavelet = config.output == "wavelet"
        # Wavelet output: the decoder stops at H/2 and predicts the 12 level-1 bands
        # (scaled by 1/2 as the encoder's input); the inverse DWT gives the image.
        self.decoder = Decoder(config.decoder_channels, config.decoder_layers_per_block,
                               config.latent_channels, norm=config.decoder_norm,
                               out_channels=12 if wavelet else 3, final_upsample=not wavelet)

    @property
    def spatial_compression_ratio(self) -> int:
        return 2**LEVELS

    def _encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.encoder(x))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        if self.config.output == "wavelet":
            return idwt2(out * 2)  # (B, 12, H/2, W/2) level-1 bands / 2 -> (B, 3, H, W)
        return out

    def decode_wavelet(self, z: torch.Tensor) -> torch.Tensor:
        """Level-1 Haar bands of the reconstruction, divided by 2: ``(B, 12, H/2, W/2)``."""
        if self.config.output == "wavelet":
            return self.decoder(z)
        return dwt2(self.decode(z)) / 2

    def last_layer(self) -> nn.Parameter:
        """The decoder's output conv (or SMC) weight: 3 image channels, or the 12
        level-1 Haar bands of a wavelet-output decoder (the inverse DWT has no weights)."""
        return self.decoder.conv_out.weight

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = super().param_groups()
        groups["decoder.head"] = [*self.decoder.norm_out.parameters(),
                                  *self.decoder.conv_out.parameters()]
        return groups


def _preset(ec: int, em: tuple, ac: int, am: tuple, **kw) -> LiteVAEConfig:
    return LiteVAEConfig(extractor_channels=ec, extractor_mult=em, aggregator_channels=ac,
                         aggregator_mult=am, **kw)


_SIZES = {  # Tables 23 and 24
    "s": (16, (1, 2, 2), 16, (1, 2, 2)),
    "b": (32, (1, 2, 3), 32, (1, 2, 3)),
    "m": (64, (1, 2, 4), 32, (1, 2, 3)),
    "l": (64, (1, 2, 4), 64, (1, 2, 4)),
}
PRESETS: dict[str, LiteVAEConfig] = {}
for _k, _v in _SIZES.items():
    PRESETS[f"litevae-{_k}"] = _preset(*_v)
    PRESETS[f"litevae-{_k}-smc"] = _preset(*_v, decoder_norm="smc")
# Tiny structure for tests and CPU demos (about 0.4M encoder, 1.6M decoder parameters).
PRESETS["litevae-tiny"] = _preset(8, (1, 2), 8, (1, 2), num_res_blocks=1,
                                  decoder_channels=(32, 32, 64, 64),
                                  decoder_layers_per_block=1)

"""DC-AE: Deep Compression Autoencoder (Chen et al. 2025, arXiv:2410.10733).

A plain (deterministic) autoencoder with spatial compression 32, 64 or 128. Every
down-sampling stage learns a residual over a space-to-channel shortcut and every
up-sampling stage over a channel-to-space shortcut (residual autoencoding, §3.2);
ResBlocks run the high-resolution stages, EfficientViT blocks (ReLU linear attention +
GLU MBConv) the low-resolution ones. Structure and numbers agree with diffusers
``AutoencoderDC``; ``latentae.convert.dc`` maps the weights both ways.

Module layout (DC-AE's own names)::

    encoder.project_in   conv3 (stage 0 non-empty) or down-sampling conv (stage 0 empty)
    encoder.stages[i]    depth[i] blocks at widths[i], then ×2 down-sampling to widths[i+1]
    encoder.project_out  conv3 to latent_channels (+ channel-averaging shortcut)
    decoder.project_in   conv3 from latent_channels (+ channel-duplicating shortcut)
    decoder.stages[i]    ×2 up-sampling from widths[i+1], then depth[i] blocks at widths[i];
                         run from the deepest stage (i = n-1) to stage 0
    decoder.head         RMSNorm2d, ReLU, conv3 to RGB (or up-sampling conv if stage 0 empty)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from latentae.models.autoencoder import Autoencoder
from latentae.models.distributions import DeterministicPosterior
from latentae.nn.activations import make_act
from latentae.nn.dcae_blocks import DCResBlock, ResidualDownsample, ResidualUpsample
from latentae.nn.litemla import EfficientViTBlock
from latentae.nn.norms import RMSNorm2d
from latentae.nn.shortcuts import average_channel_groups, duplicate_channels

RES, VIT = "ResBlock", "EfficientViTBlock"
BLOCK_TYPES = (RES, VIT)
HEAD_DEPTHS = (1, 2, 3)  # K of the encoder.head.K / decoder.input.K / decoder.head.K groups


@dataclass(frozen=True)
class DCAEConfig:
    """DC-AE hyper-parameters; one entry per stage (resolution) in every per-stage tuple.

    Defaults are ``dc-ae-f32c32-in-1.0``. Field vocabulary follows diffusers
    ``AutoencoderDC``: block types ``"ResBlock"``/``"EfficientViTBlock"``, norms
    ``"batch_norm"``/``"rms_norm"``, acts ``"relu"``/``"silu"``. The encoder always uses
    RMSNorm + SiLU. ``stage_shortcuts``, ``encoder_out_shortcut`` and
    ``decoder_in_shortcut`` switch off the residual-autoencoding shortcuts (the paper's
    ablation, Table 6); diffusers can only hold models with all three on.
    """

    latent_channels: int = 32
    encoder_widths: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    decoder_widths: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    encoder_depths: tuple[int, ...] = (0, 4, 8, 2, 2, 2)
    decoder_depths: tuple[int, ...] = (0, 5, 10, 2, 2, 2)
    encoder_block_types: tuple[str, ...] = (RES,) * 3 + (VIT,) * 3
    decoder_block_types: tuple[str, ...] = (RES,) * 3 + (VIT,) * 3
    encoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((),) * 6
    decoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((),) * 6
    decoder_norms: tuple[str, ...] = ("batch_norm",) * 3 + ("rms_norm",) * 3
    decoder_acts: tuple[str, ...] = ("relu",) * 3 + ("silu",) * 3
    decoder_head_act: str = "relu"
    attention_head_dim: int = 32
    downsample: str = "pixel_unshuffle"  # or "conv" (stride 2)
    upsample: str = "pixel_shuffle"  # or "interpolate" (nearest, then conv)
    stage_shortcuts: bool = True
    encoder_out_shortcut: bool = True
    decoder_in_shortcut: bool = True
    scaling_factor: float = 1.0
    shift_factor: float = 0.0


def check_config(c: DCAEConfig) -> None:
    """Raise ``ValueError`` naming the field for an inconsistent config."""
    n = len(c.encoder_widths)
    for side in ("encoder", "decoder"):
        per_stage = {f: getattr(c, f"{side}_{f}") for f in
                     ("widths", "depths", "block_types", "qkv_multiscales")}
        if side == "decoder":
            per_stage |= {"norms": c.decoder_norms, "acts": c.decoder_acts}
        bad = {k: len(v) for k, v in per_stage.items() if len(v) != n}
        if bad:
            raise ValueError(f"DCAEConfig: every per-stage tuple needs {n} entries (one per "
                             f"encoder width); {side} has lengths {bad}")
        if any(d <= 0 for d in per_stage["depths"][1:]):
            raise ValueError(f"DCAEConfig.{side}_depths: only stage 0 may be empty, got "
                             f"{per_stage['depths']}")
        wrong = sorted(set(per_stage["block_types"]) - set(BLOCK_TYPES))
        if wrong:
            raise ValueError(f"DCAEConfig.{side}_block_types: unknown {wrong}; "
                             f"valid: {list(BLOCK_TYPES)}")
    if n < 2:
        raise ValueError("DCAEConfig needs at least two stages (one ×2 down-sampling)")


def make_block(kind: str, width: int, norm: str, act: str, head_dim: int,
               scales: tuple[int, ...]) -> nn.Module:
    """One stage block: a DC-AE ResBlock or an EfficientViT block (which ignores ``act``)."""
    if kind == RES:
        return DCResBlock(width, norm, act)
    return EfficientViTBlock(width, head_dim, norm, tuple(scales))


class Stage(nn.Module):
    """Optional up-sampling, a run of blocks at one width, optional down-sampling."""

    def __init__(self, blocks: list[nn.Module], up: nn.Module | None = None,
                 down: nn.Module | None = None) -> None:
        super().__init__()
        self.up = up
        self.blocks = nn.ModuleList(blocks)
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up is not None:
            x = self.up(x)
        for block in self.blocks:
            x = block(x)
        return self.down(x) if self.down is not None else x


class Encoder(nn.Module):
    """``(B, 3, H, W) -> (B, nz, H/f, W/f)`` latents, ``f = 2^(stages - 1)``."""

    def __init__(self, c: DCAEConfig) -> None:
        super().__init__()
        widths, depths, n = c.encoder_widths, c.encoder_depths, len(c.encoder_widths)
        if depths[0] > 0:
            self.project_in = nn.Conv2d(3, widths[0], 3, padding=1)
        else:  # stage 0 is empty: the input layer goes straight to stage 1 at H/2
            self.project_in = ResidualDownsample(3, widths[1], c.downsample, shortcut=False)
        stages = []
        for i, (width, depth) in enumerate(zip(widths, depths)):
            blocks = [make_block(c.encoder_block_types[i], width, "rms_norm", "silu",
                                 c.attention_head_dim, c.encoder_qkv_multiscales[i])
                      for _ in range(depth)]
            down = (ResidualDownsample(width, widths[i + 1], c.downsample, c.stage_shortcuts)
                    if i < n - 1 and depth > 0 else None)
            stages.append(Stage(blocks, down=down))
        self.stages = nn.ModuleList(stages)
        self.project_out = nn.Conv2d(widths[-1], c.latent_channels, 3, padding=1)
        self.out_shortcut = c.encoder_out_shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project_in(x)
        for stage in self.stages:
            h = stage(h)  # (B, widths[i+1], H/2^(i+1), W/2^(i+1))
        z = self.project_out(h)  # (B, nz, H/f, W/f)
        if self.out_shortcut:  # the encoder head also learns a residual (§3.2, Fig. 4b)
            z = z + average_channel_groups(h, z.shape[1])
        return z


class DecoderHead(nn.Module):
    """RMSNorm2d, activation, conv3 to RGB; an up-sampling conv when stage 0 is empty."""

    def __init__(self, width: int, act: str, upsample: str | None) -> None:
        super().__init__()
        self.norm = RMSNorm2d(width, eps=1e-5)
        self.act = make_act(act)
        self.conv = (nn.Conv2d(width, 3, 3, padding=1) if upsample is None
                     else ResidualUpsample(width, 3, upsample, shortcut=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.norm(x)))

    def last_layer(self) -> nn.Parameter:
        """The output conv weight (inside the up-sampling block when stage 0 is empty)."""
        return self.conv.weight if isinstance(self.conv, nn.Conv2d) else self.conv.conv.weight


class Decoder(nn.Module):
    """``(B, nz, h, w) -> (B, 3, h·f, w·f)``."""

    def __init__(self, c: DCAEConfig) -> None:
        super().__init__()
        widths, depths, n = c.decoder_widths, c.decoder_depths, len(c.decoder_widths)
        self.project_in = nn.Conv2d(c.latent_channels, widths[-1], 3, padding=1)
        self.in_shortcut = c.decoder_in_shortcut
        stages = []
        for i, (width, depth) in enumerate(zip(widths, depths)):
            up = (ResidualUpsample(widths[i + 1], width, c.upsample, c.stage_shortcuts)
                  if i < n - 1 and depth > 0 else None)
            blocks = [make_block(c.decoder_block_types[i], width, c.decoder_norms[i],
                                 c.decoder_acts[i], c.attention_head_dim,
                                 c.decoder_qkv_multiscales[i]) for _ in range(depth)]
            stages.append(Stage(blocks, up=up))
        self.stages = nn.ModuleList(stages)
        empty0 = depths[0] == 0
        self.head = DecoderHead(widths[1] if empty0 else widths[0], c.decoder_head_act,
                                c.upsample if empty0 else None)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project_in(z)  # (B, widths[-1], h, w)
        if self.in_shortcut:  # the decoder input also learns a residual (§3.2, Fig. 4b)
            h = h + duplicate_channels(z, h.shape[1])
        for stage in reversed(self.stages):
            h = stage(h)
        return self.head(h)  # (B, 3, h·f, w·f)


class DCAE(Autoencoder):
    """DC-AE with a deterministic posterior (``sample() == mode()``, ``kl() == 0``)."""

    family = "dcae"
    # ours: channels_last measured 0.97-0.98x of contiguous for f32c32 encode/decode at
    # 512² on CPU (docs/benchmarks.md H): its 1x1 convs and linear attention gain nothing
    channels_last_inference = False

    def __init__(self, config: DCAEConfig) -> None:
        super().__init__(config)
        check_config(config)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    @property
    def spatial_compression_ratio(self) -> int:
        return 2 ** (len(self.config.encoder_widths) - 1)

    def _encode(self, x: torch.Tensor) -> DeterministicPosterior:
        return DeterministicPosterior(self.encoder(x))  # (B, nz, H/f, W/f)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def last_layer(self) -> nn.Parameter:
        """The decoder head's output conv weight (the RGB projection)."""
        return self.decoder.head.last_layer()

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Base groups plus those of the decoupled high-resolution adaptation (§3.2,
        Fig. 6; App. G, Fig. 11 ablates how many layers phases 2 and 3 train):

        - ``encoder.project_out`` / ``decoder.project_in``: the conv to / from the latent;
        - ``encoder.head.K``: the last K (non-empty) encoder stages + ``project_out``;
        - ``decoder.input.K``: ``project_in`` + the first K decoder stages it runs;
        - ``decoder.head``: the output RMSNorm2d and conv to RGB;
        - ``decoder.head.K``: the last K non-empty decoder stages it runs + ``decoder.head``,

        for K in :data:`HEAD_DEPTHS` up to the number of non-empty stages. Phase 2 trains
        an ``encoder.head`` and a ``decoder.input`` group (the "middle layers"), phase 3 a
        ``decoder.head`` group; a decoder stage includes its up-sampling block, an encoder
        stage its down-sampling block, so every group is a contiguous run of layers.
        """
        groups = super().param_groups()
        enc, dec = self.encoder, self.decoder
        # Non-empty stages ordered from the latent outwards on each side.
        enc_tail = [s for s in reversed(enc.stages) if len(s.blocks)]
        dec_first = [s for s in reversed(dec.stages) if len(s.blocks)]  # run order
        dec_last = dec_first[::-1]
        groups["encoder.project_out"] = _params(enc.project_out)
        groups["decoder.project_in"] = _params(dec.project_in)
        groups["decoder.head"] = _params(dec.head)
        for k in HEAD_DEPTHS:
            if k <= len(enc_tail):
                groups[f"encoder.head.{k}"] = _params(*enc_tail[:k], enc.project_out)
            if k <= len(dec_first):
                groups[f"decoder.input.{k}"] = _params(dec.project_in, *dec_first[:k])
                groups[f"decoder.head.{k}"] = _params(*dec_last[:k], dec.head)
        return groups


def _params(*modules: nn.Module) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


# --- presets: the configurations diffusers publishes (mit-han-lab/dc-ae-*-diffusers) ------
def _published(stages: int, latent: int, scaling_factor: float = 1.0) -> DCAEConfig:
    """The f32c32 / f64c128 / f128c512 family: one 2048-wide ViT stage per extra ×2."""
    widths = (128, 256, 512, 512, 1024, 1024, 2048, 2048)[:stages]
    vit = stages - 3
    return DCAEConfig(
        latent_channels=latent, encoder_widths=widths, decoder_widths=widths,
        encoder_depths=(0, 4, 8) + (2,) * vit, decoder_depths=(0, 5, 10) + (2,) * vit,
        encoder_block_types=(RES,) * 3 + (VIT,) * vit,
        decoder_block_types=(RES,) * 3 + (VIT,) * vit,
        encoder_qkv_multiscales=((),) * stages, decoder_qkv_multiscales=((),) * stages,
        decoder_norms=("batch_norm",) * 3 + ("rms_norm",) * vit,
        decoder_acts=("relu",) * 3 + ("silu",) * vit, scaling_factor=scaling_factor)


def _tiny(stages: int, latent: int) -> DCAEConfig:
    """Same structure as the published family with narrow widths and one block per stage."""
    widths = (16, 32, 64, 64, 128, 128, 256)[:stages]
    vit = stages - 3
    return DCAEConfig(
        latent_channels=latent, encoder_widths=widths, decoder_widths=widths,
        encoder_depths=(0,) + (1,) * (stages - 1), decoder_depths=(0,) + (1,) * (stages - 1),
        encoder_block_types=(RES,) * 3 + (VIT,) * vit,
        decoder_block_types=(RES,) * 3 + (VIT,) * vit,
        encoder_qkv_multiscales=((),) * 3 + ((5,),) * vit,
        decoder_qkv_multiscales=((),) * 3 + ((5,),) * vit,
        decoder_norms=("batch_norm",) * 3 + ("rms_norm",) * vit,
        decoder_acts=("relu",) * 3 + ("silu",) * vit)


# The SANA autoencoder: deeper ViT stages with multi-scale (5,) tokens, strided-conv down,
# interpolation up, RMSNorm + SiLU everywhere in the decoder.
_SANA = DCAEConfig(
    encoder_depths=(2, 2, 2, 3, 3, 3), decoder_depths=(3,) * 6,
    encoder_qkv_multiscales=((),) * 3 + ((5,),) * 3,
    decoder_qkv_multiscales=((),) * 3 + ((5,),) * 3,
    decoder_norms=("rms_norm",) * 6, decoder_acts=("silu",) * 6,
    downsample="conv", upsample="interpolate", scaling_factor=0.41407)

# Scaling factors are those of the released weights (ImageNet "-in", mixed-data "-mix");
# the bare names carry the "-in" value. A model trained anew needs its own factor:
# ``latentae.scaling.latent_scaling_factor``.
PRESETS: dict[str, DCAEConfig] = {
    "dcae-f32c32": _published(6, 32, 0.3189),
    "dcae-f32c32-in": _published(6, 32, 0.3189),
    "dcae-f32c32-mix": _published(6, 32, 0.4552),
    "dcae-f64c128": _published(7, 128, 0.2889),
    "dcae-f128c512": _published(8, 512, 0.4883),
    "dcae-f32c32-sana": _SANA,
    # Tiny structures for tests and CPU demos (f32: 2.9M parameters, f64: 7.0M).
    "dcae-tiny-f32": _tiny(6, 32),
    "dcae-tiny-f64": _tiny(7, 128),
}

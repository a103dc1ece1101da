"""DC-AE's ResBlock and its down/up-sampling blocks with residual-autoencoding shortcuts.

Numbers agree with diffusers ``AutoencoderDC`` (``ResBlock``, ``DCDownBlock2d``,
``DCUpBlock2d``); parameter names follow DC-AE's own code (see ``latentae.convert.dc``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentae.nn.activations import make_act
from latentae.nn.norms import make_norm
from latentae.nn.shortcuts import channel_to_space_shortcut, space_to_channel_shortcut


class DCResBlock(nn.Module):
    """``x + norm(conv3(act(conv3(x))))``: no norm before the first conv, the second conv
    has no bias (a norm follows). ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, norm: str = "rms_norm", act: str = "silu") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = make_act(act)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = make_norm(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.conv2(self.act(self.conv1(x))))


class ResidualDownsample(nn.Module):
    """×2 down-sampling, ``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``.

    ``mode="pixel_unshuffle"``: conv3 to ``C_out/4`` then pixel_unshuffle;
    ``mode="conv"``: stride-2 conv3. With ``shortcut`` the output adds the
    space-to-channel + channel-averaging shortcut (DC-AE §3.2, residual autoencoding).
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str = "pixel_unshuffle",
                 shortcut: bool = True) -> None:
        super().__init__()
        if mode not in ("pixel_unshuffle", "conv"):
            raise ValueError(f"downsample must be 'pixel_unshuffle' or 'conv', got {mode!r}")
        if mode == "pixel_unshuffle" and out_channels % 4:
            raise ValueError(f"pixel_unshuffle down-sampling needs out_channels % 4 == 0, "
                             f"got {out_channels}")
        if shortcut and (4 * in_channels) % out_channels:
            raise ValueError(f"down shortcut averages 4·{in_channels} channels into "
                             f"{out_channels}: 4·C_in must be a multiple of C_out")
        self.mode, self.shortcut, self.out_channels = mode, shortcut, out_channels
        if mode == "pixel_unshuffle":
            self.conv = nn.Conv2d(in_channels, out_channels // 4, 3, padding=1)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.mode == "pixel_unshuffle":
            h = F.pixel_unshuffle(h, 2)  # (B, C_out/4, H, W) -> (B, C_out, H/2, W/2)
        if self.shortcut:
            h = h + space_to_channel_shortcut(x, self.out_channels)
        return h


class ResidualUpsample(nn.Module):
    """×2 up-sampling, ``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``.

    ``mode="pixel_shuffle"``: conv3 to ``4·C_out`` then pixel_shuffle;
    ``mode="interpolate"``: nearest ×2 then conv3. With ``shortcut`` the output adds the
    channel-duplicating + channel-to-space shortcut (DC-AE §3.2).
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str = "pixel_shuffle",
                 shortcut: bool = True) -> None:
        super().__init__()
        if mode not in ("pixel_shuffle", "interpolate"):
            raise ValueError(f"upsample must be 'pixel_shuffle' or 'interpolate', got {mode!r}")
        if shortcut and (4 * out_channels) % in_channels:
            raise ValueError(f"up shortcut duplicates {in_channels} channels into "
                             f"4·{out_channels}: 4·C_out must be a multiple of C_in")
        self.mode, self.shortcut, self.out_channels = mode, shortcut, out_channels
        conv_out = 4 * out_channels if mode == "pixel_shuffle" else out_channels
        self.conv = nn.Conv2d(in_channels, conv_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "pixel_shuffle":
            h = F.pixel_shuffle(self.conv(x), 2)  # (B, 4·C_out, H, W) -> (B, C_out, 2H, 2W)
        else:
            h = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        if self.shortcut:
            h = h + channel_to_space_shortcut(x, self.out_channels)
        return h

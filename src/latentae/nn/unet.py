"""The resolution-preserving UNet of LiteVAE's feature extractors and aggregator.

LiteVAE App. F/G: ADM-style UNet *without* down/up-sampling. conv3 in; for each channel
multiplier ``num_res_blocks`` ResBlocks (each output kept as a skip); a middle of two
ResBlocks; an up path of ``num_res_blocks`` ResBlocks per multiplier (reversed), each
fed ``cat(x, skip.pop())``; conv3 out. The input-conv skip is left unused, as in the
reference code, which is what reproduces the published parameter counts.
"""

from __future__ import annotations

import torch
from torch import nn

from latentae.nn.resblock import ResBlock


class ResolutionPreservingUNet(nn.Module):
    """``(B, in_channels, H, W) -> (B, out_channels, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, channels: int,
                 mult: tuple[int, ...], num_res_blocks: int = 2, norm: str = "group") -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        ch, skips = channels, []
        self.down = nn.ModuleList()
        for m in mult:
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, channels * m, norm=norm))
                ch = channels * m
                skips.append(ch)
        self.mid = nn.Sequential(ResBlock(ch, ch, norm=norm), ResBlock(ch, ch, norm=norm))
        self.up = nn.ModuleList()
        for m in reversed(mult):
            for _ in range(num_res_blocks):
                self.up.append(ResBlock(ch + skips.pop(), channels * m, norm=norm))
                ch = channels * m
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.mid(x)
        for block in self.up:
            x = block(torch.cat([x, skips.pop()], dim=1))
        return self.conv_out(x)

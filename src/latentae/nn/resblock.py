"""The residual block of SD-VAE and of LiteVAE's UNets (one definition for both)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentae.nn.norms import group_norm
from latentae.nn.smc import SMC


class ResBlock(nn.Module):
    """``x + conv(act(norm(conv(act(norm(x))))))`` with a 1×1 skip when widths differ.

    ``norm="group"``: GroupNorm + SiLU + conv3 twice (SD-VAE ``ResnetBlock2D``, LiteVAE
    App. G ``ResBlock``). ``norm="smc"``: SiLU + SMC conv twice, no normalization
    (LiteVAE App. G ``ResBlockWithSMC``). ``(B, C_in, H, W) -> (B, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None,
                 norm: str = "group", dropout: float = 0.0) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        if norm == "group":
            self.norm1, self.norm2 = group_norm(in_channels), group_norm(out_channels)
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        elif norm == "smc":
            self.norm1 = self.norm2 = nn.Identity()
            self.conv1 = SMC(in_channels, out_channels)
            self.conv2 = SMC(out_channels, out_channels)
        else:
            raise ValueError(f"norm must be 'group' or 'smc', got {norm!r}")
        self.dropout = nn.Dropout(dropout)
        self.skip = (nn.Conv2d(in_channels, out_channels, 1)
                     if in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Without autograd, SiLU overwrites the fresh norm output in place and the skip is
        # added into the fresh conv output: same values, two fewer large allocations and
        # memory passes per block (a measured win on CPU, where ops are memory-bound).
        inplace = not torch.is_grad_enabled()
        h = self.norm1(x)
        h = self.conv1(F.silu(h, inplace=inplace and h is not x))  # never overwrite x
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=inplace)))
        s = self.skip(x)
        # In place only in float32 (keeps autocast's type promotion; measured: bf16 in-place
        # add on channels_last is slower than out-of-place here).
        if h.dtype == torch.float32 and s.dtype == h.dtype:
            return h.add_(s)
        return s + h

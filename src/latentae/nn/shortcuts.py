"""Non-parametric shortcuts of DC-AE's residual autoencoding (DC-AE §3.2, Figure 4).

A down stage learns a residual on top of *space-to-channel then channel averaging*; an
up stage learns a residual on top of *channel duplicating then channel-to-space*. The
encoder output and the decoder input get the same treatment without the space change.
Channel groups are consecutive channels, as in DC-AE and diffusers ``AutoencoderDC``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def average_channel_groups(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Mean over groups of ``C / out_channels`` consecutive channels.
    ``(B, C, H, W) -> (B, out_channels, H, W)``."""
    c = x.shape[1]
    if c % out_channels:
        raise ValueError(f"cannot average {c} channels into {out_channels} groups: "
                         f"{c} must be a multiple of {out_channels}")
    return x.unflatten(1, (out_channels, c // out_channels)).mean(dim=2)


def duplicate_channels(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Repeat every channel ``out_channels / C`` times in place (repeat_interleave).
    ``(B, C, H, W) -> (B, out_channels, H, W)``."""
    c = x.shape[1]
    if out_channels % c:
        raise ValueError(f"cannot duplicate {c} channels into {out_channels}: "
                         f"{out_channels} must be a multiple of {c}")
    return x.repeat_interleave(out_channels // c, dim=1)


def space_to_channel_shortcut(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """The down-sample shortcut: pixel_unshuffle ×2 then average channel groups.
    ``(B, C, H, W) -> (B, 4C, H/2, W/2) -> (B, out_channels, H/2, W/2)``."""
    return average_channel_groups(F.pixel_unshuffle(x, 2), out_channels)


def channel_to_space_shortcut(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """The up-sample shortcut: duplicate channels then pixel_shuffle ×2.
    ``(B, C, H, W) -> (B, 4·out_channels, H, W) -> (B, out_channels, 2H, 2W)``."""
    return F.pixel_shuffle(duplicate_channels(x, 4 * out_channels), 2)

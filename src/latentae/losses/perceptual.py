"""LPIPS-VGG perceptual loss (Zhang et al. 2018, v0.1), the training loss of LDM and
LiteVAE. Wraps ``latentae.eval.lpips.load_lpips("vgg")``: frozen weights from the local
cache (``latentae weights fetch``), never a hub download."""

from __future__ import annotations

import torch
from torch import nn


class PerceptualLoss(nn.Module):
    """``(x_hat, x)`` images in [-1, 1] -> mean LPIPS-VGG distance (scalar, float32).

    The network is frozen (``requires_grad=False``, eval mode); gradients flow to
    ``x_hat``. Runs outside autocast in float32 (STYLE §7).
    """

    def __init__(self, net: str = "vgg", device: str | torch.device = "cpu") -> None:
        super().__init__()
        from latentae.eval.lpips import load_lpips
        self.net = load_lpips(net, device=device)
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # the metric network always runs in eval mode

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.net(x_hat.float(), x.float()).mean()

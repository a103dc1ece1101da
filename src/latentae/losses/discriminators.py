"""Discriminators for autoencoder GAN training. Each maps images ``(B, 3, H, W)`` in
[-1, 1] to a **list of logit tensors** (the losses in ``latentae.losses.gan`` average
each and sum over the list):

- ``patchgan``: the N-layer PatchGAN of pix2pix as used by LDM / taming-transformers,
  ``[(B, 1, h, w)]`` patch logits (SD-VAE baseline; DC-AE phase 3).
- ``stylegan``: a StyleGAN2-style residual discriminator, ``[(B, 1)]``.
- ``unet``: the U-Net discriminator of Schönfeld et al. (CVPR 2020), spectrally
  normalised, an encoder-decoder with a global logit from the bottleneck and a per-pixel
  logit map, ``[(B, 1), (B, 1, H, W)]`` (LiteVAE §4.3 and Table 10: best rFID, most
  stable); what it simplifies is listed in its docstring.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'group' or 'none', got {kind!r}")


class PatchGANDiscriminator(nn.Module):
    """taming ``NLayerDiscriminator``: conv4/s2 + LeakyReLU(0.2), ``n_layers - 1`` more
    conv4/s2 + norm + LeakyReLU (width ``channels·min(2^n, 8)``), one conv4/s1 block, conv4/s1
    to 1 channel; N(0, 0.02) init. ``norm="batch"`` as LDM; ``"group"``/``"none"`` keep
    samples independent (needed for exact DDP equivalence)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3,
                 norm: str = "batch") -> None:
        super().__init__()
        ndf = channels  # taming's name
        bias = norm == "none"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias),
                       _norm(norm, ndf * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.main(x)]  # (B, 1, H/2^(n-1)/4 - 2, ...): one logit per patch


class _ResDown(nn.Module):
    """Residual block ``in -> out``, optionally halving the resolution (avg-pool), with
    a 1×1 shortcut; sum scaled by 1/√2 (StyleGAN2 resnet D)."""

    def __init__(self, cin: int, cout: int, down: bool = True, act=nn.LeakyReLU(0.2)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)
        self.act, self.down = act, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.act(self.conv1(self.act(x))))
        s = self.skip(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return (h + s) / math.sqrt(2)


class StyleGANDiscriminator(nn.Module):
    """StyleGAN2-style residual discriminator: from-RGB 1×1, ``num_blocks`` residual
    down blocks (width ``channels·2^i`` up to ``max_channels``), minibatch-stddev, conv3,
    global average pool (instead of the 4×4 flatten, so any resolution works), two
    linear layers -> ``[(B, 1)]``."""

    def __init__(self, in_channels: int = 3, channels: int = 64, max_channels: int = 512,
                 num_blocks: int = 4, mbstd_group: int = 4) -> None:
        super().__init__()
        widths = [min(channels * 2**i, max_channels) for i in range(num_blocks + 1)]
        self.from_rgb = nn.Conv2d(in_channels, widths[0], 1)
        self.blocks = nn.ModuleList(_ResDown(a, b) for a, b in zip(widths, widths[1:]))
        self.mbstd_group = mbstd_group
        c = widths[-1]
        self.conv = nn.Conv2d(c + 1, c, 3, padding=1)
        self.fc = nn.Linear(c, c)
        self.out = nn.Linear(c, 1)

    def _mbstd(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = math.gcd(b, self.mbstd_group)
        y = x.reshape(g, b // g, c, h, w)  # sample i is in group i % (b // g), as StyleGAN2
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (b // g,)
        std = std.repeat(g).view(b, 1, 1, 1).expand(b, 1, h, w)
        return torch.cat([x, std], dim=1)  # (B, C + 1, h, w)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = F.leaky_relu(self.from_rgb(x), 0.2)
        for block in self.blocks:
            h = block(h)  # halves H, W
        h = F.leaky_relu(self.conv(self._mbstd(h)), 0.2).mean(dim=(2, 3))  # (B, C)
        return [self.out(F.leaky_relu(self.fc(h), 0.2))]  # (B, 1)


class UNetDiscriminator(nn.Module):
    """U-Net discriminator (Schönfeld et al. 2020; LiteVAE §4.3): an encoder of
    residual down blocks (BigGAN D blocks, ReLU) to a bottleneck whose ReLU features,
    pooled over space, give a **global** logit; a decoder of residual up blocks (nearest
    ×2, concatenated encoder skips) whose 1×1 output conv gives a **per-pixel** logit map.
    Spectral normalisation (Miyato et al. 2018, one power iteration per training
    forward) on every conv and linear layer, as the BigGAN-based original.

    ``(B, 3, H, W) -> [(B, 1) global logits, (B, 1, H, W) per-pixel logits]``; H, W
    divisible by ``2^len(mult)``. The CutMix consistency regularisation is in
    :mod:`latentae.losses.cutmix`.

    Simplified against the original: the global logit averages the bottleneck instead
    of summing it (its scale then does not grow with resolution); residual sums are
    scaled by 1/√2 (StyleGAN2) where BigGAN adds; no self-attention, no class projection;
    PyTorch's default init instead of orthogonal; ``len(mult)`` levels (4 by default)
    instead of one per halving down to 4×4; the per-pixel output conv is
    spectral-normalised too (the original leaves it plain).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64,
                 mult: tuple[int, ...] = (1, 2, 4, 8), spectral_norm: bool = True) -> None:
        super().__init__()
        act = nn.ReLU()
        widths = [channels * m for m in mult]
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        ins = [channels, *widths[:-1]]
        self.down = nn.ModuleList(_ResDown(a, b, act=act) for a, b in zip(ins, widths))
        self.linear = nn.Linear(widths[-1], 1)
        # Up path: block i upsamples, concatenates the skip saved before down block i.
        self.up = nn.ModuleList(_ResDown(widths[i] + ins[i], ins[i], down=False, act=act)
                                for i in reversed(range(len(mult))))
        self.conv_out = nn.Conv2d(channels, 1, 1)
        self.factor = 2 ** len(mult)
        if spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    parametrizations.spectral_norm(module)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"UNetDiscriminator needs H, W divisible by {self.factor}, "
                             f"got {tuple(x.shape[-2:])}")
        h = self.conv_in(x)  # (B, ch, H, W)
        skips = []
        for block in self.down:
            skips.append(h)
            h = block(h)  # (B, ch·m_i, H/2^(i+1), W/2^(i+1))
        global_logit = self.linear(F.relu(h).mean(dim=(2, 3)))  # (B, 1)
        for block, skip in zip(self.up, reversed(skips)):
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = block(torch.cat([h, skip], dim=1))
        return [global_logit, self.conv_out(F.relu(h))]  # (B, 1), (B, 1, H, W)


DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "patchgan": PatchGANDiscriminator,
    "stylegan": StyleGANDiscriminator,
    "unet": UNetDiscriminator,
}


def build_discriminator(name: str, **kwargs) -> nn.Module:
    """A discriminator by name (``patchgan``, ``stylegan``, ``unet``) with its kwargs."""
    if name not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {name!r}; valid: {sorted(DISCRIMINATORS)}")
    return DISCRIMINATORS[name](**kwargs)

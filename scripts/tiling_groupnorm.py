"""How much of the tiled-vs-untiled difference is GroupNorm's per-tile statistics?

Encodes and decodes kodim05 (768×512) untiled and with 256² tiles (64 px overlap) and
reports mean |tiled − untiled| / mean |untiled| for GroupNorm normalising with:

- ``per-tile``: each tile's own statistics (what ``latentae.tiling`` does, like diffusers);
- ``half-res``: statistics recorded on the whole input downscaled 2× (one cheap pass);
- ``tile-mean``: statistics averaged over all tiles of a first pass (2× the compute);
- ``oracle``: statistics of the untiled run (not available when tiling for memory; it
  shows what is left once GroupNorm is taken out: the tiles' cut receptive fields).

    python scripts/tiling_groupnorm.py demo/model sdvae-tiny
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import latentae
from latentae.io import load_image, to_tensor
from latentae.tiling import tiled_decode, tiled_encode


class GroupNormStats:
    """Patches every ``nn.GroupNorm`` of a model: ``mode="record"`` accumulates the
    per-group mean and mean square of its inputs (normalising as usual), ``"apply"``
    normalises with the recorded statistics instead of the input's own."""

    def __init__(self, model: nn.Module) -> None:
        self.norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
        self.mode, self.sums, self.stats = None, {}, {}

    def __enter__(self):
        for m in self.norms:
            m.forward = lambda x, m=m: self._forward(m, x)
        return self

    def __exit__(self, *exc) -> None:
        for m in self.norms:
            del m.forward

    def _forward(self, m: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        n, c, g = x.shape[0], x.shape[1], m.num_groups
        if self.mode == "apply":
            mean, var = self.stats[m]  # (G,)
            scale = torch.rsqrt(var + m.eps).repeat_interleave(c // g) * m.weight
            shift = m.bias - mean.repeat_interleave(c // g) * scale
            return x * scale[:, None, None] + shift[:, None, None]
        if self.mode == "record":
            xg = x.float().reshape(n, g, -1)
            s = self.sums.setdefault(m, [0.0, 0.0, 0])
            s[0] = s[0] + xg.mean(-1).sum(0)
            s[1] = s[1] + xg.square().mean(-1).sum(0)
            s[2] += n
        return F.group_norm(x, g, m.weight, m.bias, m.eps)

    def record(self, fn, *args) -> None:
        self.mode, self.sums = "record", {}
        fn(*args)
        self.stats = {m: (s[0] / s[2], (s[1] / s[2] - (s[0] / s[2]) ** 2).clamp_min(0))
                      for m, s in self.sums.items()}
        self.mode = "apply"


def compare(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, float]]:
    """Relative tiled-vs-untiled error of encode and decode for each kind of statistics."""
    kw = dict(tile=256, overlap=64)
    z = model.encode(x).mode()
    y = model.decode(z)
    runs = {"encode": (lambda: tiled_encode(model, x, **kw).mode(), z,
                       lambda: model.encode(F.avg_pool2d(x, 2)), lambda: model.encode(x)),
            "decode": (lambda: tiled_decode(model, z, **kw), y,
                       lambda: model.decode(F.avg_pool2d(z, 2)), lambda: model.decode(z))}
    out = {}
    for part, (tiled, ref, half, full) in runs.items():
        err = {"per-tile": tiled()}
        with GroupNormStats(model) as gn:
            for label, calib in (("half-res", half), ("tile-mean", tiled), ("oracle", full)):
                gn.record(calib)
                err[label] = tiled()
        out[part] = {k: float((v - ref).abs().mean() / ref.abs().mean()) for k, v in err.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="model directories or presets (random weights)")
    p.add_argument("--image", default="../shared/data/kodak24/kodim05.png")
    args = p.parse_args()
    x = to_tensor(load_image(args.image))[None]  # (1, 3, 512, 768)
    for spec in args.models:
        torch.manual_seed(0)
        model = latentae.load(spec) if "/" in spec else latentae.create_model(spec)
        with torch.no_grad():
            rel = compare(model.eval(), x)
        for part, r in rel.items():
            print(f"{spec} (f{model.spatial_compression_ratio}) {part}: "
                  + ", ".join(f"{k} {100 * v:.2f}%" for k, v in r.items()))


if __name__ == "__main__":
    main()

"""Tiled encode/decode for images larger than memory allows, and batch slicing.

An image (or latent) is cut into overlapping tiles on a grid aligned to the compression
factor ``f``; the tiles run through the model ``max_batch`` at a time (default
``TILE_BATCH = 1``: tiling exists to bound memory, and one tile per forward pass keeps
the peak at about one tile's activations whatever the image size; pass a larger
``max_batch`` for throughput on a GPU); each output is blended in as it comes, with
raised-cosine ramps over the overlaps, normalised by the summed weights, so neighbouring
tiles fade into each other and no seam is left. Encoding blends in latent space (the
posterior's mean and log-variance), decoding in pixel space. Works for every family
through ``encode``/``decode`` alone.

Tile sizes and overlaps are given in pixels for both directions (``tile=256`` decodes
latent tiles of ``256/f``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from latentae.models.distributions import DeterministicPosterior, DiagonalGaussian

TILE_BATCH = 1  # tiles per forward pass unless max_batch says otherwise


def sliced(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
           max_batch: int | None = None) -> torch.Tensor:
    """``fn`` over slices of at most ``max_batch`` samples, concatenated (caps memory)."""
    if max_batch is None or x.shape[0] <= max_batch:
        return fn(x)
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return torch.cat([fn(part) for part in x.split(max_batch)], dim=0)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, size)`` with tiles of ``tile`` overlapping by at least
    ``overlap``; the last tile ends at ``size``. One tile when ``size <= tile``."""
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def _ramp(n: int, length: int, fade_in: bool, fade_out: bool, like: torch.Tensor
          ) -> torch.Tensor:
    """1-D weights ``(n,)``: 1 inside, a raised-cosine ramp of ``length`` samples at each
    side that meets another tile (strictly positive, so the normalisation never divides
    by zero)."""
    w = torch.ones(n, dtype=torch.float32, device=like.device)
    if length > 0:
        t = (torch.arange(length, dtype=torch.float32, device=like.device) + 0.5) / length
        r = torch.sin(t * math.pi / 2) ** 2  # 0 -> 1
        if fade_in:
            w[:length] = r
        if fade_out:
            w[n - length:] = torch.minimum(w[n - length:], r.flip(0))
    return w


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int,
                overlap: int, scale: float, max_batch: int | None = TILE_BATCH
                ) -> torch.Tensor:
    """Apply a spatially equivariant ``fn`` (output = input size × ``scale``) tile by tile.

    ``x``: ``(B, C, H, W)``; ``tile``/``overlap`` in ``x``'s units. The ``B·n_tiles``
    tiles run ``max_batch`` at a time (``None``: all at once) and each batch's outputs
    are blended into the result before the next runs, so at most ``max_batch`` tile
    outputs are alive at once.
    """
    b, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return sliced(fn, x, max_batch)
    grid = [(i, j, y, x0) for i, y in enumerate(ys) for j, x0 in enumerate(xs)]
    jobs = [(n, g) for n in range(b) for g in grid]  # (image, tile) in batch order
    step = max_batch or len(jobs)
    ramp = round(overlap * scale)
    out = norm = None
    for k in range(0, len(jobs), step):
        part = jobs[k:k + step]
        outs = fn(torch.stack([x[n, :, y:y + th, x0:x0 + tw] for n, (_, _, y, x0) in part]))
        if out is None:  # (B, C', H·s, W·s) float32 accumulator and its weights
            out = outs.new_zeros(b, outs.shape[1], round(h * scale), round(w * scale),
                                 dtype=torch.float32)
            norm = out.new_zeros(1, 1, out.shape[2], out.shape[3])
        oh, ow = outs.shape[-2:]
        for o, (n, (i, j, y, x0)) in zip(outs, part):
            wgt = (_ramp(oh, ramp, i > 0, i < len(ys) - 1, out)[:, None]
                   * _ramp(ow, ramp, j > 0, j < len(xs) - 1, out)[None, :])  # (oh, ow)
            oy, ox = round(y * scale), round(x0 * scale)
            out[n, :, oy:oy + oh, ox:ox + ow] += o.float() * wgt
            if n == 0:
                norm[0, 0, oy:oy + oh, ox:ox + ow] += wgt
    return (out / norm).to(outs.dtype)


def check_tiles(f: int, tile: int, overlap: int) -> None:
    if tile % f or overlap % f:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of the "
                         f"compression factor {f}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")


def tiled_encode(model, x: torch.Tensor, tile: int = 512, overlap: int = 64,
                 max_batch: int | None = TILE_BATCH):
    """``model.encode`` of ``(B, 3, H, W)`` images by overlapping ``tile``² pixel tiles,
    blended in latent space; returns a posterior like ``encode`` does."""
    f = model.spatial_compression_ratio
    check_tiles(f, tile, overlap)
    model.check_image(x)
    kind: list[type] = []

    def moments(t: torch.Tensor) -> torch.Tensor:
        post = model.encode(t)
        kind.append(type(post))
        if isinstance(post, DiagonalGaussian):
            return torch.cat([post.mean, post.logvar], dim=1)  # (b, 2nz, h, w)
        return post.mean

    m = tiled_apply(moments, x, tile, overlap, 1.0 / f, max_batch)
    return DiagonalGaussian(m) if kind[0] is DiagonalGaussian else DeterministicPosterior(m)


def tiled_decode(model, z: torch.Tensor, tile: int = 512, overlap: int = 64,
                 max_batch: int | None = TILE_BATCH) -> torch.Tensor:
    """``model.decode`` of ``(B, nz, h, w)`` latents by overlapping tiles of ``tile``
    pixels (``tile/f`` latents), blended in pixel space."""
    f = model.spatial_compression_ratio
    check_tiles(f, tile, overlap)
    if z.ndim != 4 or z.shape[1] != model.latent_channels:
        raise ValueError(f"decode expects latents (B, {model.latent_channels}, h, w), "
                         f"got shape {tuple(z.shape)}")
    return tiled_apply(model.decode, z, tile // f, overlap // f, float(f), max_batch)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the bottom/right of ``(B, C, H, W)`` to multiples of ``multiple``;
    returns the padded tensor and the original ``(H, W)`` (crop with ``[..., :H, :W]``).

    Reflection (not replication) continues the image's texture into the border, so the
    encoder sees no flat band. A pad wider than the image is reflected in several
    steps (each at most ``side − 1``, what ``F.pad`` allows).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    while ph or pw:
        sh, sw = min(ph, x.shape[-2] - 1), min(pw, x.shape[-1] - 1)
        if (ph and sh < 1) or (pw and sw < 1):
            raise ValueError(f"cannot reflect-pad a {h}x{w} image (a side of 1 pixel)")
        x = F.pad(x, (0, sw, 0, sh), mode="reflect")
        ph, pw = ph - sh, pw - sw
    return x, (h, w)


def seam_statistic(error: torch.Tensor, reference: torch.Tensor | None = None,
                   radius: int = 4) -> dict[str, float]:
    """How much the worst row or column of an error map stands out.

    ``error``: ``(..., H, W)``; leading dims are averaged after ``abs``. Returns

    - ``rows_spike``/``cols_spike``: max over lines of ``r_i / mean(r_{i±radius}, without
      i)`` for the line means ``r_i`` (a seam, an abrupt change along one line, gives a
      large ratio; smoothly blended tiles give about 1-1.5);
    - with ``reference`` (the untiled output), ``rows_rel``/``cols_rel``: the worst line's
      mean error as a fraction of the reference's mean magnitude.
    """
    e = error.float().abs()
    while e.ndim > 2:
        e = e.mean(0)

    def spike(profile: torch.Tensor) -> float:
        k = 2 * radius + 1
        p = F.pad(profile[None, None], (radius, radius), mode="replicate")[0, 0]
        window = p.unfold(0, k, 1).sum(-1) - profile  # neighbours' sum
        return float((profile / (window / (k - 1)).clamp_min(1e-12)).max())

    out = {"rows_spike": spike(e.mean(1)), "cols_spike": spike(e.mean(0))}
    if reference is not None:
        scale = float(reference.float().abs().mean().clamp_min(1e-12))
        out["rows_rel"] = float(e.mean(1).max()) / scale
        out["cols_rel"] = float(e.mean(0).max()) / scale
    return out

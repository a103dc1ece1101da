"""Orthonormal 2-D Haar wavelet transform on batched tensors.

Band layout (band-major, as in the LiteVAE reference code, App. G): one level maps
``(B, C, H, W)`` to ``(B, 4C, H/2, W/2)`` holding ``[LL, LH, HL, HH]``, each a block of
``C`` channels. The names follow PyWavelets' ``dwt2`` order ``(cA, (cH, cV, cD))``:

- ``LL`` = cA, the approximation (low-pass in both directions),
- ``LH`` = cH, horizontal detail (low-pass along width, high-pass along height),
- ``HL`` = cV, vertical detail (high-pass along width, low-pass along height),
- ``HH`` = cD, diagonal detail.

For a 2×2 block ``[[a, b], [c, d]]`` (rows top to bottom): LL = (a+b+c+d)/2,
LH = (a+b-c-d)/2, HL = (a-b+c-d)/2, HH = (a-b-c+d)/2. The transform is orthonormal, so
its inverse uses the same four sums. Level ``l`` of :func:`haar_dwt` equals
``pywt.wavedec2(x, "haar", level=l)``: ``[cA_l, cH_l, cV_l, cD_l]`` concatenated on
channels (tested against PyWavelets).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# Rows: LL, LH, HL, HH; columns: a, b, c, d of a 2×2 block [[a, b], [c, d]].
_HAAR = ((1, 1, 1, 1), (1, 1, -1, -1), (1, -1, 1, -1), (1, -1, -1, 1))
# Up to this many channels one dense 2×2/stride-2 convolution does the whole level in a
# single pass over memory (3-4× faster than the sums below on CPU, and ~70% of a plain
# copy for channels_last input); wider inputs use the sums (the dense weight grows as C²).
_CONV_MAX_CHANNELS = 4


@functools.lru_cache(maxsize=32)
def _haar_weight(c: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(4C, C, 2, 2)``: output channel ``band·C + i`` applies band's 2×2 filter to input
    channel ``i`` (band-major order)."""
    with torch.inference_mode(False), torch.no_grad():  # cached: never an inference tensor
        k = torch.tensor(_HAAR, dtype=dtype, device=device).view(4, 1, 1, 2, 2) * 0.5
        eye = torch.eye(c, dtype=dtype, device=device).view(1, c, c, 1, 1)
        return (k * eye).reshape(4 * c, c, 2, 2)


def _use_conv(x: torch.Tensor, c: int) -> bool:
    return c <= _CONV_MAX_CHANNELS and x.dtype in (torch.float32, torch.float64,
                                                   torch.bfloat16, torch.float16)


def _check_divisible(x: torch.Tensor, levels: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    m = 2**levels
    h, w = x.shape[-2:]
    if h % m or w % m:
        raise ValueError(
            f"a {levels}-level Haar DWT needs height and width divisible by {m}; "
            f"got {h}x{w} (pad or crop to a multiple of {m})"
        )


def _weight(c: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The cached dense Haar weight; built afresh while torch.export / torch.compile
    trace (their fake tensors must not enter the cache, where eager calls would find
    them: ``latentae export --format onnx`` left one behind before this)."""
    if torch.compiler.is_compiling():
        return _haar_weight.__wrapped__(c, dtype, device)
    return _haar_weight(c, dtype, device)


def dwt2(x: torch.Tensor) -> torch.Tensor:
    """One Haar level. ``(B, C, H, W) -> (B, 4C, H/2, W/2)`` as ``[LL, LH, HL, HH]``."""
    _check_divisible(x, 1)
    b, c, h, w = x.shape
    if _use_conv(x, c):
        return F.conv2d(x, _weight(c, x.dtype, x.device), stride=2)
    x = x.reshape(b, c, h // 2, 2, w // 2, 2)
    a, bb = x[:, :, :, 0, :, 0], x[:, :, :, 0, :, 1]  # top row of each 2x2 block
    cc, d = x[:, :, :, 1, :, 0], x[:, :, :, 1, :, 1]  # bottom row
    s0, s1 = a + bb, cc + d  # row sums
    d0, d1 = a - bb, cc - d  # row differences
    return torch.cat([s0 + s1, s0 - s1, d0 + d1, d0 - d1], dim=1).mul_(0.5)


def idwt2(y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`dwt2`. ``(B, 4C, H, W) -> (B, C, 2H, 2W)``."""
    if y.ndim != 4 or y.shape[1] % 4:
        raise ValueError(f"expected (B, 4C, H, W) Haar bands, got shape {tuple(y.shape)}")
    if _use_conv(y, y.shape[1] // 4):  # orthonormal: the inverse is the transpose
        c = y.shape[1] // 4
        return F.conv_transpose2d(y, _weight(c, y.dtype, y.device), stride=2)
    ll, lh, hl, hh = y.chunk(4, dim=1)
    s0, s1 = ll + lh, ll - lh  # a+b, c+d
    d0, d1 = hl + hh, hl - hh  # a-b, c-d
    top = torch.stack([s0 + d0, s0 - d0], dim=-1)  # (B, C, H, W, 2): a, b
    bottom = torch.stack([s1 + d1, s1 - d1], dim=-1)  # c, d
    b, c, h, w = ll.shape
    out = torch.stack([top, bottom], dim=3)  # (B, C, H, 2, W, 2)
    return out.reshape(b, c, 2 * h, 2 * w).mul_(0.5)


def haar_dwt(x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
    """Multi-level Haar DWT: a list of ``levels`` tensors, level ``l`` (1-based) being
    ``(B, 4C, H/2^l, W/2^l)`` = ``[LL_l, LH_l, HL_l, HH_l]`` (LL_l feeds level l+1).

    Raises ``ValueError`` when H or W is not divisible by ``2**levels``.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    _check_divisible(x, levels)
    out = []
    ll = x
    for _ in range(levels):
        bands = dwt2(ll)
        out.append(bands)
        ll = bands[:, : x.shape[1]]
    return out


def haar_idwt(levels: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`haar_dwt`: rebuilds the image from the coarsest LL and every
    level's detail bands (the LL blocks of finer levels are ignored, as in ``waverec2``)."""
    c = levels[0].shape[1] // 4
    ll = levels[-1][:, :c]
    for bands in reversed(levels):
        ll = idwt2(torch.cat([ll, bands[:, c:]], dim=1))
    return ll

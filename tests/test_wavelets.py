"""Haar DWT against PyWavelets, exact inverse, bad sizes."""

import numpy as np
import pytest
import pywt
import torch
from PIL import Image

from latentae.nn import wavelets
from latentae.nn.wavelets import dwt2, haar_dwt, haar_idwt, idwt2


def _pywt_levels(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """PyWavelets' wavedec2 arranged as our per-level [cA_l, cH_l, cV_l, cD_l] stacks."""
    out = []
    for lvl in range(1, levels + 1):
        ca, (ch, cv, cd), *_ = pywt.wavedec2(x, "haar", level=lvl, axes=(-2, -1))
        out.append(np.concatenate([ca, ch, cv, cd], axis=1))
    return out


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_dwt_matches_pywavelets_random(levels):
    x = torch.randn(2, 3, 32, 48)
    ours = haar_dwt(x, levels)
    ref = _pywt_levels(x.double().numpy(), levels)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        assert np.abs(a.numpy() - b).max() <= 1e-5


def test_dwt_matches_pywavelets_on_kodak(shared_data):
    img = Image.open(shared_data / "kodak24" / "kodim05.png").convert("RGB")
    x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)[None].float() / 127.5 - 1
    ours = haar_dwt(x, 3)
    for a, b in zip(ours, _pywt_levels(x.double().numpy(), 3)):
        assert np.abs(a.numpy() - b).max() <= 1e-5


def test_inverse_is_exact():
    x = torch.randn(2, 3, 64, 40)
    assert (haar_idwt(haar_dwt(x, 3)) - x).abs().max() <= 1e-5
    assert (idwt2(dwt2(x)) - x).abs().max() <= 1e-5


def test_dwt_is_orthonormal_and_keeps_dtype():
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    y = dwt2(x)
    assert y.dtype == torch.float64
    assert torch.allclose(y.square().sum(), x.square().sum())  # energy preserved


def test_odd_sizes_are_rejected_with_the_needed_multiple():
    with pytest.raises(ValueError, match="divisible by 8"):
        haar_dwt(torch.randn(1, 3, 36, 32), 3)
    with pytest.raises(ValueError, match="divisible by 2"):
        dwt2(torch.randn(1, 3, 15, 16))


def test_wide_inputs_take_the_sum_path_and_agree():
    x = torch.randn(1, 8, 16, 16)  # > 4 channels: the elementwise path, not the conv
    ref = _pywt_levels(x.double().numpy(), 1)[0]
    assert np.abs(dwt2(x).numpy() - ref).max() <= 1e-5
    assert (idwt2(dwt2(x)) - x).abs().max() <= 1e-5


def test_tracing_leaves_no_fake_tensor_in_the_haar_cache():
    """torch.export (what the ONNX exporter runs) once cached a FakeTensor as the Haar
    weight, and every later eager DWT in the process failed."""
    wavelets._haar_weight.cache_clear()

    class DWT(torch.nn.Module):
        def forward(self, x):
            return wavelets.dwt2(x)

    torch.export.export(DWT(), (torch.rand(2, 3, 8, 8),), strict=False)
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(1, 3, 1, 1)
    out = wavelets.dwt2(x)
    assert type(out) is torch.Tensor
    assert out[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 2  # LL of the top-left 2×2 block

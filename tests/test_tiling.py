"""Tiled encode/decode: exact for local operators, close and seam-free on a Kodak image.

Bounds (kodim05, 768×512, 256² tiles, 64 px overlap) are for a *local* tiny SD-VAE
(GroupNorms of the encoder replaced by identities, SMC decoder, no mid attention), so
the only difference between tiled and untiled is each tile's cut receptive field — what
tiling itself is responsible for. GroupNorm models add a per-tile statistics difference
(large for random weights; see docs/benchmarks.md), which no blending removes.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latentae import create_model
from latentae.io import load_image, to_tensor
from latentae.tiling import (
    pad_to_multiple,
    seam_statistic,
    sliced,
    tile_starts,
    tiled_apply,
    tiled_decode,
    tiled_encode,
)


def test_tile_starts_cover_the_axis_aligned():
    assert tile_starts(200, 256, 64) == [0]
    s = tile_starts(768, 256, 64)
    assert s == [0, 192, 384, 512]
    assert all(b - a <= 256 - 64 for a, b in zip(s, s[1:]))  # overlap >= 64 everywhere
    assert s[-1] + 256 == 768


def test_tiled_apply_is_exact_for_local_operators():
    x = torch.randn(2, 3, 96, 160)
    pointwise = tiled_apply(lambda t: t * 2 + 1, x, tile=32, overlap=8, scale=1.0)
    assert torch.allclose(pointwise, x * 2 + 1, atol=1e-6)
    up = tiled_apply(lambda t: F.interpolate(t, scale_factor=4.0), x, 32, 8, scale=4.0)
    assert torch.allclose(up, F.interpolate(x, scale_factor=4.0), atol=1e-6)
    down = tiled_apply(lambda t: F.avg_pool2d(t, 8), x, 32, 8, scale=1 / 8)
    assert torch.allclose(down, F.avg_pool2d(x, 8), atol=1e-6)


def test_sliced_equals_one_batch():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(7, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(sliced(conv, x, max_batch=3), conv(x), atol=1e-6)
    with pytest.raises(ValueError, match="max_batch"):
        sliced(conv, x, max_batch=0)


def _local_tiny_model():
    torch.manual_seed(0)
    m = create_model("sdvae-tiny", encoder_channels=(16, 16, 32, 32),
                     decoder_channels=(16, 16, 32, 32), decoder_norm="smc",
                     mid_attention=False).eval()
    for mod in list(m.encoder.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(mod, name, nn.Identity())
    return m


@pytest.fixture(scope="module")
def kodak_and_model(shared_data):
    x = to_tensor(load_image(shared_data / "kodak24" / "kodim05.png"))[None]  # (1,3,512,768)
    assert x.shape[-2:] == (512, 768)
    return x, _local_tiny_model()


def test_tiled_encode_agrees_without_seams_on_kodak(kodak_and_model):
    x, m = kodak_and_model
    with torch.no_grad():
        z = m.encode(x).mode()
        zt = tiled_encode(m, x, tile=256, overlap=64, max_batch=4).mode()
        hard = tiled_encode(m, x, tile=256, overlap=0).mode()
    err = (zt - z).abs()
    assert float(err.mean() / z.abs().mean()) < 1e-3  # measured 2e-4
    stat = seam_statistic(zt - z, z)
    assert max(stat["rows_rel"], stat["cols_rel"]) < 0.01  # worst line; measured 0.2%
    # The statistic does catch seams: butting tiles without overlap fails it.
    bad = seam_statistic(hard - z, z)
    assert max(bad["rows_rel"], bad["cols_rel"]) > 0.02  # measured 8%


def test_tiled_decode_agrees_without_seams_on_kodak(kodak_and_model):
    x, m = kodak_and_model
    with torch.no_grad():
        z = F.avg_pool2d(x, 8).repeat(1, 2, 1, 1)[:, :4] * 2  # smooth image-like latents
        y = m.decode(z)
        yt = tiled_decode(m, z, tile=256, overlap=64)
        hard = tiled_decode(m, z, tile=256, overlap=0)
    assert yt.shape == y.shape == (1, 3, 512, 768)
    assert float((yt - y).abs().mean() / y.abs().mean()) < 0.01  # measured 0.3%
    stat = seam_statistic(yt - y, y)
    assert max(stat["rows_rel"], stat["cols_rel"]) < 0.05  # measured ~2%
    assert max(stat["rows_spike"], stat["cols_spike"]) < 2.5  # measured ~1.7
    bad = seam_statistic(hard - y, y)
    assert max(bad["rows_rel"], bad["cols_rel"]) > 0.2  # hard cuts: measured > 60%


def test_tiled_encode_returns_the_posterior_kind():
    m = create_model("sdvae-tiny").eval()
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        post = tiled_encode(m, x, tile=32, overlap=16)
    assert post.mean.shape == (1, 4, 8, 12) and post.logvar.shape == post.mean.shape


def test_bad_tiles_and_inputs_raise():
    m = create_model("sdvae-tiny")
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="multiples of the compression factor 8"):
        tiled_encode(m, x, tile=30, overlap=8)
    with pytest.raises(ValueError, match="overlap"):
        tiled_decode(m, torch.zeros(1, 4, 8, 8), tile=32, overlap=32)
    with pytest.raises(ValueError, match="latents"):
        tiled_decode(m, torch.zeros(1, 3, 8, 8), tile=32, overlap=8)
    with pytest.raises(ValueError, match="divisible"):
        tiled_encode(m, torch.zeros(1, 3, 60, 64), tile=32, overlap=8)


def test_pad_to_multiple_and_crop_back():
    x = torch.randn(1, 3, 61, 70)
    p, (h, w) = pad_to_multiple(x, 8)
    assert p.shape[-2:] == (64, 72) and (h, w) == (61, 70)
    assert torch.equal(p[..., :h, :w], x)


def test_groupnorm_statistics_script_separates_the_causes(kodak_and_model):
    """scripts/tiling_groupnorm.py (docs/benchmarks.md, Tiling): with the untiled run's
    GroupNorm statistics the tiled encode is much closer than with per-tile statistics."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "tiling_groupnorm.py"
    spec = importlib.util.spec_from_file_location("tiling_groupnorm", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    x = kodak_and_model[0][..., :384, :512]  # 3×2 tiles of 256² with 64 px overlap
    torch.manual_seed(0)
    model = create_model("sdvae-tiny").eval()
    with torch.no_grad():
        rel = script.compare(model, x)
    assert set(rel["encode"]) == {"per-tile", "half-res", "tile-mean", "oracle"}
    assert rel["encode"]["oracle"] < 0.5 * rel["encode"]["per-tile"]
    assert rel["decode"]["oracle"] < rel["decode"]["per-tile"]
    # and the patch is undone: GroupNorm modules run their own forward again
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and not any("forward" in vars(m) for m in norms)

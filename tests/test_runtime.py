"""The inference runtime (``latentae/runtime.py``): autocast policy, dtype names, batch
slicing, and ``--pad`` (reflect padding to the compression factor, cropped back) through
encode/decode/reconstruct/eval on a 500×333 image with ``dcae-tiny-f64``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentae import create_model
from latentae.cli import main
from latentae.errors import InputError
from latentae.eval.report import COLOUR_BAR_HEIGHT
from latentae.latents import read_shard
from latentae.runtime import ModelRunner, autocast, dtype_from_name
from latentae.tiling import pad_to_multiple


def test_autocast_default_is_bf16_on_cuda_and_off_on_cpu():
    with autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "bfloat16"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    with autocast("cpu", torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    if torch.cuda.is_available():
        with autocast("cuda"):
            assert torch.get_autocast_dtype("cuda") == torch.bfloat16
    with pytest.raises(InputError, match="valid: float32, bfloat16, float16"):
        dtype_from_name("half")


def test_batch_slices_give_the_same_latents_and_images():
    torch.manual_seed(0)
    model = create_model("sdvae-tiny")
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    whole = ModelRunner(model, "cpu", allocator=False)
    sliced = ModelRunner(model, "cpu", max_batch=2, allocator=False)
    z = whole.encode(x)
    torch.testing.assert_close(sliced.encode(x), z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sliced.decode(z), whole.decode(z), rtol=1e-5, atol=1e-5)
    post = sliced.encode_posterior(x)
    assert post.logvar.shape == (5, 4, 4, 4)


def test_pad_reflects_and_the_reconstruction_keeps_the_size():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    p, (h, w) = pad_to_multiple(x, 4)
    assert p.shape[-2:] == (8, 8) and (h, w) == (5, 7)
    assert torch.equal(p[..., :5, :7], x)
    assert torch.equal(p[..., 5, :7], x[..., 3, :])  # the row above the edge, mirrored
    tall, _ = pad_to_multiple(torch.randn(1, 3, 3, 3), 64)  # pad wider than the image
    assert tall.shape[-2:] == (64, 64)
    torch.manual_seed(0)
    model = create_model("dcae-tiny-f64")
    img = torch.rand(1, 3, 333, 500) * 2 - 1
    with pytest.raises(InputError, match=r"500x333 .* pass --pad .* 512x384"):
        ModelRunner(model, "cpu", allocator=False).encode(img)
    runner = ModelRunner(model, "cpu", pad=True, allocator=False)
    assert runner.encode(img).shape == (1, 128, 6, 8)  # 384/64, 512/64
    assert runner.reconstruct(img).shape == img.shape


@pytest.fixture(scope="module")
def odd_image(tmp_path_factory):
    d = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (333, 500, 3), dtype=np.uint8)).save(d / "odd.png")
    return d


def test_pad_through_encode_decode_and_reconstruct(odd_image, tmp_path, capsys):
    base = ["dcae-tiny-f64", "--random-init"]
    assert main(["encode", *base, str(odd_image), str(tmp_path / "lat")]) == 2
    err = capsys.readouterr().err
    assert "odd.png is 500x333" in err and "pass --pad" in err
    assert not (tmp_path / "lat").exists()
    assert main(["encode", *base, str(odd_image), str(tmp_path / "lat"), "--pad"]) == 0
    shard = read_shard(tmp_path / "lat" / "latents-00000.safetensors")
    assert shard.latents["odd.png"].shape == (128, 6, 8) and shard.sizes["odd.png"] == (333, 500)
    assert main(["decode", *base, str(tmp_path / "lat"), str(tmp_path / "dec")]) == 0
    with Image.open(tmp_path / "dec" / "odd.png") as im:
        assert im.size == (500, 333)
    assert main(["reconstruct", *base, str(odd_image), str(tmp_path / "rec"), "--pad"]) == 0
    with Image.open(tmp_path / "rec" / "odd.png") as im:
        assert im.size == (500, 333)
    assert "mean PSNR" in capsys.readouterr().out


def test_pad_through_eval(fetched, odd_image, tmp_path, capsys):
    args = ["eval", "dcae-tiny-f64", "--random-init", "--data", str(odd_image),
            "--resolution", "333", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "--pad" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "r"), "--pad"]) == 0
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert doc["protocol"]["resolution"] == 333 and doc["protocol"]["padding"].startswith(
        "reflect")
    assert np.isfinite(doc["metrics"]["psnr"])
    with Image.open(tmp_path / "r" / "recon_grid.png") as grid:
        assert grid.size == (3 * 333 + 4 * 2, 333 + 2 * 2 + COLOUR_BAR_HEIGHT)

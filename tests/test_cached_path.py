"""The cached diffusion path on a folder of real, mixed-size photos (issue 25 item 5):
``encode --resize N`` / ``--crop N`` give latents of one shape that ``diffusion train
--cached`` accepts, and a run on an uncalibrated ``scaling_factor`` says so."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentae.cli import main
from latentae.diffusion.data import LatentNorm
from latentae.diffusion.train import normalized_std
from latentae.errors import InputError
from latentae.folders import framed
from latentae.io import resize_center_crop
from latentae.latents import read_header
from latentae.pretrained import write_scaling_factors

sys.path.insert(0, str(Path(__file__).parent))
from diffusion_helpers import run as diffusion_run  # noqa: E402
from diffusion_helpers import save_autoencoder, write_images  # noqa: E402

SIZES = [(48, 40), (40, 64), (33, 50), (64, 64), (90, 41), (35, 32)]  # (W, H)


def _photos(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(SIZES):
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(a).save(folder / f"{i}.png")
    return root


def _shapes(shards: Path) -> set[tuple[int, ...]]:
    return {tuple(s) for p in shards.glob("*.safetensors") for s in read_header(p)[1].values()}


def test_encode_resize_gives_one_shape_and_diffusion_trains_on_it(tmp_path, capsys):
    ae = save_autoencoder(tmp_path / "ae")
    photos = _photos(tmp_path / "photos")
    plain = tmp_path / "plain"
    assert main(["encode", str(ae), str(photos), str(plain), "--labels", "--pad"]) == 0
    assert len(_shapes(plain)) > 1  # what a user got before: --cached refuses it
    with pytest.raises(InputError, match="--resize N"):
        diffusion_run(tmp_path / "refused", ae, plain, cached=True, steps=1, resolution=64)
    shards = tmp_path / "latents"
    assert main(["encode", str(ae), str(photos), str(shards), "--labels",
                 "--resize", "32"]) == 0
    assert _shapes(shards) == {(4, 4, 4)}  # litevae-tiny: f8c4 of 32² images
    out = diffusion_run(tmp_path / "run", ae, shards, cached=True, steps=2, batch_size=2)
    assert out is not None and (out / "model.safetensors").is_file()
    assert main(["encode", str(ae), str(photos), str(tmp_path / "bad"), "--resize", "30"]) == 2
    assert "multiple of the compression factor 8" in capsys.readouterr().err


def test_resize_is_short_side_then_centre_crop_and_crop_does_not_resize():
    img = Image.fromarray(np.arange(40 * 64 * 3, dtype=np.uint8).reshape(40, 64, 3) % 251)
    cropped = framed(img, crop=32)
    assert cropped.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(cropped), np.asarray(img)[4:36, 16:48])
    resized = framed(img, resize=20)  # the one implementation (ADM's center_crop_arr)
    assert resized.size == (20, 20)
    np.testing.assert_array_equal(np.asarray(resized), np.asarray(resize_center_crop(img, 20)))
    assert framed(img.resize((20, 12)), crop=16).size == (16, 16)  # too small: resized up


def test_normalized_std_is_the_std_of_the_normalized_latents():
    torch.manual_seed(0)
    z = torch.randn(64, 4, 3, 3, dtype=torch.float64) * torch.tensor(
        [0.5, 2.0, 4.0, 1.0], dtype=torch.float64)[None, :, None, None] + torch.tensor(
        [1.0, -2.0, 0.0, 3.0], dtype=torch.float64)[None, :, None, None]
    norm = LatentNorm("model", (0.5,) * 4, (0.3,) * 4)
    expected = norm.normalize(z).std(correction=0).item()
    assert normalized_std(norm, LatentNorm.from_latents(z)) == pytest.approx(expected)


def test_an_uncalibrated_scaling_factor_is_warned_about(tmp_path, capsys):
    ae = save_autoencoder(tmp_path / "ae")
    data = write_images(tmp_path / "data")
    write_scaling_factors(ae, 40.0, 0.0)  # latents' std ~40× too large
    diffusion_run(tmp_path / "a", ae, data, steps=1)
    err = capsys.readouterr().err
    assert "warning: the latents of" in err and "scaling_factor 40" in err
    diffusion_run(tmp_path / "b", ae, data, steps=1, latent_norm="channel")  # measured: fine
    assert "warning: the latents" not in capsys.readouterr().err

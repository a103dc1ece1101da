"""Latent scaling factor: streamed statistics equal the ones computed on all latents at once."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

import latentae
from latentae.cli import main
from latentae.scaling import latent_scaling_factor


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(7, 3, 64, 64, generator=g) * 2 - 1  # 7: the last batch of 3 is short


def all_latents(model, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval().encode(images).mode().double()  # (N, nz, h, w)


def test_dcae_factor_is_inverse_rms_streamed(images):
    model = latentae.create_model("dcae-tiny-f32")
    z = all_latents(model, images)
    stats = latent_scaling_factor(model, images, batch_size=3)
    assert stats["scaling_factor"] == pytest.approx(1 / z.square().mean().sqrt().item(), rel=1e-5)
    assert stats["shift_factor"] == 0.0
    assert stats["count"] == z.numel() and stats["images"] == 7
    torch.testing.assert_close(torch.tensor(stats["mean"], dtype=torch.float64),
                               z.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(stats["std"], dtype=torch.float64),
                               z.transpose(0, 1).flatten(1).std(dim=1, unbiased=False),
                               rtol=1e-5, atol=1e-6)
    assert (z * stats["scaling_factor"]).square().mean().sqrt().item() == pytest.approx(1, 1e-5)


def test_iterable_of_batches_and_single_images_give_the_same_result(images):
    model = latentae.create_model("dcae-tiny-f32")
    ref = latent_scaling_factor(model, images, batch_size=4)
    batches = latent_scaling_factor(model, iter([images[:2], images[2:]]))
    singles = latent_scaling_factor(model, (img for img in images))  # (3, H, W) each
    for other in (batches, singles):
        assert other["scaling_factor"] == pytest.approx(ref["scaling_factor"], rel=1e-6)
        assert other["count"] == ref["count"]


@pytest.mark.parametrize("name", ["sdvae-tiny", "litevae-tiny"])
def test_gaussian_factor_is_inverse_std_of_the_mode(images, name):
    model = latentae.create_model(name)
    z = all_latents(model, images)
    plain = latent_scaling_factor(model, images, batch_size=3)
    shifted = latent_scaling_factor(model, images, batch_size=3, use_shift=True)
    std = z.std(unbiased=False).item()
    assert plain["scaling_factor"] == pytest.approx(1 / std, rel=1e-5)
    assert plain["shift_factor"] == 0.0
    assert shifted["scaling_factor"] == pytest.approx(1 / std, rel=1e-5)
    assert shifted["shift_factor"] == pytest.approx(z.mean().item(), rel=1e-5, abs=1e-7)
    normalized = (z - shifted["shift_factor"]) * shifted["scaling_factor"]
    assert normalized.mean().item() == pytest.approx(0, abs=1e-6)
    assert normalized.std(unbiased=False).item() == pytest.approx(1, rel=1e-5)


def test_dcae_with_shift_uses_std(images):
    model = latentae.create_model("dcae-tiny-f32")
    stats = latent_scaling_factor(model, images, use_shift=True)
    assert stats["scaling_factor"] == pytest.approx(1 / stats["global_std"], rel=1e-9)
    assert stats["rms"] == pytest.approx(math.hypot(stats["global_mean"], stats["global_std"]),
                                         rel=1e-9)


def test_training_mode_is_restored_and_bad_inputs_raise(images):
    model = latentae.create_model("dcae-tiny-f32").train()
    latent_scaling_factor(model, images[:2])
    assert model.training
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        latent_scaling_factor(model, images[:2] * 3)
    with pytest.raises(ValueError, match="no images"):
        latent_scaling_factor(model, [])
    with pytest.raises(ValueError, match="compression ratio"):
        latent_scaling_factor(model, torch.zeros(1, 3, 48, 48))
    assert model.training


@pytest.mark.parametrize("name", ["sdvae-tiny", "litevae-tiny", "dcae-tiny-f32"])
def test_eval_and_latent_stats_suggest_the_same_factors(name, fetched, tmp_path, capsys):
    """One rule (``scaling.suggest_factors``): 1/std for the Gaussian families, 1/RMS for
    DC-AE, no shift where the config has none, from both commands on the same crops."""
    images = tmp_path / "images"
    images.mkdir()
    g = torch.Generator().manual_seed(1)
    for i in range(3):
        pixels = (torch.rand(80, 96, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(images / f"{i}.png")
    common = [name, "--random-init", "--seed", "3"]
    assert main(["eval", *common, "--data", str(images), "--resolution", "64",
                 "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    assert main(["latent-stats", *common, str(images), "--resolution", "64",
                 "--json", str(tmp_path / "stats.json")]) == 0
    capsys.readouterr()
    lat = json.loads((tmp_path / "eval" / "metrics.json").read_text())["latents"]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert lat["suggested_scaling_factor"] == pytest.approx(stats["scaling_factor"], rel=1e-4)
    assert lat["suggested_shift_factor"] == stats["shift_factor"] == 0.0
    rule = stats["rms"] if name.startswith("dcae") else stats["global_std"]
    assert stats["scaling_factor"] == pytest.approx(1 / rule, rel=1e-9)

"""Latent diffusability inside ``latentae eval``: the report's fields and spectrum.png,
the equivariance, spectrum and whole-code MMD of the eval pass against direct
computations for a pooling "autoencoder", the uniform per-position subset, the null
floor, and the diffusion proxy end to end through the CLI on tiny models."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latentae.cli import main
from latentae.diffusion.proxy import proxy_patch
from latentae.eval import diffusability as dm
from latentae.eval.mmd import LatentStats
from latentae.eval.reconstruction import EvalConfig, evaluate_reconstruction
from latentae.io import ImageFolderDataset, to_tensor
from latentae.models.distributions import DeterministicPosterior

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def kodak(shared_data, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for n in ("kodim01.png", "kodim04.png", "kodim07.png"):
        shutil.copy(shared_data / "kodak24" / n, d / n)
    return d


# --- the report --------------------------------------------------------------------------
def test_eval_report_has_the_diffusability_fields_and_the_plot(fetched, kodak, tmp_path,
                                                               capsys):
    out = tmp_path / "r"
    assert main(["eval", "sdvae-tiny", "--random-init", "--data", str(kodak), "--resolution",
                 "64", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "latent energy > f_N/2" in printed and "MMD² whole-code σ=25" in printed
    assert "MMD² per-position, scaled" in printed and "spectrum.png" in printed
    doc = json.loads((out / "metrics.json").read_text())
    m, div = doc["metrics"], doc["diffusability"]
    keys = ["latent_high_freq_fraction", "image_high_freq_fraction", "equivariance_psnr_x1",
            "equivariance_psnr_x2", "equivariance_psnr_x4", "mmd2_scaled",
            *(f"mmd2_whole_code_sigma{s}" for s in (25, 50, 100, 250, 500))]
    for k in keys:
        assert isinstance(m[k], float) and math.isfinite(m[k]), k
    assert m["equivariance_psnr_x1"] == pytest.approx(m["psnr"])  # the same reconstruction
    assert div["mmd_whole_code"]["n_codes"] == 3 and div["mmd_whole_code"]["dim"] == 4 * 8 * 8
    assert div["mmd_whole_code"]["sigma"] == list(dm.TABLE6_SIGMAS)
    assert len(div["spectrum"]["latent"]) == 4 and "diffusability" in doc["protocol"]
    md = (out / "report.md").read_text()
    for s in ("](spectrum.png)", "whole codes (LiteVAE table 6)", "MMD² per-position",
              "null floor", "Scale equivariance", "| 25 |", "| 500 |"):
        assert s in md, s
    assert (out / "spectrum.png").read_bytes()[:8] == PNG
    assert any("3 codes" in n for n in doc["notes"])  # few codes: said


def test_no_diffusability_leaves_it_out(fetched, kodak, tmp_path):
    out = tmp_path / "r"
    assert main(["eval", "sdvae-tiny", "--random-init", "--data", str(kodak), "--resolution",
                 "32", "--out", str(out), "--no-progress", "--no-diffusability"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["diffusability"] is None and "latent_high_freq_fraction" not in doc["metrics"]
    assert not (out / "spectrum.png").exists()
    assert "Latent diffusability" not in (out / "report.md").read_text()


# --- the pass against direct computations -------------------------------------------------
# Pooled uint8 values are k/16, k/64, k/256 on the uint8 scale: ties at .5 that float
# noise (channels_last pooling) would round either way. 1/512 of a level moves every
# value off the tie by more than that noise, in the model and in the oracle alike.
OFFSET = 1 / 512 / 127.5


class PoolAutoencoder(nn.Module):
    """encode = f×f average pooling (a point-mass posterior), decode = f× nearest
    upsampling (+ OFFSET); the attributes ``latentae eval`` reads."""

    family, preset, latent_channels, spatial_compression_ratio = "pool", "pool", 3, 4
    scaling_factor, shift_factor = 1.5, 0.1

    def encode(self, x):
        return DeterministicPosterior(F.avg_pool2d(x, 4))

    def decode(self, z):
        return F.interpolate(z, scale_factor=4, mode="nearest") + OFFSET


def _psnr_direct(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of 10·log10(255²/MSE), quantized as the protocol says: float32
    ``round(clamp(127.5·(x+1)))`` (a quarter of 2×2-pooled pixels sit on .5 exactly)."""
    f32 = np.float32
    q = lambda t: np.round(np.clip(f32(127.5) * (t.float().numpy() + f32(1)), 0, 255)  # noqa: E731
                           ).astype(np.float64)
    mse = ((q(a) - q(b)) ** 2).mean(axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(255.0**2 / mse)))


def _hf_direct(maps: np.ndarray) -> float:
    """Energy above 0.25 cycles/sample over all energy of mean-removed maps (N, C, h, w)."""
    maps = maps - maps.mean(axis=(-2, -1), keepdims=True)
    p = np.abs(np.fft.fft2(maps)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(maps.shape[-2]), np.fft.fftfreq(maps.shape[-1]),
                         indexing="ij")
    return float(p[..., np.hypot(fy, fx) > 0.25].sum() / p.sum())


def test_the_eval_pass_equals_direct_computations_for_a_pooling_autoencoder(kodak):
    cfg = EvalConfig(resolution=32, batch_size=2, progress=False, grid_images=0)
    lpips = lambda a, b: torch.zeros(len(a))  # noqa: E731 (metric networks not needed here)
    inception = lambda x: x.flatten(1)[:, :2048]  # noqa: E731
    r = evaluate_reconstruction(PoolAutoencoder(), kodak, cfg, torch.device("cpu"), lpips,
                                inception).diffusability
    ds = ImageFolderDataset(kodak, 32)
    x = torch.stack([to_tensor(ds.load(i)) for i in range(len(ds))])   # (3, 3, 32, 32)
    for s in (1, 2, 4):  # latent 8x8: every factor divides
        target = F.avg_pool2d(x, s) if s > 1 else x
        rec = F.interpolate(F.avg_pool2d(x, 4 * s), scale_factor=4, mode="nearest") + OFFSET
        assert r["equivariance_psnr"][f"x{s}"] == pytest.approx(_psnr_direct(target, rec),
                                                                rel=1e-9)
    z = (F.avg_pool2d(x, 4) - 0.1) * 1.5                                # model-scaled
    assert r["summary"]["latent_high_freq_fraction"] == pytest.approx(
        _hf_direct(z.double().numpy()), rel=1e-9)
    assert r["summary"]["image_high_freq_fraction"] == pytest.approx(
        _hf_direct(F.avg_pool2d(x, 4).double().numpy()), rel=1e-9)
    want = dm.mmd_whole_code(z.double(), repeats=5, seed=0)  # all 3 codes are kept
    assert r["mmd_whole_code"]["mmd2"] == pytest.approx(want["mmd2"], rel=1e-6)
    assert "mmd_per_position" not in r  # eval reports its own per-position MMD


# --- estimators ------------------------------------------------------------------------
def test_per_position_vectors_span_all_images_whatever_the_batching():
    z = torch.arange(40, dtype=torch.float64).view(40, 1, 1, 1).expand(40, 2, 4, 4) + 0.0
    kept = []
    for batch in (1, 7, 40):
        s = LatentStats(2, max_vectors=64)
        for chunk in z.split(batch):
            s.update(chunk)
        kept.append(s.vectors())
    assert torch.equal(kept[0], kept[1]) and torch.equal(kept[0], kept[2])
    images = set(kept[0][:, 0].long().tolist())  # the value names the image
    assert kept[0].shape == (64, 2) and len(images) > 25  # not the first 4 images' 64


def test_whole_code_null_floor_is_the_mmd_between_reference_draws():
    g = torch.Generator().manual_seed(1)
    normal = torch.randn(40, 4, 4, 4, generator=g, dtype=torch.float64)
    r = dm.mmd_whole_code(normal, (4.0, 8.0), repeats=3)
    draws = [torch.randn((40, 64), generator=torch.Generator().manual_seed(i),
                         dtype=torch.float64) for i in range(3)]
    nulls = np.array([dm.mmd2_whole_code(draws[i], draws[i + 1], (4.0, 8.0))
                      for i in range(2)])
    assert np.allclose(r["null_mmd2_rms"], np.sqrt((nulls**2).mean(0)), rtol=1e-9)
    shifted = dm.mmd_whole_code(normal + 0.5, (4.0, 8.0), repeats=3)
    assert shifted["mmd2"][0] > 10 * shifted["null_mmd2_rms"][0]
    assert dm.mmd_whole_code(normal, (4.0,), repeats=1)["null_mmd2_rms"] is None


# --- the diffusion proxy -------------------------------------------------------------------
@pytest.mark.parametrize("side,patch", [(4, 1), (8, 1), (16, 1), (24, 2), (32, 2), (64, 4),
                                        (128, 8), (7, 1)])
def test_proxy_patch_gives_the_tokens_nearest_256(side, patch):
    assert proxy_patch(side) == patch


def test_diffusion_proxy_end_to_end(fetched, kodak, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["eval", "sdvae-tiny", "--random-init", "--data", str(kodak), "--resolution",
                 "32", "--out", str(out), "--no-progress", "--diffusion-proxy", "3",
                 "--proxy-model", "dit-tiny", "--proxy-batch", "2", "--proxy-samples", "4",
                 "--proxy-sampling-steps", "2"]) == 0
    assert "diffusion proxy (dit-tiny, patch 1, 16 tokens, 3 steps)" in capsys.readouterr().out
    p = json.loads((out / "metrics.json").read_text())["diffusion_proxy"]
    assert (p["model"], p["patch"], p["tokens"], p["steps"]) == ("dit-tiny", 1, 16, 3)
    assert [c["step"] for c in p["curve"]] == [1, 2, 3]
    assert all(math.isfinite(c["loss"]) and c["loss"] > 0 for c in p["curve"])
    m = p["metrics"]
    assert (m["n"], m["n_ref"]) == (4, 3) and math.isfinite(m["kid"]) and m["gfid"] > 0
    folder = out / "diffusion_proxy"
    assert sorted(f.name for f in folder.iterdir()) == [
        "config.yaml", "curve.png", "metrics.jsonl", "samples.png"]  # the work is gone
    assert (folder / "curve.png").read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    assert "## Diffusion proxy" in md and "relative to each other" in md
    assert "](diffusion_proxy/curve.png)" in md and "| 3 |" in md


def test_diffusion_proxy_bad_flags_fail_before_work(kodak, tmp_path, capsys):
    base = ["eval", "sdvae-tiny", "--random-init", "--data", str(kodak), "--no-progress",
            "--out", str(tmp_path / "o")]
    assert main(base + ["--resolution", "32", "--diffusion-proxy", "2",
                        "--proxy-model", "uvit-s"]) == 2
    assert "trains a DiT" in capsys.readouterr().err
    assert main(base + ["--resolution", "36", "--pad", "--diffusion-proxy", "2"]) == 2
    assert "multiple of the compression factor" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

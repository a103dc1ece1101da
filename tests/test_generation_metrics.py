"""Generation metrics: KID, precision/recall and Inception Score against direct
computations and constructed cases with known answers; the reference npz; the logits
layer's file checks; ``evaluate_samples`` and the CLI end to end on a few real images."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from latentae.errors import InputError
from latentae.eval import generation_metrics as gm
from latentae.eval.fid import FeatureStats, fid_from_stats
from latentae.eval.generation_data import (
    ReferenceStats,
    load_reference,
    save_reference,
    stats_from_moments,
)
from latentae.eval.inception_logits import TRUNK_KEYS


# --- KID -----------------------------------------------------------------------------
def _kid_direct(x: np.ndarray, y: np.ndarray) -> float:
    """KID of two equal-size sets as Bińkowski et al.'s and StyleGAN's code write it:
    ``t = (Σ_{i≠j} kxx + kyy)/(m−1) − 2 Σ kxy / m``, KID = ``t / m``."""
    m, d = len(x), x.shape[1]
    a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
    b = (x @ y.T / d + 1) ** 3
    return float(((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m)


def test_kid_equals_the_direct_unbiased_estimator():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 6)), rng.normal(0.3, 1.2, size=(12, 6))
    mean, std = gm.kid(x, y, subsets=5, subset_size=12)  # whole sets: every subset equal
    assert mean == pytest.approx(_kid_direct(x, y), rel=1e-10) and std < 1e-12


def test_kid_subsets_are_random_subsets_of_the_given_size():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 5)), rng.normal(0.5, 1.0, size=(30, 5))
    g = torch.Generator().manual_seed(3)  # the draws kid() makes with seed 3
    want = []
    for _ in range(4):
        xs = x[torch.randperm(40, generator=g)[:8].numpy()]
        ys = y[torch.randperm(30, generator=g)[:8].numpy()]
        want.append(_kid_direct(xs, ys))
    mean, std = gm.kid(x, y, subsets=4, subset_size=8, seed=3)
    assert mean == pytest.approx(np.mean(want), rel=1e-10)
    assert std == pytest.approx(np.std(want), rel=1e-8) and std > 0


def test_kid_is_near_zero_for_one_law_and_positive_for_two():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 32, generator=g), torch.randn(300, 32, generator=g)
    same, same_std = gm.kid(a, b, subsets=20, subset_size=100)
    diff, _ = gm.kid(a, b + 0.5, subsets=20, subset_size=100)
    assert abs(same) < 3 * same_std + 1e-3 and diff > 10 * abs(same)
    with pytest.raises(InputError, match="at least 2"):
        gm.kid(a[:1], b)


# --- precision / recall ----------------------------------------------------------------
def _line(values) -> torch.Tensor:
    """Points on a line in 2-D: (x, 0)."""
    v = torch.as_tensor(values, dtype=torch.float64)
    return torch.stack([v, torch.zeros_like(v)], dim=1)


def test_knn_radius_is_the_third_neighbour_excluding_self():
    r = gm.knn_radii(_line(range(10)), k=3).sqrt()
    # 0: neighbours 1,2,3 -> 3; 1: 0,2,3 -> 2; interior: ±1, ±2 -> 2
    assert r.tolist() == [3, 2, 2, 2, 2, 2, 2, 2, 2, 3]


def test_precision_recall_identical_sets_are_one():
    f = torch.randn(200, 64, generator=torch.Generator().manual_seed(0))
    assert gm.precision_recall(f, f.clone()) == (1.0, 1.0)


def test_precision_recall_of_far_disjoint_sets_are_zero():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, 16, generator=g), torch.randn(80, 16, generator=g) + 100.0
    assert gm.precision_recall(a, b) == (0.0, 0.0)


def test_precision_recall_of_a_subset_has_the_counted_answer(monkeypatch):
    # reals at 0..99, samples at 0..49: every sample is a real point (precision 1); the
    # sample manifold (radius 2 inside, 3 at the ends 0 and 49) covers reals 0..52
    # (52 is at distance 3 = the radius of 49: the ball is closed, "<=") -> recall 0.53
    real, fake = _line(range(100)), _line(range(50))
    assert gm.precision_recall(real, fake, dtype=torch.float64) == (1.0, 0.53)
    assert gm.precision_recall(fake, real, dtype=torch.float64) == (0.53, 1.0)
    monkeypatch.setattr(gm, "BLOCK_ENTRIES", 64)  # many small row blocks: same answer
    assert gm.precision_recall(real, fake, dtype=torch.float64) == (1.0, 0.53)
    with pytest.raises(InputError, match="more than 3"):
        gm.precision_recall(real, fake[:3])


# --- Inception Score -----------------------------------------------------------------
def _is_direct(logits: np.ndarray, splits: int) -> tuple[float, float]:
    """The original code's computation (Salimans et al. 2016, inception_score/model.py)."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n, scores = len(p), []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_equals_the_direct_formula():
    logits = np.random.default_rng(0).normal(0, 3, size=(103, 1008))
    got, want = gm.inception_score(logits, 10), _is_direct(logits, 10)
    assert got[0] == pytest.approx(want[0], rel=1e-10)
    assert got[1] == pytest.approx(want[1], rel=1e-8)


def test_inception_score_closed_forms():
    assert gm.inception_score(np.zeros((50, 1008)), 5) == pytest.approx((1.0, 0.0))
    # confident and balanced over K classes in every split -> IS = K
    k = 8
    logits = 60.0 * np.eye(k)[np.tile(np.arange(k), 10)]  # (80, 8), 2 blocks per split
    mean, std = gm.inception_score(logits, splits=5)
    assert mean == pytest.approx(k, rel=1e-6) and std < 1e-6
    with pytest.raises(InputError, match="splits"):
        gm.inception_score(np.zeros((5, 10)), 10)


# --- reference statistics npz --------------------------------------------------------
def _ref(n: int, keep: int) -> ReferenceStats:
    f = torch.rand(n, 2048, generator=torch.Generator().manual_seed(n))
    s = FeatureStats()
    s.update(f)
    return ReferenceStats(s, f[:keep], "tf1", "net", 64, "center", "somewhere")


@pytest.mark.parametrize("n,keep", [(30, 30), (30, 12)])
def test_reference_npz_round_trip_keeps_fid(tmp_path, n, keep):
    ref, fake = _ref(n, keep), torch.rand(20, 2048, generator=torch.Generator().manual_seed(1))
    fs = FeatureStats()
    fs.update(fake)
    save_reference(ref, tmp_path / "ref.npz")
    back = load_reference(tmp_path / "ref.npz")
    assert back.protocol == "tf1" and back.resolution == 64 and back.stats.n == n
    assert torch.equal(back.features, ref.features)
    want = fid_from_stats(ref.stats, fs, warn=False)
    assert fid_from_stats(back.stats, fs, warn=False) == pytest.approx(want, rel=1e-6)


def test_stats_from_moments_reproduce_mean_and_covariance():
    ref = _ref(40, 40)
    mu, cov = ref.stats.mean_cov()
    mu2, cov2 = stats_from_moments(mu, cov, 40).mean_cov()
    assert np.allclose(mu, mu2) and np.allclose(cov, cov2, atol=1e-12)


def test_a_wrong_reference_file_is_refused(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(InputError, match="cannot read"):
        load_reference(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", mu=np.zeros(3))
    with pytest.raises(InputError, match="holds \\['mu'\\]: expected a latentae reference"):
        load_reference(tmp_path / "other.npz")
    np.savez(tmp_path / "x.npz", format=np.str_("latentae-ref-stats/1"), mu=np.zeros(3))
    with pytest.raises(InputError, match="not a latentae-ref-stats/1 file"):
        load_reference(tmp_path / "x.npz")


def test_sample_sources_and_their_errors(tmp_path):
    from PIL import Image

    from latentae.eval.generation_data import iter_samples

    u8 = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", arr_0=u8)
    got = torch.cat(list(iter_samples(tmp_path / "s.npz", 2, [])))
    assert got.dtype == torch.uint8 and torch.equal(got, torch.from_numpy(u8).permute(0, 3, 1, 2))
    (tmp_path / "d").mkdir()
    Image.fromarray(u8[0]).save(tmp_path / "d" / "a.png")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tmp_path / "d" / "b.png")
    (tmp_path / "d" / "c.png").write_bytes(b"broken")
    skipped: list[str] = []
    with pytest.raises(InputError, match="share one size"):
        list(iter_samples(tmp_path / "d", 4, skipped))
    (tmp_path / "d" / "b.png").unlink()
    assert sum(len(b) for b in iter_samples(tmp_path / "d", 4, skipped)) == 1
    assert skipped[-1].endswith("c.png")
    with pytest.raises(InputError, match="tensors"):
        list(iter_samples([np.zeros((1, 3, 4, 4))], 2, []))


# --- the logits layer ----------------------------------------------------------------
def _torchvision_layout_file(path, trunk, fc_seed=0, perturb=False):
    """A pytorch-fid-style state dict: torchvision names, the port's convolutions."""
    g = torch.Generator().manual_seed(fc_seed)
    sd = {theirs: trunk[ours].clone() for theirs, ours in TRUNK_KEYS.items()}
    if perturb:
        sd["Conv2d_1a_3x3.conv.weight"] += 1e-3
    sd["fc.weight"] = torch.randn(1008, 2048, generator=g) * 0.01
    sd["fc.bias"] = torch.randn(1008, generator=g)
    torch.save(sd, path)
    return sd


def test_logits_layer_loads_only_from_the_same_network(fetched, tmp_path):
    from latentae.eval.inception import load_inception
    from latentae.eval.inception_logits import load_inception_with_logits

    trunk = load_inception().state_dict()
    sd = _torchvision_layout_file(tmp_path / "fc.pth", trunk)
    net = load_inception_with_logits(logits_path=tmp_path / "fc.pth")
    f = torch.rand(3, 2048)
    assert torch.allclose(net.logits(f), f @ sd["fc.weight"].T, atol=1e-5)  # no bias
    assert torch.allclose(net.logits(f, bias=True), f @ sd["fc.weight"].T + sd["fc.bias"],
                          atol=1e-5)
    _torchvision_layout_file(tmp_path / "other.pth", trunk, perturb=True)
    with pytest.raises(InputError, match="not the TF 2015-12-05 Inception"):
        load_inception_with_logits(logits_path=tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no logits layer"):
        load_inception().logits(f)


# --- end to end on real images -------------------------------------------------------
@pytest.fixture(scope="module")
def kodak_dirs(tmp_path_factory, shared_data):
    """8 Kodak images at 64² as 'samples' (saved PNGs) and their source folder."""
    from latentae.io import list_images, load_image, resize_center_crop, save_image, to_tensor
    out = tmp_path_factory.mktemp("samples")
    files = list_images(shared_data / "kodak24")[:8]
    for f in files:
        save_image(to_tensor(resize_center_crop(load_image(f), 64)), out / f"{f.stem}.png")
    real = tmp_path_factory.mktemp("real")
    for f in files:
        (real / f.name).write_bytes(f.read_bytes())
    return out, real


def test_samples_equal_to_the_reals_score_perfectly(fetched, kodak_dirs, tmp_path,
                                                    monkeypatch):
    from latentae.eval.generation import GenerationConfig, evaluate_samples

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("LATENTAE_INCEPTION_LOGITS", "")
    samples, real = kodak_dirs
    cfg = GenerationConfig(is_splits=2, kid_subsets=3)
    r = evaluate_samples(samples, real, batch_size=4, config=cfg,
                         save_ref=tmp_path / "ref.npz")
    assert r["n"] == r["n_ref"] == 8 and abs(r["gfid"]) < 1e-3
    assert (r["precision"], r["recall"]) == (1.0, 1.0)
    # identical sets, subsets = the whole sets: KID = 2/(m(m-1))·(Σk/m − tr k) <= 0, std 0
    f = load_reference(tmp_path / "ref.npz").features.double()
    k = gm.polynomial_kernel(f, f)
    want = 2 / (8 * 7) * (float(k.sum()) / 8 - float(k.trace()))
    assert r["kid"] == pytest.approx(want, rel=1e-6) and r["kid"] <= 0
    # ... so the subsets repeat one estimate: no ± is printed (issue 25, item 4)
    assert r["kid_std"] is None and r["inception_score"] is None
    assert any("KID's ± not reported" in s for s in r["notes"])
    assert abs(r["sfid"]) < 1e-3  # sFID (ADM's spatial features) of identical sets
    assert any("< 2048" in s for s in r["notes"])
    assert any("Inception Score not computed" in s for s in r["notes"])
    assert r["protocol"]["fid_protocol"] == "tf1" and "k = 3" in r["protocol"]["precision_recall"]
    again = evaluate_samples(samples, tmp_path / "ref.npz", batch_size=4, config=cfg)
    assert again["gfid"] == pytest.approx(r["gfid"], abs=1e-6)
    assert again["kid"] == pytest.approx(r["kid"], rel=1e-9)
    with pytest.raises(InputError, match="protocol"):
        evaluate_samples(samples, tmp_path / "ref.npz", protocol="pytorch-fid")


def test_diffusion_eval_cli_reports_all_metrics(fetched, kodak_dirs, tmp_path, capsys):
    from latentae.cli import diffusion_eval
    from latentae.eval.inception import load_inception

    parser = argparse.ArgumentParser()
    diffusion_eval.register(parser.add_subparsers(dest="command"))
    samples, real = kodak_dirs
    _torchvision_layout_file(tmp_path / "fc.pth", load_inception().state_dict())
    stats = tmp_path / "ref.npz"
    args = parser.parse_args(["diffusion-ref-stats", str(real), "--out", str(stats),
                              "--resolution", "64", "--device", "cpu", "--no-progress",
                              "--max-ref-features", "6"])
    assert args.func(args) == 0 and load_reference(stats).features.shape == (6, 2048)
    args = parser.parse_args(["diffusion-eval", str(samples), "--ref", str(stats),
                              "--device", "cpu", "--is-splits", "2", "--kid-subsets", "2",
                              "--inception-logits", str(tmp_path / "fc.pth"),
                              "--json", str(tmp_path / "r.json"), "--no-progress"])
    assert args.func(args) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["inception_score"] is not None and math.isfinite(r["inception_score"])
    assert r["n_ref_features"] == 6 and any("6 of the 8" in s for s in r["notes"])
    out = capsys.readouterr().out
    assert "gFID" in out and "Inception Score" in out and "KID" in out
    with pytest.raises(SystemExit):
        parser.parse_args(["diffusion-eval", str(samples)])  # --ref is required

"""ADM-compatible evaluation: ADM's ``center_crop_arr`` (written here from
guided-diffusion ``image_datasets.py``), ADM reference batches and efficientvit's
``{mu, sigma}`` files as ``--ref``, sFID, and one-line errors for files that are neither.

The FID oracle is the direct computation from the features (numpy mean / ``np.cov``, as
ADM's ``compute_statistics``): a reference file written from them must give the same
number as the features themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from latentae.errors import InputError
from latentae.eval.fid import frechet_distance, frechet_distance_lowrank, frechet_distance_onesided
from latentae.eval.generation import GenerationConfig, evaluate_samples, extract
from latentae.eval.generation_data import load_reference
from latentae.eval.inception import SPATIAL_DIM, load_inception
from latentae.io import resize_center_crop


def adm_center_crop_arr(pil_image, image_size):  # guided-diffusion, as its README gives it
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size),
                                 resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size]


@pytest.mark.parametrize("size", [(523, 301), (301, 523), (64, 40), (130, 129)])
def test_resize_center_crop_is_adms_center_crop_arr(size):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    ours = np.asarray(resize_center_crop(img, 64))
    assert ours.shape == (64, 64, 3)
    np.testing.assert_array_equal(ours, adm_center_crop_arr(img, 64))


def _images(seed: int, n: int = 6, size: int = 32) -> np.ndarray:
    """Smooth random uint8 images (N, H, W, 3): upsampled noise, so Inception sees
    structure rather than white noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic")
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _moments(f: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    a = f.double().numpy()
    return a.mean(0), np.cov(a, rowvar=False)  # ADM's compute_statistics


@pytest.fixture(scope="module")
def sets(tmp_path_factory, fetched):
    """Samples (an ADM sample batch, arr_0) and reference images, with their features."""
    d = tmp_path_factory.mktemp("adm")
    fake, real = _images(1), _images(2)
    np.savez(d / "samples.npz", arr_0=fake)
    net = load_inception()
    feats = {}
    for name, a in (("fake", fake), ("real", real)):
        x = torch.from_numpy(a).permute(0, 3, 1, 2)
        e = extract([x], net, torch.device("cpu"))
        rows = torch.cat(e.spatial.rows).float()
        assert rows.shape == (6, SPATIAL_DIM)
        feats[name] = (e.features, rows)
    return d, real, feats


def test_adm_reference_batch_gives_fid_and_sfid_of_the_features(sets):
    d, real, feats = sets
    (ff, fs), (rf, rs) = feats["fake"], feats["real"]
    want_fid = frechet_distance_lowrank(ff.numpy(), rf.numpy())  # from the features
    want_sfid = frechet_distance_lowrank(fs.numpy(), rs.numpy())
    assert want_fid > 1.0 and want_sfid > 1.0  # comparisons that can fail
    mu, sigma = _moments(rf)
    mu_s, sigma_s = _moments(rs)
    np.savez(d / "ref_stats.npz", arr_0=real, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    np.savez(d / "ref_images.npz", arr_0=real)  # no statistics: ADM computes them from arr_0
    cfg = GenerationConfig(kid_subsets=2)
    for ref in ("ref_stats.npz", "ref_images.npz"):
        r = evaluate_samples(d / "samples.npz", d / ref, config=cfg)
        assert r["gfid"] == pytest.approx(want_fid, rel=1e-5)
        assert r["sfid"] == pytest.approx(want_sfid, rel=1e-5)
        assert r["reference_kind"] == "adm" and "ADM reference batch" in r["reference"]
        assert r["n_ref_features"] == 6 and r["precision"] is not None
    # moments only: the count is not in the file, and no features for PR/KID
    np.savez(d / "moments.npz", mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    r = evaluate_samples(d / "samples.npz", d / "moments.npz", config=cfg)
    assert r["gfid"] == pytest.approx(want_fid, rel=1e-5) and r["n_ref"] is None
    assert r["kid"] is None and "image count not stored" in r["reference"]


def test_onesided_frechet_distance_equals_the_full_formula():
    rng = np.random.default_rng(0)
    fa, fb = rng.normal(size=(5, 40)), rng.normal(size=(60, 40)) * 1.5 + 0.3
    mu2, cov2 = fb.mean(0), np.cov(fb, rowvar=False)
    want = frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), mu2, cov2)
    assert frechet_distance_onesided(fa, mu2, cov2) == pytest.approx(want, rel=1e-6)


def test_efficientvit_reference_is_pytorch_fid_protocol(sets):
    d, _, feats = sets
    mu, sigma = _moments(feats["real"][0])
    np.savez(d / "evit.npz", mu=mu, sigma=sigma)
    ref = load_reference(d / "evit.npz")
    assert (ref.kind, ref.protocol, ref.n_known, ref.spatial) == (
        "efficientvit", "pytorch-fid", False, None)
    with pytest.raises(InputError, match="--fid-protocol pytorch-fid"):
        evaluate_samples(d / "samples.npz", d / "evit.npz")  # tf1 asked, pytorch-fid stats
    r = evaluate_samples(d / "samples.npz", d / "evit.npz", protocol="pytorch-fid")
    assert r["gfid"] > 0 and r["sfid"] is None
    assert any("sFID not computed" in n for n in r["notes"])


def test_written_reference_keeps_sfid_statistics(sets, tmp_path):
    d, real, feats = sets
    r = evaluate_samples(d / "samples.npz", d / "ref_images.npz",
                         config=GenerationConfig(kid_subsets=2), save_ref=tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz") as z:  # ADM's keys, readable by its evaluator
        assert z["mu_s"].shape == (SPATIAL_DIM,) and z["sigma"].shape == (2048, 2048)
    again = evaluate_samples(d / "samples.npz", tmp_path / "r.npz",
                             config=GenerationConfig(kid_subsets=2))
    assert again["gfid"] == pytest.approx(r["gfid"], rel=1e-6)
    assert again["sfid"] == pytest.approx(r["sfid"], rel=1e-6)


@pytest.mark.parametrize("arrays,match", [
    ({"foo": np.zeros(3)}, r"holds \['foo'\]: expected a latentae reference .* an ADM "
                           r"reference batch \(arr_0 and/or mu, sigma, mu_s, sigma_s\)"),
    ({"mu": np.zeros(5), "sigma": np.eye(5)}, r"mu \(5,\) / sigma \(5, 5\) are not the "
                                              r"moments of 2048-d features"),
    ({"mu": np.zeros(2048), "sigma": np.eye(2048), "mu_s": np.zeros(3),
      "sigma_s": np.eye(3)}, r"mu_s \(3,\) / sigma_s"),
    ({"arr_0": np.zeros((2, 8, 8), np.uint8)}, r"arr_0\] must be uint8 \(N, H, W, 3\)"),
])
def test_malformed_or_foreign_npz_is_a_one_line_error(tmp_path, arrays, match):
    np.savez(tmp_path / "x.npz", **arrays)
    with pytest.raises(InputError, match=match) as e:
        load_reference(tmp_path / "x.npz")
    assert "\n" not in str(e.value)

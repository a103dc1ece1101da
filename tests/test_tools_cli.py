"""latentae encode / decode / reconstruct / latent-stats / export / info, and every bad
input of issue 7: clear message, exit code != 0, nothing half-written."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from latentae import create_model, load
from latentae.cli import main
from latentae.io import load_image, to_tensor, to_uint8
from latentae.latents import read_shard, write_shard
from latentae.tiling import pad_to_multiple


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model") / "sdvae"
    create_model("sdvae-tiny").save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def images(tmp_path_factory, shared_data):
    """Three small Kodak crops, one of a size not divisible by 8, one in a subfolder."""
    d = tmp_path_factory.mktemp("images")
    with Image.open(shared_data / "kodak24" / "kodim03.png") as im:
        k = im.convert("RGB")
    k.crop((0, 0, 64, 64)).save(d / "a.png")
    k.crop((300, 200, 364, 264)).save(d / "b.png")
    (d / "sub").mkdir()
    k.crop((100, 100, 170, 150)).save(d / "sub" / "c.png")  # 70x50: padded to 72x56
    return d


def _read(path):
    with Image.open(path) as im:
        return im.mode, np.array(im)


def run(*argv):
    return main([str(a) for a in argv])


def _in_memory(model, path):
    x = to_tensor(load_image(path))[None]
    xp, (h, w) = pad_to_multiple(x, 8)
    with torch.no_grad():
        z = model.encode(xp).mode()
        return z[0], to_uint8(model.decode(z)[0, :, :h, :w])


def test_encode_decode_through_files_equals_in_memory(model_dir, images, tmp_path, capsys):
    assert run("encode", model_dir, images, tmp_path / "lat", "--shard-size", "2",
               "--pad") == 0
    shards = sorted((tmp_path / "lat").glob("*.safetensors"))
    assert [p.name for p in shards] == ["latents-00000.safetensors", "latents-00001.safetensors"]
    assert run("decode", model_dir, tmp_path / "lat", tmp_path / "dec") == 0
    model = load(model_dir).eval()
    lat = {**read_shard(shards[0]).latents, **read_shard(shards[1]).latents}
    assert sorted(lat) == ["a.png", "b.png", "sub/c.png"]
    for key in lat:
        z, ref = _in_memory(model, images / key)
        assert torch.allclose(lat[key], z, atol=1e-4), key
        got = torch.from_numpy(_read(tmp_path / "dec" / key)[1]).permute(2, 0, 1)
        assert got.shape == ref.shape  # cropped back to the original size (70x50 too)
        assert (got.int() - ref.int()).abs().max() <= 1  # channels_last rounding only
    # resumable: a second run skips everything; a deleted output is redone
    assert run("encode", model_dir, images, tmp_path / "lat", "--shard-size", "2",
               "--pad") == 0
    assert "3 already there" in capsys.readouterr().out
    (tmp_path / "dec" / "b.png").unlink()
    assert run("decode", model_dir, tmp_path / "lat", tmp_path / "dec") == 0
    assert "decoded 1 images" in capsys.readouterr().out


def test_apply_scaling_is_recorded_and_undone(model_dir, images, tmp_path):
    model = load(model_dir)
    assert run("encode", model_dir, images, tmp_path / "lat", "--apply-scaling", "--pad") == 0
    shard = read_shard(tmp_path / "lat" / "latents-00000.safetensors")
    assert shard.scaling_applied and float(shard.meta["scaling_factor"]) == model.scaling_factor
    z, _ = _in_memory(model.eval(), images / "a.png")
    assert torch.allclose(shard.latents["a.png"], z * model.scaling_factor, atol=1e-4)
    assert torch.allclose(shard.unscale("a.png"), z, atol=1e-4)


def test_reconstruct_writes_images_and_comparisons_tiled(model_dir, images, tmp_path, capsys):
    assert run("reconstruct", model_dir, images, tmp_path / "rec", "--tile", "32",
               "--overlap", "16", "--dtype", "bfloat16", "--pad") == 0
    assert (tmp_path / "rec" / "sub" / "c.png").is_file()
    cmp = _read(tmp_path / "rec" / "compare" / "a.png")[1]
    assert cmp.shape[1] > 2 * 64 and cmp.shape[0] >= 64  # original | reconstruction
    assert "mean PSNR" in capsys.readouterr().out


def test_latent_stats_match_a_direct_computation_and_write_back(model_dir, images, tmp_path,
                                                                 capsys):
    d = tmp_path / "m"
    load(model_dir).save_pretrained(str(d))
    assert run("latent-stats", d, images, "--json", tmp_path / "s.json", "--write") == 0
    stats = json.loads((tmp_path / "s.json").read_text())
    model = load(model_dir).eval()
    zs = []
    for p in sorted(images.rglob("*.png")):
        img = load_image(p)
        w, h = img.size
        img = img.crop(((w % 8) // 2, (h % 8) // 2, (w % 8) // 2 + w - w % 8,
                        (h % 8) // 2 + h - h % 8))
        with torch.no_grad():
            zs.append(model.encode(to_tensor(img)[None]).mode().double().flatten(2)[0])
    z = torch.cat(zs, dim=1)  # (nz, all positions)
    assert np.allclose(stats["mean"], z.mean(1).numpy(), atol=1e-5)
    assert np.allclose(stats["std"], z.std(1, unbiased=False).numpy(), atol=1e-5)
    assert stats["scaling_factor"] == pytest.approx(1 / float(z.std(unbiased=False)), rel=1e-5)
    assert np.allclose(stats["rms_per_channel"], z.square().mean(1).sqrt().numpy(), atol=1e-5)
    assert load(d).scaling_factor == pytest.approx(stats["scaling_factor"])
    assert "suggested scaling_factor" in capsys.readouterr().out


def test_export_diffusers_and_info(model_dir, tmp_path, capsys):
    from diffusers import AutoencoderKL

    out = tmp_path / "diffusers"
    assert run("export", model_dir, "--format", "diffusers", out) == 0
    twin = AutoencoderKL.from_pretrained(out, local_files_only=True, low_cpu_mem_usage=False)
    ours = load(model_dir).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(twin.encode(x).latent_dist.mode(), ours.encode(x).mode(),
                              atol=1e-5)
    assert run("export", model_dir, out) != 0  # exists, not empty
    assert "is not empty" in capsys.readouterr().err
    assert run("export", model_dir, out, "--overwrite", "--format", "latentae") == 0
    assert load(out).family == "sdvae"
    capsys.readouterr()
    assert run("info", model_dir, "--json", "-") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "sdvae" and info["preset"] == "sdvae-tiny"
    assert info["spatial_compression_ratio"] == 8 and info["encoder_params"] == 395216
    assert run("info", "litevae-b") == 0
    assert "6750636" in capsys.readouterr().out


def test_odd_modes_are_converted_with_a_notice(model_dir, tmp_path, capsys):
    d = tmp_path / "modes"
    d.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(d / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(d / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(d / "deep16.png")
    assert _read(d / "deep16.png")[0].startswith("I")
    assert run("reconstruct", model_dir, d, tmp_path / "rec") == 0
    err = capsys.readouterr().err
    for name, mode in (("gray", "L"), ("rgba", "RGBA"), ("deep16", "I")):
        assert re.search(f"{name}.png: converted {mode}", err), err
        assert (tmp_path / "rec" / f"{name}.png").is_file()


def _fails(capsys, pattern, *argv):
    rc = run(*argv)
    err = capsys.readouterr().err
    assert rc != 0 and re.search(pattern, err), (rc, err)


def test_unreadable_image_fails_cleanly_leaving_complete_shards_only(model_dir, images,
                                                                     tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    for p in sorted(images.glob("*.png")):
        (d / p.name).write_bytes(p.read_bytes())  # a.png, b.png
    (d / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "lat"
    _fails(capsys, r"cannot decode image .*c\.png", "encode", model_dir, d, out,
           "--shard-size", "2")
    assert sorted(p.name for p in out.iterdir()) == [".latentae-run.json",
                                                     "latents-00000.safetensors"]
    assert sorted(read_shard(out / "latents-00000.safetensors").latents) == ["a.png", "b.png"]


def test_latents_of_the_wrong_shape_or_family_are_refused(model_dir, images, tmp_path,
                                                          capsys):
    bad = tmp_path / "bad.safetensors"
    meta = {"format": "latentae-latents/1", "family": "sdvae", "model": "x",
            "compression": "8", "scaling_factor": "1.0", "shift_factor": "0.0",
            "scaling_applied": "false"}
    write_shard(bad, {"a.png": torch.zeros(3, 8, 8)}, {"a.png": (64, 64)}, meta)
    _fails(capsys, "has 3 channels but .* decodes 4", "decode", model_dir, bad, tmp_path / "o")
    assert not (tmp_path / "o").exists()
    lite = tmp_path / "lite"
    create_model("litevae-tiny").save_pretrained(str(lite))
    assert run("encode", model_dir, images, tmp_path / "lat", "--pad") == 0
    _fails(capsys, "made by a sdvae model", "decode", lite, tmp_path / "lat", tmp_path / "o")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    _fails(capsys, "not a readable safetensors", "decode", model_dir,
           tmp_path / "junk.safetensors", tmp_path / "o")


def test_model_dir_of_another_family_or_not_a_model(images, tmp_path, capsys):
    d = tmp_path / "weird"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"family": "unet", "config": {}}))
    _fails(capsys, "unknown model family 'unet'", "encode", d, images, tmp_path / "o")
    _fails(capsys, "unknown model family", "info", d)
    _fails(capsys, "not a directory: there is no saved model", "info", tmp_path / "nothing")
    _fails(capsys, "neither a model directory nor a preset name. Did you mean sdvae-tiny",
           "info", "sdvae-tin")
    _fails(capsys, "preset name, not saved weights", "encode", "sdvae-tiny", images,
           tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_unwritable_output_fails_before_work(model_dir, images, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for cmd in ("encode", "reconstruct"):
        _fails(capsys, "cannot write .* is a file", cmd, model_dir, images, blocker / "out")
    _fails(capsys, "not writable|cannot write .* is a file", "export", model_dir,
           blocker / "out")
    _fails(capsys, "not a directory|no images", "encode", model_dir, tmp_path / "none",
           tmp_path / "o")
    _fails(capsys, "multiples of the compression factor", "encode", model_dir, images,
           tmp_path / "o", "--tile", "30")
    _fails(capsys, "needs a saved model directory", "latent-stats", "sdvae-tiny", images,
           "--write", "--random-init")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


"""Image I/O: listing, decoding, quantization, crops, the folder dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from latentae.io import (
    CorruptImageError,
    ImageFolderDataset,
    image_grid,
    list_images,
    load_image,
    resize_center_crop,
    save_image,
    to_tensor,
    to_uint8,
)


def _write(folder, name, size=(40, 30), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(folder / name)
    return folder / name


def test_list_images_sorted_recursive_and_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        list_images(tmp_path)
    (tmp_path / "sub").mkdir()
    _write(tmp_path, "b.png")
    _write(tmp_path, "a.JPG")
    _write(tmp_path / "sub", "c.webp")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.webp"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.JPG", "b.png"]
    with pytest.raises(ValueError, match="not a directory"):
        list_images(tmp_path / "missing")


def test_load_image_converts_modes_and_flags_corrupt(tmp_path):
    for mode in ("L", "RGBA", "P", "CMYK"):
        img = load_image(_write(tmp_path, f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}",
                                mode=mode))
        assert img.mode == "RGB" and img.size == (40, 30)
    a16 = (np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    g = np.asarray(load_image(tmp_path / "g16.png"))
    assert g.dtype == np.uint8 and g[..., 0].max() > 200  # scaled, not clipped to 255 at 255
    np.testing.assert_array_equal(g[..., 0], np.round(a16 / 65535 * 255).astype(np.uint8))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(CorruptImageError, match="bad.png"):
        load_image(tmp_path / "bad.png")
    assert issubclass(CorruptImageError, ValueError)


def test_to_uint8_is_the_stated_rule_and_roundtrips():
    x = torch.linspace(-1.3, 1.3, 10001)
    expected = torch.round(torch.clamp(127.5 * (x.double() + 1), 0, 255)).to(torch.uint8)
    assert torch.equal(to_uint8(x), expected)
    a = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    assert torch.equal(to_uint8(to_tensor(a)), torch.from_numpy(a).permute(2, 0, 1))
    assert to_uint8(x.to(torch.bfloat16)).dtype == torch.uint8


def test_save_image_png_roundtrip_is_lossless(tmp_path):
    t = to_tensor(np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8))
    save_image(t, tmp_path / "x" / "a.png")
    save_image(t[None], tmp_path / "b.png")
    assert torch.equal(to_tensor(load_image(tmp_path / "x" / "a.png")), t)
    assert torch.equal(to_tensor(load_image(tmp_path / "b.png")), t)
    assert not list(tmp_path.glob("**/*.tmp"))


def test_resize_center_crop_handles_any_size_and_matches_pil():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 50, 3), np.uint8))
    out = resize_center_crop(img, 16)
    assert out.size == (16, 16)
    ref = img.resize((27, 16), Image.BICUBIC).crop((5, 0, 21, 16))  # round(50·16/30)=27
    assert np.array_equal(np.asarray(out), np.asarray(ref))
    assert resize_center_crop(img.transpose(Image.TRANSPOSE), 64).size == (64, 64)  # upscale


def test_image_grid_layout():
    t = torch.zeros(3, 10, 20)
    g = image_grid([[t, t], [t]], pad=2)
    assert g.size == (2 * 20 + 3 * 2, 2 * 10 + 3 * 2)


def test_dataset_counts_corrupt_files_and_mixed_sizes(tmp_path):
    _write(tmp_path, "a.png", size=(40, 30))
    _write(tmp_path, "b.png", size=(17, 61))
    (tmp_path / "c.png").write_bytes(b"garbage")
    ds = ImageFolderDataset(tmp_path, 16, crop="random", flip=True)
    shapes = [ds[i][0].shape for i in range(len(ds))]
    assert shapes == [(3, 16, 16)] * 3
    assert ds[2][1] == 0  # the corrupt file is replaced by the next readable one
    assert [p.name for p in ds.corrupt] == ["c.png"]
    with pytest.raises(ValueError, match="crop"):
        ImageFolderDataset(tmp_path, 16, crop="left")


def test_dataset_random_crops_follow_torch_seed(tmp_path):
    _write(tmp_path, "a.png", size=(60, 20))
    ds = ImageFolderDataset(tmp_path, 16, crop="random", flip=True)
    torch.manual_seed(3)
    first = [ds[0][0] for _ in range(8)]
    torch.manual_seed(3)
    again = [ds[0][0] for _ in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert any(not torch.equal(first[0], t) for t in first[1:])  # crops do vary

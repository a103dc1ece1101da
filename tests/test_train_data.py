"""Training data: determinism by stream position, corrupt and small files, shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from latentae.engine.data import (
    StreamBatches,
    TrainImages,
    list_sources,
    make_loader,
)
from latentae.engine.webdata import write_shards
from latentae.errors import InputError


def make_folder(path, sizes=((40, 48),) * 5):
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        a = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        Image.fromarray(a).save(path / f"img{i}.png")
    return path


def test_corrupt_file_is_counted_and_skipped(tmp_path):
    folder = make_folder(tmp_path / "d")
    (folder / "bad.png").write_bytes(b"this is not a png")
    data = TrainImages(list_sources(folder), 32)
    corrupt_total = 0
    for i in range(2 * len(data)):  # two epochs: every file is drawn twice
        x, corrupt, small = data[i]
        assert x.shape == (3, 32, 32) and -1 <= x.min() and x.max() <= 1
        corrupt_total += corrupt
    assert corrupt_total == 2


def test_small_images_skip_or_upscale(tmp_path):
    folder = make_folder(tmp_path / "d", sizes=[(40, 48), (20, 24)])
    skip = TrainImages(list_sources(folder), 32, small="skip")
    assert sum(skip[i][2] for i in range(4)) == 2  # the small one, once per epoch
    upscale = TrainImages(list_sources(folder), 32, small="upscale")
    assert all(upscale[i][2] == 0 and upscale[i][0].shape == (3, 32, 32) for i in range(4))


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        list_sources(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match="no usable training image"):
        TrainImages(list_sources(tmp_path / "bad"), 32)[0]


def test_samples_depend_only_on_position(tmp_path):
    folder = make_folder(tmp_path / "d")
    a = TrainImages(list_sources(folder), 32, seed=3, crop_scale=1.5)
    b = TrainImages(list_sources(folder), 32, seed=3, crop_scale=1.5)
    for i in (7, 2, 7, 11):  # any order, any instance
        assert torch.equal(a[i][0], b[i][0])
    # two processes with batch 2 read exactly the positions of one with batch 4, from
    # any image position (a resume after 20 images, or after 22 with another batch)
    for start in (20, 22):
        one = iter(StreamBatches(4, start=start))
        two = [iter(StreamBatches(2, rank=r, world=2, start=start)) for r in range(2)]
        for _ in range(2):
            assert next(one) == next(two[0]) + next(two[1])
    assert next(iter(StreamBatches(4, start=20))) == list(range(20, 24))
    loader = make_loader(a, 2, 0, 1, start=2)
    x, corrupt, small = next(iter(loader))
    assert torch.equal(x, torch.stack([a[2][0], a[3][0]])) and corrupt == small == 0


def test_shards_round_trip(tmp_path):
    folder = make_folder(tmp_path / "d")
    shards = write_shards(folder, tmp_path / "shards", max_bytes=12 << 10)
    assert len(shards) >= 2
    sources = list_sources(tmp_path / "shards")
    assert len(sources) == 5
    from_shards = TrainImages(sources, 32)
    from_files = TrainImages(list_sources(folder), 32)
    for i in range(5):
        assert torch.equal(from_shards[i][0], from_files[i][0])
    assert [p.name for p in sorted((tmp_path / "shards").iterdir())] == [p.name for p in shards]

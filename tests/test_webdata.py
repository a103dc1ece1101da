"""Shards written with webdataset's ShardWriter, read by both readers; training from
webdataset streams (a brace pattern, http:// on a local server, pipe:cat) with
per-process and per-worker splitting, a seeded shuffle buffer, and resume at a shard
boundary."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import webdataset as wds
from PIL import Image

import latentae
from latentae.cli import main
from latentae.engine.data import list_sources, read_source
from latentae.engine.state import load_latest
from latentae.engine.webdata import (
    ShardStream,
    StreamPosition,
    is_streamed,
    shard_urls,
    write_shards,
)
from latentae.errors import InputError, StateError
from latentae.train.autoencoder import train
from latentae.train.config import make_config

TINY = {"resolution": 32, "batch_size": 2, "steps": 3, "losses.perceptual": 0,
        "discriminator_on": False}


def photo_folder(folder: Path, n: int = 8, suffixes: tuple[str, ...] = (".png",)) -> Path:
    """``n`` random 40×40 images (noise: PNGs of about the same size), the formats
    taken in turn from ``suffixes``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}{suffixes[i % len(suffixes)]}")
    return folder


@pytest.fixture
def shards(tmp_path) -> list[Path]:
    """The 8 images in 4 shards of 2 (written by ``latentae shards``)."""
    folder = photo_folder(tmp_path / "images")
    biggest = max(f.stat().st_size for f in folder.iterdir())
    assert main(["shards", str(folder), str(tmp_path / "shards"), "--size",
                 str(2 * (biggest + 1024))]) == 0
    return sorted((tmp_path / "shards").glob("*.tar"))


def pattern(shard_list: list[Path], prefix: str = "") -> str:
    return f"{prefix}{shard_list[0].parent}/shard-{{000000..{len(shard_list) - 1:06d}}}.tar"


@contextlib.contextmanager
def http_server(folder: Path, seconds: float = 120) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 from a thread; shuts itself down after ``seconds``
    even if the test hangs. Yields the base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    timer = threading.Timer(seconds, server.shutdown)
    thread.start()
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_shardwriter_shards_are_read_by_both_readers(tmp_path):
    folder = photo_folder(tmp_path / "images", 6, (".png", ".jpg", ".jpeg"))
    files = sorted(folder.iterdir())
    (shard,) = write_shards(folder, tmp_path / "shards")
    sources = list_sources(tmp_path / "shards")  # the local-tar reader of data.py
    assert [s.name for s in sources] == [f"{i:09d}{f.suffix}" for i, f in enumerate(files)]
    for src, f in zip(sources, files):
        assert np.array_equal(np.asarray(read_source(src)),
                              np.asarray(Image.open(f).convert("RGB")))
    samples = list(wds.WebDataset([str(shard)], shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(len(files))]
    for sample, f in zip(samples, files):
        assert sample[f.suffix[1:]] == f.read_bytes()  # the file's bytes under its extension


def test_shards_respect_the_size_limit(shards):
    assert len(shards) == 4
    for shard in shards:  # --size holds two images with their headers, not three
        with tarfile.open(shard) as tar:
            assert len(tar.getmembers()) == 2


def test_a_failed_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    folder = photo_folder(tmp_path / "images")
    (tmp_path / "out").mkdir()
    calls = {"n": 0}
    real = Path.read_bytes

    def failing(self):
        calls["n"] += 1
        if calls["n"] == 6:  # after two complete shards
            raise OSError("disk went away")
        return real(self)
    monkeypatch.setattr(Path, "read_bytes", failing)
    with pytest.raises(OSError, match="disk went away"):
        write_shards(folder, tmp_path / "out", max_bytes=2 * (5000 + 1024))
    assert calls["n"] == 6
    assert list((tmp_path / "out").iterdir()) == []  # whole or not at all
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]  # no temporaries


def test_what_is_streamed(tmp_path, shards):
    assert not is_streamed(str(shards[0].parent))  # a folder of shards: the exact path
    assert not is_streamed(str(tmp_path / "images"))
    for spec in (pattern(shards), "https://host/x-{0..9}.tar", "pipe:cat a.tar",
                 str(shards[0]), "a.tar::b.tar"):
        assert is_streamed(spec), spec
    assert len(shard_urls(pattern(shards))) == 4
    with pytest.raises(InputError, match="2 of 6 shards do not exist"):
        shard_urls(f"{shards[0].parent}/shard-{{000000..000005}}.tar")


def cursors(stream: ShardStream, n: int) -> list[int]:
    out = []
    for _, _, _, cursor in stream:
        out.append(cursor)
        if len(out) == n:
            return out


def test_stream_splits_by_process_and_is_seeded(shards, monkeypatch):
    urls = [str(s) for s in shards]
    one = ShardStream(urls, 0, 32, seed=3, phase=0, buffer=0)
    def images(stream):
        return torch.stack([item[0] for item, _ in zip(stream, range(8))])
    assert torch.equal(images(one), images(one))  # seeded: the same crops again
    assert cursors(one, 8) == [0, 0, 1, 1, 2, 2, 3, 3]  # 2 images per shard
    for rank in (0, 1):  # wds.split_by_node: every second shard read
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert set(cursors(one, 6)) == {rank, rank + 2, rank + 4}
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    shuffled = ShardStream(urls, 0, 32, seed=3, phase=0, buffer=4)
    assert cursors(shuffled, 8) == cursors(shuffled, 8) != cursors(one, 8)
    later = ShardStream(urls, 5, 32, seed=3, phase=0, buffer=4)
    assert min(cursors(later, 6)) >= 5  # a resumed stream starts at its shard


def test_loader_workers_take_every_other_shard(shards):
    stream = ShardStream([str(s) for s in shards], 0, 32, seed=0, phase=0, buffer=0)
    loader = torch.utils.data.DataLoader(stream, batch_size=2, num_workers=2)
    seen = [b[3].tolist() for b, _ in zip(loader, range(4))]
    # worker 0 reads shards 0, 2, …; worker 1 reads 1, 3, …; batches alternate
    assert seen == [[0, 0], [1, 1], [2, 2], [3, 3]]


def test_stream_position_maps_an_image_index_to_a_shard():
    pos = StreamPosition()
    assert pos.first_shard(0, 0) == 0  # a phase starts at the first shard read
    pos.load_state_dict({"phase": 1, "nimg": 40, "next_shard": 7})
    assert pos.first_shard(1, 40) == 7
    with pytest.raises(StateError, match="stream position"):
        pos.first_shard(1, 42)


def stream_run(tmp_path: Path, data: str, out: str, **kw):
    return make_config(dict(model="litevae-tiny", recipe="sdvae", data=data,
                            out=str(tmp_path / out), progress=False, shuffle_buffer=3,
                            ckpt_every=1, recipe_overrides=TINY), kw)


def test_train_from_a_pattern_stops_and_resumes_at_a_shard_boundary(shards, tmp_path):
    cfg = stream_run(tmp_path, pattern(shards), "run", max_steps=2)
    assert train(cfg) is None
    saved = load_latest(tmp_path / "run" / "checkpoints")
    assert saved["stream"]["nimg"] == 4 and saved["state"]["phase_nimg"] == 4
    assert saved["stream"]["next_shard"] >= 2  # 4 images need at least 2 shards of 2
    out = train(stream_run(tmp_path, pattern(shards), "run", resume="auto"))
    assert latentae.load(out).family == "litevae"
    assert load_latest(tmp_path / "run" / "checkpoints")["state"]["nimg"] == 6


def test_train_from_http_and_pipe_streams(shards, tmp_path):
    with http_server(shards[0].parent) as url:
        spec = f"{url}/shard-{{000000..{len(shards) - 1:06d}}}.tar"
        assert train(stream_run(tmp_path, spec, "http")) is not None
        with pytest.raises(InputError, match="cannot read shard"):  # curl -f: a 404
            train(stream_run(tmp_path, f"{url}/missing.tar", "404"))
    assert train(stream_run(tmp_path, pattern(shards, "pipe:cat "), "pipe")) is not None
    assert main(["train", "--model", "litevae-tiny", "--recipe", "sdvae", "--data",
                 f"pipe:cat {shards[0]}", "--out", str(tmp_path / "cli"), "--no-progress",
                 *[a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]]) == 0


def _ddp_worker(rank: int, world: int, port: int, tmp: str, data: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from latentae.engine import dist
    try:
        train(stream_run(Path(tmp), data, "ddp", max_steps=2, shuffle_buffer=0,
                         recipe_overrides={**TINY, "batch_size": 2}))  # global: 1 each
    finally:
        dist.destroy()


@pytest.mark.slow
def test_ddp_processes_share_one_shard_position(shards, tmp_path):
    # 2 processes, batch 1 each, 2 images per shard, no shuffle: rank 0 reads shard reads
    # 0, 2, …, rank 1 reads 1, 3, …; after 2 steps each took 2 images from its first
    # read, so the next read is 1 + max(0, 1) = 2 (rank 0 alone would say 1).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path), pattern(shards)), nprocs=2, join=True)
    saved = load_latest(tmp_path / "ddp" / "checkpoints")
    assert saved["stream"] == {"phase": 0, "nimg": 4, "next_shard": 2}

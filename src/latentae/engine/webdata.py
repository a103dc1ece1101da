"""Streamed training data through the ``webdataset`` library, and its shard writer.

``--data`` that is not a local folder is a webdataset stream (:func:`is_streamed`): a
brace pattern (``shards/train-{000000..000099}.tar``), ``http(s)://`` URLs and ``pipe:``
commands (``pipe:aws s3 cp s3://bucket/train-{000000..000099}.tar -``), several joined
by ``::``. webdataset opens them (``gopen``: curl for URLs, a subprocess for ``pipe:``),
so any store with a command-line reader works with no code of ours.

The stream of a phase is an endless sequence of shard reads: epoch ``e`` visits the
shards in a permutation seeded by (seed, phase, e), and read number ``c`` of that
sequence is the shard's *cursor*. Processes take every W-th read
(``wds.split_by_node``), loader workers every K-th of those (``wds.split_by_worker``);
the samples then pass a shuffle buffer (``wds.shuffle``, seeded by (seed, phase, first
cursor, rank, worker)) before the crop and flip of ``data.crop_flip``, seeded per sample
by (seed, phase, cursor, index in the shard).

**Resume at a shard boundary.** The loop resumes a phase at an image index; a stream
cannot seek to an image, so the task keeps a :class:`StreamPosition` in its checkpoints
that maps the image index reached to the next shard read: one past the highest cursor any
process has taken an image from. A resumed run starts there: it sees no image twice in
that epoch, skips what was left of partly read shards and of the shuffle buffers, and is
not bit-identical to an uninterrupted run (local folders and folders of shards are: they
use ``data.py``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import random
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed as tdist

from latentae.engine import dist
from latentae.engine.data import crop_flip, decode_usable
from latentae.engine.state import seed_from
from latentae.errors import InputError, StateError
from latentae.files import atomic_dir, atomic_write, prepare_output_dir
from latentae.io import IMAGE_SUFFIXES, list_images, load_image, to_tensor


class _Deferred:
    """``webdataset``, imported on first use: training from a folder (the studies, the GPU
    machine, where it is not installed) never needs it."""

    def __getattr__(self, name: str) -> Any:
        import webdataset  # deferred: not on the GPU machine, only streams need it

        return getattr(webdataset, name)


wds = _Deferred()

__all__ = ["ShardStream", "StreamPosition", "StreamedData", "is_streamed", "shard_urls",
           "write_shards"]

def is_streamed(spec: str) -> bool:
    """Whether ``--data`` is read as a webdataset stream: not a local folder, and a URL,
    a ``pipe:`` command, a brace pattern, ``::``-joined specs or a ``.tar`` path."""
    return not Path(spec).is_dir() and (
        spec.startswith("pipe:") or "://" in spec or "{" in spec or "::" in spec
        or spec.endswith(".tar"))


def shard_urls(spec: str) -> list[str]:
    """The shard URLs of a stream spec (``::``-joined, braces expanded); local paths
    must exist (an :class:`InputError` names the first missing ones)."""
    urls = wds.shardlists.expand_urls(spec)
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not Path(u).is_file()]
    if missing and any(c in spec for c in "*?["):  # a glob the shell did not expand
        raise InputError(f"--data {spec}: wildcards are not expanded: pass the folder that "
                         "holds the .tar shards, or a brace pattern such as "
                         "DIR/shard-{000000..000009}.tar")
    if missing:
        raise InputError(f"--data {spec}: {len(missing)} of {len(urls)} shards do not "
                         f"exist, e.g. {', '.join(missing[:3])}")
    if not urls:
        raise InputError(f"--data {spec} names no shards")
    return urls


class ShardStream(torch.utils.data.IterableDataset):
    """One process's endless stream ``(image (3, R, R) in [-1, 1], corrupt, small,
    cursor)`` from shard read ``first`` on (see the module docstring); ``corrupt`` /
    ``small`` count the samples skipped before this one, ``cursor`` is its shard read."""

    def __init__(self, urls: list[str], first: int, resolution: int, seed: int, phase: int,
                 buffer: int, small: str = "upscale", crop_scale: float = 1.0) -> None:
        super().__init__()
        self.urls, self.first, self.resolution = urls, first, resolution
        self.seed, self.phase, self.buffer = seed, phase, buffer
        self.small, self.crop_scale = small, crop_scale

    def shard_reads(self) -> Iterator[dict[str, Any]]:
        """``{"url", "cursor"}`` for reads ``first, first + 1, …`` (all processes')."""
        cursor, perm = self.first, None
        while True:
            epoch, j = divmod(cursor, len(self.urls))
            if perm is None or perm[0] != epoch:
                g = torch.Generator().manual_seed(seed_from(self.seed, self.phase, epoch, 4))
                perm = (epoch, torch.randperm(len(self.urls), generator=g).tolist())
            yield {"url": self.urls[perm[1][j]], "cursor": cursor}
            cursor += 1

    def raw_samples(self, reads: Iterator[dict[str, Any]]) -> Iterator[tuple[int, int, bytes]]:
        """``(cursor, index in shard, image bytes)`` of every sample holding an image."""
        empty = 0
        for read in reads:
            found = 0
            try:
                for k, sample in enumerate(wds.tarfile_to_samples()(iter([{"url": read["url"]}]))):
                    ext = next((e for e in sample if f".{e}" in IMAGE_SUFFIXES), None)
                    if ext is not None:
                        found += 1
                        yield read["cursor"], k, sample[ext]
            except Exception as e:  # what webdataset, curl or the pipe raised, and where
                raise InputError(f"cannot read shard {read['url']}: {stream_error(e)}") from e
            empty = 0 if found else empty + 1
            if empty >= len(self.urls):
                raise InputError(f"{empty} shards in a row hold no images (members ending "
                                 f"{', '.join(IMAGE_SUFFIXES)}), e.g. {read['url']}")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, int, int]]:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        samples = self.raw_samples(wds.split_by_worker(wds.split_by_node(self.shard_reads())))
        if self.buffer:
            seed = seed_from(self.seed, self.phase, self.first, rank, worker)
            samples = wds.shuffle(self.buffer, min(100, self.buffer), seed=seed)(samples)
        corrupt = small = 0
        for cursor, k, data in samples:
            img, c, s = decode_usable(functools.partial(load_image, io.BytesIO(data)),
                                      self.resolution, self.small)
            corrupt, small = corrupt + c, small + s
            if img is None:
                continue
            rng = random.Random(seed_from(self.seed, self.phase, cursor, k, 1))
            yield to_tensor(crop_flip(img, self.resolution, self.crop_scale, rng)), \
                corrupt, small, cursor
            corrupt = small = 0


def collate(items: list[tuple[torch.Tensor, int, int, int]]
            ) -> tuple[torch.Tensor, int, int, int]:
    """``(images (B, 3, R, R), corrupt, small, highest cursor)``."""
    return (torch.stack([x for x, *_ in items]), sum(c for _, c, _, _ in items),
            sum(s for _, _, s, _ in items), max(k for *_, k in items))


class StreamPosition:
    """Where a phase's stream stands: after image ``nimg`` of phase ``phase`` the next
    shard read is ``next_shard`` (the same on every process). A checkpoint item."""

    def __init__(self) -> None:
        self.phase, self.nimg, self.next_shard = 0, 0, 0

    def state_dict(self) -> dict[str, int]:
        return {"phase": self.phase, "nimg": self.nimg, "next_shard": self.next_shard}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.phase, self.nimg = int(state["phase"]), int(state["nimg"])
        self.next_shard = int(state["next_shard"])

    def first_shard(self, phase: int, start: int) -> int:
        """The shard read a phase continues from at image ``start`` of the phase."""
        if start == 0:
            return 0
        if (self.phase, self.nimg) != (phase, start):
            raise StateError(f"the checkpoint's stream position (phase {self.phase}, image "
                             f"{self.nimg}) is not where the run resumes (phase {phase}, "
                             f"image {start}); start a new run with another --out")
        return self.next_shard


def _max_over_processes(value: int, device: torch.device) -> int:
    if not tdist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return int(t.item())


class StreamedData:
    """A webdataset stream as the autoencoder task's data: :meth:`batches` for the loop,
    :attr:`position` for its checkpoints."""

    def __init__(self, spec: str, seed: int, buffer: int, small: str, crop_scale: float,
                 workers: int, device: torch.device) -> None:
        self.urls = shard_urls(spec)
        self.seed, self.buffer, self.small, self.crop_scale = seed, buffer, small, crop_scale
        self.workers, self.device = workers, device
        self.position = StreamPosition()

    def batches(self, phase: int, start: int, resolution: int, batch_size: int
                ) -> Iterator[tuple[torch.Tensor, int, int]]:
        """This process's batches ``(images (B, 3, R, R), corrupt, small)`` of ``phase``
        from image ``start`` (at the shard boundary :attr:`position` says); lazy."""
        first = self.position.first_shard(phase, start)
        stream = ShardStream(self.urls, first, resolution, self.seed, phase, self.buffer,
                             self.small, self.crop_scale)
        loader = torch.utils.data.DataLoader(stream, batch_size=batch_size,
                                             num_workers=self.workers, collate_fn=collate)
        nimg = start
        for x, corrupt, small, cursor in loader:
            nimg += batch_size * dist.world_size()
            self.position.phase, self.position.nimg = phase, nimg
            self.position.next_shard = _max_over_processes(cursor, self.device) + 1
            yield x, corrupt, small


class _AtomicShards:
    """``ShardWriter``'s opener and post hooks: each shard is written to a temporary
    beside it and renamed into place when complete (``latentae.files.atomic_write``)."""

    def __init__(self) -> None:
        self.open_shard: tuple[contextlib.AbstractContextManager, Path] | None = None
        self.written: list[Path] = []

    def open(self, fname: str) -> IO[bytes]:
        manager = atomic_write(fname, "wb")
        f = manager.__enter__()
        self.open_shard = (manager, Path(fname))
        return f

    def commit(self, fname: str) -> None:
        manager, path = self.open_shard
        self.open_shard = None
        manager.__exit__(None, None, None)
        self.written.append(path)

    def abort(self, exc: BaseException) -> None:
        if self.open_shard is not None:
            manager, _ = self.open_shard
            self.open_shard = None
            manager.__exit__(type(exc), exc, exc.__traceback__)


def stream_error(e: BaseException) -> str:
    """What webdataset's exception says, without the Python reprs it wraps it in
    (``("…: exit 1 (read) {}", <Pipe object at 0x…>, url)``)."""
    text = str(e.args[0]) if e.args and isinstance(e.args[0], str) else str(e)
    if m := re.search(r"exit (-?\d+) \(read\)", text):
        return f"{_ended(text, int(m.group(1)))} (for a URL: is the network reachable and " \
               "the file there?)"
    if text == "empty file":
        return ("it is empty (the command or download gave no data: for a URL, is the "
                "network reachable and the file there?)")
    if text.startswith("unexpected end of data"):
        return ("the stream ended in the middle of a tar member (unexpected end of data: a "
                "cut or truncated shard; check that the command or download gives the "
                "whole file)")
    return re.sub(r"<[^<>]* object at 0x[0-9a-f]+>", "", text).strip() or type(e).__name__


def _ended(text: str, status: int) -> str:
    """``"gsutil exited with status 1"`` from webdataset's ``((['gsutil', 'cat', URL],),
    {…}): exit 1 (read)`` (or ``(('curl … URL',), …)``); a negative status is a signal."""
    name = re.match(r"\(\(\[?['\"]?([^\s'\",\]]+)", text)
    program = name.group(1) if name else "the command that reads it"
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"{program} was stopped by {signal.Signals(-status).name}"
    return f"{program} exited with status {status}"


def write_shards(folder: str | Path, out: str | Path, max_bytes: int = 1 << 30,
                 overwrite: bool = False) -> list[Path]:
    """Pack the images under ``folder`` into ``out/shard-000000.tar`` … with webdataset's
    ``ShardWriter``: one sample per image, key ``__key__`` = its 9-digit index, the file's
    bytes under its lower-case extension (``.jpg``, ``.png``, …). A shard holds at most
    ``max_bytes`` of members (a larger image gets its own). ``data.list_sources`` and
    webdataset both read them. Returns the shard paths.

    ``out`` follows the output-folder rule of ``latentae.files`` (missing or empty, or
    ``overwrite``, checked before any work) and appears whole or not at all: the shards
    are written into a hidden sibling folder renamed into place at the end, each tar
    written atomically, so a full disk or a kill leaves no torn shard and no mix of old
    and new shards."""
    if max_bytes < 1:
        raise InputError(f"the shard size must be at least 1 byte, got {max_bytes}")
    files = list_images(folder)
    out = prepare_output_dir(out, overwrite)
    if Path(folder).resolve() == out.resolve() or out.resolve() in Path(folder).resolve().parents:
        raise InputError(f"the output folder {out} holds the images {folder}: choose "
                         "another output folder")
    with atomic_dir(out, overwrite) as tmp:
        names = [p.name for p in _pack(files, Path(tmp), max_bytes)]
    return [out / name for name in names]


def _pack(files: list[Path], out: Path, max_bytes: int) -> list[Path]:
    """Write ``files`` as shards into the existing folder ``out``; returns their paths."""
    hooks, used = _AtomicShards(), 0
    writer = wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=1 << 62, maxsize=float("inf"),
                             opener=hooks.open, post=hooks.commit, verbose=0, mtime=0.0)
    try:
        for i, f in enumerate(files):
            data = f.read_bytes()
            size = len(data) + 1024  # + tar header and padding
            if writer.count and used + size > max_bytes:
                writer.next_stream()
                used = 0
            writer.write({"__key__": f"{i:09d}", f.suffix.lower().lstrip("."): data})
            used += size
        writer.close()
    except BaseException as e:
        writer.post = None  # close the open shard's tar stream, but do not commit it
        with contextlib.suppress(Exception):
            writer.finish()
        hooks.abort(e)
        raise
    return hooks.written

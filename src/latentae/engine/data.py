"""Training data: a recursive image folder or webdataset-style ``.tar`` shards, read by
index; shortest-side resize (optionally to a random larger scale), random square crop
and horizontal flip at the phase's resolution. Streamed data (brace patterns, URLs,
``pipe:`` commands) is read by ``webdata.py`` instead (``webdata.is_streamed``).

Determinism (STYLE §4): sample ``i`` of a phase's infinite stream is file
``perm_e[i mod N]`` with ``perm_e`` a permutation seeded by (seed, phase, epoch
``e = i // N``), and its crop and flip come from an RNG seeded by (seed, phase, i). The
step that starts at image ``n`` of the phase (the loop's ``state.phase_nimg``) reads
stream positions ``n + rank·B + [0, B)`` (B per-process batch), so a resumed run, or W
processes, see exactly the samples of one uninterrupted process with batch B·W.
Corrupt files and (with ``small="skip"``) images smaller than the crop are replaced by
the next file of the permutation and counted.
"""

from __future__ import annotations

import functools
import io
import os
import random
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from latentae.cards import data_fingerprint, files_fingerprint
from latentae.engine.state import seed_from
from latentae.errors import InputError
from latentae.io import (
    IMAGE_SUFFIXES,
    CorruptImageError,
    list_images,
    load_image,
    resize_shortest,
    to_tensor,
)


@dataclass(frozen=True)
class ShardMember:
    """One image inside a tar shard: where its bytes are."""

    shard: str
    offset: int
    size: int
    name: str


Source = Path | ShardMember


def list_sources(path: str | os.PathLike) -> list[Source]:
    """Image files under ``path``, or the image members of the ``.tar`` shards there
    (a folder holding ``*.tar`` is read as shards). Raises ``ValueError`` when empty."""
    path = Path(path)
    shards = sorted(path.glob("*.tar")) if path.is_dir() else []
    if not shards:
        return list(list_images(path))
    members: list[Source] = []
    for shard in shards:
        try:
            with tarfile.open(shard) as tar:
                members += [ShardMember(str(shard), m.offset_data, m.size, m.name)
                            for m in tar.getmembers()
                            if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES]
        except (tarfile.TarError, OSError) as e:
            raise InputError(f"{shard} is not a readable tar shard ({e}): write the shards "
                             "again with `latentae shards --overwrite`, or move it out of "
                             f"{path}") from e
    if not members:
        raise InputError(f"the shards in {path} hold no images")
    return members


def sources_fingerprint(spec: str | os.PathLike, sources: list[Source]) -> dict:
    """The data fingerprint (``latentae.cards``) of the sources :func:`list_sources`
    found under ``spec``: image files by their paths under ``spec``, images in tar shards
    as ``SHARD/MEMBER`` (the shard's path under ``spec``)."""
    root = Path(spec)
    if sources and isinstance(sources[0], ShardMember):
        names = [f"{Path(s.shard).relative_to(root).as_posix()}/{s.name}" for s in sources]
        return data_fingerprint(root, names, "images in tar shards (names SHARD/MEMBER)")
    return files_fingerprint(root, sources)


def read_source(src: Source) -> Image.Image:
    """Decode one source as RGB (``CorruptImageError``, naming the file or the shard and
    member, if it cannot be read or decoded)."""
    if isinstance(src, Path):
        return load_image(src)
    where = f"{src.name} in {src.shard}"
    try:
        with open(src.shard, "rb") as f:
            f.seek(src.offset)
            data = f.read(src.size)
    except OSError as e:
        raise CorruptImageError(f"cannot read {where}: {e}") from e
    if len(data) != src.size:
        raise CorruptImageError(f"{where} is truncated ({len(data)} of {src.size} bytes)")
    try:
        return load_image(io.BytesIO(data))
    except CorruptImageError as e:
        raise CorruptImageError(f"cannot decode image {where}: {e.__cause__ or e}") from e


def epoch_permutation(n: int, seed: int, phase: int, epoch: int) -> torch.Tensor:
    """``(n,)`` int64: the order of ``n`` sources in epoch ``epoch`` of a phase's stream."""
    g = torch.Generator().manual_seed(seed_from(seed, phase, epoch))
    return torch.randperm(n, generator=g)


def crop_flip(img: Image.Image, r: int, crop_scale: float, rng: random.Random,
              flip: bool = True) -> Image.Image:
    """Resize the shortest side to ``r·U(1, crop_scale)``, random ``r×r`` crop, random
    horizontal flip unless ``flip=False`` (the augmentation of folders, shards and
    streams alike)."""
    img = resize_shortest(img, round(r * rng.uniform(1.0, crop_scale)))
    w, h = img.size
    left, top = rng.randint(0, w - r), rng.randint(0, h - r)
    img = img.crop((left, top, left + r, top + r))
    return img.transpose(Image.FLIP_LEFT_RIGHT) if flip and rng.random() < 0.5 else img


def decode_usable(read: Callable[[], Image.Image], resolution: int, small: str
                  ) -> tuple[Image.Image | None, int, int]:
    """``(read(), 0, 0)``, or ``(None, 1, 0)`` when it cannot be decoded, or
    ``(None, 0, 1)`` when smaller than ``resolution`` and ``small == "skip"``: the one
    rule for skipping a training image (folders, shards, streams)."""
    try:
        img = read()
    except CorruptImageError:
        return None, 1, 0
    if small == "skip" and min(img.size) < resolution:
        return None, 0, 1
    return img, 0, 0


class TrainImages(torch.utils.data.Dataset):
    """Stream position ``i`` -> ``(image (3, R, R) in [-1, 1], corrupt, small)`` where
    the counts say how many sources were skipped to produce it."""

    def __init__(self, sources: list[Source], resolution: int, seed: int = 0,
                 phase: int = 0, small: str = "upscale", crop_scale: float = 1.0,
                 flip: bool = True) -> None:
        if not sources:
            raise InputError("no training images")
        self.sources, self.resolution = sources, resolution
        self.seed, self.phase, self.small, self.crop_scale = seed, phase, small, crop_scale
        self.flip = flip
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.sources)

    def _file(self, i: int) -> int:
        epoch, j = divmod(i, len(self.sources))
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(len(self.sources), self.seed, self.phase,
                                                   epoch))
        return int(self._perm[1][j])

    def crop(self, img: Image.Image, rng: random.Random) -> Image.Image:
        return crop_flip(img, self.resolution, self.crop_scale, rng, self.flip)

    def load(self, i: int) -> tuple[int, Image.Image, int, int]:
        """Stream position ``i`` -> ``(index into sources, decoded image, corrupt, small)``:
        the permutation's file, or the next usable one after skipped files."""
        corrupt = small = 0
        for k in range(len(self.sources)):
            j = (self._file(i) + k) % len(self.sources)
            img, c, s = decode_usable(functools.partial(read_source, self.sources[j]),
                                      self.resolution, self.small)
            corrupt, small = corrupt + c, small + s
            if img is not None:
                return j, img, corrupt, small
        raise InputError(f"no usable training image among {len(self.sources)} sources "
                         f"({corrupt} corrupt, {small} smaller than {self.resolution}px "
                         "with small_images='skip')")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        _, img, corrupt, small = self.load(i)
        rng = random.Random(seed_from(self.seed, self.phase, i, 1))
        return to_tensor(self.crop(img, rng)), corrupt, small


class StreamBatches(torch.utils.data.Sampler):
    """Infinite batch sampler over stream positions: from image ``start`` of the global
    stream, each step yields this process's ``B`` positions ``start + s·B·W + rank·B +
    [0, B)`` (``B`` per process, ``W`` processes)."""

    def __init__(self, batch_size: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        self.batch_size, self.rank, self.world, self.start = batch_size, rank, world, start

    def __iter__(self) -> Iterator[list[int]]:
        base, b = self.start + self.rank * self.batch_size, self.batch_size
        while True:
            yield list(range(base, base + b))
            base += b * self.world


def collate(items: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, int, int]:
    return (torch.stack([x for x, _, _ in items]), sum(c for _, c, _ in items),
            sum(s for _, _, s in items))


def make_loader(dataset: TrainImages, batch_size: int, rank: int, world: int,
                start: int, workers: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader yielding ``(images (B, 3, R, R), corrupt, small)`` from stream
    position ``start`` (an image count, see :class:`StreamBatches`)."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=StreamBatches(batch_size, rank, world, start),
        num_workers=workers, collate_fn=collate, persistent_workers=False)

"""Inputs of the generation metrics: sample sources (folder, npz, tensors), real-image
folders, and reference statistics cached as npz with their protocol.

Reference npz (``latentae-ref-stats/1``): ``mu (2048,)`` and ``sigma (2048, 2048)``
float64 from all real images, ``n``, ``features (k, 2048)`` float32 — all features when
``features_complete``, else a random subset for precision/recall and KID — and the
strings ``protocol`` (FID protocol), ``network``, ``crop``, ``source`` and the int
``resolution``. Read without pickle.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from latentae.errors import InputError
from latentae.eval.fid import FeatureStats
from latentae.files import atomic_write
from latentae.io import CorruptImageError, ImageFolderDataset, list_images, load_image, to_tensor

FORMAT = "latentae-ref-stats/1"
NPZ_IMAGE_KEYS = ("arr_0", "images", "samples")  # arr_0: the ADM evaluator's sample files
SampleSource = str | os.PathLike | torch.Tensor | Iterable[torch.Tensor]


@dataclass
class ReferenceStats:
    """Real-image statistics: moments of all features, and the features kept for PR/KID."""

    stats: FeatureStats
    features: torch.Tensor          # (k, 2048) float32
    protocol: str                   # FID protocol: "tf1" | "pytorch-fid"
    network: str
    resolution: int                 # real images: shortest side resized to this, cropped
    crop: str
    source: str
    skipped: list[str] = field(default_factory=list)


def save_reference(ref: ReferenceStats, path: str | os.PathLike) -> None:
    """Write ``ref`` as a reference npz (atomically, through ``latentae.files``)."""
    if ref.stats.n < 2:
        raise InputError(f"reference statistics need at least 2 images, got {ref.stats.n}")
    mu, sigma = ref.stats.mean_cov()
    arrays = {"format": np.str_(FORMAT), "mu": mu, "sigma": sigma, "n": np.int64(ref.stats.n),
              "features": ref.features.numpy().astype(np.float32),
              "features_complete": np.bool_(ref.features.shape[0] == ref.stats.n),
              "protocol": np.str_(ref.protocol), "network": np.str_(ref.network),
              "resolution": np.int64(ref.resolution), "crop": np.str_(ref.crop),
              "source": np.str_(ref.source)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb", needed=sum(a.nbytes for a in arrays.values())) as f:
        np.savez(f, **arrays)


def stats_from_moments(mu: np.ndarray, sigma: np.ndarray, n: int) -> FeatureStats:
    """A ``FeatureStats`` with the given mean, unbiased covariance and count (no rows)."""
    s = FeatureStats(mu.shape[0])
    mu_t = torch.as_tensor(mu, dtype=torch.float64)
    s.n, s.rows = n, None
    s.sum = mu_t * n
    s.sum_outer = torch.as_tensor(sigma, dtype=torch.float64) * (n - 1) + n * torch.outer(
        mu_t, mu_t)
    return s


def load_reference(path: str | os.PathLike) -> ReferenceStats:
    """Read a reference npz written by ``save_reference``; a wrong or damaged file raises
    ``InputError`` saying so."""
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read reference statistics {path}: {e}") from e
    missing = {"format", "mu", "sigma", "n", "features", "protocol", "resolution"} - set(d)
    if missing or str(d["format"]) != FORMAT:
        raise InputError(f"{path} is not a {FORMAT} file (missing {sorted(missing)}): "
                         "make one with `latentae diffusion ref-stats REAL_DIR --out "
                         "STATS.npz` (or `diffusion eval … --save-ref`)")
    feats, n = torch.from_numpy(d["features"].astype(np.float32)), int(d["n"])
    if bool(d.get("features_complete", False)):  # rebuild exactly (low-rank FID path too)
        stats = FeatureStats(feats.shape[1])
        stats.update(feats)
    else:
        stats = stats_from_moments(d["mu"], d["sigma"], n)
    return ReferenceStats(stats, feats, str(d["protocol"]), str(d.get("network", "")),
                          int(d["resolution"]), str(d.get("crop", "center")),
                          str(d.get("source", path)))


def _batches(loaders: Iterable[tuple[str, Callable[[], torch.Tensor]]], batch_size: int,
             skipped: list[str]) -> Iterator[torch.Tensor]:
    """Stack ``(3, H, W)`` images from ``(name, load)`` pairs into batches; a file that
    cannot be decoded is appended to ``skipped`` (counted and reported, not fatal)."""
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    xs = []
    for name, load in loaders:
        try:
            x = load()
        except CorruptImageError:
            skipped.append(name)
            continue
        if xs and x.shape != xs[0].shape:
            raise InputError(f"{name} is {tuple(x.shape[1:])} but the images before it are "
                             f"{tuple(xs[0].shape[1:])}: the images must share one size")
        xs.append(x)
        if len(xs) == batch_size:
            yield torch.stack(xs)
            xs = []
    if xs:
        yield torch.stack(xs)


def iter_reference(real_dir: str | os.PathLike, resolution: int, crop: str, batch_size: int,
                   skipped: list[str]) -> Iterator[torch.Tensor]:
    """Real images ``(B, 3, R, R)`` in [-1, 1]: shortest side to ``resolution`` (PIL
    bicubic), ``crop`` square, as ``latentae eval`` prepares them."""
    ds = ImageFolderDataset(real_dir, resolution, crop=crop)
    return _batches(((str(p), lambda i=i: to_tensor(ds.load(i)))
                     for i, p in enumerate(ds.files)), batch_size, skipped)


def _npz_images(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        key = next((k for k in NPZ_IMAGE_KEYS if k in z.files), None)
        if key is None:
            raise InputError(f"{path} holds none of {NPZ_IMAGE_KEYS} (found {z.files})")
        a = z[key]
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
        raise InputError(f"{path}[{key}] must be uint8 (N, H, W, 3), got {a.dtype} {a.shape}")
    return a


def _check_batch(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"sample batches must be tensors (B, 3, H, W), got {shape}")
    return x


def iter_samples(samples: SampleSource, batch_size: int,
                 skipped: list[str]) -> Iterator[torch.Tensor]:
    """Batches ``(B, 3, H, W)`` (floats in [-1, 1] or uint8) from a folder of images
    (used as they are, no resize), an npz, one tensor or an iterable of batches."""
    if isinstance(samples, torch.Tensor):
        return (_check_batch(b) for b in _check_batch(samples).split(batch_size))
    if isinstance(samples, (str, os.PathLike)):
        p = Path(samples)
        if p.is_file() and p.suffix == ".npz":
            a = torch.from_numpy(_npz_images(p)).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
            return iter(a.split(batch_size))
        if not p.is_dir():
            raise InputError(f"samples {p} are neither a folder of images nor an .npz file")
        return _batches(((str(f), lambda f=f: to_tensor(load_image(f)))
                         for f in list_images(p)), batch_size, skipped)
    return (_check_batch(b) for b in samples)

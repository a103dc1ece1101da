"""Inputs of the generation metrics: sample sources (folder, npz, tensors), real-image
folders, and reference statistics cached as npz with their protocol.

Reference npz files read (without pickle) by :func:`load_reference`:

- **latentae** (``latentae-ref-stats/1``): ``mu (2048,)`` and ``sigma (2048, 2048)``
  float64 from all real images, ``n``, ``features (k, 2048)`` float32 — all features when
  ``features_complete``, else a random subset for precision/recall and KID — ``mu_s
  (2023,)``/``sigma_s`` (sFID, when written with them), and the strings ``protocol`` (FID
  protocol), ``network``, ``crop``, ``source`` and the int ``resolution``. The keys ``mu,
  sigma, mu_s, sigma_s`` are ADM's, so ADM-style readers take its statistics too.
- **ADM** reference batches (guided-diffusion ``evaluations/``, e.g.
  ``VIRTUAL_imagenet256_labeled.npz``): ``mu, sigma, mu_s, sigma_s`` (statistics of the
  whole dataset, count not stored) and/or ``arr_0`` uint8 ``(N, H, W, 3)`` images (their
  features serve precision/recall and KID, and the statistics when ``mu`` is absent).
  Their network and resize are ours under the ``tf1`` protocol.
- **efficientvit** (DC-AE's ``generate_reference``): exactly ``mu, sigma`` — pytorch-fid's
  Inception, resize and scaling, i.e. our ``pytorch-fid`` protocol; no features.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from latentae.errors import InputError
from latentae.eval.fid import FeatureStats
from latentae.eval.inception import SPATIAL_DIM
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
    spatial: FeatureStats | None = None   # sFID's (mu_s, sigma_s), when known
    kind: str = "latentae"                # latentae | adm | efficientvit (the file's layout)
    n_known: bool = True                  # False: the file stores moments, not their count
    images: str | None = None             # an ADM file whose arr_0 still needs features

    def describe(self) -> str:
        """One line: which reference, its layout and what it holds."""
        what = {"latentae": "latentae reference statistics", "adm": "ADM reference batch",
                "efficientvit": "efficientvit {mu, sigma} statistics"}[self.kind]
        n = f"{self.stats.n} images" if self.n_known else "image count not stored"
        return (f"{self.source} ({what}; {n}; {self.features.shape[0]} features for "
                f"PR/KID; sFID statistics {'yes' if self.spatial else 'no'})")


def save_reference(ref: ReferenceStats, path: str | os.PathLike) -> None:
    """Write ``ref`` as a reference npz (atomically, through ``latentae.files``)."""
    if ref.stats.n < 2:
        raise InputError(f"reference statistics need at least 2 images, got {ref.stats.n}")
    mu, sigma = ref.stats.mean_cov()
    spatial = {}
    if ref.spatial is not None and ref.spatial.n >= 2:
        spatial = dict(zip(("mu_s", "sigma_s"), ref.spatial.mean_cov()))
    arrays = {"format": np.str_(FORMAT), "mu": mu, "sigma": sigma, "n": np.int64(ref.stats.n),
              **spatial,
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


LATENTAE_KEYS = ("format", "mu", "sigma", "n", "features", "protocol", "resolution")
EXPECTED = (f"a latentae reference ({', '.join(LATENTAE_KEYS)}), an ADM reference batch "
            "(arr_0 and/or mu, sigma, mu_s, sigma_s) or efficientvit's (mu, sigma)")
ADM_STATS = (("mu", (2048,)), ("sigma", (2048, 2048)), ("mu_s", (SPATIAL_DIM,)),
             ("sigma_s", (SPATIAL_DIM, SPATIAL_DIM)))


def npz_keys(path: str | os.PathLike) -> list[str]:
    """The array names of an npz file (nothing loaded); ``InputError`` if unreadable."""
    try:
        with zipfile.ZipFile(path) as z:
            return [n[:-4] for n in z.namelist() if n.endswith(".npy")]
    except (OSError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read {path} as an npz file ({e}); expected {EXPECTED}"
                         ) from e


def _arrays(path: str | os.PathLike, keys: Iterable[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read reference statistics {path}: {e}") from e


def _moments(d: dict, mu: str, sigma: str, dim: int, path) -> FeatureStats:
    m, s = np.asarray(d[mu]), np.asarray(d[sigma])
    if m.shape != (dim,) or s.shape != (dim, dim) or not np.isfinite(s).all():
        raise InputError(f"{path}: {mu} {m.shape} / {sigma} {s.shape} are not the moments of "
                         f"{dim}-d features (expected ({dim},) and ({dim}, {dim}), finite)")
    return stats_from_moments(m.astype(np.float64), s.astype(np.float64), 2)


def load_reference(path: str | os.PathLike) -> ReferenceStats:
    """Read a reference npz (latentae, ADM or efficientvit; module docstring). A wrong,
    damaged or foreign file raises a one-line ``InputError`` naming the keys expected.
    An ADM file's ``arr_0`` is not read here: ``images`` names it, and
    ``latentae.eval.generation`` computes its features."""
    keys = set(npz_keys(path))
    if "format" in keys:
        return _load_latentae(path, keys)
    if keys == {"mu", "sigma"}:
        d = _arrays(path, keys)
        return ReferenceStats(_moments(d, "mu", "sigma", 2048, path), torch.zeros(0, 2048),
                              "pytorch-fid", "pytorch-fid InceptionV3 (efficientvit)", 0,
                              "center", str(path), kind="efficientvit", n_known=False)
    if "arr_0" in keys or {"mu", "sigma", "mu_s", "sigma_s"} <= keys:
        has_stats = {"mu", "sigma", "mu_s", "sigma_s"} <= keys
        d = _arrays(path, [k for k, _ in ADM_STATS]) if has_stats else {}
        stats = _moments(d, "mu", "sigma", 2048, path) if has_stats else FeatureStats(2048)
        spatial = (_moments(d, "mu_s", "sigma_s", SPATIAL_DIM, path) if has_stats
                   else FeatureStats(SPATIAL_DIM))
        shape = npz_array_shape(path, "arr_0") if "arr_0" in keys else None
        return ReferenceStats(stats, torch.zeros(0, 2048), "tf1", "ADM evaluator graph", (
            shape[1] if shape else 0), "center", str(path), spatial=spatial, kind="adm",
            n_known=not has_stats, images=str(path) if shape else None)
    raise InputError(f"{path} holds {sorted(keys)}: expected {EXPECTED}; make a latentae "
                     "one with `latentae diffusion ref-stats REAL_DIR --out STATS.npz`")


def _load_latentae(path: str | os.PathLike, keys: set[str]) -> ReferenceStats:
    d = _arrays(path, keys)
    missing = set(LATENTAE_KEYS) - keys
    if missing or str(d["format"]) != FORMAT:
        raise InputError(f"{path} is not a {FORMAT} file (missing {sorted(missing)}; "
                         f"expected {EXPECTED}): make one with `latentae diffusion ref-stats "
                         "REAL_DIR --out STATS.npz` (or `diffusion eval … --save-ref`)")
    feats, n = torch.from_numpy(d["features"].astype(np.float32)), int(d["n"])
    if bool(d.get("features_complete", False)):  # rebuild exactly (low-rank FID path too)
        stats = FeatureStats(feats.shape[1])
        stats.update(feats)
    else:
        stats = stats_from_moments(d["mu"], d["sigma"], n)
    spatial = (_moments(d, "mu_s", "sigma_s", SPATIAL_DIM, path) if "mu_s" in d else None)
    return ReferenceStats(stats, feats, str(d["protocol"]), str(d.get("network", "")),
                          int(d["resolution"]), str(d.get("crop", "center")),
                          str(d.get("source", path)), spatial=spatial)


def npz_array_shape(path: str | os.PathLike, key: str) -> tuple[int, ...]:
    """Shape of ``key`` in an npz without reading its data; uint8 ``(N, H, W, 3)`` checked."""
    with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
        shape, fortran, dtype = _npy_header(f)
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or fortran:
        raise InputError(f"{path}[{key}] must be uint8 (N, H, W, 3) images, got {dtype} "
                         f"{shape}")
    return shape


def _npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    return read(f)


def iter_npz_images(path: str | os.PathLike, key: str, batch_size: int,
                    limit: int | None = None) -> Iterator[torch.Tensor]:
    """Stream uint8 images ``(B, 3, H, W)`` from ``path[key]`` (``(N, H, W, 3)``) a batch at
    a time, as ADM's evaluator does: a 10k-image 512² reference is 7.9 GB."""
    shape = npz_array_shape(path, key)
    n = shape[0] if limit is None else min(limit, shape[0])
    per = int(np.prod(shape[1:]))
    with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
        _npy_header(f)
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            a = np.frombuffer(f.read(b * per), np.uint8).reshape(b, *shape[1:])
            yield torch.from_numpy(a.copy()).permute(0, 3, 1, 2)


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
            keys = npz_keys(p)
            key = next((k for k in NPZ_IMAGE_KEYS if k in keys), None)
            if key is None:
                raise InputError(f"{p} holds none of {NPZ_IMAGE_KEYS} (found {keys}): "
                                 "expected uint8 (N, H, W, 3) images under arr_0")
            return iter_npz_images(p, key, batch_size)
        if not p.is_dir():
            raise InputError(f"samples {p} are neither a folder of images nor an .npz file")
        return _batches(((str(f), lambda f=f: to_tensor(load_image(f)))
                         for f in list_images(p)), batch_size, skipped)
    return (_check_batch(b) for b in samples)

"""Training data of a diffusion run: normalised latents and class labels, from cached
shards or encoded on the fly through the frozen autoencoder.

- **Labels** come from class subfolders (``DIR/CLASS/image``; sorted names -> 0 … K-1,
  ``latentae.latents.folder_labels``); images directly in ``DIR`` are unconditional.
- **On the fly** (:class:`ClassImages`): an image per stream position, random crop + flip
  (``engine.data.TrainImages``) or center crop, encoded each step in eval mode without
  gradients: the posterior's mode or a draw ``mean + std·ε`` (DiT's release draws).
- **Cached** (:class:`CachedLatents`): the shards of ``latentae encode [--labels]``,
  read one latent at a time (no augmentation: the crop was fixed when they were encoded).
- **Normalisation** (:class:`LatentNorm`): ``(z − shift_c)·scale_c`` per channel, from the
  autoencoder's ``shift_factor``/``scaling_factor`` or from the mean/std of the first
  ``norm_images`` latents of the stream (computed once; the run stores it).

Determinism: stream position ``i`` is item ``perm_e[i mod N]`` of the epoch permutation
(``engine.data.epoch_permutation``, the same for images and latents, in the images'
sorted-path order), and its posterior draw is seeded by (seed, phase, i). So with a
deterministic encoding (mode, center crop, no flip) cached and on-the-fly data give the
same batch, and W processes see the batch of one (``engine.data.StreamBatches``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

import torch
from PIL import Image
from safetensors import safe_open

from latentae.engine.data import (
    ShardMember,
    Source,
    StreamBatches,
    TrainImages,
    epoch_permutation,
    list_sources,
)
from latentae.engine.state import seed_from
from latentae.errors import InputError
from latentae.io import resize_center_crop, to_tensor
from latentae.latents import (
    check_made_by,
    check_shard_set,
    folder_labels,
    list_shards,
    read_header,
)

Item = tuple[torch.Tensor, int, int, int]  # (image or latent, label, corrupt, small)


@dataclasses.dataclass(frozen=True)
class LatentNorm:
    """``z' = (z − shift)·scale`` per channel: what the diffusion model sees."""

    kind: str  # "model" (the autoencoder's factors) or "channel" (measured mean, 1/std)
    shift: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def from_autoencoder(cls, autoencoder: torch.nn.Module) -> LatentNorm:
        c = autoencoder.latent_channels
        return cls("model", (float(autoencoder.shift_factor),) * c,
                   (float(autoencoder.scaling_factor),) * c)

    @classmethod
    def from_latents(cls, z: torch.Tensor) -> LatentNorm:
        """Per-channel mean and 1/std (population, float64) of latents ``(N, C, h, w)``."""
        z = z.double().transpose(0, 1).flatten(1)  # (C, N·h·w)
        mean, std = z.mean(1), z.std(1, correction=0)
        if not bool((std > 0).all()):
            raise InputError("a latent channel is constant over the statistics' latents: "
                             "use --latent-norm model or more --norm-images")
        return cls("channel", tuple(mean.tolist()), tuple((1.0 / std).tolist()))

    def _view(self, values: tuple[float, ...], z: torch.Tensor) -> torch.Tensor:
        if z.shape[1] != len(values):
            raise InputError(f"latents with {z.shape[1]} channels, normalisation for "
                             f"{len(values)}")
        return torch.tensor(values, dtype=z.dtype, device=z.device)[None, :, None, None]

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Autoencoder latents ``(B, C, h, w)`` -> diffusion-model space."""
        return (z - self._view(self.shift, z)) * self._view(self.scale, z)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion-model space -> latents the autoencoder decodes."""
        return z / self._view(self.scale, z) + self._view(self.shift, z)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shift": list(self.shift), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> LatentNorm:
        try:
            return cls(str(d["kind"]), tuple(float(v) for v in d["shift"]),
                       tuple(float(v) for v in d["scale"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"bad latent normalisation record {d!r}: {e}") from e


def source_key(src: Source, root: Path) -> str:
    """An image source's key: its path below ``root`` (as ``latentae encode`` names it)."""
    return src.name if isinstance(src, ShardMember) else src.relative_to(root).as_posix()


class ClassImages(TrainImages):
    """Stream position -> ``(image (3, R, R) in [-1, 1], label, corrupt, small)``: the
    parent's random crop (+ flip), or a center crop (+ flip)."""

    def __init__(self, sources: list[Source], labels: Sequence[int], resolution: int,
                 seed: int, crop: str = "random", flip: bool = True,
                 crop_scale: float = 1.0) -> None:
        super().__init__(sources, resolution, seed, crop_scale=crop_scale, flip=flip)
        self.labels, self.center = list(labels), crop == "center"

    def crop(self, img: Image.Image, rng: random.Random) -> Image.Image:
        if not self.center:
            return super().crop(img, rng)
        img = resize_center_crop(img, self.resolution)  # ADM's crop, as the DiT release
        return img.transpose(Image.FLIP_LEFT_RIGHT) if self.flip and rng.random() < 0.5 else img

    def __getitem__(self, i: int) -> Item:
        j, img, corrupt, small = self.load(i)
        rng = random.Random(seed_from(self.seed, self.phase, i, 1))
        return to_tensor(self.crop(img, rng)), self.labels[j], corrupt, small


class CachedLatents(torch.utils.data.Dataset):
    """Stream position -> ``(raw latent (C, h, w), label, 0, 0)`` from latent shards,
    in the sorted-path order of the images they were encoded from."""

    def __init__(self, path: str | Path, seed: int) -> None:
        entries, metas, shapes, labels, classes = [], [], set(), {}, None
        for shard in list_shards(path):
            meta, shard_shapes = read_header(shard)
            metas.append((shard, meta))
            check_shard_set([metas[0], (shard, meta)])  # one autoencoder, labels in range
            entries += [(shard, k) for k in shard_shapes]
            shapes |= set(shard_shapes.values())
            labels.update(_shard_labels(shard, meta, shard_shapes))
            classes = _same_classes(classes, meta, shard)
        self.meta = metas[0][1]
        if len(shapes) != 1:
            raise InputError(f"the latents in {path} have {len(shapes)} shapes "
                             f"{sorted(shapes)[:3]}: encode them to one size with `latentae "
                             "encode ... --resize N` (or --crop N), or train on the images "
                             "without --cached")
        self.entries = sorted(entries, key=lambda e: PurePosixPath(e[1]).parts)
        self.shape, self.classes, self.seed = shapes.pop(), classes or [], seed
        self.labels = [labels.get(k, 0) for _, k in self.entries]
        self._files: dict[Path, object] = {}
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def unscale(self, z: torch.Tensor) -> torch.Tensor:
        """Stored ``(z − shift)·scale`` back to ``z`` when ``encode --apply-scaling`` was used."""
        m = self.meta
        if m.get("scaling_applied") != "true":
            return z
        return z / float(m["scaling_factor"]) + float(m["shift_factor"])

    def __getitem__(self, i: int) -> Item:
        epoch, j = divmod(i, len(self.entries))
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(len(self.entries), self.seed, 0, epoch))
        j = int(self._perm[1][j])
        shard, key = self.entries[j]
        if shard not in self._files:
            self._files[shard] = safe_open(str(shard), framework="pt")
        z = self._files[shard].get_tensor(key).float()
        return self.unscale(z), self.labels[j], 0, 0


def _shard_labels(shard: Path, meta: dict, shapes: dict) -> dict[str, int]:
    labels = json.loads(meta["labels"]) if "labels" in meta else {}
    missing = [k for k in shapes if "classes" in meta and k not in labels]
    if missing:
        raise InputError(f"{shard}: no label for {missing[0]!r}; re-encode with --labels")
    return labels


def _same_classes(classes: list[str] | None, meta: dict, shard: Path) -> list[str] | None:
    mine = json.loads(meta["classes"]) if "classes" in meta else None
    if classes is not None and mine != classes:
        raise InputError(f"{shard} has other classes than the shards before it: all shards "
                         "of one run must come from one `latentae encode --labels`")
    return mine


@dataclasses.dataclass
class TrainingData:
    """A run's dataset (images or latents), its class names ([] = unconditional) and the
    raw latent shape ``(C, h, w)`` it yields after encoding."""

    dataset: ClassImages | CachedLatents
    classes: list[str]
    latent_shape: tuple[int, int, int]

    @property
    def cached(self) -> bool:
        return isinstance(self.dataset, CachedLatents)


def cached_resolution(path: str | Path) -> int:
    """The image side the cached latents in ``path`` stand for: latent side × factor."""
    meta, shapes = read_header(list_shards(path)[0])
    return next(iter(shapes.values()))[-1] * int(meta.get("compression", 1))


def open_training_data(cfg, autoencoder: torch.nn.Module) -> TrainingData:
    """The data of ``cfg`` (a ``DiffusionConfig``), checked against the autoencoder."""
    f, c = autoencoder.spatial_compression_ratio, autoencoder.latent_channels
    shards = Path(cfg.data).is_dir() and any(Path(cfg.data).glob("*.safetensors"))
    if cfg.cached != (shards or Path(cfg.data).suffix == ".safetensors"):
        raise InputError(f"{cfg.data} holds latent shards: pass --cached" if not cfg.cached
                         else f"--cached needs the latent shards of `latentae encode --labels "
                         f"AE IMAGES SHARDS`; {cfg.data} holds none (drop --cached to "
                         "encode its images on the fly)")
    if cfg.resolution % f:
        raise InputError(f"resolution {cfg.resolution} is not divisible by the autoencoder's "
                         f"factor {f}: use a multiple of {f}")
    if not cfg.cached:
        sources = list_sources(cfg.data)
        keys = [source_key(s, Path(cfg.data)) for s in sources]
        labels, classes = folder_labels(keys)
        ds = ClassImages(sources, [labels.get(k, 0) for k in keys], cfg.resolution, cfg.seed,
                         cfg.crop, cfg.flip, cfg.crop_scale)
        return TrainingData(ds, classes, (c, cfg.resolution // f, cfg.resolution // f))
    ds = CachedLatents(cfg.data, cfg.seed)
    made_by = f"{ds.meta.get('model')} ({ds.meta.get('family')}, f{ds.meta.get('compression')})"
    if ds.shape[0] != c or int(ds.meta.get("compression", 0)) != f:
        raise InputError(f"the latents in {cfg.data} have {ds.shape[0]} channels at "
                         f"f{ds.meta.get('compression')}, made by {made_by}; the autoencoder "
                         f"{cfg.autoencoder} has {c} channels at f{f}: pass the autoencoder "
                         "that encoded them")
    check_made_by(ds.meta, autoencoder, cfg.data, f"the autoencoder {cfg.autoencoder}")
    if ds.shape[-1] * f != cfg.resolution or ds.shape[-2] != ds.shape[-1]:
        raise InputError(f"the cached latents are {ds.shape[-2]}x{ds.shape[-1]} (images of "
                         f"{ds.shape[-1] * f}²) but --resolution is {cfg.resolution}: pass "
                         f"--resolution {ds.shape[-1] * f} (square latents only)")
    return TrainingData(ds, ds.classes, tuple(ds.shape))


def collate(items: list[Item]) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    return (torch.stack([x for x, _, _, _ in items]),
            torch.tensor([y for _, y, _, _ in items], dtype=torch.long),
            sum(c for _, _, c, _ in items), sum(s for _, _, _, s in items))


@torch.no_grad()
def encode_latents(autoencoder: torch.nn.Module, x: torch.Tensor, positions: Sequence[int],
                   posterior: str, seed: int) -> torch.Tensor:
    """Images ``(B, 3, R, R)`` -> latents ``(B, C, R/f, R/f)`` float32 through the frozen
    autoencoder: the posterior mode, or ``mean + std·ε`` with ε of sample ``i`` seeded by
    (seed, position i) (a sample's latent does not depend on its batch or process)."""
    post = autoencoder.encode(x)
    mean = post.mean.float()
    if posterior == "mode":
        return mean
    eps = torch.stack([torch.randn(mean.shape[1:], generator=torch.Generator().manual_seed(
        seed_from(seed, 0, p, 3))) for p in positions]).to(mean.device)
    return mean + post.std.float() * eps


def latent_batches(data: TrainingData, autoencoder: torch.nn.Module, *, batch: int,
                   start: int, rank: int, world: int, posterior: str, seed: int,
                   device: torch.device, workers: int = 0, encode_ctx=None
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, int]]:
    """This process's batches ``(raw latents (B, C, h, w) on device, labels (B,), corrupt,
    small)`` from stream position ``start`` on (``engine.data.StreamBatches``), forever.
    ``encode_ctx()`` wraps the encoder's forward (autocast)."""
    sampler = StreamBatches(batch, rank, world, start)
    loader = torch.utils.data.DataLoader(data.dataset, batch_sampler=sampler,
                                         num_workers=0 if data.cached else workers,
                                         collate_fn=collate)
    for positions, (x, labels, corrupt, small) in zip(iter(sampler), loader):
        x = x.to(device)
        if not data.cached:
            with encode_ctx() if encode_ctx else contextlib.nullcontext():
                x = encode_latents(autoencoder, x, positions, posterior, seed)
        yield x, labels.to(device), corrupt, small


def channel_norm(data: TrainingData, autoencoder: torch.nn.Module, n: int, **kw) -> LatentNorm:
    """Per-channel statistics of the stream's first ``min(n, len(data))`` latents (the
    latents training starts on), computed alike on every process."""
    n = min(n, len(data.dataset))
    zs, got = [], 0
    for z, _, _, _ in latent_batches(data, autoencoder, batch=min(n, 64), start=0, rank=0,
                                     world=1, **kw):
        zs.append(z[: n - got].cpu())
        got += len(zs[-1])
        if got >= n:
            break
    return LatentNorm.from_latents(torch.cat(zs))

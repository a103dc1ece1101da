"""Helpers of the ``latentae`` tools (``cli/tools.py``): the model runner (autocast,
channels_last, tiling, batch slicing), image batches, safe output folders, model info."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch

from latentae.tiling import pad_to_multiple, tiled_decode, tiled_encode

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Coder:
    """A model ready for inference: device, autocast dtype, memory format, tiles."""

    def __init__(self, model, device: str = "cpu", dtype: str = "float32",
                 tile: int | None = None, overlap: int = 64, max_batch: int | None = None,
                 channels_last: bool = True) -> None:
        from latentae.devices import resolve_device

        self.device = resolve_device(device)
        if self.device.type == "cpu":
            from latentae.bench.measure import tune_allocator
            tune_allocator()  # reuse freed activation memory: 2-3× faster large ops
        self.dtype = DTYPES[dtype]
        self.f = model.spatial_compression_ratio
        if tile is not None:
            from latentae.tiling import _check_tiles
            _check_tiles(self.f, tile, overlap)
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"--max-batch must be >= 1, got {max_batch}")
        self.tile, self.overlap, self.max_batch = tile, overlap, max_batch
        self.batch_size = 8
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device).to(memory_format=self.memory_format)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Coder:
        from latentae.pretrained import load

        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.random_init:
            torch.manual_seed(0)  # the same random weights in every run (smoke tests)
        model = load(args.model, random_init=args.random_init)
        coder = cls(model, args.device, args.dtype, args.tile, args.overlap, args.max_batch,
                    args.channels_last)
        coder.batch_size = args.batch_size
        return coder

    def _ctx(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _tiled(self, size: int) -> bool:
        return self.tile is not None and size > self.tile

    @torch.no_grad()
    def encode(self, x: torch.Tensor, sample: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` (H, W multiples of f) -> latents, float32."""
        x = x.to(self.device).contiguous(memory_format=self.memory_format)
        with self._ctx():
            if self._tiled(max(x.shape[-2:])):
                posts = [tiled_encode(self.model, x, self.tile, self.overlap, self.max_batch)]
            else:
                posts = [self.model.encode(p) for p in x.split(self.max_batch or len(x))]
            zs = [p.sample(generator) if sample else p.mode() for p in posts]
        return torch.cat(zs).float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, nz, h, w)`` -> images ``(B, 3, h·f, w·f)``, float32."""
        z = z.to(self.device).contiguous(memory_format=self.memory_format)
        with self._ctx():
            if self._tiled(max(z.shape[-2:]) * self.f):
                out = tiled_decode(self.model, z, self.tile, self.overlap, self.max_batch)
            else:
                out = torch.cat([self.model.decode(p)
                                 for p in z.split(self.max_batch or len(z))])
        return out.float()


def autocast(coder: Coder):
    return coder._ctx()


# --- files -----------------------------------------------------------------------
def image_list(folder: str) -> tuple[list[Path], Path]:
    from latentae.io import list_images
    return list_images(folder), Path(folder)


def key_of(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def png_path(out: Path, key: str) -> Path:
    return out / Path(key).with_suffix(".png")


def prepare_out(path: str | os.PathLike) -> Path:
    """Create the output folder and prove it is writable, or raise ``ValueError``."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".latentae-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output folder {out} is not writable: {e}") from e
    return out


def write_text(path: Path, text: str) -> None:
    from latentae.files import atomic_write_bytes
    try:
        atomic_write_bytes(path, text.encode())
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e}") from e


def load_rgb(path: Path) -> torch.Tensor:
    """``(3, H, W)`` in [-1, 1]; prints a notice when the file was not 8-bit RGB."""
    from PIL import Image

    from latentae.io import load_image, to_tensor
    try:
        with Image.open(path) as im:
            mode = im.mode
    except OSError:
        mode = "RGB"  # load_image raises the precise error below
    img = load_image(path)
    if mode != "RGB":
        print(f"notice: {path}: converted {mode} image to 8-bit RGB", file=sys.stderr)
    return to_tensor(img)


def image_batches(files: list[Path], keys: list[str], coder: Coder
                  ) -> Iterator[tuple[list[str], torch.Tensor, tuple[int, int]]]:
    """``(keys, images padded to multiples of f, original (H, W))`` batches of consecutive
    same-size images, at most ``--batch-size`` each (progress bar on a terminal)."""
    from tqdm import tqdm

    batch_size = coder.batch_size
    pending: list[tuple[str, torch.Tensor]] = []
    for f, k in tqdm(list(zip(files, keys)), unit="img", disable=None, file=sys.stderr):
        x = load_rgb(f)
        if pending and (x.shape != pending[0][1].shape or len(pending) == batch_size):
            yield _flush(pending, coder.f)
            pending = []
        pending.append((k, x))
    if pending:
        yield _flush(pending, coder.f)


def _flush(pending: list[tuple[str, torch.Tensor]], f: int):
    x, hw = pad_to_multiple(torch.stack([t for _, t in pending]), f)
    return [k for k, _ in pending], x, hw


def groups_by_shape(keys: list[str], tensors: dict[str, torch.Tensor], batch_size: int
                    ) -> Iterator[list[str]]:
    """Consecutive keys whose tensors share a shape, ``batch_size`` at most per group."""
    group: list[str] = []
    for k in keys:
        if group and (tensors[k].shape != tensors[group[0]].shape or len(group) == batch_size):
            yield group
            group = []
        group.append(k)
    if group:
        yield group


def stats_images(files: list[Path], f: int, resolution: int | None) -> Iterator[torch.Tensor]:
    """Images for latent statistics: center crops to multiples of ``f`` (or resized and
    cropped to ``resolution``), ``(1, 3, H, W)`` each."""
    from latentae.io import load_image, resize_center_crop, to_tensor

    if resolution is not None and (resolution < f or resolution % f):
        raise ValueError(f"--resolution must be a positive multiple of {f}, got {resolution}")
    for path in files:
        img = load_image(path)
        if resolution is not None:
            img = resize_center_crop(img, resolution)
        else:
            w, h = img.size
            if min(w, h) < f:
                raise ValueError(f"{path} ({w}x{h}) is smaller than the compression factor {f}")
            left, top = (w % f) // 2, (h % f) // 2
            img = img.crop((left, top, left + w - w % f, top + h - h % f))
        yield to_tensor(img)[None]


# --- latent statistics, config write-back, model info ----------------------------
def format_stats(stats: dict, model) -> str:
    lines = [f"latent statistics of {model.preset or model.family} over {stats['images']} "
             f"images ({stats['count']} latent elements):",
             f"{'channel':>8} {'mean':>10} {'std':>10} {'rms':>10}"]
    for c, (m, s, r) in enumerate(zip(stats["mean"], stats["std"], stats["rms_per_channel"])):
        lines.append(f"{c:>8} {m:>10.4f} {s:>10.4f} {r:>10.4f}")
    lines += [f"{'all':>8} {stats['global_mean']:>10.4f} {stats['global_std']:>10.4f} "
              f"{stats['rms']:>10.4f}",
              f"suggested scaling_factor = {stats['scaling_factor']:.6g}, "
              f"shift_factor = {stats['shift_factor']:.6g} "
              f"(current: {model.scaling_factor:.6g}, {model.shift_factor:.6g})"]
    return "\n".join(lines)


def write_factors(model_dir: Path, scale: float, shift: float) -> None:
    """Write the factors into ``config.json`` of a latentae or diffusers model directory
    (atomically; every other key is kept)."""
    cfg_file = model_dir / "config.json"
    try:
        meta = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {cfg_file}: {e}") from e
    if "_class_name" in meta:  # diffusers AutoencoderKL / AutoencoderDC
        meta["scaling_factor"] = scale
        if "shift_factor" in meta or shift:
            meta["shift_factor"] = shift or None
    elif isinstance(meta.get("config"), dict):
        meta["config"]["scaling_factor"], meta["config"]["shift_factor"] = scale, shift
    else:
        raise ValueError(f"{cfg_file} is neither a latentae nor a diffusers config")
    write_text(cfg_file, json.dumps(meta, indent=2) + "\n")

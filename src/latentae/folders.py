"""Whole folders through a ``runtime.ModelRunner``: images -> latent shards
(``latentae encode``), shards -> PNGs (``decode``), images -> reconstructions and
side-by-side comparisons (``reconstruct``), and latent statistics (``latent-stats``).

Images are read recursively and keyed by their path relative to the folder. Batches
hold consecutive images of one size (at most ``batch_size``). The outputs are
resumable: a file already there is skipped unless ``overwrite``; every file is written
atomically (``latentae.files``), so a failed run leaves complete files only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from latentae.errors import InputError
from latentae.eval.psnr_ssim import psnr_per_image
from latentae.io import (
    image_grid,
    list_images,
    load_image,
    resize_center_crop,
    save_image,
    to_tensor,
)
from latentae.latents import (
    check_compatible,
    encode_labels,
    list_shards,
    read_shard,
    shard_metadata,
    write_shard,
)
from latentae.models.distributions import DeterministicPosterior
from latentae.runtime import ModelRunner
from latentae.scaling import LatentMoments, check_range, factors_from_moments

Notice = Callable[[str], None]


def stderr_notice(message: str) -> None:
    print(f"notice: {message}", file=sys.stderr)


def image_keys(folder: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """The images under ``folder`` (sorted) and their keys (relative paths, ``/``)."""
    files = list_images(folder)
    return files, [f.relative_to(folder).as_posix() for f in files]


def png_path(out: Path, key: str) -> Path:
    return out / Path(key).with_suffix(".png")


def prepare_out(path: str | os.PathLike) -> Path:
    """Check that the output folder can be written, or raise ``InputError``; nothing is
    created yet (a run that fails on its first input leaves no empty folder)."""
    out = Path(path)
    above = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    if above is None or not above.is_dir():
        raise InputError(f"output folder {out} is not writable: {above} is not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise InputError(f"output folder {out} is not writable: no write permission on "
                         f"{above}")
    return out


def load_rgb(path: Path, notice: Notice = stderr_notice) -> torch.Tensor:
    """``(3, H, W)`` in [-1, 1]; a notice when the file was not 8-bit RGB."""
    try:
        with Image.open(path) as im:
            mode = im.mode
    except OSError:
        mode = "RGB"  # load_image raises the precise error below
    img = load_image(path)
    if mode != "RGB":
        notice(f"{path}: converted {mode} image to 8-bit RGB")
    return to_tensor(img)


def image_batches(files: list[Path], keys: list[str], batch_size: int,
                  notice: Notice = stderr_notice
                  ) -> Iterator[tuple[list[str], torch.Tensor]]:
    """``(keys, images (B, 3, H, W))`` batches of consecutive same-size images, at most
    ``batch_size`` each (a progress bar on a terminal)."""
    pending: list[tuple[str, torch.Tensor]] = []
    for f, k in tqdm(list(zip(files, keys)), unit="img", disable=None, file=sys.stderr):
        x = load_rgb(f, notice)
        if pending and (x.shape != pending[0][1].shape or len(pending) == batch_size):
            yield [k for k, _ in pending], torch.stack([t for _, t in pending])
            pending = []
        pending.append((k, x))
    if pending:
        yield [k for k, _ in pending], torch.stack([t for _, t in pending])


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


def encode_folder(runner: ModelRunner, images: str | os.PathLike, out: str | os.PathLike,
                  model_name: str, shard_size: int = 1000, batch_size: int = 8,
                  apply_scaling: bool = False, sample: bool = False, seed: int = 0,
                  overwrite: bool = False, notice: Notice = stderr_notice,
                  labels: bool = False) -> tuple[int, int]:
    """Encode every image into ``out/latents-NNNNN.safetensors`` shards of ``shard_size``
    images (``latentae/latents.py``); returns ``(encoded, skipped)`` image counts.

    ``apply_scaling`` stores ``(z − shift_factor)·scaling_factor``; ``sample`` stores a
    posterior draw (seeded) instead of the mode. Shard sizes record each image's
    original ``(H, W)``, so ``decode_folder`` crops ``--pad``-ded images back. ``labels``
    stores each image's class (its subfolder) and the class list (``latents.folder_labels``)."""
    files, keys = image_keys(images)
    label_of, classes = encode_labels(keys, labels)
    out = prepare_out(out)
    model = runner.model
    meta = shard_metadata(model, model_name, apply_scaling, "sample" if sample else "mode",
                          classes)
    gen = torch.Generator(device=runner.device).manual_seed(seed) if sample else None
    done = skipped = 0
    for i in range(0, len(files), shard_size):
        chunk, chunk_keys = files[i:i + shard_size], keys[i:i + shard_size]
        path = out / f"latents-{i // shard_size:05d}.safetensors"
        if path.exists() and not overwrite:
            if sorted(read_shard(path).latents) != sorted(chunk_keys):
                raise InputError(f"{path} exists but holds other images: use an empty "
                                 "output folder, the same image folder and --shard-size, "
                                 "or --overwrite")
            skipped += len(chunk)
            continue
        latents, sizes = {}, {}
        for batch_keys, x in image_batches(chunk, chunk_keys, batch_size, notice):
            z = runner.encode(x, sample=sample, generator=gen, what=f"{batch_keys[0]}")
            if apply_scaling:
                z = (z - model.shift_factor) * model.scaling_factor  # (B, nz, h, w)
            for k, zk in zip(batch_keys, z):
                latents[k], sizes[k] = zk, tuple(x.shape[-2:])
        out.mkdir(parents=True, exist_ok=True)
        write_shard(path, latents, sizes, meta, label_of)
        done += len(chunk)
    return done, skipped


def decode_folder(runner: ModelRunner, latents: str | os.PathLike, out: str | os.PathLike,
                  batch_size: int = 8, overwrite: bool = False) -> tuple[int, int]:
    """Decode every latent of the shard file or folder ``latents`` to ``out/KEY.png``,
    cropped to the recorded original size; returns ``(decoded, skipped)``."""
    shards = [(p, read_shard(p)) for p in list_shards(latents)]  # all checked first
    for p, shard in shards:
        check_compatible(shard, runner.model, p)
    out = prepare_out(out)
    done = skipped = 0
    for _, shard in shards:
        todo = [k for k in shard.latents if overwrite or not png_path(out, k).exists()]
        skipped += len(shard.latents) - len(todo)
        for keys in groups_by_shape(todo, shard.latents, batch_size):
            images = runner.decode(torch.stack([shard.unscale(k) for k in keys]))
            for k, img in zip(keys, images):
                h, w = shard.sizes.get(k, img.shape[-2:])
                save_image(img[:, :h, :w], png_path(out, k))
                done += 1
    return done, skipped


def reconstruct_folder(runner: ModelRunner, images: str | os.PathLike,
                       out: str | os.PathLike, batch_size: int = 8, overwrite: bool = False,
                       notice: Notice = stderr_notice) -> tuple[list[float], int]:
    """Reconstruct every image to ``out/KEY.png`` and ``out/compare/KEY.png`` (original |
    reconstruction); returns the PSNRs (``eval/psnr_ssim.py``) and the skipped count."""
    files, keys = image_keys(images)
    out = prepare_out(out)
    todo = [(f, k) for f, k in zip(files, keys) if overwrite or not (
        png_path(out, k).exists() and png_path(out / "compare", k).exists())]
    psnrs: list[float] = []
    for batch_keys, x in image_batches([f for f, _ in todo], [k for _, k in todo],
                                       batch_size, notice):
        recon = runner.reconstruct(x, what=batch_keys[0])  # (B, 3, H, W)
        psnrs += psnr_per_image(x, recon).tolist()
        for k, xi, ri in zip(batch_keys, x, recon):
            save_image(ri, png_path(out, k))
            save_image(image_grid([[xi, ri]]), png_path(out / "compare", k))
    return psnrs, len(files) - len(todo)


def latent_statistics(runner: ModelRunner, images: str | os.PathLike,
                      limit: int | None = None, resolution: int | None = None,
                      use_shift: bool | None = None) -> dict:
    """Per-channel latent statistics of (the first ``limit``) images and the factors of
    ``scaling.suggest_factors``; images are center crops to multiples of f, or resized
    and cropped to ``resolution``. ``use_shift=None``: a shift where the config has one."""
    files = list_images(images)[:limit]
    moments, deterministic = LatentMoments(), False
    for x in stats_images(files, runner.f, resolution):
        check_range(x)
        posterior = runner.encode_posterior(x)
        deterministic = isinstance(posterior, DeterministicPosterior)  # DC-AE
        moments.add(posterior.mode().float())
    shift = bool(runner.model.shift_factor) if use_shift is None else use_shift
    return factors_from_moments(moments, deterministic, shift) | {"images": len(files)}


def stats_images(files: list[Path], f: int, resolution: int | None) -> Iterator[torch.Tensor]:
    """Images for latent statistics: center crops to multiples of ``f`` (or resized and
    cropped to ``resolution``), ``(1, 3, H, W)`` each."""
    if resolution is not None and (resolution < f or resolution % f):
        raise InputError(f"--resolution must be a positive multiple of {f}, got {resolution}")
    for path in files:
        img = load_image(path)
        if resolution is not None:
            img = resize_center_crop(img, resolution)
        else:
            w, h = img.size
            if min(w, h) < f:
                raise InputError(f"{path} ({w}x{h}) is smaller than the compression factor "
                                 f"{f}")
            left, top = (w % f) // 2, (h % f) // 2
            img = img.crop((left, top, left + w - w % f, top + h - h % f))
        yield to_tensor(img)[None]

"""Whole folders through a ``runtime.ModelRunner``: images -> latent shards
(``latentae encode``), shards -> PNGs (``decode``), images -> reconstructions and
side-by-side comparisons (``reconstruct``), and latent statistics (``latent-stats``).

Images are read recursively and keyed by their path relative to the folder. Batches
hold consecutive images of one size (at most ``batch_size``).

Output folders follow the one rule of ``latentae.files``: missing, empty, or holding the
run record of an earlier run of the same command with the same input, model and
settings, which then resumes (files already there are skipped); anything else is refused
unless ``overwrite``, which empties the folder first. Every file is written atomically,
so a failed or killed run leaves complete files only. Output names come from keys (a
key read from a shard is checked to stay inside the folder); two keys that would share
a name (``pic.jpg``, ``pic.png``) keep their suffixes (``pic.jpg.png``, ``pic.png.png``).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from PIL import Image

from latentae import progress
from latentae.errors import InputError
from latentae.eval.psnr_ssim import psnr_per_image
from latentae.files import check_inside, prepare_output_dir, start_run_dir
from latentae.io import (
    center_crop,
    image_grid,
    list_images,
    load_image,
    resize_center_crop,
    resize_shortest,
    save_image,
    to_tensor,
)
from latentae.latents import (
    check_compatible,
    check_keys_storable,
    check_same_run,
    encode_labels,
    list_shards,
    read_shard,
    read_shard_header,
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


def output_names(keys: list[str]) -> dict[str, str]:
    """Each key's PNG name relative to the output folder: the key with its suffix
    replaced by ``.png``, or, where two keys would get the same name (``pic.jpg`` and
    ``pic.png``; compared case-insensitively, as macOS and Windows do), the key with
    ``.png`` appended. Names that still collide raise ``InputError`` naming both keys."""
    stems = {}
    for k in keys:
        if not Path(k).name or Path(k).name in (".", ".."):
            raise InputError(f"the key {k!r} names no file: it cannot become an output name")
        stems[k] = Path(k).with_suffix(".png").as_posix()
    count = Counter(n.casefold() for n in stems.values())
    names = {k: (f"{k}.png" if count[n.casefold()] > 1 else n) for k, n in stems.items()}
    seen: dict[str, str] = {}
    for k, n in names.items():
        other = seen.setdefault(n.casefold(), k)
        if other != k:
            raise InputError(f"{other!r} and {k!r} would both be written to {n}: rename "
                             "one of them")
    return names


def output_paths(out: Path, keys: list[str], source: str | os.PathLike = "the input"
                 ) -> dict[str, Path]:
    """``{key: out/NAME}`` (:func:`output_names`), every path checked to stay inside
    ``out`` (``files.check_inside``): a key read from a file may be ``../../x``."""
    paths = {}
    for k, name in output_names(keys).items():
        try:
            paths[k] = check_inside(out, name)
        except InputError as e:
            if "\0" in k:  # a NUL byte, not a path that leaves OUT
                raise InputError(f"{source}: {e}") from None
            raise InputError(f"{source}: the key {k!r} would be written outside {out} "
                             f"(as {name}): refusing it; keys are relative paths without "
                             "'..'") from None
    return paths


def check_apart(source: str | os.PathLike, out: str | os.PathLike,
                out_inside_source: bool = False) -> None:
    """Refuse an output folder that is, or holds, the input (``--overwrite`` would delete
    it); with ``out_inside_source`` also one inside the input folder (the outputs would
    be read as inputs next time)."""
    src, dst = Path(source).resolve(), Path(out).resolve()
    if dst == src or dst in src.parents:
        raise InputError(f"the output folder {out} holds the input {source}: choose "
                         "another output folder")
    if out_inside_source and src in dst.parents:
        raise InputError(f"the output folder {out} lies inside the input folder {source} "
                         "(its images would be read as inputs): choose a folder outside")


def model_id(spec: str | os.PathLike) -> str:
    """A model as a run record names it: a directory by its absolute path."""
    return str(Path(spec).resolve()) if Path(spec).is_dir() else str(spec)


def run_settings(runner: ModelRunner, command: str, source: str | os.PathLike,
                 model_name: str, **settings) -> dict:
    """The run record of a resumable command (``files.RUN_RECORD``): what must be the
    same for a folder's outputs to be continued rather than refused."""
    tiles = {"tile": runner.tile, "overlap": runner.overlap if runner.tile else None}
    return {"command": command, "input": str(Path(source).resolve()),
            "model": model_id(model_name), "dtype": str(runner.dtype).replace("torch.", ""),
            **tiles, **settings}


def framed(img: Image.Image, resize: int = 0, crop: int = 0) -> Image.Image:
    """``resize`` N: the shortest side resized to N, then the central N×N square (ADM's
    ``center_crop_arr``, :func:`latentae.io.resize_center_crop`); ``crop`` N: the central
    N×N square at the image's own scale (an image with a side under N is first resized
    up to N). Neither: the image as it is."""
    if resize:
        return resize_center_crop(img, resize)
    if crop:
        return center_crop(img if min(img.size) >= crop else resize_shortest(img, crop), crop)
    return img


def load_rgb(path: Path, notice: Notice = stderr_notice, resize: int = 0,
             crop: int = 0) -> torch.Tensor:
    """``(3, H, W)`` in [-1, 1] (framed by :func:`framed`); a notice when the file was
    not 8-bit RGB."""
    try:
        with Image.open(path) as im:
            mode = im.mode
    except (OSError, Image.DecompressionBombError):
        mode = "RGB"  # load_image raises the precise error below
    img = framed(load_image(path), resize, crop)
    if mode != "RGB":
        notice(f"{path}: converted {mode} image to 8-bit RGB")
    return to_tensor(img)


def image_batches(files: list[Path], keys: list[str], batch_size: int,
                  notice: Notice = stderr_notice, resize: int = 0, crop: int = 0
                  ) -> Iterator[tuple[list[str], torch.Tensor]]:
    """``(keys, images (B, 3, H, W))`` batches of consecutive same-size images, at most
    ``batch_size`` each (a progress bar on a terminal); ``resize`` / ``crop``: see
    :func:`framed`."""
    pending: list[tuple[str, torch.Tensor]] = []
    for f, k in progress.bar(list(zip(files, keys)), unit="img"):
        x = load_rgb(f, notice, resize, crop)
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
                  labels: bool = False, resize: int = 0, crop: int = 0) -> tuple[int, int]:
    """Encode every image into ``out/latents-NNNNN.safetensors`` shards of ``shard_size``
    images (``latentae/latents.py``); returns ``(encoded, skipped)`` image counts.

    ``apply_scaling`` stores ``(z − shift_factor)·scaling_factor``; ``sample`` stores a
    posterior draw seeded by ``(seed, shard)`` instead of the mode. Shard sizes record
    each image's original ``(H, W)``, so ``decode_folder`` crops ``--pad``-ded images
    back. The unit of resume is the shard: a killed run keeps its complete shards, and
    the next run encodes the rest, byte-identical to an uninterrupted run. ``labels``
    stores each image's class (its subfolder) and the class list (``latents.folder_labels``).
    ``resize`` / ``crop`` N (:func:`framed`) make every latent the same shape, as
    ``diffusion train --cached`` needs; the shards then record N×N as each image's size."""
    if resize and crop:
        raise InputError("--resize N (shortest side to N, then the central square) and "
                         "--crop N (the central square, no resize) exclude each other")
    files, keys = image_keys(images)
    check_keys_storable(keys, images)  # before any work
    label_of, classes = encode_labels(keys, labels)
    check_apart(images, out)
    meta = shard_metadata(runner.model, model_name, apply_scaling,
                          "sample" if sample else "mode", classes)
    run = run_settings(runner, "encode", images, model_name, shard_size=shard_size,
                       apply_scaling=apply_scaling, sample=sample,
                       seed=seed if sample else None, pad=runner.pad,
                       **({"resize": resize} if resize else {}),
                       **({"crop": crop} if crop else {}))
    out = prepare_output_dir(out, overwrite, run, inputs=[model_name])
    chunks = [(out / f"latents-{j:05d}.safetensors", files[i:i + shard_size],
               keys[i:i + shard_size]) for j, i in enumerate(range(0, len(files), shard_size))]
    if not overwrite:
        _check_no_stale_shards(out, {p for p, _, _ in chunks})
    todo = [(j, c) for j, c in enumerate(chunks)
            if overwrite or not _already_encoded(c[0], c[2], meta)]
    for n, (j, (path, chunk, chunk_keys)) in enumerate(todo):
        gen = (torch.Generator(device=runner.device).manual_seed(seed * 100_003 + j)
               if sample else None)
        latents, sizes = {}, {}
        for batch_keys, x in image_batches(chunk, chunk_keys, batch_size, notice, resize, crop):
            z = runner.encode(x, sample=sample, generator=gen, what=f"{batch_keys[0]}")
            if apply_scaling:
                z = (z - runner.model.shift_factor) * runner.model.scaling_factor  # (B, nz, h, w)
            for k, zk in zip(batch_keys, z):
                latents[k], sizes[k] = zk, tuple(x.shape[-2:])
        if n == 0:
            start_run_dir(out, run, overwrite)
        write_shard(path, latents, sizes, meta, label_of)
    done = sum(len(c[2]) for _, c in todo)
    return done, len(files) - done


def _already_encoded(path: Path, chunk_keys: list[str], meta: dict[str, str]) -> bool:
    """Whether the shard at ``path`` is this run's (resume skips it); a shard holding
    other images, or latents of another model or settings, raises ``InputError``."""
    if not path.exists():
        return False
    keys, old = read_shard_header(path)
    if sorted(keys) != sorted(chunk_keys):
        raise InputError(f"{path} exists but holds other images: use an empty output "
                         "folder, the same image folder and --shard-size, or --overwrite")
    check_same_run(old, meta, path)
    return True


def _check_no_stale_shards(out: Path, planned: set[Path]) -> None:
    """A resumed folder must not hold shards this run would not write (training and
    decode would read them as part of the set)."""
    stale = sorted(p.name for p in out.glob("latents-*.safetensors") if p not in planned)
    if stale:
        raise InputError(f"{out} holds shards this run would not write ({', '.join(stale[:3])}"
                         f"{' ...' if len(stale) > 3 else ''}): the image folder changed "
                         "since; pass --overwrite to encode the folder again")


def stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def decode_folder(runner: ModelRunner, latents: str | os.PathLike, out: str | os.PathLike,
                  batch_size: int = 8, overwrite: bool = False, model_name: str | None = None,
                  warn: Notice = stderr_warning) -> tuple[int, int]:
    """Decode every latent of the shard file or folder ``latents`` to ``out/KEY.png``
    (:func:`output_names`), cropped to the recorded original size; returns
    ``(decoded, skipped)``. Latents holding NaN/Inf get one warning per shard."""
    shards = [(p, read_shard(p)) for p in list_shards(latents)]  # all checked first
    check_apart(latents, out)
    where: dict[str, Path] = {}
    for p, shard in shards:
        check_compatible(shard, runner.model, p)
        for k in shard.latents:
            if where.setdefault(k, p) != p:
                raise InputError(f"the key {k!r} is in both {where[k]} and {p}: decode "
                                 "them into separate folders")
    run = run_settings(runner, "decode", latents, model_name or runner.name)
    out = prepare_output_dir(out, overwrite, run)
    paths = output_paths(out, list(where), latents)
    done = skipped = 0
    for p, shard in shards:
        if bad := shard.nonfinite():
            warn(f"{p}: {len(bad)} latent(s) hold NaN or Inf values (first {bad[0]!r}); "
                 "their images will be garbage")
        todo = [k for k in shard.latents if overwrite or not paths[k].exists()]
        skipped += len(shard.latents) - len(todo)
        for keys in groups_by_shape(todo, shard.latents, batch_size):
            images = runner.decode(torch.stack([shard.unscale(k) for k in keys]))
            if done == 0:
                start_run_dir(out, run, overwrite)
            for k, img in zip(keys, images):
                h, w = shard.sizes.get(k, img.shape[-2:])
                save_image(img[:, :h, :w], paths[k])
                done += 1
    return done, skipped


def reconstruct_folder(runner: ModelRunner, images: str | os.PathLike,
                       out: str | os.PathLike, batch_size: int = 8, overwrite: bool = False,
                       model_name: str | None = None, notice: Notice = stderr_notice
                       ) -> tuple[list[float], int]:
    """Reconstruct every image to ``out/KEY.png`` and ``out/compare/KEY.png`` (original |
    reconstruction); returns the PSNRs (``eval/psnr_ssim.py``) and the skipped count."""
    files, keys = image_keys(images)
    check_apart(images, out, out_inside_source=True)
    run = run_settings(runner, "reconstruct", images, model_name or runner.name,
                       pad=runner.pad)
    out = prepare_output_dir(out, overwrite, run)
    paths, compare = output_paths(out, keys), output_paths(out / "compare", keys)
    clash = set(paths.values()) & set(compare.values())
    if clash:
        raise InputError(f"{sorted(clash)[0]} would be both a reconstruction and a "
                         "comparison (the input has a folder named 'compare'): choose "
                         "another input layout")
    todo = [(f, k) for f, k in zip(files, keys)
            if overwrite or not (paths[k].exists() and compare[k].exists())]
    psnrs: list[float] = []
    for batch_keys, x in image_batches([f for f, _ in todo], [k for _, k in todo],
                                       batch_size, notice):
        recon = runner.reconstruct(x, what=batch_keys[0])  # (B, 3, H, W)
        if not psnrs:
            start_run_dir(out, run, overwrite)
        psnrs += psnr_per_image(x, recon).tolist()
        for k, xi, ri in zip(batch_keys, x, recon):
            save_image(ri, paths[k])
            save_image(image_grid([[xi, ri]]), compare[k])
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

"""``latentae diffusion sample``: N images from a trained run or a converted model folder,
as PNGs, one npz and a grid, on one process or sharded over ``torchrun`` processes.

Sample ``i`` has a class drawn uniformly at random from a generator seeded by
(seed, i, 1) (``labels="random"``, as the DiT and DC-AE samplers draw them; ``"balanced"``:
class ``i mod K``; none when unconditional) and all its noise from a generator seeded by
(seed, i) — or, with ``noise``, x_T = ``noise[i]`` — so it is the same image in any batch
and on any process. Indices go in aligned blocks of ``batch_size``; with W processes
block ``b`` is drawn by rank ``b mod W`` (DiT's ``sample_ddp.py`` gives each rank its own
seeds likewise), so W processes write the images one process writes. A rerun skips indices
whose ``{i:06d}.png`` exists: the folder ends up as an uninterrupted run would write it.
``OUT/sampling.json`` records the settings; a rerun with other settings is refused. When
all N exist, rank 0 writes ``OUT/samples.npz`` — ``arr_0`` uint8 ``(N, H, W, 3)`` (ADM's
sample-batch layout, what ADM's evaluator and ``diffusion eval`` read), ``labels`` ``(N,)``
(−1 when unconditional) and ``latents`` ``(N, C, h, w)`` float32, the sampler's output
before decoding (the model's normalised space; kept per index in ``OUT/latents/``) — and
``OUT/grid.png``, the first 64 images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentae.devices import resolve_device
from latentae.diffusion.attach import resolve_info
from latentae.diffusion.pipeline import LatentDiffusion, balanced_labels, load_run
from latentae.engine import dist
from latentae.engine.state import seed_from
from latentae.errors import InputError
from latentae.files import atomic_write, atomic_write_bytes, atomic_write_text, is_empty
from latentae.io import image_grid, to_uint8
from latentae.progress import bar as progress_bar
from latentae.serialization import WEIGHTS_NAME
from latentae.weights import sha256_file

SETTINGS_FILE = "sampling.json"
NPZ_FILE = "samples.npz"
GRID_FILE = "grid.png"
GRID_IMAGES = 64
LABELS = ("random", "balanced")


def drawing_fingerprint(run: Path) -> str | None:
    """The sha256 of the weights that draw the samples: ``RUN/model``'s or a converted
    model folder's (None when neither holds a weights file)."""
    for folder in (run / "model", run):
        if (folder / WEIGHTS_NAME).is_file():
            return model_fingerprint(folder)
    return None


def model_fingerprint(folder: Path) -> str:
    """sha256 of the weights file of the model folder that draws the samples
    (``diffusion eval --update-card`` checks that the card it updates is that model's)."""
    return sha256_file(folder / WEIGHTS_NAME)


def png_name(index: int) -> str:
    return f"{index:06d}.png"


def sample_labels(indices: list[int], num_classes: int, mode: str, seed: int,
                  device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Classes of samples ``indices``: uniform random per index (seeded by (seed, i, 1),
    the same on every process) or ``i mod K``; ``None`` when unconditional."""
    if mode not in LABELS:
        raise InputError(f"--labels {mode!r}: choose random or balanced")
    if mode == "balanced" or num_classes == 0:
        return balanced_labels(indices, num_classes, device)
    draws = [int(torch.randint(num_classes, (), generator=torch.Generator().manual_seed(
        seed_from(seed, i, 1)))) for i in indices]
    return torch.tensor(draws, dtype=torch.long, device=device)


def sample_settings(run: Path, pipe: LatentDiffusion, n: int, sampler: str, steps: int,
                    guidance: float, seed: int, labels: str, noise: str | None,
                    guidance_channels: int | None) -> dict:
    """What decides the images (not the batch size, device or number of processes)."""
    info = pipe.info
    return {"run": str(run.resolve()), "model_sha256": drawing_fingerprint(run), "n": n,
            "sampler": sampler, "steps": steps,
            "guidance": guidance, "seed": seed, "labels": labels, "noise": noise,
            "objective": info.objective, "schedule": info.schedule,
            "guidance_channels": info.guidance_channels if guidance_channels is None
            else guidance_channels, "sampler_options": info.sampler_options,
            "autoencoder": info.autoencoder, "latent_norm": info.latent_norm.to_dict(),
            "classes": list(info.classes), "num_classes": info.num_classes}


def check_settings(out: Path, settings: dict) -> None:
    """Write ``sampling.json``, or check that the samples already in ``out`` match it."""
    path = out / SETTINGS_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        differ = sorted(k for k in settings if k != "n" and old.get(k) != settings[k])
        if differ:
            raise InputError(f"{out} holds samples drawn with other settings ({', '.join(differ)}"
                             f" differ; see {path}): use another --out or the same settings")
    elif any(out.glob("*.png")):
        raise InputError(f"{out} holds PNGs but no {SETTINGS_FILE}: use an empty --out folder")
    elif not is_empty(out):  # the one output rule: a foreign samples.npz stays
        raise InputError(f"{out} is not empty and holds no {SETTINGS_FILE} of `latentae "
                         "diffusion sample`: use an empty --out folder")
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def write_png(path: Path, image: np.ndarray) -> None:
    """A uint8 ``(H, W, 3)`` image as PNG, atomically."""
    with atomic_write(path) as f:
        Image.fromarray(image).save(f, format="PNG")


def read_noise(path: str | os.PathLike, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Initial latents ``(N, C, h, w)`` from a ``.npy`` file (at least ``n`` rows)."""
    try:
        a = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise InputError(f"--noise {path}: not a readable .npy array ({e})") from e
    if a.ndim != 4 or tuple(a.shape[1:]) != shape or a.shape[0] < n:
        raise InputError(f"--noise {path} holds {a.dtype} {tuple(a.shape)}: expected at least "
                         f"{n} initial latents of shape {shape} (N, C, h, w)")
    return torch.from_numpy(np.array(a[:n], dtype=np.float32))  # a writable copy


def _file_digest(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sample_folder(run: str | os.PathLike, out: str | os.PathLike, *, n: int,
                  guidance: float | None = None, sampler: str | None = None,
                  steps: int | None = None, batch_size: int = 16, seed: int = 0,
                  device: str = "auto", progress: bool = True,
                  autoencoder: torch.nn.Module | str | None = None, labels: str = "random",
                  noise: str | os.PathLike | None = None,
                  guidance_channels: int | None = None, sampler_options: dict | None = None,
                  **record) -> Path:
    """Draw ``n`` samples of ``run`` (a trained run, or a converted model folder) into
    ``out``; returns ``out/samples.npz``. ``sampler``/``steps``/``guidance`` default to the
    run's record; ``autoencoder``: a folder (for a model folder without a record), or the
    run's module when the caller holds it; ``record``: the other values of
    :func:`~latentae.diffusion.attach.resolve_info` (``latent_scale``, ``objective``,
    ``schedule``…); ``sampler_options``: eta, order, grid, atol, rtol over the record's.
    Under ``torchrun`` each process draws its blocks (module docstring)."""
    if n < 1 or batch_size < 1:
        raise InputError(f"--n and --batch-size must be >= 1, got {n} and {batch_size}")
    run, out = Path(run), Path(out)
    if isinstance(autoencoder, (str, os.PathLike)):  # a folder (the record's autoencoder)
        record["autoencoder"], autoencoder = str(autoencoder), None
    info = resolve_info(run, **record)  # a missing or unfinished run fails before the device
    if sampler_options:  # --eta/--order/... over the record's
        info = dataclasses.replace(info, sampler_options={**info.sampler_options,
                                                          **sampler_options})
    started = not torch.distributed.is_initialized()
    device = _join(device)
    try:
        return _sample(run, out, info, n=n, guidance=guidance, sampler=sampler, steps=steps,
                       batch_size=batch_size, seed=seed, device=device, progress=progress,
                       autoencoder=autoencoder, labels=labels, noise=noise,
                       guidance_channels=guidance_channels)
    finally:
        if started:  # leave a caller's process group alone
            dist.destroy()


def _join(device: str) -> str:
    """Join the torchrun group (NCCL on this rank's GPU, gloo on CPU: ``dist.init``) and
    return this rank's device. More processes than GPUs share them round robin, joined
    by gloo (NCCL refuses two ranks on one GPU; sampling only needs barriers)."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    shared = device == "auto" and 0 < gpus < world
    if shared and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    dist.init()
    return f"cuda:{local % gpus}" if shared else device


def _sample(run: Path, out: Path, info, *, n: int, guidance: float | None,
            sampler: str | None, steps: int | None, batch_size: int, seed: int, device: str,
            progress: bool, autoencoder, labels: str, noise, guidance_channels) -> Path:
    pipe = load_run(run, resolve_device(device), autoencoder, info)
    sampler, steps = sampler or info.sampler, steps or info.sample_steps
    guidance = info.guidance if guidance is None else guidance
    pipe.check(sampler, guidance)
    shape = (info.latent_channels, info.latent_size, info.latent_size)
    x_t = read_noise(noise, n, shape) if noise is not None else None
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: pass a folder")
    settings = sample_settings(run, pipe, n, sampler, steps, guidance, seed, labels,
                               _file_digest(noise) if noise is not None else None,
                               guidance_channels)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        check_settings(out, settings)  # before anything of ours lands in out
        (out / "latents").mkdir(exist_ok=True)
    dist.barrier()
    if not dist.is_main():
        check_settings(out, settings)  # the same check on every rank (rank 0 wrote it)
    todo = [i for i in range(n) if not (out / png_name(i)).is_file()]
    mine = [b for k, b in enumerate(_blocks(todo, batch_size)) if k % dist.world_size()
            == dist.rank()]
    bar = progress_bar(total=sum(map(len, mine)), unit="img",
                       enabled=progress and dist.is_main())
    for block in mine:
        gens = [torch.Generator().manual_seed(seed_from(seed, i)) for i in block]
        y = sample_labels(block, info.num_classes, labels, seed, pipe.device)
        z = pipe.sample_latents(y, gens, sampler=sampler, steps=steps, guidance=guidance,
                                noise=None if x_t is None else x_t[block],
                                guidance_channels=guidance_channels)
        images = to_uint8(pipe.decode(z)).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
        for i, image, zi in zip(block, images, z.float().cpu().numpy()):
            _write_npy(out / "latents" / f"{i:06d}.npy", zi)  # before the PNG: done marker
            write_png(out / png_name(i), image)
        bar.update(len(block))
    bar.close()
    dist.barrier()
    if dist.is_main():
        write_grid(out, n)
        write_npz(out, n, info.num_classes, labels, seed)
    dist.barrier()
    return out / NPZ_FILE


def _write_npy(path: Path, a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, a)
    atomic_write_bytes(path, buf.getvalue())


def _blocks(todo: list[int], size: int) -> list[list[int]]:
    """The missing indices in batches of the aligned blocks ``[k·size, (k+1)·size)``, so a
    rerun (and any number of processes) forms the batches an uninterrupted run formed."""
    blocks: dict[int, list[int]] = {}
    for i in todo:
        blocks.setdefault(i // size, []).append(i)
    return list(blocks.values())


def write_grid(out: Path, n: int, count: int = GRID_IMAGES) -> Path:
    """``OUT/grid.png``: the first ``min(n, count)`` samples, 8 per row."""
    images = [Image.open(out / png_name(i)).convert("RGB") for i in range(min(n, count))]
    rows = [images[k:k + 8] for k in range(0, len(images), 8)]
    buf = io.BytesIO()
    image_grid(rows).save(buf, format="PNG")
    atomic_write_bytes(out / GRID_FILE, buf.getvalue())
    return out / GRID_FILE


def write_npz(out: Path, n: int, num_classes: int, labels: str = "balanced",
              seed: int = 0) -> Path:
    """``samples.npz`` from the ``n`` PNGs and latents: ``arr_0`` uint8 (N, H, W, 3),
    ``labels`` (N,), ``latents`` (N, C, h, w) float32 (when all were kept)."""
    images = np.stack([np.asarray(Image.open(out / png_name(i)).convert("RGB"))
                       for i in range(n)])
    y = sample_labels(list(range(n)), num_classes, labels, seed)
    arrays = {"arr_0": images,
              "labels": np.full(n, -1, np.int64) if y is None else y.numpy().astype(np.int64)}
    files = [out / "latents" / f"{i:06d}.npy" for i in range(n)]
    if all(f.is_file() for f in files):
        arrays["latents"] = np.stack([np.load(f) for f in files]).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(out / NPZ_FILE, buf.getvalue())
    return out / NPZ_FILE

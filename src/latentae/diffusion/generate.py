"""``latentae diffusion sample``: N images from a trained run, as PNGs and one npz.

Sample ``i`` has class ``i mod K`` (class-balanced, round robin; none when unconditional)
and all its noise from a generator seeded by (seed, i), so it is the same image in any
batch: a rerun skips indices whose ``{i:06d}.png`` exists and the folder ends up as an
uninterrupted run would write it. ``OUT/sampling.json`` records the settings; a rerun
with other settings is refused. When all N exist, ``OUT/samples.npz`` holds them as uint8
``(N, H, W, 3)`` under ``arr_0`` (the ADM evaluator's layout, what ``diffusion eval``
reads) and ``labels`` ``(N,)`` (−1 when unconditional).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from latentae.devices import resolve_device
from latentae.diffusion.pipeline import LatentDiffusion, balanced_labels, load_run, model_folder
from latentae.engine.state import seed_from
from latentae.errors import InputError
from latentae.files import atomic_write, atomic_write_bytes, atomic_write_text
from latentae.io import to_uint8

SETTINGS_FILE = "sampling.json"
NPZ_FILE = "samples.npz"


def png_name(index: int) -> str:
    return f"{index:06d}.png"


def sample_settings(run: Path, pipe: LatentDiffusion, n: int, sampler: str, steps: int,
                    guidance: float, seed: int) -> dict:
    """What decides the images (not the batch size or device)."""
    return {"run": str(run.resolve()), "n": n, "sampler": sampler, "steps": steps,
            "guidance": guidance, "seed": seed, "objective": pipe.info.objective,
            "classes": list(pipe.info.classes)}


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
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def write_png(path: Path, image: np.ndarray) -> None:
    """A uint8 ``(H, W, 3)`` image as PNG, atomically."""
    with atomic_write(path) as f:
        Image.fromarray(image).save(f, format="PNG")


def sample_folder(run: str | os.PathLike, out: str | os.PathLike, *, n: int,
                  guidance: float | None = None, sampler: str | None = None,
                  steps: int | None = None, batch_size: int = 16, seed: int = 0,
                  device: str = "auto", progress: bool = True,
                  autoencoder: torch.nn.Module | None = None) -> Path:
    """Draw ``n`` samples of the run in ``run`` into ``out``; returns ``out/samples.npz``.
    ``sampler``/``steps``/``guidance`` default to the run's recipe (``diffusion_run.json``);
    ``autoencoder``: the run's, when the caller holds it (see ``pipeline.load_run``)."""
    if n < 1 or batch_size < 1:
        raise InputError(f"--n and --batch-size must be >= 1, got {n} and {batch_size}")
    run, out = Path(run), Path(out)
    model_folder(run)  # a missing or unfinished run fails before any device work
    pipe = load_run(run, resolve_device(device), autoencoder)
    info = pipe.info
    sampler, steps = sampler or info.sampler, steps or info.sample_steps
    guidance = info.guidance if guidance is None else guidance
    pipe.check(sampler, guidance)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: pass a folder")
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, sample_settings(run, pipe, n, sampler, steps, guidance, seed))
    todo = [i for i in range(n) if not (out / png_name(i)).is_file()]
    bar = tqdm(total=n, initial=n - len(todo), unit="img", disable=not progress)
    for block in _blocks(todo, batch_size):
        gens = [torch.Generator().manual_seed(seed_from(seed, i)) for i in block]
        labels = balanced_labels(block, info.num_classes, pipe.device)
        z = pipe.sample_latents(labels, gens, sampler=sampler, steps=steps, guidance=guidance)
        images = to_uint8(pipe.decode(z)).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
        for i, image in zip(block, images):
            write_png(out / png_name(i), image)
        bar.update(len(block))
    bar.close()
    return write_npz(out, n, info.num_classes)


def _blocks(todo: list[int], size: int) -> list[list[int]]:
    """The missing indices in batches of the aligned blocks ``[k·size, (k+1)·size)``, so a
    rerun forms the batches an uninterrupted run formed."""
    blocks: dict[int, list[int]] = {}
    for i in todo:
        blocks.setdefault(i // size, []).append(i)
    return list(blocks.values())


def write_npz(out: Path, n: int, num_classes: int) -> Path:
    """``samples.npz`` from the ``n`` PNGs: ``arr_0`` uint8 (N, H, W, 3), ``labels`` (N,)."""
    images = np.stack([np.asarray(Image.open(out / png_name(i)).convert("RGB"))
                       for i in range(n)])
    labels = np.array([i % num_classes if num_classes else -1 for i in range(n)], np.int64)
    buf = io.BytesIO()
    np.savez(buf, arr_0=images, labels=labels)
    atomic_write_bytes(out / NPZ_FILE, buf.getvalue())
    return out / NPZ_FILE

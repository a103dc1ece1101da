"""Latent shard files written by ``latentae encode`` and read by ``latentae decode``.

One safetensors file per shard of images. Each tensor is one image's latent
``(nz, h, w)`` keyed by the image's path relative to the input folder (``/``
separators). The header metadata records what a diffusion pipeline needs to use them:

- ``format``: ``latentae-latents/1``; ``family``, ``model`` (preset or path),
  ``latent_channels``, ``compression``;
- ``scaling_factor``, ``shift_factor`` and ``scaling_applied`` (``"true"`` when the
  stored tensors are ``(z - shift) · scale``, the diffusion model's input);
- ``sizes``: JSON ``{key: [H, W]}``, the original image sizes (images are padded to a
  multiple of the compression factor before encoding; decode crops back);
- ``posterior``: ``mode`` or ``sample``;
- with ``encode --labels``: ``classes``, JSON list of the class names (sorted names of the
  input folder's subfolders, class ``k`` is ``classes[k]``), and ``labels``, JSON
  ``{key: k}`` for this shard's keys (the key's first folder is its class).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from latentae.errors import InputError
from latentae.files import atomic_path
from latentae.version import __version__

FORMAT = "latentae-latents/1"


@dataclass
class LatentShard:
    """The tensors and metadata of one shard file."""

    latents: dict[str, torch.Tensor]  # key -> (nz, h, w)
    sizes: dict[str, tuple[int, int]]  # key -> original (H, W)
    meta: dict[str, str]

    @property
    def scaling_applied(self) -> bool:
        return self.meta.get("scaling_applied") == "true"

    @property
    def classes(self) -> list[str] | None:
        """Class names (index = label), or ``None`` for a shard written without labels."""
        return json.loads(self.meta["classes"]) if "classes" in self.meta else None

    @property
    def labels(self) -> dict[str, int] | None:
        """``key -> class index``, or ``None`` for a shard written without labels."""
        return json.loads(self.meta["labels"]) if "labels" in self.meta else None

    def unscale(self, key: str) -> torch.Tensor:
        """The raw latent ``z`` of ``key`` (undoing ``(z - shift) · scale`` if applied)."""
        z = self.latents[key]
        if self.scaling_applied:
            z = z / float(self.meta["scaling_factor"]) + float(self.meta["shift_factor"])
        return z


def shard_metadata(model, model_name: str, scaling_applied: bool, posterior: str,
                   classes: list[str] | None = None) -> dict[str, str]:
    """The metadata every shard of one ``encode`` run carries (``sizes`` and ``labels``
    added per shard); ``classes`` when the run writes labels."""
    meta = {"format": FORMAT, "family": model.family, "model": model_name,
            "latent_channels": str(model.latent_channels),
            "compression": str(model.spatial_compression_ratio),
            "scaling_factor": repr(float(model.scaling_factor)),
            "shift_factor": repr(float(model.shift_factor)),
            "scaling_applied": "true" if scaling_applied else "false",
            "posterior": posterior, "latentae_version": __version__}
    if classes is not None:
        meta["classes"] = json.dumps(list(classes))
    return meta


def folder_labels(keys: list[str]) -> tuple[dict[str, int], list[str]]:
    """Class labels from image keys (paths relative to the image folder, ``/``-separated):
    a key's first folder is its class; classes are the sorted folder names, 0 … K-1.
    Keys with no folder give ``({}, [])`` (unconditional); a mix is an ``InputError``."""
    tops = {k: k.split("/", 1)[0] if "/" in k else None for k in keys}
    loose = sorted(k for k, c in tops.items() if c is None)
    if len(loose) == len(keys):
        return {}, []
    if loose:
        raise InputError(f"{len(loose)} image(s) lie directly in the folder (e.g. "
                         f"{loose[0]!r}) beside class subfolders: put every image in a class "
                         "subfolder (DIR/CLASS/image), or none for unconditional data")
    classes = sorted(set(tops.values()))
    index = {c: i for i, c in enumerate(classes)}
    return {k: index[c] for k, c in tops.items()}, classes


def encode_labels(keys: list[str], wanted: bool
                  ) -> tuple[dict[str, int] | None, list[str] | None]:
    """``(labels, classes)`` for ``latentae encode [--labels]``: ``(None, None)`` without
    the flag; with it the :func:`folder_labels`, which must find class subfolders."""
    if not wanted:
        return None, None
    labels, classes = folder_labels(keys)
    if not classes:
        raise InputError("--labels: the images lie directly in the folder, with no class "
                         "subfolders (IMAGES/CLASS/image); leave out --labels for "
                         "unconditional latents")
    return labels, classes


def write_shard(path: str | os.PathLike, latents: dict[str, torch.Tensor],
                sizes: dict[str, tuple[int, int]], meta: dict[str, str],
                labels: dict[str, int] | None = None) -> None:
    """Write a shard atomically (``latentae.files``); ``labels`` (key -> class index, one
    per latent) when the shards carry classes."""
    meta = {**meta, "sizes": json.dumps({k: list(v) for k, v in sizes.items()})}
    if labels is not None:
        meta["labels"] = json.dumps({k: int(labels[k]) for k in latents})
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in latents.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_shard(path: str | os.PathLike) -> LatentShard:
    """Read and check a shard; a file that is not one raises ``InputError`` saying so."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            latents = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise InputError(f"{path} is not a readable safetensors file: {e}") from e
    _check(path, meta, {k: tuple(z.shape) for k, z in latents.items()})
    try:
        sizes = {k: (int(v[0]), int(v[1])) for k, v in json.loads(meta["sizes"]).items()}
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise InputError(f"{path}: bad 'sizes' metadata: {e}") from e
    return LatentShard(latents, sizes, meta)


def _check(path: Path, meta: dict[str, str], shapes: dict[str, tuple[int, ...]]) -> None:
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a latentae latent shard (format "
                         f"{meta.get('format')!r}, expected {FORMAT!r}); write one with "
                         "`latentae encode`")
    bad = [k for k, s in shapes.items() if len(s) != 3]
    if bad:
        raise InputError(f"{path}: latent {bad[0]!r} has shape {shapes[bad[0]]}, expected "
                         "(channels, h, w)")


def read_header(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """A shard's metadata and its latents' shapes, without reading the tensors (for
    datasets that read latents one by one); checked as :func:`read_shard` checks."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise InputError(f"{path} is not a readable safetensors file: {e}") from e
    _check(path, meta, shapes)
    return meta, shapes


def list_shards(path: str | os.PathLike) -> list[Path]:
    """A shard file, or the sorted ``*.safetensors`` files of a folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path} does not exist: pass a latent file or a folder of them")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise InputError(f"no .safetensors latent files in {path}")
    return files


def check_compatible(shard: LatentShard, model, path: Path) -> None:
    """Raise ``ValueError`` when ``model`` cannot decode the shard's latents."""
    nz = model.latent_channels
    for k, z in shard.latents.items():
        if z.shape[0] != nz:
            raise InputError(f"{path}: latent {k!r} has {z.shape[0]} channels but "
                             f"{model.preset or model.family} decodes {nz}; these latents "
                             f"come from {shard.meta.get('model')} ({shard.meta.get('family')})")
    fam = shard.meta.get("family")
    if fam != model.family or int(shard.meta.get("compression", 0)) != \
            model.spatial_compression_ratio:
        raise InputError(f"{path}: latents were made by a {fam} model "
                         f"({shard.meta.get('model')}, f={shard.meta.get('compression')}); "
                         f"the given model is {model.family} "
                         f"(f={model.spatial_compression_ratio})")

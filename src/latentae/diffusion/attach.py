"""A converted checkpoint -> a model folder that samples as its release does.

``latentae diffusion convert`` writes the model (``config.json`` + weights) and, for a
known release, ``release.json``: the release's sampling defaults (objective, noise
schedule, sampler with its options, steps, guidance and guided channels) and the
autoencoder, latent scale and image size it was trained with. What sampling needs besides
the network is a run record (``diffusion_run.json``, :class:`~latentae.diffusion.pipeline.
RunInfo`): :func:`resolve_info` builds it from the folder's record (a trained run's), or
from ``release.json`` and the command line's ``--autoencoder``, ``--latent-scale``…, and
``latentae diffusion attach`` writes it once (:func:`attach`).

Release defaults (checked against the releases' code, see docs/diffusion.md):

- ``dit`` (facebookresearch/DiT ``sample_ddp.py``): DDPM 250 steps on the linear
  schedule, guidance 1.5 on the first 3 channels (``forward_with_cfg``), SD-VAE ft-EMA,
  latent scale 0.18215.
- ``dcae-uvit`` (efficientvit ``UViT.generate``): DPM-Solver++ singlestep order 3,
  ``time_uniform``, 30 steps on the scaled-linear schedule, guidance 1.5, all channels.
- ``dcae-usit``: SiT's convention (``flow-sit``), dopri5 (atol 1e-6, rtol 1e-3), guidance
  1.2 (USiT-H; the README's ``cfg_scale``) / 1.15 (USiT-2B).
- ``dcae-dit``: DDPM 250 on the linear schedule, guidance 1.3 on all channels (the DC-AE
  README's ``cfg=1.3`` for its DiT-XL).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from latentae.diffusion.data import LatentNorm
from latentae.diffusion.pipeline import RUN_FILE, RunInfo, load_autoencoder, model_folder
from latentae.errors import InputError
from latentae.files import atomic_write_text
from latentae.serialization import read_config

RELEASE_FILE = "release.json"

# Sampling conventions of the releases (RunInfo fields).
TEMPLATES: dict[str, dict[str, Any]] = {
    "dit": {"objective": "ddpm", "schedule": "linear", "sampler": "ddpm", "sample_steps": 250,
            "guidance": 1.5, "guidance_channels": 3, "sampler_options": {}},
    "dcae-uvit": {"objective": "ddpm", "schedule": "scaled-linear", "sampler": "dpm++s",
                  "sample_steps": 30, "guidance": 1.5, "guidance_channels": None,
                  "sampler_options": {"order": 3, "grid": "time_uniform"}},
    "dcae-usit": {"objective": "flow-sit", "schedule": "linear", "sampler": "dopri5",
                  "sample_steps": 250, "guidance": 1.2, "guidance_channels": None,
                  "sampler_options": {"atol": 1e-6, "rtol": 1e-3}},
    "dcae-dit": {"objective": "ddpm", "schedule": "linear", "sampler": "ddpm",
                 "sample_steps": 250, "guidance": 1.3, "guidance_channels": None,
                 "sampler_options": {}},
}


def _dcae(preset: str, ae: str, template: str, **extra: Any) -> dict[str, Any]:
    f64 = "f64c128" in ae
    return {"model": preset, "patch_size": 1, "input_size": 8 if f64 else 16,
            "in_channels": 128 if f64 else 32, "num_classes": 1000, "template": template,
            "autoencoder": ae, "latent_scale": 0.2889 if f64 else 0.3189, "resolution": 512,
            **extra}


# Checkpoints by their release names (efficientvit's REGISTERED_DCAE_DIFFUSION_MODEL and
# its Hugging Face repositories, whose config.json names them; the DiT release's files).
RELEASES: dict[str, dict[str, Any]] = {
    "DiT-XL-2-256x256": {"model": "dit-xl", "patch_size": 2, "input_size": 32,
                         "in_channels": 4, "num_classes": 1000, "template": "dit",
                         "autoencoder": "sd-vae-ft-ema", "latent_scale": 0.18215,
                         "resolution": 256},
    "DiT-XL-2-512x512": {"model": "dit-xl", "patch_size": 2, "input_size": 64,
                         "in_channels": 4, "num_classes": 1000, "template": "dit",
                         "autoencoder": "sd-vae-ft-ema", "latent_scale": 0.18215,
                         "resolution": 512},
    **{f"dc-ae-f32c32-in-1.0-uvit-{s}-in-512px": _dcae(f"uvit-{s}", "dc-ae-f32c32-in-1.0",
                                                       "dcae-uvit") for s in ("s", "h", "2b")},
    **{f"dc-ae-f64c128-in-1.0-uvit-{s}-in-512px{t}": _dcae(f"uvit-{s}", "dc-ae-f64c128-in-1.0",
                                                          "dcae-uvit")
       for s in ("h", "2b") for t in ("", "-train2000k")},
    "dc-ae-f32c32-in-1.0-usit-h-in-512px": _dcae("uvit-h", "dc-ae-f32c32-in-1.0", "dcae-usit"),
    "dc-ae-f32c32-in-1.0-usit-2b-in-512px": _dcae("uvit-2b", "dc-ae-f32c32-in-1.0",
                                                  "dcae-usit", guidance=1.15),
    **{f"dc-ae-f32c32-in-1.0-dit-xl-in-512px{t}": _dcae("dit-xl", "dc-ae-f32c32-in-1.0",
                                                        "dcae-dit")
       for t in ("", "-trainbs1024")},
}
ARCH_FIELDS = ("model", "patch_size", "input_size", "in_channels", "num_classes")


def release_defaults(name: str) -> dict[str, Any]:
    """A release (:data:`RELEASES`) or a template (:data:`TEMPLATES`) -> the fields
    ``release.json`` holds: the sampling convention, plus for a named release its
    architecture, autoencoder, latent scale and resolution."""
    if name in TEMPLATES:
        return {"release": name, **TEMPLATES[name]}
    if name not in RELEASES:
        raise InputError(f"unknown release {name!r}: choose one of {', '.join(RELEASES)} or "
                         f"a convention: {', '.join(TEMPLATES)}")
    r = dict(RELEASES[name])
    template = TEMPLATES[r.pop("template")]
    return {"release": name, **template, **r}


def write_release(folder: str | os.PathLike, defaults: dict[str, Any]) -> None:
    atomic_write_text(Path(folder) / RELEASE_FILE, json.dumps(defaults, indent=2) + "\n")


def read_release(folder: Path) -> dict[str, Any]:
    path = folder / RELEASE_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise InputError(f"{path} is not valid JSON ({e}): convert the model again") from e


# RunInfo fields a command line may override (flag values of None are not given).
SAMPLING_FIELDS = ("objective", "schedule", "sampler", "sample_steps", "guidance",
                   "guidance_channels")


def resolve_info(folder: str | os.PathLike, *, autoencoder: str | None = None,
                 autoencoder_random_init: bool = False, latent_scale: float | None = None,
                 latent_shift: float | None = None, resolution: int | None = None,
                 **sampling: Any) -> RunInfo:
    """The run record of a model folder: its ``diffusion_run.json`` (a trained run's, or one
    ``attach`` wrote), else one built from ``release.json`` and these values. Values given
    (not None) override the record's; ``sampling``: :data:`SAMPLING_FIELDS`."""
    folder = Path(folder)
    if not folder.exists() or (folder / "model").is_dir() or (folder / "checkpoints").is_dir():
        folder = model_folder(folder)  # a training run: its model/ (or why there is none)
    bad = sorted(set(sampling) - set(SAMPLING_FIELDS))
    if bad:
        raise InputError(f"unknown sampling field(s) {bad}")
    given = {k: v for k, v in sampling.items() if v is not None}
    if (folder / RUN_FILE).is_file():
        info = RunInfo.read(folder / RUN_FILE)
        if autoencoder is not None or latent_scale is not None or latent_shift is not None:
            info = _with_autoencoder(info, folder, autoencoder, autoencoder_random_init,
                                     latent_scale, latent_shift, resolution)
        return dataclasses.replace(info, **given)
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder} is not a finished diffusion run (no model/{RUN_FILE}) "
                         "nor a model folder (no config.json): pass a `latentae diffusion "
                         "train` --out folder or a `latentae diffusion convert` output")
    defaults = read_release(folder)
    if autoencoder is None:
        hint = f" (the release's: {defaults['autoencoder']})" if "autoencoder" in defaults else ""
        raise InputError(f"{folder} is a model folder without a run record: pass "
                         f"--autoencoder FOLDER{hint} and, unless it is the autoencoder's own "
                         "factor, --latent-scale (or write the record once with `latentae "
                         "diffusion attach`)")
    config = read_config(folder)["config"]
    base = {k: defaults[k] for k in SAMPLING_FIELDS + ("sampler_options",) if k in defaults}
    values = {"objective": "ddpm", "sampler": "ddpm", "sample_steps": 250, "guidance": 1.0,
              **base, **given}
    info = RunInfo(autoencoder="", autoencoder_path="", autoencoder_random_init=False,
                   learn_sigma=bool(config.get("learn_sigma", False)),
                   latent_norm=LatentNorm("model", (0.0,), (1.0,)), resolution=0,
                   latent_size=int(config["input_size"]),
                   latent_channels=int(config["in_channels"]),
                   num_classes=int(config["num_classes"]), classes=(),
                   release=defaults.get("release", ""), **values)
    return _with_autoencoder(
        info, folder, autoencoder, autoencoder_random_init,
        defaults.get("latent_scale") if latent_scale is None else latent_scale,
        defaults.get("latent_shift") if latent_shift is None else latent_shift,
        defaults.get("resolution") if resolution is None else resolution)


def _with_autoencoder(info: RunInfo, folder: Path, spec: str | None, random_init: bool,
                      scale: float | None, shift: float | None,
                      resolution: int | None) -> RunInfo:
    """``info`` with the autoencoder ``spec`` (loaded once to read its factors, latent
    channels and spatial compression) and the latent normalisation ``(z − shift)·scale``
    (default: the autoencoder's own factors)."""
    spec = spec or info.autoencoder_path or info.autoencoder
    path = "" if random_init else str(Path(spec).resolve())
    if not random_init and not Path(spec).exists():
        raise InputError(f"--autoencoder {spec} does not exist: pass the folder of a "
                         "latentae or diffusers autoencoder")
    ae = load_autoencoder(path or spec, random_init, "cpu")
    c = ae.latent_channels
    if c != info.latent_channels:
        raise InputError(f"the model in {folder} takes {info.latent_channels} latent channels "
                         f"but the autoencoder {spec} makes {c}: not the autoencoder it was "
                         "trained with")
    own = LatentNorm.from_autoencoder(ae)
    norm = LatentNorm("model", (float(shift),) * c if shift is not None else own.shift,
                      (float(scale),) * c if scale is not None else own.scale)
    factor = getattr(ae, "spatial_compression_ratio", None) or 1
    return dataclasses.replace(info, autoencoder=spec, autoencoder_path=path,
                               autoencoder_random_init=random_init, latent_norm=norm,
                               resolution=resolution or info.latent_size * factor)


def attach(folder: str | os.PathLike, **values: Any) -> RunInfo:
    """Write ``folder/diffusion_run.json`` (:func:`resolve_info` of ``values``) once, so
    ``latentae diffusion sample FOLDER`` needs no flags; returns the record."""
    info = resolve_info(folder, **values)
    atomic_write_text(Path(folder) / RUN_FILE, info.to_json())
    return info

"""The diffusion bench's columns: ``NAME:pP`` autoencoder specs, the run's settings, one
diffusion model per column on the latent shape its autoencoder gives, and FLOP counts.

Only the latent shape of an autoencoder is needed unless ``on_the_fly``, so it is built
on the meta device (no weights, no compute). The columns' diffusion models share every
parameter whose name and shape agree (the transformer trunk; the patch embedding, the
position embedding and the output layer differ with the latent), so that one AdamW holds
them all and several DiT-XL columns fit in the memory of one. Values do not change the
speed, and a step touches exactly the parameters of the column that ran backward.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from latentae.bench.measure import count_flops
from latentae.bench.settings import Settings
from latentae.diffusion import count_params, create_diffusion, flops
from latentae.diffusion.base import DiffusionModel
from latentae.errors import InputError
from latentae.loader import load
from latentae.models.autoencoder import Autoencoder
from latentae.registry import create_model, list_models
from latentae.runtime import DTYPES, memory_format

MODES = ("infer", "infer_cfg", "train", "e2e")
DTYPE_NAMES = tuple(DTYPES)  # the one dtype map (runtime.py)
TRAIN_STEPS = 1000  # DDPM: linear betas 1e-4…0.02 over 1000 steps (DiT, ADM)
_SPEC = re.compile(r"^(?P<name>.+):p(?P<patch>[0-9]+)$")
SPEC_FORMS = ("NAME:pP with NAME an autoencoder preset or a latentae model directory and "
              "P the patch size, e.g. sdvae-f8:p2,dcae-f32c32:p1,dcae-f64c128:p1")


@dataclass(frozen=True)
class AutoencoderSpec:
    """One ``NAME:pP`` item of ``--autoencoders``."""

    name: str
    patch: int

    @property
    def label(self) -> str:
        return f"{self.name}:p{self.patch}"


def parse_autoencoders(text: str) -> tuple[AutoencoderSpec, ...]:
    """``"sdvae-f8:p2,dcae-f64c128:p1"`` -> specs; a malformed or repeated item raises
    :class:`InputError` naming the valid form."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise InputError(f"--autoencoders is empty; give {SPEC_FORMS}")
    specs = []
    for item in items:
        m = _SPEC.match(item)
        if m is None or int(m["patch"]) < 1:
            raise InputError(f"bad autoencoder spec {item!r}: expected {SPEC_FORMS}")
        specs.append(AutoencoderSpec(m["name"], int(m["patch"])))
    labels = [s.label for s in specs]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise InputError(f"autoencoder spec(s) given twice: {', '.join(repeated)}")
    return tuple(specs)


@dataclass(kw_only=True)
class DiffusionBenchSettings(Settings):
    """One diffusion bench run's settings (all recorded in the report): the shared
    record (one dtype; 512² and one image per call by default) plus the diffusion model,
    the columns and the modes. ``overrides`` are config fields of the diffusion preset
    (e.g. ``depth=2`` for a tiny test model)."""

    diffusion: str
    autoencoders: tuple[AutoencoderSpec, ...]
    resolution: int = 512
    batch: int = 1
    on_the_fly: bool = False
    num_classes: int = 1000
    overrides: dict = field(default_factory=dict)
    mode_subset: tuple[str, ...] = ()  # time only these of MODES (empty: all that apply)

    @property
    def modes(self) -> tuple[str, ...]:
        applicable = MODES if self.on_the_fly else MODES[:-1]
        return tuple(m for m in applicable if not self.mode_subset or m in self.mode_subset)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def check(self) -> None:
        if self.dtype not in DTYPE_NAMES:
            raise InputError(f"unknown dtype {self.dtype!r}; the diffusion bench takes one "
                             f"of {', '.join(DTYPE_NAMES)}")
        super().check()
        bad = sorted(set(self.mode_subset) - set(MODES))
        if bad:
            raise InputError(f"unknown diffusion bench mode(s) {bad}; valid: {', '.join(MODES)}")
        if "e2e" in self.mode_subset and not self.on_the_fly:
            raise InputError("mode e2e times the encoder on the fly: add --on-the-fly")
        if not self.autoencoders:
            raise InputError(f"no autoencoders given; give {SPEC_FORMS}")


@dataclass
class Column:
    """One column: a diffusion model on one autoencoder's latents cut into patches."""

    spec: AutoencoderSpec
    latent_channels: int
    compression: int
    latent_size: int
    scaling_factor: float
    model: DiffusionModel
    autoencoder: Autoencoder | None = None  # the real one, only with on_the_fly


# --- building the columns ----------------------------------------------------------
def load_autoencoder(name: str, real: bool, device: torch.device) -> Autoencoder:
    """A preset (on the meta device unless ``real``) or a latentae/diffusers directory;
    anything else raises :class:`InputError` naming the valid forms and presets."""
    if Path(name).is_dir():
        return load(name, device=device, kind="autoencoder")
    if name not in list_models():
        raise InputError(f"unknown autoencoder {name!r} in --autoencoders: expected "
                         f"{SPEC_FORMS}; presets: {', '.join(list_models())}")
    if real:
        return create_model(name).to(device)
    with torch.device("meta"):
        return create_model(name)


def latent_size(spec: AutoencoderSpec, resolution: int, compression: int) -> int:
    """Latent height = width for ``resolution``² images; raises when the autoencoder's
    factor or the patch does not divide it."""
    if resolution % compression:
        raise InputError(f"{spec.label}: image size {resolution} is not divisible by the "
                         f"autoencoder's factor {compression}; use a multiple of "
                         f"{compression}")
    n = resolution // compression
    if n % spec.patch:
        valid = [p for p in range(1, n + 1) if n % p == 0][:6]
        raise InputError(f"{spec.label}: patch {spec.patch} does not divide the latent "
                         f"{n}×{n} of {resolution}² images; valid patches: "
                         f"{', '.join(f'p{p}' for p in valid)}")
    return n


def tie_parameters(model: nn.Module, reference: nn.Module) -> int:
    """Make each parameter of ``model`` whose name, shape and ``requires_grad`` equal one
    of ``reference`` that very parameter (shared storage and gradient). Returns the number
    of elements now shared."""
    ref = dict(reference.named_parameters())
    shared = 0
    for name, p in list(model.named_parameters()):
        r = ref.get(name)
        if r is None or r is p or r.shape != p.shape or r.requires_grad != p.requires_grad:
            continue
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner), leaf, r)
        shared += p.numel()
    return shared


def build_columns(settings: DiffusionBenchSettings, progress=print) -> list[Column]:
    """Every column's autoencoder (meta unless ``on_the_fly``) and diffusion model on the
    device, trunks shared with the first column. Checks all specs before building any
    diffusion model."""
    device = torch.device(settings.device)
    shapes = []
    for spec in settings.autoencoders:
        ae = load_autoencoder(spec.name, settings.on_the_fly, device)
        n = latent_size(spec, settings.resolution, ae.spatial_compression_ratio)
        shapes.append((spec, ae, n))
    columns: list[Column] = []
    for spec, ae, n in shapes:
        progress(f"bench: building {settings.diffusion} on {spec.label} latents "
                 f"({ae.latent_channels}×{n}×{n})")
        with device:  # initialised where it runs (a DiT-XL on a GPU: no CPU detour)
            model = create_diffusion(settings.diffusion, patch_size=spec.patch,
                                     in_channels=ae.latent_channels, input_size=n,
                                     num_classes=settings.num_classes, **settings.overrides)
        if columns:
            tie_parameters(model, columns[0].model)
            gc.collect()  # free the untied copies before building the next column
        if settings.on_the_fly:
            ae.decoder = None  # only encode runs here: free the decoder's weights
            ae.eval().requires_grad_(False)
            ae.to(memory_format=memory_format(ae.channels_last_inference))
        columns.append(Column(spec, ae.latent_channels, ae.spatial_compression_ratio, n,
                              float(ae.scaling_factor), model,
                              ae if settings.on_the_fly else None))
    return columns


# --- FLOPs -------------------------------------------------------------------------
def counted_gflop(fn: Callable[[], object]) -> float:
    """GFLOP of ``fn`` by the bench's one FLOP counter (``measure.count_flops``)."""
    return count_flops(fn) / 1e9


def forward_gflop_counted(col: Column, settings: DiffusionBenchSettings) -> float | None:
    """FlopCounterMode on one forward of one sample of a meta-device twin (no compute):
    the cross-check of the analytic count; ``None`` where an op has no meta kernel."""
    try:
        with torch.device("meta"):
            twin = create_diffusion(settings.diffusion, patch_size=col.spec.patch,
                                    in_channels=col.latent_channels, input_size=col.latent_size,
                                    num_classes=settings.num_classes, **settings.overrides)
            x = torch.zeros(1, col.latent_channels, col.latent_size, col.latent_size)
            t, y = torch.zeros(1), torch.zeros(1, dtype=torch.long)
        return counted_gflop(lambda: twin(x, t, y))
    except (RuntimeError, NotImplementedError):
        return None


def encoder_gflop(col: Column, settings: DiffusionBenchSettings) -> float:
    """GFLOP of the autoencoder encoder on one image (meta twin, else the real one)."""
    r = settings.resolution
    try:
        with torch.device("meta"):
            twin = create_model(col.spec.name) if col.spec.name in list_models() else None
            x = torch.zeros(1, 3, r, r)
        if twin is not None:
            return counted_gflop(lambda: twin.encode(x).mode())
    except (RuntimeError, NotImplementedError):
        pass
    x = torch.zeros(1, 3, r, r, device=settings.device)
    return counted_gflop(lambda: col.autoencoder.encode(x).mode())



def static_row(col: Column, settings: DiffusionBenchSettings) -> dict:
    """What a column is, before any timing: latent, tokens, params, GFLOP."""
    row = {"diffusion": settings.diffusion, "autoencoder": col.spec.name,
           "patch": col.spec.patch, "column": col.spec.label,
           "latent": [col.latent_channels, col.latent_size, col.latent_size],
           "compression": col.compression, "tokens": col.model.tokens,
           "params_m": count_params(col.model) / 1e6, "gflop": flops(col.model) / 1e9,
           "gflop_counted": forward_gflop_counted(col, settings)}
    if settings.on_the_fly:
        row["encoder_gflop"] = encoder_gflop(col, settings)
    return row

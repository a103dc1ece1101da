"""A trained diffusion model with its autoencoder: the model call for each objective,
sampling in latent space, decoding, and the run record that makes ``RUN/model`` usable on
its own.

``RUN/model/`` holds the EMA model (``config.json`` + ``model.safetensors``, loadable with
``latentae.diffusion.load``) and ``diffusion_run.json`` (:class:`RunInfo`): which
autoencoder (its path as given and resolved, or a preset with random weights), the
objective, learned sigma, the latent normalisation, resolution, classes and the sampler
of the recipe. :func:`load_run` rebuilds a :class:`LatentDiffusion` from ``RUN`` alone.

Time units (the one adapter, :func:`model_call`): the models take t on the DDPM scale
0 … 999; the ``flow`` objective's t ∈ [0, 1] is passed as ``t·999`` (:data:`FLOW_T_SCALE`),
so t = 1 (noise) meets the embedding at the noisiest DDPM step and t = 0 at step 0.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from latentae.diffusion.base import DiffusionModel
from latentae.diffusion.data import LatentNorm
from latentae.diffusion.registry import load
from latentae.diffusion.samplers import SAMPLERS, sample
from latentae.errors import InputError
from latentae.files import atomic_write_text
from latentae.latents import check_made_by, run_autoencoder
from latentae.pretrained import load as load_pretrained
from latentae.registry import list_models
from latentae.runtime import autocast

RUN_FILE = "diffusion_run.json"
RUN_FORMAT = "latentae-diffusion-run/1"
FLOW_T_SCALE = 999.0
ModelFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What sampling needs besides the network (``RUN/model/diffusion_run.json``)."""

    autoencoder: str              # as given to `train` (a path, or a preset name)
    autoencoder_path: str         # resolved absolute path ("" for a preset)
    autoencoder_random_init: bool
    objective: str
    learn_sigma: bool
    latent_norm: LatentNorm
    resolution: int
    latent_size: int
    latent_channels: int
    num_classes: int
    classes: tuple[str, ...]
    sampler: str                  # the recipe's evaluation sampler, steps, guidance
    sample_steps: int
    guidance: float
    schedule: str = "linear"      # the ddpm noise schedule's spec (records before it: linear)
    guidance_channels: int | None = None  # None: all; 3: the DiT release's forward_with_cfg
    sampler_options: dict = dataclasses.field(default_factory=dict)  # eta, order, atol, ...
    release: str = ""             # a converted checkpoint: the release it came from

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d.update(format=RUN_FORMAT, latent_norm=self.latent_norm.to_dict(),
                 classes=list(self.classes), flow_t_scale=FLOW_T_SCALE)
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> RunInfo:
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {path}: {e}") from e
        if not isinstance(d, dict) or d.get("format") != RUN_FORMAT:
            raise InputError(f"{path} is not a {RUN_FORMAT} record")
        fields = dataclasses.fields(cls)
        optional = {f.name for f in fields if f.default is not dataclasses.MISSING}
        try:
            values = {f.name: d[f.name] for f in fields if f.name in d or f.name not in optional}
        except KeyError as e:
            raise InputError(f"{path} lacks the field {e}") from e
        values.update(latent_norm=LatentNorm.from_dict(d["latent_norm"]),
                      classes=tuple(d["classes"]))
        return cls(**values)


def model_call(model: nn.Module, objective: str, device: torch.device) -> ModelFn:
    """``model_fn(x_t, t, labels)`` for ``sample``/the losses: flow t scaled to 0 … 999,
    the forward under bf16 autocast on GPU, the output in float32."""
    scale = FLOW_T_SCALE if objective == "flow" else 1.0

    def call(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        with autocast(device):
            out = model(x, t * scale if scale != 1.0 else t, labels)
        return out.float()
    return call


def balanced_labels(indices: Sequence[int], num_classes: int,
                    device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Class ``i mod K`` for sample ``i`` (round robin: every class equally often);
    ``None`` for an unconditional model."""
    if num_classes == 0:
        return None
    return torch.tensor([i % num_classes for i in indices], dtype=torch.long, device=device)


class LatentDiffusion:
    """A diffusion model, the autoencoder it was trained with, and its :class:`RunInfo`."""

    def __init__(self, model: DiffusionModel, autoencoder: nn.Module, info: RunInfo,
                 device: torch.device) -> None:
        if model.in_channels != autoencoder.latent_channels:
            raise InputError(f"the diffusion model takes {model.in_channels} latent channels "
                             f"but the autoencoder {info.autoencoder} makes "
                             f"{autoencoder.latent_channels}: it is not the run's autoencoder")
        self.model, self.autoencoder, self.info, self.device = model, autoencoder, info, device

    def check(self, sampler: str, guidance: float) -> None:
        """Refuse a sampler of the other objective, or guidance without classes."""
        objective = self.info.objective
        if sampler not in SAMPLERS[objective]:
            raise InputError(f"sampler {sampler!r} does not go with this run's objective "
                             f"{objective!r}: choose one of {', '.join(SAMPLERS[objective])}")
        if guidance != 1.0 and self.info.num_classes == 0:
            raise InputError(f"guidance {guidance} needs classes, and this run is "
                             "unconditional (its data had no class subfolders): use "
                             "--guidance 1")
        if guidance != 1.0 and not getattr(self.model.config, "null_class", True):
            raise InputError(f"guidance {guidance} needs the null class, and this model was "
                             "trained without label dropout (no null row): use --guidance 1")

    @torch.no_grad()
    def sample_latents(self, labels: torch.Tensor | None, generators: list[torch.Generator],
                       *, sampler: str, steps: int, guidance: float = 1.0,
                       progress: bool = False, noise: torch.Tensor | None = None,
                       guidance_channels: int | None = None,
                       options: dict | None = None) -> torch.Tensor:
        """``(B, C, h, w)`` latents in the model's (normalised) space; sample ``i`` drawn
        from ``generators[i]`` (``noise``: x_T itself). ``guidance_channels`` and the
        sampler ``options`` default to the record's."""
        self.check(sampler, guidance)
        info, model = self.info, self.model.eval()
        shape = (len(generators), info.latent_channels, info.latent_size, info.latent_size)
        channels = info.guidance_channels if guidance_channels is None else guidance_channels
        return sample(model_call(model, info.objective, self.device), shape,
                      objective=info.objective, sampler=sampler, steps=steps,
                      guidance=guidance, labels=labels, generator=generators,
                      learn_sigma=info.learn_sigma, null_label=info.num_classes,
                      progress=progress, device=self.device, schedule=info.schedule,
                      guidance_channels=channels, noise=noise,
                      **(info.sampler_options if options is None else options))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> images ``(B, 3, R, R)`` in [-1, 1] (float32 decode)."""
        x = self.autoencoder.eval().decode(self.info.latent_norm.denormalize(z.float()))
        return x.float().clamp(-1, 1)


def write_run(folder: str | os.PathLike, model: DiffusionModel, info: RunInfo,
              card: dict | None = None) -> None:
    """``save_pretrained`` of ``model`` (its model card with the fields of ``card``, e.g.
    ``diffusion.card.run_card``) plus ``diffusion_run.json`` into ``folder``."""
    model.save_pretrained(folder, card=card)
    atomic_write_text(Path(folder) / RUN_FILE, info.to_json())


def model_folder(run: str | os.PathLike) -> Path:
    """``RUN/model`` (or ``RUN`` itself when it is the model folder); an ``InputError``
    saying what is missing otherwise."""
    run = Path(run)
    if not run.exists():
        raise InputError(f"{run} does not exist: pass the --out folder of a finished "
                         "`latentae diffusion train` run")
    for folder in (run / "model", run):
        if (folder / RUN_FILE).is_file():
            return folder
    hint = (" (it holds checkpoints but no export: finish it with `latentae diffusion train "
            "... --resume auto`)" if (run / "checkpoints").is_dir() else "")
    raise InputError(f"{run} is not a finished diffusion run: no model/{RUN_FILE}{hint}")


def load_run(run: str | os.PathLike, device: torch.device | str = "cpu",
             autoencoder: nn.Module | None = None,
             info: RunInfo | None = None) -> LatentDiffusion:
    """The exported model of a ``latentae diffusion train`` run and its autoencoder
    (``autoencoder``, when the caller holds the run's one already, is used as it is).
    ``info``: the record to use instead of the folder's (``diffusion.attach.resolve_info``
    for a converted model folder)."""
    device = torch.device(device)
    if info is None:
        folder = model_folder(run)
        info = RunInfo.read(folder / RUN_FILE)
    else:
        folder = Path(run) / "model" if (Path(run) / "model").is_dir() else Path(run)
    model = load(folder, device=device)
    if autoencoder is not None:
        return LatentDiffusion(model, autoencoder.to(device).eval(), info, device)
    spec = info.autoencoder_path or info.autoencoder
    if info.autoencoder_path and not Path(spec).exists():
        raise InputError(f"the run's autoencoder {spec} is gone: restore it there (the run "
                         "does not copy it)")
    autoencoder = load_autoencoder(spec, info.autoencoder_random_init, device)
    check_made_by(run_autoencoder(folder), autoencoder, folder, f"the autoencoder {spec}",
                  what="the latents this model learned")
    return LatentDiffusion(model, autoencoder, info, device)


def load_autoencoder(spec: str, random_init: bool, device: torch.device) -> nn.Module:
    """The frozen autoencoder (eval, no gradients). A preset with ``random_init`` gets
    the same random weights every time (seed 0, the global RNG left untouched)."""
    if not random_init and not Path(spec).exists() and str(spec) in list_models():
        raise InputError(f"--autoencoder {spec!r} is a preset name, not saved weights: for a "
                         "smoke run with random weights add --autoencoder-random-init "
                         "(Python: autoencoder_random_init=True), or give a model directory")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = load_pretrained(spec, device, random_init=random_init)
    return model.eval().requires_grad_(False)

"""The one public ``sample``: samplers of each objective, classifier-free guidance, checks.

``ddpm`` objective (model_fn gets the schedule's integer timestep, or ``t·N`` in continuous
time, and returns ε, or ε and v): ``ddpm``, ``ddim`` (η), ``dpm++2m``, ``dpm++3m``, ``dpm++s``
(``ddpm_solvers.py``), on any :class:`~latentae.diffusion.schedules.NoiseSchedule`
(``schedule=``; default ``linear``, DiT's).
``flow`` / ``flow-sit`` objectives (model_fn gets float t in [0, 1] in the objective's own
direction and returns its velocity): ``euler``, ``heun``, ``dopri5``, ``euler-maruyama``
(``flow_solvers.py``).

Guidance (Ho & Salimans 2022): out = u + w·(c − u) on the prediction channels (ε, or the
flow velocity), the conditional and null-class calls batched into one ``model_fn`` call
(cond first) as DiT's ``forward_with_cfg``; with learned sigma the v channels are the
conditional ones. ``guidance_channels``: None guides all C channels (DC-AE, diffusers, the
standard); 3 guides only channels 0–2 and takes the rest from the conditional call, the DiT
(and SiT) release's ``forward_with_cfg`` arithmetic "for exact reproducibility" of the DiT
paper's numbers. With ``guidance_interval=(t_lo, t_hi)`` guidance applies only where
t_lo ≤ t ≤ t_hi, t in the units model_fn receives (Kynkäänniemi et al. 2024); elsewhere only
the conditional call runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from latentae.diffusion import ddpm_solvers, flow_solvers
from latentae.diffusion.ddpm_solvers import (  # noqa: F401  (public names, re-exported)
    ddpm_sampling_schedule,
    dpm_solver_grid,
    dpm_solver_orders,
    dpm_solver_timesteps,
)
from latentae.diffusion.flow_solvers import flow_times  # noqa: F401
from latentae.diffusion.noise import randn
from latentae.diffusion.sampling import GRIDS, SOLVER_TYPES, Denoiser, SamplerOptions
from latentae.diffusion.schedules import NoiseSchedule, get_schedule
from latentae.errors import InputError

__all__ = ["SAMPLERS", "ddpm_sampling_schedule", "dpm_solver_grid", "dpm_solver_orders",
           "dpm_solver_timesteps", "flow_times", "guided_model", "sample"]

_FLOW = tuple(flow_solvers.RUNNERS)
SAMPLERS: dict[str, tuple[str, ...]] = {"ddpm": tuple(ddpm_solvers.RUNNERS),
                                        "flow": _FLOW, "flow-sit": _FLOW}
ModelFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
_RUNNERS = {**ddpm_solvers.RUNNERS, **flow_solvers.RUNNERS}


def guided_model(model_fn: ModelFn, labels: torch.Tensor | None, *, guidance: float,
                 null_label: int | None, channels: int,
                 interval: tuple[float, float] | None = None) -> Denoiser:
    """``(x_t, t) -> output`` with classifier-free guidance on the first ``channels`` channels.

    labels None: unconditional, model_fn(x, t, None). guidance 1.0 or t outside ``interval``:
    the conditional output alone. Else one call on [x; x] with [labels; null_label] and
    u + guidance·(c − u) on channels 0 … C−1, the remaining channels (v) from the cond half.
    """
    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if labels is None:
            return model_fn(x, t, None)
        if guidance == 1.0 or (interval is not None
                               and not interval[0] <= float(t[0]) <= interval[1]):
            return model_fn(x, t, labels)
        null = torch.full_like(labels, null_label)
        out = model_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = out.chunk(2)  # (B, C or 2C, …) each
        pred = uncond[:, :channels] + guidance * (cond[:, :channels] - uncond[:, :channels])
        return torch.cat([pred, cond[:, channels:]], dim=1)
    return call


def _max_steps(sampler: str, num_timesteps: int) -> int | None:
    if sampler in ("ddpm", "ddim", "dpm++s"):
        return num_timesteps
    return num_timesteps - 1 if sampler in ("dpm++2m", "dpm++3m") else None


def _check_method(objective: str, sampler: str, steps: int, learn_sigma: bool,
                  num_timesteps: int) -> None:
    if objective not in SAMPLERS:
        raise InputError(f"unknown objective {objective!r}; choose one of {', '.join(SAMPLERS)}")
    if sampler not in SAMPLERS[objective]:
        valid = "; ".join(f"{o}: {', '.join(s)}" for o, s in SAMPLERS.items())
        raise InputError(f"sampler {sampler!r} does not go with objective {objective!r}; "
                         f"valid samplers are {valid}")
    top = _max_steps(sampler, num_timesteps)
    low = 2 if sampler == "euler-maruyama" else 1
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < low or (
            top is not None and steps > top):
        raise InputError(f"steps must be an integer in {low} … {top or 'any'} for {sampler}, "
                         f"got {steps!r}")
    if learn_sigma and objective != "ddpm":
        raise InputError("learn_sigma applies to the ddpm objective only; the flow model "
                         "returns the velocity alone")


def _options(objective: str, schedule: NoiseSchedule | str | None, options: dict) -> SamplerOptions:
    """The checked :class:`SamplerOptions` of one call (unknown keys are an error)."""
    fields = set(SamplerOptions.__dataclass_fields__) - {"schedule", "objective"}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise InputError(f"unknown sampler option(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(sorted(fields))}")
    opts = SamplerOptions(get_schedule(schedule), objective, **options)
    if not 0.0 <= opts.eta <= 1.0:
        raise InputError(f"eta must be in [0, 1] (0: DDIM, 1: DDPM-like), got {opts.eta}")
    if opts.order not in (1, 2, 3):
        raise InputError(f"order must be 1, 2 or 3, got {opts.order}")
    if opts.grid not in GRIDS:
        raise InputError(f"unknown grid {opts.grid!r}; choose one of {', '.join(GRIDS)}")
    if opts.solver_type not in SOLVER_TYPES:
        raise InputError(f"unknown solver_type {opts.solver_type!r}; choose one of "
                         f"{', '.join(SOLVER_TYPES)}")
    if not (opts.atol > 0 and opts.rtol > 0 and 0 <= opts.last_step_size < 1):
        raise InputError("atol and rtol must be > 0 and last_step_size in [0, 1)")
    return opts


def _check_labels(labels: torch.Tensor | None, batch: int, guidance: float,
                  null_label: int | None) -> None:
    if labels is None:
        if guidance != 1.0:
            raise InputError(f"guidance {guidance} needs class labels; pass labels= (B,) "
                             "int64, or guidance=1.0 for unconditional sampling")
        return
    if (not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64
            or tuple(labels.shape) != (batch,)):
        got = (labels.dtype, tuple(labels.shape)) if isinstance(labels, torch.Tensor) else labels
        raise InputError(f"labels must be an int64 tensor of shape ({batch},), got {got}")
    if guidance != 1.0 and (isinstance(null_label, bool) or not isinstance(null_label, int)):
        raise InputError("guidance != 1 needs null_label: the integer the model takes as the "
                         "null class (num_classes)")


def _check_interval(interval: Sequence[float] | None) -> tuple[float, float] | None:
    if interval is None:
        return None
    if len(interval) != 2 or not float(interval[0]) <= float(interval[1]):
        raise InputError(f"guidance_interval must be (t_lo, t_hi) with t_lo <= t_hi, got "
                         f"{interval!r}")
    return float(interval[0]), float(interval[1])


def _first(generator: torch.Generator | Sequence[torch.Generator]) -> torch.Generator:
    return generator[0] if isinstance(generator, (list, tuple)) else generator


@torch.no_grad()
def sample(model_fn: ModelFn, shape: Sequence[int], *, objective: str, sampler: str,
           steps: int, guidance: float = 1.0, labels: torch.Tensor | None = None,
           generator: torch.Generator | Sequence[torch.Generator] | None = None,
           guidance_interval: tuple[float, float] | None = None, learn_sigma: bool = False,
           progress: bool = False, null_label: int | None = None,
           device: torch.device | str | None = None,
           schedule: NoiseSchedule | str | None = None, guidance_channels: int | None = None,
           noise: torch.Tensor | None = None, **options) -> torch.Tensor:
    """Draw samples (B, C, …) float32 by integrating ``objective``'s reverse process.

    model_fn(x_t, t, labels): ddpm — t (B,) what the schedule's network sees (int64
    timesteps, float ``t·N`` for ``dpm++s``), returns ε (B, C, …) or with ``learn_sigma``
    [ε, v] (B, 2C, …); flow / flow-sit — t float (B,) in [0, 1], returns the velocity.
    ``sampler``: see :data:`SAMPLERS`. ``steps``: respaced steps (ddpm, ddim), model calls
    (dpm++2m/3m/s, euler, euler-maruyama), solver steps (heun: 2 calls each), output times
    (dopri5: adaptive). ``schedule``: a :class:`NoiseSchedule` or its spec (ddpm objective;
    default ``linear``). ``guidance_channels``: None = all, 3 = the DiT release's.
    ``options``: ``eta`` (ddim), ``order`` / ``grid`` / ``solver_type`` (dpm++s), ``atol`` /
    ``rtol`` (dopri5), ``last_step_size`` (euler-maruyama); see :class:`SamplerOptions`.
    Guidance ≠ 1 needs ``labels`` (B,) int64 and ``null_label`` (= num_classes).
    ``generator`` draws x_T and every noise of the sampler, in that order (reproducible); a
    list of B generators draws sample i's noise from generator i (the same sample in any
    batch). ``noise``: x_T itself (B, C, …) instead of a draw. The tensors live on
    ``device``, else on labels' device, else on the generator's, else CPU.
    """
    opts = _options(objective, schedule, options)
    _check_method(objective, sampler, steps, learn_sigma, opts.schedule.num_timesteps)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise InputError(f"shape must be (B, C, …), got {shape}")
    _check_labels(labels, shape[0], guidance, null_label)
    channels = shape[1] if guidance_channels is None else int(guidance_channels)
    if not 1 <= channels <= shape[1]:
        raise InputError(f"guidance_channels must be in 1 … {shape[1]} (or None for all), "
                         f"got {guidance_channels}")
    if device is None:
        device = labels.device if labels is not None else (
            _first(generator).device if generator is not None else torch.device("cpu"))
    denoise = guided_model(model_fn, None if labels is None else labels.to(device),
                           guidance=float(guidance), null_label=null_label, channels=channels,
                           interval=_check_interval(guidance_interval))
    if noise is not None:
        if tuple(noise.shape) != shape:
            raise InputError(f"noise has shape {tuple(noise.shape)}; sampling needs {shape}")
        x = noise.to(device=device, dtype=torch.float32)
    else:
        x = randn(shape, generator, device=device)
    return _RUNNERS[sampler](denoise, x, steps, opts, learn_sigma=learn_sigma,
                             generator=generator, progress=progress)

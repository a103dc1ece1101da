"""What every sampler loop shares: the options of one ``sample`` call and the progress bar.

A *denoiser* is ``(x_t, t) -> output`` with guidance already applied
(``samplers.guided_model``): t is what the network sees (an integer timestep, a continuous
``t·N``, or a flow time), the output is the objective's prediction (ε, [ε, v], a velocity).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from latentae.diffusion.schedules import NoiseSchedule
from latentae.progress import bar

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> output

# DPM-Solver's time grids (Lu et al. 2022 App. D; efficientvit ``get_time_steps``)
GRIDS = ("time_uniform", "logSNR", "time_quadratic")
SOLVER_TYPES = ("dpmsolver", "taylor")  # DPM-Solver's ``solver_type``: release default first


@dataclass(frozen=True)
class SamplerOptions:
    """The knobs of one ``sample`` call besides the step count.

    schedule: the noise schedule (ddpm objective); objective: ``ddpm``, ``flow``, ``flow-sit``;
    eta: DDIM η (0 deterministic, 1 DDPM-like); order / grid / solver_type: ``dpm++s``
    (singlestep DPM-Solver++, DC-AE's ``fast`` pattern); atol / rtol: ``dopri5``;
    last_step_size: ``euler-maruyama`` (SiT's final noise-free "Mean" step)."""

    schedule: NoiseSchedule
    objective: str = "ddpm"
    eta: float = 0.0
    order: int = 3
    grid: str = "time_uniform"
    solver_type: str = "dpmsolver"
    atol: float = 1e-6
    rtol: float = 1e-3
    last_step_size: float = 0.04


def progress_bar(indices: Sequence[int], progress: bool):
    """The one progress bar (:func:`latentae.progress.bar`) over ``indices``, in steps,
    shown only when ``progress``."""
    return bar(indices, enabled=progress, unit="step", leave=False)


def time_column(value: float, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B,) of ``value`` on x's device: int64 for an integer timestep, else float."""
    if dtype is None:
        dtype = torch.int64 if isinstance(value, int) else x.dtype
    return torch.full((x.shape[0],), value, dtype=dtype, device=x.device)

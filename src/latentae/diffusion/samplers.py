"""Samplers for the two objectives, classifier-free guidance, and the one public ``sample``.

``ddpm`` objective (model_fn gets integer timesteps 0 … 999 and returns ε, or ε and v):
- ``ddpm``: ancestral sampling (DDPM Alg. 2) on the schedule respaced to ``steps`` (ADM
  section-count spacing ``space_timesteps(1000, str(steps))`` = diffusers ``"linspace"``:
  ``round(linspace(0, 999, steps))``), fixed small variance β̃_t or the learned one.
- ``ddim``: DDIM η = 0 (Song et al. 2021 eq. 12) on the same respaced steps.
- ``dpm++2m``: DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) as diffusers'
  ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
  solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero",
  timestep_spacing="linspace")``: timesteps ``round(linspace(0, 999, steps + 1))[::-1][:-1]``,
  the first step first order, the last step lands on x̂_0 (σ = 0).
``flow`` objective (model_fn gets float t in [0, 1] and returns the velocity ε − x):
- ``euler`` / ``heun``: the ODE dx/dt = v from t = 1 to t = 0 on ``steps`` uniform intervals
  (Heun: Euler predictor, trapezoid corrector, 2 model calls per step, t = 0 included).

Guidance (Ho & Salimans 2022): out = u + w·(c − u) on all C prediction channels (ε, or the
flow velocity), the conditional and null-class calls batched into one ``model_fn`` call
(cond first) as DiT's ``forward_with_cfg``; with learned sigma the v channels are the
conditional ones. (The DiT release guides only ε channels 0–2 of 4 "for exact
reproducibility" of its paper's numbers and calls all channels the standard approach; we
take the standard one.) With
``guidance_interval=(t_lo, t_hi)`` guidance applies only where t_lo ≤ t ≤ t_hi, t in the
units model_fn receives (Kynkäänniemi et al. 2024); elsewhere only the conditional call runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from tqdm import tqdm

from latentae.diffusion.ddpm import (
    NUM_TIMESTEPS,
    Schedule,
    ddpm_schedule,
    model_log_variance,
    posterior_mean,
    predict_x0,
    respace,
    space_timesteps,
    split_output,
)
from latentae.diffusion.noise import randn
from latentae.errors import InputError

__all__ = ["SAMPLERS", "ddpm_sampling_schedule", "dpm_solver_timesteps", "flow_times",
           "guided_model", "sample"]

SAMPLERS: dict[str, tuple[str, ...]] = {"ddpm": ("ddpm", "ddim", "dpm++2m"),
                                        "flow": ("euler", "heun")}
ModelFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> output


def ddpm_sampling_schedule(steps: int | str) -> Schedule:
    """The 1000-step DiT schedule respaced to ``steps`` (ADM ``"steps"`` = diffusers linspace;
    any ``space_timesteps`` spec, e.g. ``"ddim50"``, also works)."""
    return respace(ddpm_schedule(), space_timesteps(NUM_TIMESTEPS, steps))


def dpm_solver_timesteps(steps: int) -> list[int]:
    """Diffusers' ``"linspace"`` spacing for DPM-Solver, descending: ``steps`` timesteps from
    999 down to ≈ 999/steps; the last step goes to σ = 0."""
    # i·(999/steps) rounded half to even is numpy's linspace bit for bit (torch's linspace
    # rounds 15·33.3 up to 499.50000000000006 where numpy has 499.49999999999994).
    stride = (NUM_TIMESTEPS - 1) / steps
    return [round(i * stride) for i in range(steps, 0, -1)]


def flow_times(steps: int) -> torch.Tensor:
    """(steps + 1,) float64 times 1 → 0, uniform."""
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


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


def _bar(indices: list[int], progress: bool):
    return tqdm(indices, disable=not progress, unit="step", leave=False)


def _timestep(value: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), int(value), dtype=torch.int64, device=x.device)  # (B,)


def _ancestral(denoise: Denoiser, x: torch.Tensor, steps: int, *, learn_sigma: bool,
               generator: torch.Generator | None, progress: bool) -> torch.Tensor:
    """DDPM Alg. 2 on the respaced schedule: x_{t−1} = μ̂(x_t) + σ_t·z, no noise at the end."""
    sched = ddpm_sampling_schedule(steps)
    for i in _bar(list(range(len(sched)))[::-1], progress):
        eps, v = split_output(denoise(x, _timestep(sched.timesteps[i], x)), x.shape[1],
                              learn_sigma)
        log_var = torch.as_tensor(model_log_variance(sched, i, v, x), dtype=x.dtype,
                                  device=x.device)
        x = posterior_mean(sched, predict_x0(sched, x, i, eps), x, i)
        if i > 0:  # the last step adds no noise
            x = x + torch.exp(0.5 * log_var) * randn(tuple(x.shape), generator,
                                                     device=x.device, dtype=x.dtype)
    return x


def _ddim(denoise: Denoiser, x: torch.Tensor, steps: int, *, learn_sigma: bool,
          generator: torch.Generator | None, progress: bool) -> torch.Tensor:
    """DDIM η = 0 (eq. 12): x_prev = √ᾱ_prev·x̂_0 + √(1 − ᾱ_prev)·ε̂ on the respaced steps."""
    sched = ddpm_sampling_schedule(steps)
    ac_prev = sched.alphas_cumprod_prev
    for i in _bar(list(range(len(sched)))[::-1], progress):
        eps, _ = split_output(denoise(x, _timestep(sched.timesteps[i], x)), x.shape[1],
                              learn_sigma)
        x0 = predict_x0(sched, x, i, eps)
        x = float(ac_prev[i].sqrt()) * x0 + float((1.0 - ac_prev[i]).sqrt()) * eps
    return x


def _dpm_solver_2m(denoise: Denoiser, x: torch.Tensor, steps: int, *, learn_sigma: bool,
                   generator: torch.Generator | None, progress: bool) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2, midpoint form as diffusers) in λ = log(α/σ).

    x_next = (σ_next/σ)·x − α_next·(e^{−h} − 1)·D, h = λ_next − λ, D = x̂_0 on the first step
    and x̂_0 + (x̂_0 − x̂_0,prev)/(2r) after, r = h_prev/h; the final step returns x̂_0 (σ = 0).
    """
    ts = dpm_solver_timesteps(steps)
    ac = ddpm_schedule().alphas_cumprod[ts]
    alpha, sigma = ac.sqrt(), (1.0 - ac).sqrt()  # (steps,) float64
    lam = torch.log(alpha) - torch.log(sigma)
    prev_x0 = None
    for k in _bar(list(range(len(ts))), progress):
        eps, _ = split_output(denoise(x, _timestep(ts[k], x)), x.shape[1], learn_sigma)
        x0 = (x - float(sigma[k]) * eps) / float(alpha[k])
        if k == len(ts) - 1:
            x = x0  # σ_next = 0: the first-order step lands on x̂_0
        else:
            h = float(lam[k + 1] - lam[k])
            r = float(lam[k] - lam[k - 1]) / h if prev_x0 is not None else 1.0
            d = x0 if prev_x0 is None else x0 + (x0 - prev_x0) / (2 * r)  # D0 + D1/2
            x = float(sigma[k + 1] / sigma[k]) * x - float(alpha[k + 1]) * math.expm1(-h) * d
        prev_x0 = x0
    return x


def _velocity(denoise: Denoiser, x: torch.Tensor, t: float) -> torch.Tensor:
    v = denoise(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))
    if v.shape != x.shape:
        raise InputError(f"the flow model returned shape {tuple(v.shape)}; it must return the "
                         f"velocity with the latent's shape {tuple(x.shape)}")
    return v


def _euler(denoise: Denoiser, x: torch.Tensor, steps: int, *, learn_sigma: bool,
           generator: torch.Generator | None, progress: bool) -> torch.Tensor:
    """x ← x + (t_next − t)·v(x, t) from t = 1 to 0."""
    ts = flow_times(steps).tolist()
    for k in _bar(list(range(steps)), progress):
        x = x + (ts[k + 1] - ts[k]) * _velocity(denoise, x, ts[k])
    return x


def _heun(denoise: Denoiser, x: torch.Tensor, steps: int, *, learn_sigma: bool,
          generator: torch.Generator | None, progress: bool) -> torch.Tensor:
    """Heun's method (explicit trapezoid): Euler predictor, average of both slopes."""
    ts = flow_times(steps).tolist()
    for k in _bar(list(range(steps)), progress):
        dt = ts[k + 1] - ts[k]
        d1 = _velocity(denoise, x, ts[k])
        d2 = _velocity(denoise, x + dt * d1, ts[k + 1])
        x = x + dt * 0.5 * (d1 + d2)
    return x


_RUNNERS = {"ddpm": _ancestral, "ddim": _ddim, "dpm++2m": _dpm_solver_2m,
            "euler": _euler, "heun": _heun}
_MAX_STEPS = {"ddpm": NUM_TIMESTEPS, "ddim": NUM_TIMESTEPS, "dpm++2m": NUM_TIMESTEPS - 1}


def _check_method(objective: str, sampler: str, steps: int, learn_sigma: bool) -> None:
    if objective not in SAMPLERS:
        raise InputError(f"unknown objective {objective!r}; choose one of {', '.join(SAMPLERS)}")
    if sampler not in SAMPLERS[objective]:
        valid = "; ".join(f"{o}: {', '.join(s)}" for o, s in SAMPLERS.items())
        raise InputError(f"sampler {sampler!r} does not go with objective {objective!r}; "
                         f"valid samplers are {valid}")
    top = _MAX_STEPS.get(sampler)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or (
            top is not None and steps > top):
        raise InputError(f"steps must be an integer in 1 … {top or 'any'} for {sampler}, "
                         f"got {steps!r}")
    if learn_sigma and objective != "ddpm":
        raise InputError("learn_sigma applies to the ddpm objective only; the flow model "
                         "returns the velocity alone")


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
           device: torch.device | str | None = None) -> torch.Tensor:
    """Draw samples (B, C, …) float32 by integrating ``objective``'s reverse process.

    model_fn(x_t, t, labels): ddpm — t int64 (B,) in 0 … 999, returns ε (B, C, …) or with
    ``learn_sigma`` [ε, v] (B, 2C, …); flow — t float (B,) in [0, 1], returns ε − x.
    ``sampler``: ddpm → ddpm | ddim | dpm++2m; flow → euler | heun. ``steps``: respaced
    steps (ddpm, ddim), solver steps (dpm++2m, euler, heun; heun calls the model 2·steps
    times). Guidance ≠ 1 needs ``labels`` (B,) int64 and ``null_label`` (= num_classes).
    ``generator`` draws x_T and every ancestral noise, in that order (reproducible); a list
    of B generators draws sample i's noise from generator i (the same sample in any batch).
    The tensors live on ``device``, else on labels' device, else on the generator's, else CPU.
    """
    _check_method(objective, sampler, steps, learn_sigma)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise InputError(f"shape must be (B, C, …), got {shape}")
    _check_labels(labels, shape[0], guidance, null_label)
    if device is None:
        device = labels.device if labels is not None else (
            _first(generator).device if generator is not None else torch.device("cpu"))
    denoise = guided_model(model_fn, None if labels is None else labels.to(device),
                           guidance=float(guidance), null_label=null_label, channels=shape[1],
                           interval=_check_interval(guidance_interval))
    x = randn(shape, generator, device=device)
    return _RUNNERS[sampler](denoise, x, steps, learn_sigma=learn_sigma, generator=generator,
                             progress=progress)

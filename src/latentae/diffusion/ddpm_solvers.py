"""Samplers of the ``ddpm`` objective (ε-prediction) on any :class:`NoiseSchedule`.

- ``ddpm``: ancestral sampling (DDPM Alg. 2) on the schedule respaced to ``steps`` (ADM
  ``space_timesteps(N, str(steps))`` = diffusers ``"linspace"``), fixed small variance β̃_t
  or the learned one.
- ``ddim``: DDIM (Song et al. 2021 eq. 12 and 16) with η on the same respaced steps:
  σ = η·√((1−ᾱ_prev)/(1−ᾱ))·√(1−ᾱ/ᾱ_prev), x_prev = √ᾱ_prev·x̂_0 + √(1−ᾱ_prev−σ²)·ε̂ + σ·z
  (ADM ``ddim_sample``, diffusers ``DDIMScheduler(eta)``).
- ``dpm++2m`` / ``dpm++3m``: multistep DPM-Solver++ (Lu et al. 2022b, Alg. 2 and its third
  order) as diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++",
  solver_order=2|3, lower_order_final=True, final_sigmas_type="zero",
  timestep_spacing="linspace")``: steps at ``round(linspace(0, N−1, steps+1))[::-1][:-1]``,
  warm-up at lower order, the last step onto x̂_0 (σ = 0), with 3M the one before it second
  order when steps < 15.
- ``dpm++s``: singlestep DPM-Solver++ (data prediction) in continuous time as the DC-AE
  release samples its U-ViT (efficientvit ``uvit_sampler/dpm_solver_pp.py``,
  ``DPM_Solver(predict_x0=True).sample(steps, eps=1/N, T=1, method="fast")``): ``steps``
  model calls on a ``grid`` of steps + 1 times from T = 1 to 1/N, grouped into singlestep
  updates of orders [3]·(K−2) + [2, 1] (K = steps//3 + 1; the ``fast`` pattern; order 2:
  [2]·(steps//2) (+ [1]); order 1: [1]·steps), the intermediate points of each update being
  the grid points inside it. The network sees ``schedule.model_time(t)`` (U-ViT: ``t·N``).
"""

from __future__ import annotations

import math

import torch

from latentae.diffusion.ddpm import (
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
from latentae.diffusion.sampling import (
    GRIDS,
    Denoiser,
    SamplerOptions,
    progress_bar,
    time_column,
)
from latentae.diffusion.schedules import NoiseSchedule, get_schedule
from latentae.errors import InputError

__all__ = ["ddpm_sampling_schedule", "dpm_solver_grid", "dpm_solver_orders",
           "dpm_solver_timesteps"]


def ddpm_sampling_schedule(steps: int | str,
                           schedule: NoiseSchedule | str | None = None) -> Schedule:
    """The schedule (default ``linear``, DiT's) respaced to ``steps`` (ADM ``"steps"`` =
    diffusers linspace; any ``space_timesteps`` spec, e.g. ``"ddim50"``, also works)."""
    full = ddpm_schedule(noise=schedule, sampling=True)
    return respace(full, space_timesteps(len(full), steps))


def dpm_solver_timesteps(steps: int, num_timesteps: int = 1000) -> list[int]:
    """Diffusers' ``"linspace"`` spacing for DPM-Solver, descending step indices: ``steps``
    of them from N−1 down to ≈ (N−1)/steps; the last step goes to σ = 0."""
    # i·((N−1)/steps) rounded half to even is numpy's linspace bit for bit (torch's linspace
    # rounds 15·33.3 up to 499.50000000000006 where numpy has 499.49999999999994).
    stride = (num_timesteps - 1) / steps
    return [round(i * stride) for i in range(steps, 0, -1)]


def _ancestral(denoise: Denoiser, x: torch.Tensor, steps: int, opts: SamplerOptions, *,
               learn_sigma: bool, generator, progress: bool) -> torch.Tensor:
    """DDPM Alg. 2 on the respaced schedule: x_{t−1} = μ̂(x_t) + σ_t·z, no noise at the end."""
    sched = ddpm_sampling_schedule(steps, opts.schedule)
    for i in progress_bar(list(range(len(sched)))[::-1], progress):
        eps, v = split_output(denoise(x, time_column(int(sched.timesteps[i]), x)), x.shape[1],
                              learn_sigma)
        log_var = torch.as_tensor(model_log_variance(sched, i, v, x), dtype=x.dtype,
                                  device=x.device)
        x = posterior_mean(sched, predict_x0(sched, x, i, eps), x, i)
        if i > 0:  # the last step adds no noise
            x = x + torch.exp(0.5 * log_var) * randn(tuple(x.shape), generator,
                                                     device=x.device, dtype=x.dtype)
    return x


def _ddim(denoise: Denoiser, x: torch.Tensor, steps: int | str, opts: SamplerOptions, *,
          learn_sigma: bool, generator, progress: bool) -> torch.Tensor:
    """DDIM with η on the respaced steps; noise z is drawn only where σ > 0 (η > 0, i > 0)."""
    sched = ddpm_sampling_schedule(steps, opts.schedule)
    ac, ac_prev = sched.alphas_cumprod, sched.alphas_cumprod_prev
    for i in progress_bar(list(range(len(sched)))[::-1], progress):
        eps, _ = split_output(denoise(x, time_column(int(sched.timesteps[i]), x)), x.shape[1],
                              learn_sigma)
        x0 = predict_x0(sched, x, i, eps)
        sigma = opts.eta * math.sqrt(float((1 - ac_prev[i]) / (1 - ac[i])
                                           * (1 - ac[i] / ac_prev[i])))
        x = (float(ac_prev[i].sqrt()) * x0
             + math.sqrt(max(float(1.0 - ac_prev[i]) - sigma**2, 0.0)) * eps)
        if sigma > 0 and i > 0:
            x = x + sigma * randn(tuple(x.shape), generator, device=x.device, dtype=x.dtype)
    return x


def _multistep_update(x, lam, alpha, sigma, k, x0s, order):
    """x at step k+1 from x at step k and the x̂_0 history ``x0s`` (newest last), DPM-Solver++
    multistep of ``order`` (diffusers' midpoint form for 2, the third-order form for 3)."""
    h = float(lam[k + 1] - lam[k])
    phi = math.expm1(-h)
    d0 = x0s[-1]
    out = float(sigma[k + 1] / sigma[k]) * x - float(alpha[k + 1]) * phi * d0
    if order == 1:
        return out
    r0 = float(lam[k] - lam[k - 1]) / h
    d1_0 = (x0s[-1] - x0s[-2]) / r0
    if order == 2:
        return out - 0.5 * float(alpha[k + 1]) * phi * d1_0
    r1 = float(lam[k - 1] - lam[k - 2]) / h
    d1_1 = (x0s[-2] - x0s[-3]) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    a = float(alpha[k + 1])
    return out + a * (phi / h + 1.0) * d1 - a * ((phi + h) / h**2 - 0.5) * d2


def _dpm_solver_multistep(denoise: Denoiser, x: torch.Tensor, steps: int, opts: SamplerOptions,
                          *, learn_sigma: bool, generator, progress: bool,
                          order: int) -> torch.Tensor:
    ns = opts.schedule
    idx = dpm_solver_timesteps(steps, ns.num_timesteps)
    ac = ns.sampling_alphas_cumprod()[idx]
    alpha, sigma = ac.sqrt(), (1.0 - ac).sqrt()  # (steps,) float64
    lam = torch.log(alpha) - torch.log(sigma)
    model_t = ns.timesteps()[idx].tolist()
    x0s: list[torch.Tensor] = []
    for k in progress_bar(list(range(len(idx))), progress):
        eps, _ = split_output(denoise(x, time_column(int(model_t[k]), x)), x.shape[1],
                              learn_sigma)
        x0s = (x0s + [(x - float(sigma[k]) * eps) / float(alpha[k])])[-3:]
        if k == len(idx) - 1:
            return x0s[-1]  # σ_next = 0: the first-order step lands on x̂_0
        now = min(order, k + 1)
        if order == 3 and k == len(idx) - 2 and len(idx) < 15:
            now = min(now, 2)  # diffusers' lower_order_second
        x = _multistep_update(x, lam, alpha, sigma, k, x0s, now)
    return x


def _dpm_solver_2m(denoise, x, steps, opts, **kw):
    """DPM-Solver++(2M) (see the module docstring)."""
    return _dpm_solver_multistep(denoise, x, steps, opts, order=2, **kw)


def _dpm_solver_3m(denoise, x, steps, opts, **kw):
    """DPM-Solver++(3M) (see the module docstring)."""
    return _dpm_solver_multistep(denoise, x, steps, opts, order=3, **kw)


def dpm_solver_orders(steps: int, order: int) -> list[int]:
    """The orders of the singlestep updates for ``steps`` model calls (DPM-Solver ``fast``)."""
    if order == 3:
        k = steps // 3 + 1
        return [3] * (k - 2) + [2, 1] if steps % 3 == 0 else [3] * (k - 1) + [steps % 3]
    if order == 2:
        return [2] * (steps // 2) + [1] * (steps % 2)
    if order == 1:
        return [1] * steps
    raise InputError(f"order must be 1, 2 or 3 for dpm++s, got {order}")


def dpm_solver_grid(schedule: NoiseSchedule | str, grid: str, steps: int, t_start: float = 1.0,
                    t_end: float | None = None) -> torch.Tensor:
    """(steps + 1,) float64 continuous times from ``t_start`` to ``t_end`` (default 1/N):
    uniform in t, in λ (``logSNR``), or in √t (``time_quadratic``; the release reads √t off a
    10⁷-point table, within 1e-7 of this)."""
    ns = get_schedule(schedule)
    t_end = 1.0 / ns.num_timesteps if t_end is None else t_end
    if grid == "time_uniform":
        return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)
    if grid == "logSNR":
        lam = ns.lambda_(torch.tensor([t_start, t_end], dtype=torch.float64))
        return ns.inverse_lambda(torch.linspace(float(lam[0]), float(lam[1]), steps + 1,
                                                dtype=torch.float64))
    if grid == "time_quadratic":
        return torch.linspace(t_start**0.5, t_end**0.5, steps + 1, dtype=torch.float64) ** 2
    raise InputError(f"unknown grid {grid!r}; choose one of {', '.join(GRIDS)}")


def _singlestep_update(x, times, ns, call, solver_type):
    """One singlestep DPM-Solver++ update of order len(times) − 1 from times[0] to times[-1],
    the model called at times[:-1] (efficientvit ``dpm_solver_{first,second,third}_update``
    with predict_x0; r1, r2 are the λ fractions of the inner grid points)."""
    la = ns.log_alpha(times)
    alpha = torch.exp(la)
    sigma = torch.sqrt(-torch.expm1(2.0 * la))
    lam = la - torch.log(sigma)
    order = len(times) - 1
    h = float(lam[-1] - lam[0])
    a_t, s_ratio = float(alpha[-1]), float(sigma[-1] / sigma[0])
    phi1 = math.expm1(-h)
    m0 = call(x, times[0], alpha[0], sigma[0])
    if order == 1:
        return s_ratio * x - a_t * phi1 * m0
    r1 = float(lam[1] - lam[0]) / h
    x1 = float(sigma[1] / sigma[0]) * x - float(alpha[1]) * math.expm1(-r1 * h) * m0
    m1 = call(x1, times[1], alpha[1], sigma[1])
    phi2 = phi1 / h + 1.0
    if order == 2:
        if solver_type == "taylor":
            return s_ratio * x - a_t * phi1 * m0 + (a_t * phi2 / r1) * (m1 - m0)
        return s_ratio * x - a_t * phi1 * m0 - (0.5 / r1) * a_t * phi1 * (m1 - m0)
    r2 = float(lam[2] - lam[0]) / h
    phi22 = math.expm1(-r2 * h) / (r2 * h) + 1.0
    x2 = (float(sigma[2] / sigma[0]) * x - float(alpha[2]) * math.expm1(-r2 * h) * m0
          + (r2 / r1) * float(alpha[2]) * phi22 * (m1 - m0))
    m2 = call(x2, times[2], alpha[2], sigma[2])
    if solver_type == "taylor":
        d1_0, d1_1 = (m1 - m0) / r1, (m2 - m0) / r2
        d1 = (r2 * d1_0 - r1 * d1_1) / (r2 - r1)
        d2 = 2.0 * (d1_1 - d1_0) / (r2 - r1)
        return s_ratio * x - a_t * phi1 * m0 + a_t * phi2 * d1 - a_t * (phi2 / h - 0.5) * d2
    return s_ratio * x - a_t * phi1 * m0 + (a_t * phi2 / r2) * (m2 - m0)


def _dpm_solver_singlestep(denoise: Denoiser, x: torch.Tensor, steps: int,
                           opts: SamplerOptions, *, learn_sigma: bool, generator,
                           progress: bool) -> torch.Tensor:
    """Singlestep DPM-Solver++ with the ``fast`` order pattern (see the module docstring)."""
    ns = opts.schedule
    times = dpm_solver_grid(ns, opts.grid, steps)
    bar = progress_bar(list(range(steps)), progress)

    def call(x_t, t, alpha, sigma):  # x̂_0 = (x − σ·ε̂)/α at continuous t
        eps, _ = split_output(denoise(x_t, time_column(float(ns.model_time(float(t))), x_t)),
                              x_t.shape[1], learn_sigma)
        bar.update(1)
        return (x_t - float(sigma) * eps) / float(alpha)

    i = 0
    for order in dpm_solver_orders(steps, opts.order):
        x = _singlestep_update(x, times[i:i + order + 1], ns, call, opts.solver_type)
        i += order
    bar.close()
    return x


RUNNERS = {"ddpm": _ancestral, "ddim": _ddim, "dpm++2m": _dpm_solver_2m,
           "dpm++3m": _dpm_solver_3m, "dpm++s": _dpm_solver_singlestep}

"""Samplers of the flow objectives (``flow``, ``flow-sit``; see ``flow.py``).

Every solver integrates dx/dt = v̂(x, t) in the objective's own time, from the noise end to
the data end (``flow``: t = 1 → 0; ``flow-sit``: t = 0 → 1, as SiT's ``sample_ode``), so the
model always sees the t it was trained with.

- ``euler`` / ``heun``: ``steps`` uniform intervals (Heun: Euler predictor, trapezoid
  corrector, 2 model calls per step, the data end included).
- ``dopri5``: adaptive Dormand–Prince 5(4) from torchdiffeq (``odeint(method="dopri5")``,
  atol 1e-6, rtol 1e-3 by default, SiT's ``sample_ode`` and DC-AE's USiT ``ODE_dopri5``), on
  ``steps`` output times ``linspace(t_noise, t_data, steps)`` (SiT's ``num_steps``; the
  solution at the data end does not depend on them: torchdiffeq interpolates).
- ``euler-maruyama``: SiT's default SDE sampler (``sample_sde``: Euler, diffusion form
  "sigma", norm 1, last step "Mean" of size 0.04) in SiT time s: the score from the
  velocity ŝ = (s·u − x)/(1 − s), diffusion w(s) = 1 − s, drift u + w·ŝ; steps − 1
  Euler–Maruyama steps on ``linspace(0, 1 − 0.04, steps)`` (x += drift·Δ + √(2w·Δ)·z), then
  one noise-free step of 0.04: ``steps`` model calls. ``flow`` models run it through
  s = 1 − t, u = −v.
"""

from __future__ import annotations

import torch

from latentae.diffusion.noise import randn
from latentae.diffusion.sampling import Denoiser, SamplerOptions, progress_bar, time_column
from latentae.errors import InputError

__all__ = ["flow_times"]


def _ends(objective: str) -> tuple[float, float]:
    return (0.0, 1.0) if objective == "flow-sit" else (1.0, 0.0)  # (noise end, data end)


def flow_times(steps: int, objective: str = "flow") -> torch.Tensor:
    """(steps + 1,) float64 times from the noise end to the data end, uniform."""
    start, end = _ends(objective)
    return torch.linspace(start, end, steps + 1, dtype=torch.float64)


def _velocity(denoise: Denoiser, x: torch.Tensor, t: float) -> torch.Tensor:
    v = denoise(x, time_column(t, x, x.dtype))
    if v.shape != x.shape:
        raise InputError(f"the flow model returned shape {tuple(v.shape)}; it must return the "
                         f"velocity with the latent's shape {tuple(x.shape)}")
    return v


def _euler(denoise: Denoiser, x: torch.Tensor, steps: int, opts: SamplerOptions, *,
           learn_sigma: bool, generator, progress: bool) -> torch.Tensor:
    """x ← x + (t_next − t)·v(x, t) from the noise end to the data end."""
    ts = flow_times(steps, opts.objective).tolist()
    for k in progress_bar(list(range(steps)), progress):
        x = x + (ts[k + 1] - ts[k]) * _velocity(denoise, x, ts[k])
    return x


def _heun(denoise: Denoiser, x: torch.Tensor, steps: int, opts: SamplerOptions, *,
          learn_sigma: bool, generator, progress: bool) -> torch.Tensor:
    """Heun's method (explicit trapezoid): Euler predictor, average of both slopes."""
    ts = flow_times(steps, opts.objective).tolist()
    for k in progress_bar(list(range(steps)), progress):
        dt = ts[k + 1] - ts[k]
        d1 = _velocity(denoise, x, ts[k])
        d2 = _velocity(denoise, x + dt * d1, ts[k + 1])
        x = x + dt * 0.5 * (d1 + d2)
    return x


def _odeint():
    try:
        from torchdiffeq import odeint  # deferred: optional, only dopri5 needs it
    except ImportError as e:
        raise InputError("the dopri5 sampler needs torchdiffeq: pip install 'torchdiffeq>=0.2' "
                         "(or choose --sampler heun)") from e
    return odeint


def _dopri5(denoise: Denoiser, x: torch.Tensor, steps: int, opts: SamplerOptions, *,
            learn_sigma: bool, generator, progress: bool) -> torch.Tensor:
    """torchdiffeq dopri5 from the noise end to the data end (see the module docstring)."""
    odeint = _odeint()
    start, end = _ends(opts.objective)
    bar = progress_bar([], progress)

    def f(t: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        bar.update(1)  # counts model calls (adaptive: not known in advance)
        return _velocity(denoise, x_t, float(t))

    ts = torch.linspace(start, end, max(steps, 2), device=x.device)  # float32, as SiT
    out = odeint(f, x, ts, method="dopri5", atol=opts.atol, rtol=opts.rtol)[-1]
    bar.close()
    return out


def _euler_maruyama(denoise: Denoiser, x: torch.Tensor, steps: int, opts: SamplerOptions, *,
                    learn_sigma: bool, generator, progress: bool) -> torch.Tensor:
    """SiT's Euler–Maruyama SDE sampler (see the module docstring)."""
    sit = opts.objective == "flow-sit"

    def drift(x_s: torch.Tensor, s: float) -> torch.Tensor:  # in SiT time s
        u = _velocity(denoise, x_s, s) if sit else -_velocity(denoise, x_s, 1.0 - s)
        return u + (s * u - x_s)  # u + w·score, w = 1 − s, score = (s·u − x)/(1 − s)

    last = opts.last_step_size
    ss = torch.linspace(0.0, 1.0 - last, steps, dtype=torch.float64).tolist()
    for k in progress_bar(list(range(steps - 1)), progress):
        dt = ss[k + 1] - ss[k]
        z = randn(tuple(x.shape), generator, device=x.device, dtype=x.dtype)
        x = x + drift(x, ss[k]) * dt + (2.0 * (1.0 - ss[k]) * dt) ** 0.5 * z
    return x + drift(x, ss[-1]) * last if last > 0 else x


RUNNERS = {"euler": _euler, "heun": _heun, "dopri5": _dopri5,
           "euler-maruyama": _euler_maruyama}

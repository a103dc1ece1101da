"""Noise schedules as data: a named :class:`NoiseSchedule` with its betas and its time index.

A discrete VP schedule is N betas (float64) and the rule for the integer the network is fed
at step k = 0 … N−1 (ᾱ_k = ∏_{j≤k} (1 − β_j), ``x_k = √ᾱ_k·x_0 + √(1−ᾱ_k)·ε``):

- ``linear``: DDPM/ADM/DiT, β linear 1e-4 … 0.02 (Ho et al. 2020 §4); the network sees k,
  0 … 999 (``first_timestep`` 0; diffusers ``beta_schedule="linear"``).
- ``scaled-linear``: Stable Diffusion's betas ``linspace(√0.00085, √0.012, N)²``, as U-ViT
  (``train_ldm_discrete.py``, ``stable_diffusion_beta_schedule``) and DC-AE (efficientvit
  ``diffusioncore/models/uvit.py``) train their latent models; those releases number the
  steps n = 1 … 1000 and feed the network n (``first_timestep`` 1), and when sampling with
  DPM-Solver feed it ``t·N`` at continuous time t (diffusers ``"scaled_linear"``).
- ``cosine``: IDDPM's ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), β_k = min(1 − ᾱ((k+1)/N)/ᾱ(k/N),
  0.999) (Nichol & Dhariwal 2021 eq. 17; diffusers ``"squaredcos_cap_v2"``).

``+zero-snr`` rescales any of them to zero terminal SNR (Lin et al. 2024, Alg. 1; diffusers
``rescale_betas_zero_snr=True``): √ᾱ shifted and scaled so that √ᾱ_{N−1} = 0 with √ᾱ_0 kept.
``@0`` / ``@1`` overrides the time index (e.g. ``scaled-linear@0`` is SD's own numbering).
The spec string (``str(schedule)``) is what configs and run records hold.

Continuous time (DPM-Solver, Lu et al. 2022 App. D): step k sits at t_k = (k+1)/N and log α(t)
is the piecewise-linear interpolation of ½·log ᾱ through those knots (efficientvit
``NoiseScheduleVP("discrete")``); the network then sees ``t·N − 1 + first_timestep`` (U-ViT:
``t·N``; DiT: DPM-Solver's "type-1" input ``1000·(t − 1/N)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from latentae.errors import InputError

__all__ = ["SCHEDULES", "NoiseSchedule", "get_schedule"]

SCHEDULES = ("linear", "scaled-linear", "cosine")
_FIRST_TIMESTEP = {"linear": 0, "scaled-linear": 1, "cosine": 0}
ZERO_SNR = "+zero-snr"
# diffusers' stand-in for ᾱ = 0 when a solver needs σ/α finite (DPMSolverMultistepScheduler
# with rescale_betas_zero_snr: "close to 0 without being 0", float16's smallest subnormal).
ZERO_SNR_ALPHA_CUMPROD = 2.0**-24


@dataclass(frozen=True)
class NoiseSchedule:
    """A named discrete noise schedule; ``str(schedule)`` is its spec (read by get_schedule)."""

    name: str = "linear"
    num_timesteps: int = 1000
    zero_terminal_snr: bool = False
    first_timestep: int | None = None  # what the network sees at step 0; None: the name's

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise InputError(f"unknown noise schedule {self.name!r}; choose one of "
                             f"{', '.join(SCHEDULES)} (optionally +zero-snr, @0 or @1)")
        if self.num_timesteps < 2:
            raise InputError(f"a schedule needs >= 2 timesteps, got {self.num_timesteps}")
        if self.first_timestep is None:
            object.__setattr__(self, "first_timestep", _FIRST_TIMESTEP[self.name])
        if self.first_timestep not in (0, 1):
            raise InputError(f"first_timestep must be 0 or 1, got {self.first_timestep}")

    def __str__(self) -> str:
        spec = self.name + (ZERO_SNR if self.zero_terminal_snr else "")
        if self.first_timestep != _FIRST_TIMESTEP[self.name]:
            spec += f"@{self.first_timestep}"
        return spec if self.num_timesteps == 1000 else f"{spec}/{self.num_timesteps}"

    @property
    def betas(self) -> torch.Tensor:
        """(N,) float64 β_k."""
        n = self.num_timesteps
        if self.name == "linear":  # ADM scales the ends for N != 1000 (same limit)
            scale = 1000 / n
            betas = torch.linspace(scale * 1e-4, scale * 0.02, n, dtype=torch.float64)
        elif self.name == "scaled-linear":
            betas = torch.linspace(0.00085**0.5, 0.012**0.5, n, dtype=torch.float64) ** 2
        else:
            betas = _cosine_betas(n)
        return _rescale_zero_snr(betas) if self.zero_terminal_snr else betas

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """(N,) float64 ᾱ_k (exactly 0 at the end with ``+zero-snr``)."""
        return torch.cumprod(1.0 - self.betas, dim=0)

    def sampling_alphas_cumprod(self) -> torch.Tensor:
        """ᾱ for samplers that divide by α: a terminal 0 becomes 2⁻²⁴, as diffusers does."""
        ac = self.alphas_cumprod
        return ac.clamp_min(ZERO_SNR_ALPHA_CUMPROD) if self.zero_terminal_snr else ac

    def timesteps(self) -> torch.Tensor:
        """(N,) int64: the integer the network sees at step k, k + first_timestep."""
        return torch.arange(self.num_timesteps, dtype=torch.int64) + self.first_timestep

    # ---- continuous time (DPM-Solver) -------------------------------------------------
    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """log α(t) (float64) at continuous t, linear between the knots t_k = (k+1)/N
        (and extended linearly beyond them, as the release's ``interpolate_fn``)."""
        knots_y = 0.5 * torch.log(self.sampling_alphas_cumprod())
        n = self.num_timesteps
        t = torch.as_tensor(t, dtype=torch.float64)
        pos = t * n - 1.0  # fractional step index
        k = pos.floor().clamp(0, n - 2).long()
        frac = pos - k
        return knots_y[k] + frac * (knots_y[k + 1] - knots_y[k])

    def lambda_(self, t: torch.Tensor) -> torch.Tensor:
        """λ(t) = log α − log σ, half the log-SNR."""
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2.0 * la))

    def inverse_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        """The continuous t with λ(t) = lam (log α(t) is piecewise linear and decreasing)."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        la = -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)  # (·,) log α
        knots_y = 0.5 * torch.log(self.sampling_alphas_cumprod())  # decreasing in k
        n = self.num_timesteps
        rev = knots_y.flip(0)  # increasing
        k = (torch.searchsorted(rev, la) - 1).clamp(0, n - 2)  # rev[k] <= la < rev[k+1]
        y0, y1 = rev[k], rev[k + 1]
        pos = (n - 1 - k) - (la - y0) / (y1 - y0)  # index in the original order
        return (pos + 1.0) / n

    def model_time(self, t: torch.Tensor | float) -> torch.Tensor | float:
        """What the network sees at continuous time t: t·N − 1 + first_timestep."""
        return t * self.num_timesteps - 1 + self.first_timestep


def _cosine_betas(n: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    def abar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return torch.tensor([min(1 - abar((k + 1) / n) / abar(k / n), max_beta) for k in range(n)],
                        dtype=torch.float64)


def _rescale_zero_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024, Alg. 1: √ᾱ ← (√ᾱ − √ᾱ_last)·√ᾱ_0/(√ᾱ_0 − √ᾱ_last), back to β."""
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    ac = root**2
    alphas = torch.cat([ac[:1], ac[1:] / ac[:-1]])
    return 1.0 - alphas


def get_schedule(spec: str | NoiseSchedule | None) -> NoiseSchedule:
    """The schedule of a spec ``NAME[+zero-snr][@0|@1][/N]`` (None or "" = ``linear``)."""
    if isinstance(spec, NoiseSchedule):
        return spec
    text = (spec or "linear").strip()
    num = 1000
    if "/" in text:
        text, _, count = text.partition("/")
        if not count.isdigit():
            raise InputError(f"bad schedule spec {spec!r}: the part after / must be the "
                             "number of timesteps, e.g. linear/1000")
        num = int(count)
    first = None
    if "@" in text:
        text, _, index = text.partition("@")
        if index not in ("0", "1"):
            raise InputError(f"bad schedule spec {spec!r}: @0 or @1 sets the first timestep")
        first = int(index)
    zero = text.endswith(ZERO_SNR)
    name = text[: -len(ZERO_SNR)] if zero else text
    return NoiseSchedule(name, num, zero, first)

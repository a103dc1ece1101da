"""The ``ddpm`` objective: a discrete noise schedule, ε-prediction and learned variance.

Schedule: a :class:`~latentae.diffusion.schedules.NoiseSchedule` (default ``linear``, the
DiT/ADM betas 1e-4 … 0.02 over 1000 steps; ``scaled-linear`` for U-ViT/DC-AE), every schedule
tensor in float64. Forward process ``x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε``.

The model predicts ε; with learned sigma (Nichol & Dhariwal 2021, IDDPM §3.1) it also
predicts ``v`` per element, and its log variance is the interpolation
``frac·log β_t + (1−frac)·log β̃_t`` with ``frac = (v+1)/2`` (IDDPM eq. 15). The output then
has 2·C channels: the first C are ε, the last C are v (DiT's layout).

Respacing (IDDPM §4, ADM ``space_timesteps``): keep K of the 1000 timesteps and recompute the
betas so that ᾱ is unchanged at the kept steps. A respaced :class:`Schedule` indexes its own
steps 0 … K−1, but the model always receives the ORIGINAL integer timestep
(``schedule.timesteps[i]``: 0 … 999 for ``linear``, 1 … 1000 for ``scaled-linear``), as DiT's
``_WrappedModel`` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from latentae.diffusion.noise import randint, randn
from latentae.diffusion.schedules import NoiseSchedule, get_schedule
from latentae.errors import InputError

__all__ = [
    "NUM_TIMESTEPS", "Schedule", "ddpm_loss", "ddpm_loss_terms", "ddpm_schedule",
    "linear_betas", "model_log_variance", "posterior_mean", "predict_x0", "q_sample",
    "respace", "space_timesteps", "split_output",
]

NUM_TIMESTEPS = 1000
ModelFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True, eq=False)
class Schedule:
    """A DDPM noise schedule, possibly respaced.

    betas: (K,) float64, the betas of the K kept steps (recomputed when respaced).
    timesteps: (K,) int64, the original timestep (0 … 999) that each step stands for.
    """

    betas: torch.Tensor
    timesteps: torch.Tensor

    def __len__(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """(K,) float64 ᾱ_t = ∏_{s≤t} (1 − β_s)."""
        return torch.cumprod(1.0 - self.betas, dim=0)

    @property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        """(K,) float64 ᾱ of the previous kept step (1 before the first)."""
        ac = self.alphas_cumprod
        return torch.cat([ac.new_ones(1), ac[:-1]])

    @property
    def posterior_variance(self) -> torch.Tensor:
        """(K,) float64 β̃_t = β_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t), q(x_{t−1} | x_t, x_0) (DDPM eq. 7)."""
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @property
    def posterior_log_variance_clipped(self) -> torch.Tensor:
        """(K,) float64 log β̃_t with β̃_0 (which is 0) replaced by β̃_1, as ADM does."""
        pv = self.posterior_variance
        first = pv[1:2] if len(pv) > 1 else pv[:1].clamp_min(1e-20)
        return torch.log(torch.cat([first, pv[1:]]))


def linear_betas(num_timesteps: int = NUM_TIMESTEPS, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> torch.Tensor:
    """(T,) float64 linear betas (Ho et al. 2020 §4), scaled to keep the same limit for T ≠ 1000
    as ADM's ``get_named_beta_schedule("linear")``."""
    scale = NUM_TIMESTEPS / num_timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64)


def ddpm_schedule(num_timesteps: int = NUM_TIMESTEPS,
                  noise: NoiseSchedule | str | None = None, *,
                  sampling: bool = False) -> Schedule:
    """The full training schedule of ``noise`` (default ``linear``: the DiT/ADM betas), every
    timestep kept, each labelled with what the network sees. ``sampling``: a zero-SNR end
    is moved to ᾱ = 2⁻²⁴ so that x̂_0 stays finite (diffusers' choice)."""
    ns = get_schedule(noise)
    if noise is None or num_timesteps != NUM_TIMESTEPS:
        ns = NoiseSchedule(ns.name, num_timesteps, ns.zero_terminal_snr, ns.first_timestep)
    if not sampling:
        return Schedule(ns.betas, ns.timesteps())
    ac = ns.sampling_alphas_cumprod()
    betas = 1.0 - ac / torch.cat([ac.new_ones(1), ac[:-1]])
    return Schedule(betas, ns.timesteps())


def space_timesteps(num_timesteps: int, section_counts: int | str | Sequence[int]) -> list[int]:
    """The sorted timesteps to keep when respacing (ADM's ``space_timesteps``).

    ``section_counts``: ``"ddimN"`` keeps ``range(0, T, stride)`` with the integer stride that
    gives exactly N steps (DDIM paper); otherwise N (int or ``"N"``) or comma-separated counts
    ``"10,15,20"`` split 0 … T−1 into equal sections and take that many evenly spaced steps
    (rounded) in each, first and last included. One section of N steps is diffusers'
    ``timestep_spacing="linspace"``, ``round(linspace(0, T−1, N))`` (DiT: ``"250"``), except
    where a step falls on an exact half (T = 1000: same for N = 10, 25, 50, 100, 250, 1000…;
    one step apart for some N, e.g. 21 and 35).
    """
    if isinstance(section_counts, str) and section_counts.startswith("ddim"):
        want = int(section_counts[len("ddim"):])
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == want:
                return list(range(0, num_timesteps, stride))
        raise InputError(f"cannot take exactly {want} of {num_timesteps} steps with an integer "
                         "stride; use a plain count such as '250' instead of 'ddim'")
    if isinstance(section_counts, int):
        counts = [section_counts]
    elif isinstance(section_counts, str):
        counts = [int(c) for c in section_counts.split(",")]
    else:
        counts = [int(c) for c in section_counts]
    base, extra = divmod(num_timesteps, len(counts))
    steps, start = [], 0
    for i, count in enumerate(counts):
        size = base + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise InputError(f"cannot take {count} steps from a section of {size} timesteps; "
                             f"each count must be in 1 … {size}")
        stride, position = ((size - 1) / (count - 1) if count > 1 else 1.0), 0.0
        for _ in range(count):
            # A running float sum, as ADM: it decides the rare exact halves (N = 21: 499.5).
            steps.append(start + round(position))
            position += stride
        start += size
    return sorted(set(steps))


def respace(schedule: Schedule, use_timesteps: Sequence[int]) -> Schedule:
    """Keep the steps ``use_timesteps`` (indices of ``schedule``) with betas recomputed as
    ``1 − ᾱ_t / ᾱ_prev`` so that ᾱ is unchanged at every kept step (IDDPM §4)."""
    keep = torch.tensor(sorted(set(use_timesteps)), dtype=torch.int64)
    ac = schedule.alphas_cumprod[keep]
    betas = 1.0 - ac / torch.cat([ac.new_ones(1), ac[:-1]])
    return Schedule(betas, schedule.timesteps[keep])


def _at(values: torch.Tensor, index: int | torch.Tensor,
        like: torch.Tensor) -> float | torch.Tensor:
    """``values[index]``: a Python float for one step (sampling), or a (B, 1, …) tensor in
    ``like``'s dtype and device for one step per sample (training). Gathered in float64 on
    the CPU, then cast, as ADM's ``_extract_into_tensor``."""
    if isinstance(index, int):
        return float(values[index])
    v = values[index.cpu()].to(device=like.device, dtype=like.dtype)
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             schedule: Schedule | None = None) -> torch.Tensor:
    """x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε. x0, noise: (B, C, …); t: (B,) int64 step indices of
    ``schedule`` (the full schedule when None, where index = timestep)."""
    ac = (schedule or ddpm_schedule()).alphas_cumprod
    return _at(ac.sqrt(), t, x0) * x0 + _at((1.0 - ac).sqrt(), t, x0) * noise


def predict_x0(schedule: Schedule, x_t: torch.Tensor, index: int | torch.Tensor,
               eps: torch.Tensor) -> torch.Tensor:
    """x̂_0 = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t, written as ADM does: √(1/ᾱ)·x_t − √(1/ᾱ − 1)·ε̂."""
    ac = schedule.alphas_cumprod
    return _at((1.0 / ac).sqrt(), index, x_t) * x_t - _at((1.0 / ac - 1.0).sqrt(), index, x_t) * eps


def posterior_mean(schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor,
                   index: int | torch.Tensor) -> torch.Tensor:
    """Mean of q(x_{t−1} | x_t, x_0) (DDPM eq. 7): c1·x_0 + c2·x_t."""
    ac, ac_prev, betas = schedule.alphas_cumprod, schedule.alphas_cumprod_prev, schedule.betas
    c1 = betas * ac_prev.sqrt() / (1.0 - ac)
    c2 = (1.0 - ac_prev) * (1.0 - betas).sqrt() / (1.0 - ac)
    return _at(c1, index, x_t) * x0 + _at(c2, index, x_t) * x_t


def model_log_variance(schedule: Schedule, index: int | torch.Tensor, v: torch.Tensor | None,
                       like: torch.Tensor) -> float | torch.Tensor:
    """Log variance of p(x_{t−1} | x_t): fixed small (log β̃_t, clipped) when ``v`` is None,
    else IDDPM eq. 15: frac·log β_t + (1−frac)·log β̃_t with frac = (v + 1)/2."""
    min_log = _at(schedule.posterior_log_variance_clipped, index, like)
    if v is None:
        return min_log
    max_log = _at(torch.log(schedule.betas), index, like)
    frac = (v + 1.0) / 2.0
    return frac * max_log + (1.0 - frac) * min_log


def split_output(out: torch.Tensor, channels: int, learn_sigma: bool
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split a model output (B, C or 2C, …) into ε (B, C, …) and v (B, C, …) or None."""
    want = 2 * channels if learn_sigma else channels
    if out.ndim < 2 or out.shape[1] != want:
        got = tuple(out.shape)
        raise InputError(f"the model returned shape {got}; with learn_sigma={learn_sigma} and "
                         f"{channels} latent channels it must return {want} channels "
                         "(learned sigma: ε then v; otherwise ε only)")
    if not learn_sigma:
        return out, None
    eps, v = out.split(channels, dim=1)
    return eps, v


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


def _normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) element-wise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    # The tanh approximation ADM's decoder likelihood uses (kept for equal loss values).
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor,
                                         log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) in nats under N(mean, e^{2·log_scale}) integrated over bins of width 2/255,
    the edge bins open (DDPM §3.3, ADM's decoder term; it assumes data in [-1, 1])."""
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_normal_cdf(inv_std * (x - mean + 1.0 / 255.0))
    cdf_min = _approx_normal_cdf(inv_std * (x - mean - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _vb_bits(schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
             eps: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B,) one term of the variational bound in bits per dimension (IDDPM eq. 4–6):
    KL(q(x_{t−1}|x_t,x_0) ‖ p(x_{t−1}|x_t)) for t > 0, the decoder NLL at t = 0."""
    true_mean = posterior_mean(schedule, x0, x_t, t)
    true_log_var = _at(schedule.posterior_log_variance_clipped, t, x_t)
    mean = posterior_mean(schedule, predict_x0(schedule, x_t, t, eps), x_t, t)
    log_var = model_log_variance(schedule, t, v, x_t)
    kl = _mean_flat(_normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
    nll = -_mean_flat(_discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var))
    return torch.where(t == 0, nll / math.log(2.0), kl)


def ddpm_loss_terms(model_fn: ModelFn, x0: torch.Tensor, labels: torch.Tensor | None,
                    t: torch.Tensor, noise: torch.Tensor, *, learn_sigma: bool,
                    schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
    """The DiT training loss at given steps and noise: ``{"mse", "vb", "loss"}``, each (B,).

    x0: (B, C, …) clean latents; t: (B,) int64 step indices of ``schedule`` (full 1000-step
    schedule when None); noise: like x0. ``model_fn(x_t, timesteps, labels)`` gets the original
    timesteps. mse = mean over elements of (ε − ε̂)². With ``learn_sigma``, vb is the bound term
    on v with the mean's gradient stopped (IDDPM §3.1 L_hybrid); loss = mse + vb, weight 1 as
    DiT (ADM ``LossType.MSE``; per step this is IDDPM's λ = 0.001 on the 1000-term bound).
    Without it vb is zeros and loss = mse.
    """
    schedule = schedule or ddpm_schedule()
    x_t = q_sample(x0, t, noise, schedule)
    eps, v = split_output(model_fn(x_t, schedule.timesteps[t.cpu()].to(x0.device), labels),
                          x0.shape[1], learn_sigma)
    mse = _mean_flat((noise - eps) ** 2)
    vb = _vb_bits(schedule, x0, x_t, t, eps.detach(), v) if learn_sigma else torch.zeros_like(mse)
    return {"mse": mse, "vb": vb, "loss": mse + vb}


def ddpm_loss(model_fn: ModelFn, x0: torch.Tensor, labels: torch.Tensor | None, *,
              generator: torch.Generator | None, learn_sigma: bool,
              noise_schedule: NoiseSchedule | str | None = None) -> torch.Tensor:
    """(B,) per-sample training loss: step k uniform in 0 … N−1 and ε ~ N(0, I), both drawn
    from ``generator`` (k first, then ε), then :func:`ddpm_loss_terms` ``["loss"]`` on
    ``noise_schedule`` (default ``linear``; U-ViT's ``scaled-linear`` draws n ∈ 1 … 1000)."""
    schedule = ddpm_schedule(noise=noise_schedule)
    t = randint(len(schedule), (x0.shape[0],), generator, device=x0.device)
    noise = randn(tuple(x0.shape), generator, device=x0.device, dtype=x0.dtype)
    return ddpm_loss_terms(model_fn, x0, labels, t, noise, learn_sigma=learn_sigma,
                           schedule=schedule)["loss"]

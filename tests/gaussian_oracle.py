"""Closed-form predictors for Gaussian (and Gaussian-mixture) data, the diffusion tests' oracle.

Data x ~ N(μ, Σ) in d = C·H·W dimensions, flattened in C, H, W order.
- ddpm, x_t = α_t x + σ_t ε (α_t = √ᾱ_t, σ_t = √(1−ᾱ_t)): x_t ~ N(α_t μ, S_t), S_t = α_t²Σ + σ_t²I,
  Cov(ε, x_t) = σ_t I, so E[ε | x_t] = σ_t S_t⁻¹ (x_t − α_t μ).
- flow, x_t = (1−t) x + t ε, v = ε − x: x_t ~ N((1−t) μ, S_t), S_t = (1−t)²Σ + t²I,
  Cov(v, x_t) = t I − (1−t) Σ, so E[v | x_t] = −μ + (t I − (1−t) Σ) S_t⁻¹ (x_t − (1−t) μ).
- flow-sit (SiT), x_t = t x + (1−t) ε, u = x − ε: the flow case at 1 − t, negated.
- ddpm on another schedule (``schedule=``, a NoiseSchedule): the model time m (integer, or
  the continuous ``t·N − 1 + first_timestep`` of DPM-Solver) maps to α through the
  schedule's own log α interpolation (exact at the integer steps).
- A mixture Σ_k π_k N(μ_k, Σ_k): E[· | x_t] = Σ_k p(k | x_t) E_k[· | x_t] with
  p(k | x_t) ∝ π_k N(x_t; mean_k(t), S_k(t)).
The minimum of the per-element MSE is tr Cov(target | x_t) / d, with
Cov(ε | x_t) = I − σ_t² S_t⁻¹ and Cov(v | x_t) = (I + Σ) − C S_t⁻¹ C, C = t I − (1−t) Σ.
"""

from __future__ import annotations

import math

import torch

from latentae.diffusion import ddpm_schedule

ALPHAS_CUMPROD = ddpm_schedule().alphas_cumprod  # (1000,) float64


def random_law(d: int, seed: int, *, diagonal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """μ (d,) and Σ (d, d) float64: means in ±0.8, variances ≈ 0.2 … 1.5, correlated
    unless ``diagonal``."""
    g = torch.Generator().manual_seed(seed)
    mu = (torch.rand(d, generator=g, dtype=torch.float64) - 0.5) * 1.6
    if diagonal:
        return mu, torch.diag(0.2 + 1.3 * torch.rand(d, generator=g, dtype=torch.float64))
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = a @ a.T / d + 0.15 * torch.eye(d, dtype=torch.float64)
    return mu, cov / cov.diagonal().max() * 1.5


def _ddpm_coefs(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ac = ALPHAS_CUMPROD[t.cpu().long()]
    return ac.sqrt(), (1.0 - ac).sqrt()  # (B,) α_t, σ_t


def _flow_coefs(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = t.cpu().double()
    return 1.0 - t, t  # (B,) scale of x, scale of ε


def _coefs(t, objective, schedule=None):
    """(a, s, sign): x_t = a·x + s·ε and the target's sign against the ``flow`` formula."""
    if objective == "ddpm":
        if schedule is None:
            return (*_ddpm_coefs(t), 1.0)
        n = schedule.num_timesteps
        la = schedule.log_alpha((t.cpu().double() + 1 - schedule.first_timestep) / n)
        return la.exp(), (-torch.expm1(2 * la)).sqrt(), 1.0
    if objective == "flow-sit":
        a, s = _flow_coefs(1.0 - t.cpu().double())
        return a, s, -1.0
    return (*_flow_coefs(t), 1.0)


def _noisy_law(mu, cov, a, s):
    """Mean (B, d) and covariance (B, d, d) of a·x + s·ε."""
    eye = torch.eye(len(mu), dtype=torch.float64)
    return a[:, None] * mu, a[:, None, None] ** 2 * cov + s[:, None, None] ** 2 * eye


def _posterior_target(mu, cov, z, a, s, objective):
    """E[target | x_t = z] for one Gaussian, z (B, d) float64."""
    mean, S = _noisy_law(mu, cov, a, s)
    r = torch.linalg.solve(S, (z - mean).unsqueeze(-1)).squeeze(-1)  # S⁻¹ (z − mean), (B, d)
    if objective == "ddpm":
        return s[:, None] * r
    c = s[:, None, None] * torch.eye(len(mu), dtype=torch.float64) - a[:, None, None] * cov
    return -mu + (c @ r.unsqueeze(-1)).squeeze(-1)


def _log_normal(z, mean, S):
    diff = (z - mean).unsqueeze(-1)
    maha = (diff.transpose(-1, -2) @ torch.linalg.solve(S, diff)).squeeze(-1).squeeze(-1)
    return -0.5 * (maha + torch.logdet(S) + z.shape[-1] * math.log(2 * math.pi))


def mixture_target(means, covs, weights, z, t, objective, schedule=None):
    """E[target | x_t = z] for the mixture Σ_k weights_k N(means_k, covs_k); z (B, d)."""
    a, s, sign = _coefs(t, objective, schedule)
    kind = "ddpm" if objective == "ddpm" else "flow"
    logp = torch.stack([math.log(w) + _log_normal(z, *_noisy_law(m, c, a, s))
                        for m, c, w in zip(means, covs, weights)], dim=-1)  # (B, K)
    post = torch.softmax(logp, dim=-1)
    parts = torch.stack([_posterior_target(m, c, z, a, s, kind)
                         for m, c in zip(means, covs)], dim=-1)  # (B, d, K)
    return sign * (parts * post[:, None, :]).sum(-1)


def gaussian_model(mu, cov, objective: str, schedule=None):
    """model_fn(x_t, t, labels) -> the exact ε (ddpm, on ``schedule``: default DiT's linear)
    or velocity (flow, flow-sit) for N(mu, cov)."""
    def model_fn(x, t, labels):
        z = x.reshape(x.shape[0], -1).double()
        a, s, sign = _coefs(t, objective, schedule)
        kind = "ddpm" if objective == "ddpm" else "flow"
        return (sign * _posterior_target(mu, cov, z, a, s, kind)).reshape(x.shape).to(x.dtype)
    return model_fn


def mixture_model(means, covs, objective: str, schedule=None):
    """Class-conditional model_fn: label k < K → class k's exact predictor, label K (the
    null class) → the equal-weight mixture's."""
    k = len(means)

    def model_fn(x, t, labels):
        z = x.reshape(x.shape[0], -1).double()
        out = torch.empty_like(z)
        for label in labels.unique().tolist():
            rows = (labels == label).cpu()
            if label == k:
                out[rows] = mixture_target(means, covs, [1.0 / k] * k, z[rows], t[rows],
                                           objective, schedule)
            else:
                out[rows] = mixture_target(means[label:label + 1], covs[label:label + 1],
                                           [1.0], z[rows], t[rows], objective, schedule)
        return out.reshape(x.shape).to(x.dtype)
    return model_fn


def learned_variance_model(mu, var, schedule):
    """ε and v for diagonal N(mu, diag(var)) on the respaced ``schedule``: v puts the model
    variance at the exact Var(x_prev | x_t) = β̃ + c1²·Var(x_0 | x_t) (per element), the
    optimum the learned-sigma loss aims at. Output (B, 2C, …)."""
    eps_fn = gaussian_model(mu, torch.diag(var), "ddpm")
    index = {int(t): i for i, t in enumerate(schedule.timesteps)}
    ac, ac_prev, betas = schedule.alphas_cumprod, schedule.alphas_cumprod_prev, schedule.betas
    min_log, max_log = schedule.posterior_log_variance_clipped, torch.log(betas)

    def model_fn(x, t, labels):
        i = index[int(t[0])]
        c1 = betas[i] * ac_prev[i].sqrt() / (1.0 - ac[i])
        var_x0 = var * (1.0 - ac[i]) / (ac[i] * var + 1.0 - ac[i])  # (d,) Var(x_0 | x_t)
        log_var = torch.log(schedule.posterior_variance[i] + c1**2 * var_x0)
        v = 2.0 * (log_var - min_log[i]) / (max_log[i] - min_log[i]) - 1.0 if i > 0 else 0 * var
        v = v.to(x.dtype).reshape(1, *x.shape[1:]).expand_as(x)
        return torch.cat([eps_fn(x, t, labels), v], dim=1)
    return model_fn


def min_mse(mu, cov, t, objective: str) -> float:
    """The minimum over predictors of E[mean over elements of (target − prediction)²] at t."""
    d = len(mu)
    if objective == "flow-sit":  # the flow case at 1 − t (the sign does not change the MSE)
        objective, t = "flow", 1.0 - t
    a, s = (_ddpm_coefs if objective == "ddpm" else _flow_coefs)(torch.tensor([t]))
    _, S = _noisy_law(mu, cov, a, s)
    eye = torch.eye(d, dtype=torch.float64)
    if objective == "ddpm":
        resid = eye - s[0] ** 2 * torch.linalg.inv(S[0])
    else:
        c = s[0] * eye - a[0] * cov
        resid = eye + cov - c @ torch.linalg.solve(S[0], c)
    return float(resid.trace()) / d

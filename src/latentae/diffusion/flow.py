"""The ``flow`` objective: SiT's linear interpolant and velocity prediction.

SiT (Ma et al. 2024, §2 "linear" path): ``x_t = (1 − t)·x + t·ε`` with t ∈ [0, 1], t = 0 the
data and t = 1 pure noise; the model predicts the velocity ``dx_t/dt = ε − x``. Sampling
integrates that ODE from t = 1 down to t = 0 (``samplers.py``).

Training t is uniform on [0, 1] (SiT) or logit-normal, ``t = sigmoid(m + s·z)`` with
z ~ N(0, 1) (Esser et al. 2024, SD3 §3.1, eq. 19).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from latentae.diffusion.noise import rand, randn
from latentae.errors import InputError

__all__ = ["T_SAMPLINGS", "flow_interpolate", "flow_loss", "flow_loss_terms", "sample_flow_t"]

T_SAMPLINGS = ("uniform", "logit_normal")
ModelFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))  # (B, 1, …)


def flow_interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 − t)·x0 + t·noise. x0, noise: (B, C, …); t: (B,) float in [0, 1]."""
    tb = _bcast(t, x0)
    return (1.0 - tb) * x0 + tb * noise


def sample_flow_t(batch: int, generator: torch.Generator | None, *,
                  t_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """(batch,) float32 training times: uniform on [0, 1), or sigmoid(logit_mean + logit_std·z)."""
    if t_sampling == "uniform":
        return rand((batch,), generator, device=device)
    if t_sampling == "logit_normal":
        if not logit_std > 0:
            raise InputError(f"logit_std must be > 0, got {logit_std}")
        z = randn((batch,), generator, device=device)
        return torch.sigmoid(logit_mean + logit_std * z)
    raise InputError(f"unknown t_sampling {t_sampling!r}; choose one of {', '.join(T_SAMPLINGS)}")


def flow_loss_terms(model_fn: ModelFn, x0: torch.Tensor, labels: torch.Tensor | None,
                    t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(B,) mean over elements of (v̂ − (ε − x0))² at given times t (B,) and noise (like x0).
    ``model_fn(x_t, t, labels)`` gets t as a float tensor in [0, 1] in x0's dtype."""
    t = t.to(device=x0.device, dtype=x0.dtype)
    v = model_fn(flow_interpolate(x0, noise, t), t, labels)
    if v.shape != x0.shape:
        raise InputError(f"the flow model returned shape {tuple(v.shape)}; it must return the "
                         f"velocity with the latent's shape {tuple(x0.shape)}")
    return ((v - (noise - x0)) ** 2).mean(dim=tuple(range(1, x0.ndim)))


def flow_loss(model_fn: ModelFn, x0: torch.Tensor, labels: torch.Tensor | None, *,
              generator: torch.Generator | None, t_sampling: str = "uniform",
              logit_mean: float = 0.0, logit_std: float = 1.0) -> torch.Tensor:
    """(B,) per-sample SiT velocity loss: t from ``t_sampling`` then ε ~ N(0, I), both drawn
    from ``generator`` in that order, then :func:`flow_loss_terms`."""
    t = sample_flow_t(x0.shape[0], generator, t_sampling=t_sampling, logit_mean=logit_mean,
                      logit_std=logit_std, device=x0.device)
    noise = randn(tuple(x0.shape), generator, device=x0.device, dtype=x0.dtype)
    return flow_loss_terms(model_fn, x0, labels, t, noise)

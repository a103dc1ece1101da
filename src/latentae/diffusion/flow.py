"""The flow objectives: the linear interpolant and velocity prediction, in two conventions.

- ``flow`` (ours, rectified-flow direction): ``x_t = (1 − t)·x + t·ε`` with t ∈ [0, 1], t = 0
  the data and t = 1 pure noise; the model predicts ``dx_t/dt = ε − x``, and the network
  sees ``999·t`` (``pipeline.model_call``), the DDPM time scale its embedding was built for.
- ``flow-sit`` (SiT, Ma et al. 2024 §2, willisma/SiT ``transport/path.py`` ``ICPlan``; the
  DC-AE USiT, efficientvit ``sit_sampler``): ``x_t = t·x + (1 − t)·ε``, t = 0 the noise and
  t = 1 the data; the target is ``u = x − ε``, and the network sees the raw t ∈ [0, 1].
The two are the same path: x_t(sit, t) = x_t(flow, 1 − t) and u = −v. Samplers integrate
from the noise end to the data end (``samplers.py``, ``flow_solvers.py``).

Training t is uniform on [0, 1] (SiT) or logit-normal, ``t = sigmoid(m + s·z)`` with
z ~ N(0, 1) (Esser et al. 2024, SD3 §3.1, eq. 19).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from latentae.diffusion.noise import rand, randn
from latentae.errors import InputError

__all__ = ["FLOW_OBJECTIVES", "T_SAMPLINGS", "flow_interpolate", "flow_loss", "flow_loss_terms",
           "flow_target", "sample_flow_t"]

FLOW_OBJECTIVES = ("flow", "flow-sit")
T_SAMPLINGS = ("uniform", "logit_normal")
ModelFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))  # (B, 1, …)


def _check_objective(objective: str) -> None:
    if objective not in FLOW_OBJECTIVES:
        raise InputError(f"unknown flow objective {objective!r}; choose one of "
                         f"{', '.join(FLOW_OBJECTIVES)}")


def flow_interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                     objective: str = "flow") -> torch.Tensor:
    """x_t: ``flow`` (1 − t)·x0 + t·noise; ``flow-sit`` t·x0 + (1 − t)·noise.
    x0, noise: (B, C, …); t: (B,) float in [0, 1]."""
    _check_objective(objective)
    tb = _bcast(t, x0)
    if objective == "flow-sit":
        tb = 1.0 - tb
    return (1.0 - tb) * x0 + tb * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor, objective: str = "flow") -> torch.Tensor:
    """The velocity the model learns: ε − x (``flow``) or x − ε (``flow-sit``)."""
    _check_objective(objective)
    return noise - x0 if objective == "flow" else x0 - noise


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
                    t: torch.Tensor, noise: torch.Tensor, objective: str = "flow") -> torch.Tensor:
    """(B,) mean over elements of (v̂ − target)² at given times t (B,) and noise (like x0),
    target :func:`flow_target`. ``model_fn(x_t, t, labels)`` gets t as a float tensor in
    [0, 1] in x0's dtype, in the objective's own direction (SiT: t = 1 is the data)."""
    t = t.to(device=x0.device, dtype=x0.dtype)
    v = model_fn(flow_interpolate(x0, noise, t, objective), t, labels)
    if v.shape != x0.shape:
        raise InputError(f"the flow model returned shape {tuple(v.shape)}; it must return the "
                         f"velocity with the latent's shape {tuple(x0.shape)}")
    return ((v - flow_target(x0, noise, objective)) ** 2).mean(dim=tuple(range(1, x0.ndim)))


def flow_loss(model_fn: ModelFn, x0: torch.Tensor, labels: torch.Tensor | None, *,
              generator: torch.Generator | None, t_sampling: str = "uniform",
              logit_mean: float = 0.0, logit_std: float = 1.0,
              objective: str = "flow") -> torch.Tensor:
    """(B,) per-sample velocity loss: t from ``t_sampling`` then ε ~ N(0, I), both drawn
    from ``generator`` in that order, then :func:`flow_loss_terms` (SiT: t uniform on [0, 1)
    as ``Transport.sample`` with train_eps 0 for a linear velocity model)."""
    t = sample_flow_t(x0.shape[0], generator, t_sampling=t_sampling, logit_mean=logit_mean,
                      logit_std=logit_std, device=x0.device)
    noise = randn(tuple(x0.shape), generator, device=x0.device, dtype=x0.dtype)
    return flow_loss_terms(model_fn, x0, labels, t, noise, objective)

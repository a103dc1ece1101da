"""The formulas of the generation metrics on Inception outputs: Inception Score from
logits, precision/recall from k-NN manifolds, KID from a cubic polynomial kernel.

Plain functions on ``(N, D)`` feature or ``(N, K)`` logit matrices (torch or NumPy), so
they can be checked against direct computations; ``latentae.eval.generation`` runs the
Inception network and combines them. gFID is ``latentae.eval.fid``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from latentae.errors import InputError
from latentae.eval.mmd import mmd2_unbiased_from_kernels

IS_SPLITS = 10          # Salimans et al. 2016's code, torch-fidelity, StyleGAN
PR_K = 3                # Kynkäänniemi et al. 2019 §3 (and the ADM / StyleGAN evaluators)
KID_SUBSETS = 100       # Bińkowski et al. 2018's code, torch-fidelity
KID_SUBSET_SIZE = 1000
BLOCK_ENTRIES = 1 << 25  # distance-block size: 2^25 float32 = 128 MiB (10k x 10k: 4 blocks)

IS_VERSION = ("Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), p(y|x) = "
              "softmax of the FID Inception's 1008 logits (pool3 x softmax weights, no bias), "
              "N split into {splits} consecutive parts, mean and population std over parts, "
              "float64")
PR_VERSION = ("precision/recall (Kynkäänniemi et al. 2019): manifold = union of balls around "
              "each feature with radius its distance to its k-th nearest neighbour in its own "
              "set (self excluded), k = {k}, Euclidean on pool3; precision = fraction of "
              "samples inside the real manifold, recall = fraction of reals inside the "
              "sample manifold (<= radius)")
KID_VERSION = ("KID (Binkowski et al. 2018): unbiased MMD^2 with k(x, y) = (x.y/d + 1)^3, "
               "d = 2048, {subsets} subsets of m = min({size}, n_real, n_samples) drawn "
               "without replacement from each set (seed {seed}), mean and population std "
               "over subsets, float64")


KID_SPREAD_NOTE = ("KID's ± not reported: with subsets of m = min({size}, n) a subset is "
                   "(nearly) the whole of a set, so the subsets repeat one estimate and "
                   "their spread is no uncertainty; it needs both sets >= 2·m")


def kid_spread_meaningful(n_real: int, n_fake: int, subset_size: int) -> bool:
    """Whether the spread over KID subsets says anything: every subset must be a real
    draw from both sets (at most half of each), else the subsets repeat the same images
    (at small n every subset is the whole set and the spread is 0)."""
    return min(n_real, n_fake) >= 2 * min(subset_size, n_real, n_fake)


def _as_tensor(a: torch.Tensor | np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(a).to(dtype)


def inception_score(logits: torch.Tensor | np.ndarray,
                    splits: int = IS_SPLITS) -> tuple[float, float]:
    """Inception Score ``(mean, std)`` of logits ``(N, K)`` over ``splits`` parts.

    Per part: ``exp(mean_x Σ_y p(y|x)·(log p(y|x) − log p(y)))`` with ``p(y)`` the part's
    mean of ``p(y|x)`` (Salimans et al. 2016); std is the population std (``np.std``).
    """
    lg = _as_tensor(logits, torch.float64).cpu()
    if lg.ndim != 2:
        raise InputError(f"Inception Score expects logits (N, K), got {tuple(lg.shape)}")
    n = lg.shape[0]
    if splits < 1 or n < splits:
        raise InputError(f"Inception Score with {splits} splits needs at least {splits} "
                         f"images, got {n}: pass fewer splits (--is-splits)")
    logp = torch.log_softmax(lg, dim=1)  # (N, K) log p(y|x)
    scores = []
    for i in range(splits):
        part = logp[i * n // splits:(i + 1) * n // splits]
        log_py = torch.logsumexp(part, dim=0) - math.log(part.shape[0])  # (K,) log p(y)
        kl = (part.exp() * (part - log_py)).sum(dim=1).mean()
        scores.append(math.exp(float(kl)))
    return float(np.mean(scores)), float(np.std(scores))


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a_i − b_j|²`` for ``(n, D)``, ``(m, D)`` -> ``(n, m)``, clamped at 0."""
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


def _row_batches(n: int, cols: int) -> list[slice]:
    """Row slices so one ``(rows, cols)`` distance block has at most ``BLOCK_ENTRIES``
    entries (10k x 10k runs in blocks of 3,355 rows)."""
    step = max(1, BLOCK_ENTRIES // max(cols, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def knn_radii(feats: torch.Tensor, k: int = PR_K) -> torch.Tensor:
    """Squared distance of each row of ``feats (n, D)`` to its k-th nearest neighbour
    among the other rows: the (k+1)-th smallest distance, the first being itself."""
    n = feats.shape[0]
    if n <= k:
        raise InputError(f"precision/recall with k = {k} needs more than {k} features per "
                         f"set, got {n}")
    return torch.cat([squared_distances(feats[s], feats).kthvalue(k + 1, dim=1).values
                      for s in _row_batches(n, n)])


def precision_recall(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray,
                     k: int = PR_K, dtype: torch.dtype = torch.float32,
                     device: str | torch.device | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake (m, D)`` against
    ``real (n, D)``, in blocks of rows (``BLOCK_ENTRIES`` distances at a time, whatever n and m).

    ``dtype`` float32 (default) or float64; ``device`` defaults to the features' device.
    """
    r, f = (_as_tensor(a, dtype) for a in (real, fake))
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise InputError(f"precision/recall expects (n, D) and (m, D) features, got "
                         f"{tuple(r.shape)} and {tuple(f.shape)}")
    if device is not None:
        r, f = r.to(device), f.to(device)
    radius_r, radius_f = knn_radii(r, k), knn_radii(f, k)   # (n,), (m,)
    fake_inside = torch.zeros(f.shape[0], dtype=torch.bool, device=f.device)
    real_inside = torch.zeros(r.shape[0], dtype=torch.bool, device=r.device)
    for s in _row_batches(r.shape[0], f.shape[0]):
        d = squared_distances(r[s], f)                        # (rows, m)
        fake_inside |= (d <= radius_r[s, None]).any(dim=0)    # inside some real ball
        real_inside[s] = (d <= radius_f[None, :]).any(dim=1)  # inside some sample ball
    return float(fake_inside.double().mean()), float(real_inside.double().mean())


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's kernel ``(x·y/d + 1)³`` (Bińkowski et al. 2018 §4); ``(n, d), (m, d) -> (n, m)``."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray,
        subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0, device: str | torch.device | None = None) -> tuple[float, float]:
    """Kernel Inception Distance ``(mean, std)``: the unbiased MMD² with the cubic kernel
    on ``subsets`` pairs of random subsets of ``m = min(subset_size, n, m)`` rows, drawn
    without replacement (a fresh draw per subset, ``torch.Generator`` seeded ``seed``),
    in float64 on ``device`` (default: the features' device)."""
    x, y = (_as_tensor(a, torch.float64) for a in (real, fake))
    if device is not None:
        x, y = x.to(device), y.to(device)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise InputError(f"KID expects (n, D) and (m, D) features, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2 or subsets < 1:
        raise InputError(f"KID needs at least 2 features per set and 1 subset, got "
                         f"{x.shape[0]}, {y.shape[0]} features and {subsets} subsets")
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        xs = x[torch.randperm(x.shape[0], generator=g)[:size].to(x.device)]
        ys = y[torch.randperm(y.shape[0], generator=g)[:size].to(y.device)]
        values.append(mmd2_unbiased_from_kernels(polynomial_kernel(xs, xs),
                                                 polynomial_kernel(ys, ys),
                                                 polynomial_kernel(xs, ys)))
    return float(np.mean(values)), float(np.std(values))

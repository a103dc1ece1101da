"""The one percentile bootstrap: a CI of the mean of paired differences, used by the
studies (differences per seed, ``studies/stats.py``) and by the fine-tune regression
report (differences per image, ``train/regression.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_INDICES = 4_000_000  # bound the (draws, n) index matrix: memory ~32 MB per chunk


def bootstrap_mean_ci(diffs: Sequence[float] | np.ndarray, level: float = 0.95,
                      n_boot: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean(diffs)``: ``n_boot`` resamples of the n paired
    differences with replacement (each keeps its pair), the ``(1 ± level)/2`` quantiles
    of their means. Deterministic for a given ``seed``; needs n ≥ 1 (n = 1 gives a
    zero-width interval, so callers that need a spread check n themselves)."""
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("a bootstrap CI needs at least one difference")
    rng = np.random.default_rng(seed)
    chunk = max(1, MAX_INDICES // d.size)
    means = np.concatenate([d[rng.integers(0, d.size, size=(min(chunk, n_boot - i), d.size))]
                            .mean(1) for i in range(0, n_boot, chunk)])
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))

"""Statistics of the paired-seed studies: bootstrap CIs of paired differences, the
minimum detectable effect (MDE), and the verdict rule (issue 17, design rules 1 and 3).

Conventions: a *difference* is ``arm − reference`` on one metric, signed so that
``+`` means "the arm is better" (``sign = -1`` for lower-is-better metrics such as
LPIPS or KID). A paper effect is given in the same signed units (e.g. +0.3 dB PSNR).

**MDE** (two-sided paired t-test, level α, power 1−β, n paired seeds)::

    MDE = (t_{1−α/2, n−1} + t_{1−β, n−1}) · sd_diff / √n

with ``sd_diff`` the sample standard deviation of the n paired differences **observed
in the study** (so the MDE is itself an estimate: it is as noisy as that sd). With
α = 0.05, power 0.8 and n = 3 this is (4.303 + 1.061)·sd/√3 = 3.10·sd; n = 5:
(2.776 + 0.941)·sd/√5 = 1.66·sd; n = 20: 0.66·sd.

**Multiple comparisons** (:func:`holm`): a study tests several contrasts (metrics, budgets,
test sets); its verdicts are read after Holm's step-down adjustment of the paired t-test
p-values over all of the study's contrast rows (one family per study).

**Non-inferiority** (:func:`noninferiority`): "the arm matches the reference" with a margin
δ stated before the run is the one-sided test of H0: mean ≤ −δ (the lower half of TOST,
:func:`tost`), level 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from latentae.errors import InputError
from latentae.eval.bootstrap import bootstrap_mean_ci

LEVEL = 0.95
POWER = 0.8
BOOTSTRAP = 10_000


def _t_quantile(q: float, df: int) -> float:
    from scipy import stats  # deferred: scipy is heavy and only the MDE needs it

    return float(stats.t.ppf(q, df))


def mde(sd_diff: float, n: int, alpha: float = 1 - LEVEL, power: float = POWER) -> float:
    """Minimum detectable paired effect (same units as ``sd_diff``) with ``n`` seeds:
    ``(t_{1−α/2,n−1} + t_{power,n−1})·sd_diff/√n`` (module docstring)."""
    if n < 2:
        raise InputError(f"the MDE needs at least 2 paired seeds, got {n}")
    return (_t_quantile(1 - alpha / 2, n - 1) + _t_quantile(power, n - 1)) * sd_diff / math.sqrt(n)


def bootstrap_ci(diffs: Sequence[float], level: float = LEVEL, n_boot: int = BOOTSTRAP,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of paired differences (one per seed):
    resample the seeds with replacement ``n_boot`` times."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 2:
        raise InputError(f"a bootstrap CI needs at least 2 paired seeds, got {d.size}")
    return bootstrap_mean_ci(d, level, n_boot, seed)


def t_ci(diffs: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The paired t-interval ``mean ± t_{(1+level)/2, n−1}·sd/√n``."""
    d = np.asarray(diffs, dtype=np.float64)
    half = _t_quantile((1 + level) / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def image_ci(diffs: np.ndarray, images: np.ndarray, level: float = LEVEL,
             n_boot: int = 2_000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap CI of the mean of per-crop paired differences ``(seeds, crops)`` whose
    crops cluster by image (``images``: ``(crops,)`` image index of each crop, the same
    crops for every seed): resample seeds, then **images** with all their crops (crops of
    one image are not independent: resampling crops would understate the spread). The
    statistic is the mean over the resampled crops."""
    d = np.asarray(diffs, dtype=np.float64)
    groups = np.unique(np.asarray(images), return_inverse=True)[1].reshape(-1)
    if d.ndim != 2 or d.shape[0] < 2 or groups.shape != d.shape[1:]:
        raise InputError(f"expected (seeds ≥ 2, crops) differences and (crops,) image "
                         f"indices, got {d.shape} and {np.shape(images)}")
    n_img = int(groups.max()) + 1
    sums = np.zeros((d.shape[0], n_img))                              # (seeds, images)
    np.add.at(sums.T, groups, d.T)
    counts = np.bincount(groups, minlength=n_img).astype(np.float64)  # (images,)
    rng = np.random.default_rng(seed)
    s = d.shape[0]
    rows = rng.integers(0, s, size=(n_boot, s))                       # (B, seeds)
    imgs = rng.integers(0, n_img, size=(n_boot, n_img))               # (B, images)
    per_image = sums[rows].sum(axis=1)                                 # (B, images)
    means = (np.take_along_axis(per_image, imgs, 1).sum(axis=1)
             / (counts[imgs].sum(axis=1) * s))
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def t_pvalue(diffs: Sequence[float], shift: float = 0.0, side: str = "two") -> float:
    """Paired t-test p-value of ``mean(diffs) = shift`` against ``side``: ``"two"``,
    ``"greater"`` (mean > shift) or ``"less"``."""
    from scipy import stats  # deferred: scipy is heavy

    d = np.asarray(diffs, dtype=np.float64) - shift
    alt = {"two": "two-sided", "greater": "greater", "less": "less"}[side]
    p = float(stats.ttest_1samp(d, 0.0, alternative=alt).pvalue)
    return 1.0 if math.isnan(p) else p  # no spread at all: no evidence


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): sorted ascending,
    ``p_(i)·(m − i + 1)``, made monotone and capped at 1."""
    p = np.asarray(pvalues, dtype=np.float64)
    m, order = p.size, np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def noninferiority(diffs: Sequence[float], margin: float, alpha: float = 1 - LEVEL) -> dict:
    """One-sided paired t-test of H0: mean ≤ −margin (the arm worse than the reference by
    the margin or more) against H1: mean > −margin; ``margin`` > 0 in the signed units
    (+ = the arm better). Equivalent to the lower end of the (1 − 2α) t-interval lying
    above −margin."""
    if not margin > 0:
        raise InputError(f"a non-inferiority margin must be > 0, got {margin}")
    p = t_pvalue(diffs, -margin, "greater")
    return {"ni_margin": margin, "ni_p": p,
            "noninferiority": (f"non-inferior (p {p:.2g} < {alpha:g}, margin {margin:g})"
                               if p < alpha else
                               f"non-inferiority not shown (p {p:.2g}, margin {margin:g})")}


def tost(diffs: Sequence[float], margin: float) -> float:
    """The two one-sided tests of equivalence within ±margin: the larger of the p-values
    of H0: mean ≤ −margin and H0: mean ≥ +margin."""
    return max(t_pvalue(diffs, -margin, "greater"), t_pvalue(diffs, margin, "less"))


def verdict(ci: tuple[float, float], paper_effect: float, detectable: float) -> str:
    """The decision for one claim from the CI of the signed difference (``+`` = the
    paper's direction), the paper's effect and the MDE:

    1. CI above 0 -> "reproduced" (the direction; the magnitude is in the table);
    2. CI below 0 -> "not reproduced (CI excludes the paper's direction)";
    3. CI spans 0 and MDE > |paper effect| -> "untestable at this scale (MDE X > paper
       effect Y)";
    4. CI spans 0, the study can detect the paper's effect, and the CI's upper end is
       below it -> "not reproduced (CI excludes the paper's effect Y)";
    5. otherwise "inconclusive"."""
    lo, hi = ci
    effect = abs(paper_effect)
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "not reproduced (CI excludes the paper's direction)"
    if detectable > effect:
        return f"untestable at this scale (MDE {detectable:.3g} > paper effect {effect:.3g})"
    if hi < effect:
        return f"not reproduced (CI excludes the paper's effect {effect:.3g})"
    return "inconclusive"


def equivalence(ci: Sequence[float], margin: float) -> str:
    """The verdict of an equivalence claim ("arm and reference are similar") from the CI
    of their difference and the margin ``±margin`` (same units) that "similar" means:

    1. CI inside (−margin, +margin) -> "equivalent (CI inside ±m)";
    2. CI entirely beyond ±margin -> "not equivalent (CI outside ±m)";
    3. otherwise "inconclusive (CI not inside ±m)".

    As the two one-sided tests (TOST) at level α/2 each: with a 95% CI this is a 2.5%
    test per side, stricter than TOST's usual 90% interval."""
    if not margin > 0:
        raise InputError(f"an equivalence margin must be > 0, got {margin}")
    lo, hi = ci
    if -margin < lo and hi < margin:
        return f"equivalent (CI inside ±{margin:.3g})"
    if lo >= margin or hi <= -margin:
        return f"not equivalent (CI outside ±{margin:.3g})"
    return f"inconclusive (CI not inside ±{margin:.3g})"


def compare(arm: Sequence[float], reference: Sequence[float], paper_effect: float,
            sign: float = 1.0, per_item: np.ndarray | None = None,
            images: np.ndarray | None = None) -> dict:
    """Everything the table shows for one contrast: per-seed paired differences
    (``sign·(arm − reference)``), mean ± sd, bootstrap CI, MDE and the verdict.
    ``per_item`` (seeds, crops) of signed per-crop differences with ``images`` (crops,)
    (the image of each crop) adds the image-level bootstrap CI ``ci95_images``. The
    paired t-test p-value ``p`` is what :func:`holm` adjusts over a study."""
    a, r = np.asarray(arm, np.float64), np.asarray(reference, np.float64)
    if a.shape != r.shape:
        raise InputError(f"paired results need the same seeds on both arms: {a.shape} vs "
                         f"{r.shape}")
    d = sign * (a - r)
    if d.size < 2:
        return {"n_seeds": int(d.size), "diffs": d.round(5).tolist(), "mean": float(d.mean()),
                "paper_effect": paper_effect,
                "verdict": "inconclusive (one seed: no spread, no CI)"}
    sd, boot, tint = float(d.std(ddof=1)), bootstrap_ci(d), t_ci(d)
    # With 3-5 seeds the percentile bootstrap is too narrow (it cannot see beyond the
    # observed spread); the verdict uses the union of it and the t-interval.
    ci = (min(boot[0], tint[0]), max(boot[1], tint[1]))
    detect = mde(sd, d.size)
    out = {"n_seeds": int(d.size), "diffs": d.round(5).tolist(), "mean": float(d.mean()),
           "sd": sd, "ci95_boot": list(boot), "ci95_t": list(tint), "ci95": list(ci),
           "mde": detect, "paper_effect": paper_effect,
           "verdict": verdict(ci, paper_effect, detect), "p": t_pvalue(d)}
    if per_item is not None and images is not None:
        out["ci95_images"] = list(image_ci(per_item, images))
    return out

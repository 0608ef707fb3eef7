"""Across seeds: the method's paired difference, with the training run as the unit of replication.

The item-level statistics of ``lab.evidence.stats`` answer "did arm a beat arm b *in these
runs*": the seeds are fixed strata, so their interval shrinks with the items however much the
answer moves from one training run to the next. A claim about the *method* treats each seed as
one draw of a training run, and its items as nested inside it:

- seed s gives d_s, the mean over its items of a - b (items paired within the seed);
- the estimate is the mean of the k per-seed differences d_s (each seed weighs the same);
- Var(d_s) = tau^2 + sigma_s^2 / n_s: the between-seed variance of the effect plus the item
  noise of one seed, so the sample variance of the d_s carries both;
- the 95% interval is the t interval on the d_s with k - 1 degrees of freedom and the p-value
  the two-sided one-sample t-test of mean 0 (``scipy.stats.ttest_1samp``).

Why this estimator (the simulation of ``bench/stats.py``, tabled in docs/statistics.md): it
keeps its 95% coverage at k = 3, 5 and 10 seeds for binary and continuous metrics, with or
without between-seed variation, and its false-positive rate at 5%. A bootstrap that resamples
seeds (the first stage of a two-stage bootstrap) undercovers at few seeds: a percentile
interval of k values is narrow by about sqrt((k - 1) / k) and takes only a few distinct values.
A random-intercept mixed model gives the same estimate with balanced seeds and, with
k - 1 degrees of freedom, the same interval, at far more cost and with a boundary fit when
tau is 0. Below :data:`MIN_SEEDS` seeds there is no across-seeds result: the t quantile at one
degree of freedom is 12.7, and two runs cannot say how much a third would differ.

Everything here is a pure function of (a, b, seed) arrays, so any table with a seed column
(one run with several seeds, or several one-seed runs of one config pooled as seeds) works
unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_SEEDS = 3  # the fewest seeds with an across-seeds verdict
METHOD = "t interval on the per-seed paired differences (k - 1 df); one-sample t-test"


@dataclass(frozen=True)
class AcrossSeeds:
    """The method's difference a - b over k seeds, in the units of the values given."""

    diff: float  # mean of the per-seed differences
    ci_low: float
    ci_high: float
    p: float  # two-sided one-sample t-test of mean 0 over the seeds
    n_seeds: int
    per_seed: tuple[tuple, ...]  # (seed, n items, difference) per seed
    sd_seeds: float  # sd of the per-seed differences (ddof 1): between + within seed
    within_var: float  # mean over seeds of var(item differences) / n_s: the item noise part
    confidence: float = 0.95
    method: str = METHOD

    @property
    def between_var(self) -> float:
        """tau^2: the part of the per-seed variance the items do not explain (0 at least)."""
        return max(0.0, self.sd_seeds**2 - self.within_var)

    def to_dict(self, *, scale: float = 1.0, p_holm: float = float("nan")) -> dict:
        """The JSON contract of a verdict row's ``across_seeds`` (``scale``: display unit per
        raw unit, 100 for points): diff, ci_low, ci_high, p, p_holm, n_seeds, method."""
        return {
            "diff": _finite(self.diff * scale),
            "ci_low": _finite(self.ci_low * scale),
            "ci_high": _finite(self.ci_high * scale),
            "p": _finite(self.p),
            "p_holm": _finite(p_holm),
            "n_seeds": int(self.n_seeds),
            "method": self.method,
        }


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def t_interval(per_seed, *, confidence: float = 0.95):
    """(mean, low, high, p) of the t interval and one-sample t-test on the last axis of
    ``per_seed`` ((..., k) per-seed differences), vectorised so the simulation runs the same
    code as a verdict. Where every seed is equal the interval is that value and p is nan."""
    d = np.asarray(per_seed, dtype=np.float64)
    k = d.shape[-1]
    mean = d.mean(axis=-1)
    se = d.std(axis=-1, ddof=1) / math.sqrt(k)
    half = stats.t.ppf(0.5 + confidence / 2, k - 1) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(mean / se), k - 1)  # scipy.stats.ttest_1samp's p, vectorised
    p = np.where(se > 0, p, np.nan)
    return mean, mean - half, mean + half, p


def per_seed_differences(a, b, seeds) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(seed labels, items per seed, mean a - b per seed, var of a - b per seed (ddof 1; nan
    for one item)) of paired (n,) arrays, seeds in sorted order."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    seeds = np.asarray(seeds).reshape(-1)
    if not (len(a) == len(b) == len(seeds)):
        raise ValueError(f"a, b and seeds differ in length: {len(a)}, {len(b)}, {len(seeds)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("across_seeds got a non-finite value; drop or fix the item first")
    labels, inv, counts = np.unique(seeds, return_inverse=True, return_counts=True)
    d = a - b
    sums = np.bincount(inv, weights=d, minlength=len(labels))
    means = sums / counts
    dev2 = np.bincount(inv, weights=(d - means[inv]) ** 2, minlength=len(labels))
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(counts > 1, dev2 / (counts - 1), np.nan)
    return labels, counts, means, var


def seed_variance(a, b, seeds, *, scale: float = 1.0) -> dict | None:
    """What planning needs of paired (n,) arrays with at least 2 seeds, in display units
    (``scale`` per raw unit): ``{"n_seeds", "items_per_seed", "var_seeds", "within",
    "between"}``: the sample variance of the per-seed differences (between + within), its item
    noise part (the mean over seeds of var(a - b) / n_s) and the rest, tau^2 (0 at least).
    None with one seed: one run says nothing of how much another would differ."""
    labels, counts, means, var = per_seed_differences(a, b, seeds)
    if len(labels) < 2:
        return None
    total = float(np.var(means, ddof=1)) * scale**2
    ok = counts > 1
    within = float(np.mean(var[ok] / counts[ok])) * scale**2 if ok.any() else 0.0
    return {
        "n_seeds": int(len(labels)),
        "items_per_seed": int(round(float(np.mean(counts)))),
        "var_seeds": total,
        "within": within,
        "between": max(0.0, total - within),
    }


def no_result_note(n_seeds: int) -> str:
    """Why a comparison of ``n_seeds`` seeds has no across-seeds result."""
    if n_seeds <= 1:
        return (
            "one seed: this compares two training runs, not the methods; nothing here is a "
            f"result about the method (it takes at least {MIN_SEEDS} seeds)"
        )
    return (
        f"{n_seeds} seeds cannot separate the method from the runs: an across-seeds verdict "
        f"needs at least {MIN_SEEDS}"
    )


def across_seeds(a, b, seeds, *, confidence: float = 0.95) -> tuple[AcrossSeeds | None, str]:
    """The across-seeds difference of paired values ``a``, ``b`` ((n,) each) under ``seeds``
    ((n,) labels) and a note: (result, "") with at least :data:`MIN_SEEDS` seeds, else
    (None, the reason). Seeds may have different numbers of items; each seed weighs the same."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    labels, counts, means, var = per_seed_differences(a, b, seeds)
    k = len(labels)
    if k < MIN_SEEDS:
        return None, no_result_note(k)
    if np.ptp(means) == 0:
        return None, (
            f"every one of the {k} seeds gave the same difference ({means[0]:.6g}): no spread "
            "between seeds to build an interval from"
        )
    mean, low, high, p = t_interval(means, confidence=confidence)
    within = (
        float(np.nanmean(np.where(counts > 1, var / counts, np.nan))) if (counts > 1).any() else 0.0
    )
    per_seed = tuple(
        (lab.item() if isinstance(lab, np.generic) else lab, int(n), float(m))
        for lab, n, m in zip(labels, counts, means)
    )
    return AcrossSeeds(
        diff=float(mean),
        ci_low=float(low),
        ci_high=float(high),
        p=float(p),
        n_seeds=k,
        per_seed=per_seed,
        sd_seeds=float(np.std(means, ddof=1)),
        within_var=within,
        confidence=float(confidence),
    ), ""

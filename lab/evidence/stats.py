"""Paired statistics of two arms on one metric, item by item: pure functions of numpy arrays.

``paired_difference(a, b)`` takes one value per item for each arm (the same items in the same
order) and returns the mean difference a - b with

- a stratified bootstrap confidence interval, BCa (as ``scipy.stats.bootstrap`` defines it)
  where it is defined; the fallbacks are named in the result's ``ci_method`` and ``ci_note``,
- a two-sided paired sign-flip permutation p-value (exact when the null distribution is small
  enough to enumerate, which covers every binary metric),
- the minimum detectable difference at 80% power for this n and the observed spread (paired
  t-test power from ``scipy.stats.nct``).

``strata`` (one label per item, e.g. the training seed) makes the resampling stratified: the
bootstrap draws items within each stratum, and the sign flips act item by item, so every
difference stays in its stratum. Strata are treated as fixed: the interval and the p-value
are conditional on the seeds that were run; the per-stratum means show the spread across seeds.

``holm(p)`` adjusts the p-values of the metrics shown together (Holm-Bonferroni step-down).
Binary metrics (correct 0/1) and continuous ones (log-likelihoods, KL, preferences) go through
the same code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special, stats
from scipy.optimize import brentq

POWER = 0.8
N_BOOT = 2000  # bootstrap resamples: enough for a 95% BCa interval (Efron & Tibshirani, ch. 14)
N_FLIPS = 9999  # Monte Carlo sign flips when the exact null distribution is too large
EXACT_LIMIT = 1 << 16  # most sign-count patterns enumerated for an exact p-value
TIE_TOL = 1e-12  # relative: a bootstrap mean this close to theta is a tie (another summation order)


@dataclass(frozen=True)
class PairedResult:
    """The paired difference a - b of one metric over n items (see :func:`paired_difference`)."""

    diff: float  # mean over items of a - b
    ci_low: float  # nan when no interval is defined (n = 1)
    ci_high: float
    confidence: float
    ci_method: str  # "BCa", "percentile", "degenerate" or "none"
    ci_note: str  # why a fallback was used; "" for BCa
    p_value: float  # two-sided sign-flip permutation p-value
    p_method: str  # "exact" or "monte carlo"
    n_flips: int  # sign patterns behind a Monte Carlo p-value (0 when exact)
    n: int
    n_strata: int
    mean_a: float
    mean_b: float
    sd: float  # standard deviation of the item differences (ddof 1; nan for n = 1)
    mdd: float  # minimum detectable |difference| at 80% power; nan when not defined
    mdd_method: str
    n_resamples: int  # bootstrap resamples
    strata: tuple[tuple, ...] = ()  # (stratum, n, mean difference) per stratum

    def to_dict(self) -> dict:
        """JSON-ready: nan becomes None, the strata become a list of dicts."""
        out = asdict(self)
        out["strata"] = [
            {"stratum": _plain(s), "n": int(k), "diff": _finite(m)} for s, k, m in self.strata
        ]
        return {k: _finite(v) if isinstance(v, float) else v for k, v in out.items()}


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _plain(x):
    return x.item() if isinstance(x, np.generic) else x


def paired_difference(
    a,
    b,
    *,
    strata=None,
    confidence: float = 0.95,
    n_resamples: int = N_BOOT,
    n_flips: int = N_FLIPS,
    seed: int = 0,
) -> PairedResult:
    """Mean of ``a - b`` over items, with a bootstrap CI, a sign-flip p-value and the MDD.

    ``a``, ``b``: (n,) values of the two arms on the same items in the same order (0/1 for
    binary metrics). ``strata``: (n,) labels (e.g. the seed of each item) or None.
    ``confidence`` sets the interval and the test level alpha = 1 - confidence used by the MDD.
    ``n_resamples``: bootstrap resamples; ``n_flips``: Monte Carlo sign flips (used only when
    the exact null distribution is too large to enumerate, see :func:`sign_flip_pvalue`).
    ``seed`` fixes both. The MDD uses the spread of all item differences (df = n - 1), strata
    ignored: with seeds that differ a lot it is conservative.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have one value per item each: {a.shape} vs {b.shape}")
    if len(a) == 0:
        raise ValueError("paired_difference needs at least one item")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_difference got a non-finite value; drop or fix the item first")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if n_resamples < 1 or n_flips < 1:
        raise ValueError("n_resamples and n_flips must be at least 1")
    d = a - b  # (n,)
    n = len(d)
    if strata is None:
        labels = np.zeros(n, dtype=np.int64)
    else:
        labels = np.asarray(strata).reshape(-1)
        if len(labels) != n:
            raise ValueError(f"strata must have one label per item: {len(labels)} for {n} items")
    uniq, inv = np.unique(labels, return_inverse=True)
    groups = [d[inv == k] for k in range(len(uniq))]  # the differences of each stratum
    boot_seed, flip_seed = np.random.SeedSequence(seed).spawn(2)

    low, high, ci_method, ci_note = _interval(groups, n, confidence, n_resamples, boot_seed)
    p, p_method, flips_used = sign_flip_pvalue(d, n_flips=n_flips, seed=flip_seed)
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    mdd, mdd_method = min_detectable_difference(sd, n, alpha=1.0 - confidence)
    per_stratum = tuple(
        (_plain(s), len(g), float(g.mean())) for s, g in zip(uniq, groups)
    )  # fmt: skip
    return PairedResult(
        diff=float(d.mean()),
        ci_low=low,
        ci_high=high,
        confidence=float(confidence),
        ci_method=ci_method,
        ci_note=ci_note,
        p_value=p,
        p_method=p_method,
        n_flips=flips_used,
        n=n,
        n_strata=len(uniq) if strata is not None else 1,
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        sd=sd,
        mdd=mdd,
        mdd_method=mdd_method,
        n_resamples=int(n_resamples),
        strata=per_stratum if strata is not None else (),
    )


def mean_interval(
    values, *, confidence: float = 0.95, n_resamples: int = N_BOOT, seed: int = 0
) -> tuple[float, float, str]:
    """(low, high, method) of a bootstrap interval of the mean of one sample: BCa where it is
    defined, else the named fallback of :func:`paired_difference`; one value gives [x, x]."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(x) == 0:
        raise ValueError("mean_interval needs at least one value")
    if len(x) == 1:
        return float(x[0]), float(x[0]), "degenerate"
    rng_seed = np.random.SeedSequence(seed).spawn(1)[0]
    low, high, method, _ = _interval([x], len(x), confidence, n_resamples, rng_seed)
    return low, high, method


def _interval(groups: list[np.ndarray], n: int, confidence: float, n_resamples: int, seed):
    """(low, high, method, note) of the stratified bootstrap interval of the pooled mean."""
    if n == 1:
        return float("nan"), float("nan"), "none", "one item: no interval"
    if all(np.ptp(g) == 0 for g in groups):
        only = float(np.concatenate(groups).mean())
        if all(g[0] == groups[0][0] for g in groups):
            note = f"every difference equals {groups[0][0]:.6g}: the interval is that value"
        else:
            note = "every stratum is constant: resampling within strata cannot vary the mean"
        return only, only, "degenerate", note
    boot = bootstrap_means(groups, n_resamples, np.random.default_rng(seed))  # (R,)
    alpha = (1.0 - confidence) / 2
    if n < 3:
        low, high = np.percentile(boot, [100 * alpha, 100 * (1 - alpha)])
        return float(low), float(high), "percentile", "fewer than 3 items: BCa is not defined"
    theta = sum(float(g.sum()) for g in groups) / n
    interval = bca_interval(boot, theta, groups, confidence)
    if interval is None:
        low, high = np.percentile(boot, [100 * alpha, 100 * (1 - alpha)])
        note = "BCa is not defined here (every resample on one side of the estimate); percentile"
        return float(low), float(high), "percentile", note
    return interval[0], interval[1], "BCa", ""


def bootstrap_means(groups: list[np.ndarray], n_resamples: int, rng) -> np.ndarray:
    """(R,) means of stratified bootstrap resamples: each stratum resampled with replacement
    to its own size, the pooled mean over all items.

    Resampling by hand rather than through ``scipy.stats.bootstrap``: the statistic is always
    a mean, so a stratum with few distinct values (a binary or 0/0.5/1 metric) resamples as
    multinomial counts of those values, O(R x values) instead of O(R x n), and the jackknife
    BCa needs has a closed form (see :func:`bca_interval`), where scipy's generic one builds
    n x (n - 1) resamples. Together about 5x faster at 3 seeds x 1,000 items, which the
    2-second budget of a seeded run's verdicts needs; tests check it against scipy's BCa."""
    n = sum(len(g) for g in groups)
    total = np.zeros(n_resamples)
    for g in groups:
        values, counts = np.unique(g, return_counts=True)
        if len(values) <= 64:
            k = rng.multinomial(len(g), counts / len(g), size=n_resamples)  # (R, values)
            total += k @ values
            continue
        rows = max(1, (1 << 18) // len(g))  # bounds the (rows, n_k) index block (cache-sized)
        for s in range(0, n_resamples, rows):
            r = min(rows, n_resamples - s)
            idx = rng.integers(0, len(g), size=(r, len(g)))  # intp: np.take converts no index
            total[s : s + r] += np.take(g, idx).sum(axis=1)
    return total / n


def bca_interval(
    boot: np.ndarray, theta: float, groups: list[np.ndarray], confidence: float
) -> tuple[float, float] | None:
    """Bias-corrected and accelerated percentile interval (Efron 1987; the formula of
    ``scipy.stats.bootstrap(method="BCa")``) of a pooled mean from its bootstrap means ``boot``.

    z0 = Phi^-1(share of resamples below theta, ties half); the acceleration comes from the
    leave-one-out jackknife within each stratum (Efron & Tibshirani eq. 15.36, as scipy does for
    several samples), which for a mean is closed-form: theta_(i) - mean_i theta_(i) =
    -(d_i - mean of its stratum) / (N - 1), so with w_j = (n_j - 1) / n_j and dev the
    within-stratum deviations, a = sum_j w_j^3 sum dev^3 / (6 (sum_j w_j^2 sum dev^2)^1.5).
    None when z0 is infinite (every resample on one side of theta)."""
    tol = TIE_TOL * max(1.0, abs(theta))  # a resample mean equal to theta, summed in another order
    share = (np.count_nonzero(boot < theta - tol) + np.count_nonzero(boot <= theta + tol)) / (
        2 * len(boot)
    )
    z0 = special.ndtri(share)
    if not np.isfinite(z0):
        return None
    cubes = squares = 0.0
    for g in groups:
        dev = g - g.mean()
        w = (len(g) - 1) / len(g)
        cubes += w**3 * float((dev**3).sum())
        squares += w**2 * float((dev**2).sum())
    accel = cubes / (6.0 * squares**1.5) if squares > 0 else 0.0
    z = special.ndtri(np.array([(1 - confidence) / 2, (1 + confidence) / 2]))
    q = special.ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    low, high = np.percentile(boot, 100 * q)
    return float(low), float(high)


def sign_flip_pvalue(d, *, n_flips: int = N_FLIPS, seed=0) -> tuple[float, str, int]:
    """Two-sided paired permutation p-value of mean(d) = 0: P(|sum s_i d_i| >= |sum d_i|) over
    independent random signs s_i = +-1. Returns (p, "exact" | "monte carlo", flips used).

    Hand-written rather than ``scipy.stats.permutation_test(..., permutation_type="samples")``:
    that took 3.5 s for n = 3,000 and 9,999 resamples on a 2-core CPU, over 50 times this, and
    it enumerates the exact distribution only up to n_resamples sign patterns (never for a
    binary metric of a few hundred items). Differences equal to 0 are unchanged by a flip and are dropped; items with
    equal |d| are grouped, so the sum is sum_m m (2 K_m - c_m) with K_m ~ Binomial(c_m, 1/2),
    whose distribution is enumerated exactly when prod_m (c_m + 1) <= ``EXACT_LIMIT`` (any
    binary metric up to 65,535 items: one group, c + 1 points; continuous data up to 16 items).
    Otherwise p = (1 + #{|T*| >= |T|}) / (1 + R) from R random sign patterns, drawn a byte
    (8 signs) at a time: the kept sum of each block of 8 items is looked up in a table of its
    256 sign patterns, so a pattern costs n / 8 additions.
    """
    d = np.asarray(d, dtype=np.float64).reshape(-1)
    nz = d[d != 0]
    if len(nz) == 0:
        return 1.0, "exact", 0
    observed = abs(float(nz.sum()))
    scale = float(np.abs(nz).sum())
    tol = 1e-9 * scale  # sums reached in another order differ in the last bits
    mags, counts = np.unique(np.abs(nz), return_counts=True)
    exact = _exact_null(mags, counts, scale)
    if exact is not None:
        values, probs = exact
        p = float(probs[np.abs(values) >= observed - tol].sum())
        return min(1.0, p), "exact", 0
    rng = np.random.default_rng(seed)
    m = len(nz)
    blocks = np.zeros(8 * ((m + 7) // 8))
    blocks[:m] = nz
    blocks = blocks.reshape(-1, 8)  # (m / 8, 8)
    patterns = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1)  # (256, 8)
    table = (blocks @ patterns.T.astype(np.float64)).ravel()  # block b, byte v -> kept sum
    offsets = np.arange(len(blocks), dtype=np.intp) * 256  # (m / 8,)
    hits = 0
    rows = max(1, min(n_flips, (1 << 21) // len(blocks)))  # bounds the (rows, m / 8) block
    for start in range(0, n_flips, rows):
        r = min(rows, n_flips - start)
        byte = rng.integers(0, 256, size=(r, len(blocks)), dtype=np.uint8)  # 8 random signs each
        kept = np.take(table, byte + offsets).sum(axis=1)  # (r,) sum of the kept d_i
        flipped = 2.0 * kept - nz.sum()  # sum of s_i d_i
        hits += int((np.abs(flipped) >= observed - tol).sum())
    return (1 + hits) / (1 + n_flips), "monte carlo", int(n_flips)


def _exact_null(mags: np.ndarray, counts: np.ndarray, scale: float):
    """(values, probabilities) of sum_m mags_m (2 K_m - counts_m), or None when too large."""
    if np.log2(counts + 1.0).sum() > np.log2(EXACT_LIMIT):
        return None
    values = np.zeros(1)
    probs = np.ones(1)
    for m, c in zip(mags.tolist(), counts.tolist()):
        k = np.arange(c + 1)
        step = m * (2 * k - c)  # (c + 1,)
        pk = stats.binom.pmf(k, c, 0.5)
        values = (values[:, None] + step[None, :]).ravel()
        probs = (probs[:, None] * pk[None, :]).ravel()
        key = np.round(values / scale * 1e12)  # merge sums equal up to rounding
        key, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        values = values[first]
        probs = np.bincount(inverse.reshape(-1), weights=probs, minlength=len(key))
    return values, probs


def min_detectable_difference(
    sd: float, n: int, *, alpha: float = 0.05, power: float = POWER
) -> tuple[float, str]:
    """Smallest true mean difference a two-sided paired t-test at level ``alpha`` finds with
    probability ``power``, for n items whose differences have standard deviation ``sd``:
    nc * sd / sqrt(n), nc the noncentrality at which the noncentral t (df = n - 1) exceeds the
    critical value with probability ``power``. Returns (mdd, method); nan when n < 2 or sd = 0."""
    method = f"paired t-test power (noncentral t), two-sided alpha = {alpha:.3g}, {power:.0%} power"
    if n < 2 or not math.isfinite(sd):
        return float("nan"), method + ": undefined for n < 2"
    if sd == 0:
        return float("nan"), method + ": undefined, every difference is equal"
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(nc: float) -> float:
        lower = np.nan_to_num(stats.nct.cdf(-crit, df, nc))  # nan far in the tail: 0
        return float(stats.nct.sf(crit, df, nc) + lower) - power

    high = 2.0 * (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    while shortfall(high) < 0:
        high *= 2.0
    nc = brentq(shortfall, 0.0, high, xtol=1e-8)
    return float(nc * sd / math.sqrt(n)), method


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    Sorted ascending p_(1) <= ... <= p_(m): adj_(i) = min(1, max_{j<=i} (m - j + 1) p_(j)),
    so the adjusted values keep the order of the raw ones. nan entries stay nan and do not
    count in m. Hand-written: scipy has Benjamini-Hochberg/Yekutieli
    (``scipy.stats.false_discovery_control``) but no family-wise step-down adjustment.
    """
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if len(ok) == 0:
        return out
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]  # (m - j + 1) p_(j), j = 1..m
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out

"""Experiments with a known method effect, to check the intervals of both levels by simulation.

Each experiment trains two arms under k seeds and measures them on n items, with a known method
effect ``delta`` (arm a - arm b), a between-seed sd ``tau`` (how much the effect of one training
run moves from seed to seed) and the item noise of one seed:

- continuous: b = c_i + e, a = c_i + delta + u_s + e'; c_i ~ N(0, 1) the item's own level
  (shared by both arms and every seed), u_s ~ N(0, tau^2) the seed's draw, e, e' ~ N(0, sigma^2);
- binary: b ~ Bernoulli(q_i), a ~ Bernoulli(q_i + delta + u_s), q_i ~ U(0.3, 0.7) the item's
  difficulty (delta and tau small enough that the probability stays inside [0, 1]).

The method's effect is delta: what a new seed gives on average. :func:`cell` measures, over
many experiments at once (numpy, (E, k, n) arrays):

- ``across``: the across-seeds interval and t-test of ``lab.evidence.seeds`` (the same
  vectorised :func:`lab.evidence.seeds.t_interval` a verdict calls);
- ``seed_bootstrap``: the percentile interval of a bootstrap that resamples the seeds (their
  per-seed differences), the first stage of a two-stage bootstrap, for comparison;
- ``items``: the item-level interval "in these runs", seeds as fixed strata, in its normal
  form mean +- 1.96 sqrt(sum_s n_s var_s) / N: the large-sample form of the stratified
  bootstrap of ``lab.evidence.stats.paired_difference``, too slow for 1,000 experiments a cell
  (:func:`item_check` runs the real one on a few and compares).

Coverage is the share of experiments whose 95% interval holds delta; "rejects" the share that
excludes 0 (the false-positive rate when delta is 0, the power otherwise).
"""

from __future__ import annotations

import numpy as np

from lab.evidence.seeds import t_interval

Z95 = 1.959963984540054

# delta and tau per metric kind: continuous in units of the item sd (sigma = 1), binary as
# shares (0.05 = 5 points); tau none, moderate and large against the item noise of one seed
GRID = {
    "continuous": {"delta": (0.0, 0.2), "tau": (0.0, 0.1, 0.3)},
    "binary": {"delta": (0.0, 0.05), "tau": (0.0, 0.03, 0.08)},
}
SEEDS = (3, 5, 10)
ITEMS = (32, 200)


def draw(kind: str, k: int, n: int, delta: float, tau: float, sigma: float, experiments: int,
         rng) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(a, b): (E, k, n) values of the two arms in ``experiments`` experiments."""
    shape = (experiments, k, n)
    u = rng.normal(0.0, tau, size=(experiments, k, 1))  # the seed's draw of the effect
    if kind == "continuous":
        c = rng.normal(0.0, 1.0, size=(experiments, 1, n))
        b = c + rng.normal(0.0, sigma, size=shape)
        a = c + delta + u + rng.normal(0.0, sigma, size=shape)
        return a, b
    if kind != "binary":
        raise ValueError(f"kind must be 'binary' or 'continuous', got {kind!r}")
    q = rng.uniform(0.3, 0.7, size=(experiments, 1, n))
    b = (rng.random(shape) < q).astype(float)
    a = (rng.random(shape) < np.clip(q + delta + u, 0.0, 1.0)).astype(float)
    return a, b


def item_normal_interval(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the item-level 95% interval with seeds as fixed strata, for (E, k, n)
    item differences: pooled mean +- 1.96 sqrt(sum_s n var_s) / (k n)."""
    k, n = d.shape[1], d.shape[2]
    mean = d.mean(axis=(1, 2))
    se = np.sqrt(d.var(axis=2, ddof=1).sum(axis=1) * n) / (k * n)
    return mean - Z95 * se, mean + Z95 * se


def cell(kind: str, k: int, n: int, delta: float, tau: float, *, sigma: float = 1.0,
         experiments: int = 1000, n_boot: int = 1000, seed: int = 0) -> dict:  # fmt: skip
    """Coverage and rejection rates of the three intervals in one cell of the grid."""
    rng = np.random.default_rng(seed)
    a, b = draw(kind, k, n, delta, tau, sigma, experiments, rng)
    d = a - b  # (E, k, n)
    per_seed = d.mean(axis=2)  # (E, k)
    _, lo, hi, p = t_interval(per_seed)
    undefined = np.isnan(p)  # every seed the same difference: no interval (counted as a miss)
    idx = rng.integers(0, k, size=(experiments, n_boot, k))
    boot = np.take_along_axis(per_seed[:, None, :], idx, axis=2).mean(axis=2)  # (E, B)
    b_lo, b_hi = np.percentile(boot, [2.5, 97.5], axis=1)
    i_lo, i_hi = item_normal_interval(d)

    def holds(low, high):
        return float(np.mean((low <= delta) & (delta <= high)))

    def zero_out(low, high):
        return float(np.mean((low > 0) | (high < 0)))

    return {
        "kind": kind, "k": k, "n": n, "delta": delta, "tau": tau, "sigma": sigma,
        "experiments": experiments,
        "across_coverage": holds(np.where(undefined, np.nan, lo), np.where(undefined, np.nan, hi)),
        "across_rejects": float(np.mean(np.nan_to_num(p, nan=1.0) < 0.05)),
        "across_undefined": int(undefined.sum()),
        "seed_bootstrap_coverage": holds(b_lo, b_hi),
        "seed_bootstrap_rejects": zero_out(b_lo, b_hi),
        "items_coverage": holds(i_lo, i_hi),
        "items_rejects": zero_out(i_lo, i_hi),
    }  # fmt: skip


def simulate(experiments: int = 1000, seeds=SEEDS, items=ITEMS, grid=GRID, seed: int = 0):
    """Every cell of the grid: metric kind x k x n x delta x tau."""
    out = []
    for kind, g in grid.items():
        for k in seeds:
            for n in items:
                for delta in g["delta"]:
                    for tau in g["tau"]:
                        out.append(cell(kind, k, n, delta, tau, experiments=experiments,
                                        seed=seed + len(out)))  # fmt: skip
    return out


def markdown(cells: list[dict]) -> str:
    """The cells as the table of docs/statistics.md."""
    lines = [
        "| metric | seeds k | items a seed | true effect | between-seed sd | across seeds: "
        "coverage | across seeds: rejects 0 | seed bootstrap: coverage | in these runs: "
        "coverage | in these runs: rejects 0 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {c['kind']} | {c['k']} | {c['n']} | {c['delta']:g} | {c['tau']:g} "
            f"| {c['across_coverage']:.1%} | {c['across_rejects']:.1%} "
            f"| {c['seed_bootstrap_coverage']:.1%} | {c['items_coverage']:.1%} "
            f"| {c['items_rejects']:.1%} |"
        )
    return "\n".join(lines)

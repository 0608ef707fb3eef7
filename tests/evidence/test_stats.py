"""Known-answer tests of the paired statistics: planted differences, identical arms, Holm."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps

from lab.evidence.stats import (
    bca_interval,
    bootstrap_means,
    holm,
    mean_interval,
    min_detectable_difference,
    paired_difference,
    sign_flip_pvalue,
)


def _continuous(rng, n, shift):
    """Per-item scores of two arms sharing an item effect, arm a shifted by ``shift``."""
    item = rng.normal(0.0, 1.0, n)
    return item + shift + rng.normal(0, 0.5, n), item + rng.normal(0, 0.5, n)


def _binary(rng, n, p_b, p_a):
    """Correct/incorrect of two arms on n items, correlated through a shared item difficulty."""
    u = rng.random(n)
    return (u < p_a).astype(float), (u < p_b).astype(float) * (rng.random(n) < 0.97)


def test_planted_continuous_difference_is_found_and_covered():
    rng = np.random.default_rng(0)
    truth, covered = 0.25, 0
    for i in range(100):
        a, b = _continuous(rng, 60, truth)
        r = paired_difference(a, b, seed=i, n_resamples=1000)
        covered += r.ci_low <= truth <= r.ci_high
        assert r.ci_method == "BCa"
    assert covered >= 90, f"the 95% interval covered the planted difference {covered}/100 times"
    a, b = _continuous(rng, 400, truth)
    r = paired_difference(a, b)
    assert r.diff > 0 and r.ci_low > 0 and r.p_value < 0.01


def test_planted_binary_difference_is_found_and_covered():
    rng = np.random.default_rng(1)
    covered, found = 0, 0
    for i in range(100):
        a, b = _binary(rng, 300, 0.55, 0.70)
        truth = 0.70 - 0.55 * 0.97  # E[a] - E[b]
        r = paired_difference(a, b, seed=i, n_resamples=1000)
        covered += r.ci_low <= truth <= r.ci_high
        found += r.p_value < 0.05 and r.diff > 0
        assert r.p_method == "exact"  # one group of |d| = 1: the sign test, enumerated
    assert covered >= 90
    assert found >= 90


def test_planted_difference_with_the_wrong_sign_is_negative():
    rng = np.random.default_rng(2)
    a, b = _continuous(rng, 300, -0.3)
    r = paired_difference(a, b)
    assert r.diff < 0 and r.ci_high < 0 and r.p_value < 0.01


def test_identical_arms_give_large_p_values_and_intervals_holding_zero():
    rng = np.random.default_rng(3)
    ps, holds = [], 0
    for i in range(100):
        a, b = _continuous(rng, 80, 0.0)
        r = paired_difference(a, b, seed=i, n_resamples=500)
        ps.append(r.p_value)
        holds += r.ci_low <= 0 <= r.ci_high
    ps = np.array(ps)
    assert holds >= 90
    assert (ps < 0.05).mean() <= 0.12  # about 5% false positives
    assert np.median(ps) > 0.25  # p is roughly uniform under the null, not all small


def test_exactly_equal_arms():
    x = np.random.default_rng(4).random(30)
    r = paired_difference(x, x)
    assert r.diff == 0 and r.ci_low == 0 == r.ci_high and r.p_value == 1.0
    assert r.ci_method == "degenerate" and "every difference equals 0" in r.ci_note
    assert np.isnan(r.mdd)


def test_degenerate_and_tiny_inputs_name_their_method():
    r = paired_difference([1.0], [0.0])
    assert r.ci_method == "none" and np.isnan(r.ci_low) and r.to_dict()["ci_low"] is None
    r = paired_difference([1.0, 0.0], [0.0, 0.0])
    assert r.ci_method == "percentile" and "fewer than 3" in r.ci_note
    r = paired_difference([2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0])
    assert r.ci_method == "degenerate" and r.ci_low == r.ci_high == 1.0
    assert r.p_value == pytest.approx(2 / 16)  # all four signs equal: 2 of 16 patterns
    with pytest.raises(ValueError, match="non-finite"):
        paired_difference([np.nan, 1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="one value per item"):
        paired_difference([1.0, 2.0], [1.0])


def test_exact_p_value_matches_the_sign_test_and_enumeration():
    rng = np.random.default_rng(5)
    d = rng.choice([-1.0, 0.0, 1.0], size=150, p=[0.2, 0.5, 0.3])
    p, method, _ = sign_flip_pvalue(d)
    k, m = int((d > 0).sum()), int((d != 0).sum())
    assert method == "exact"
    assert p == pytest.approx(sps.binomtest(k, m).pvalue, rel=1e-9)
    d = rng.normal(size=10)  # 1,024 sign patterns, enumerated by brute force
    signs = np.array(np.meshgrid(*[[-1, 1]] * 10)).reshape(10, -1).T  # (1024, 10)
    brute = (np.abs(signs @ d) >= abs(d.sum()) - 1e-12).mean()
    assert sign_flip_pvalue(d)[0] == pytest.approx(brute)


def test_monte_carlo_p_value_agrees_with_scipy():
    rng = np.random.default_rng(6)
    d = rng.normal(0.15, 1.0, 120)
    p, method, flips = sign_flip_pvalue(d, n_flips=20000, seed=1)
    ref = sps.permutation_test(
        (d,), lambda x, axis=-1: np.abs(x.mean(axis=axis)), permutation_type="samples",
        alternative="greater", n_resamples=20000, vectorized=True, rng=0,
    ).pvalue  # fmt: skip
    assert method == "monte carlo" and flips == 20000
    assert abs(p - ref) < 0.015


def test_interval_matches_scipy_bca_without_strata():
    rng = np.random.default_rng(7)
    a, b = _continuous(rng, 50, 0.2)
    r = paired_difference(a, b, seed=3, n_resamples=4000)
    ref = sps.bootstrap((a - b,), np.mean, n_resamples=20000, method="BCa", rng=0)
    lo, hi = ref.confidence_interval
    assert r.ci_low == pytest.approx(lo, abs=0.03) and r.ci_high == pytest.approx(hi, abs=0.03)


def test_bca_formula_matches_scipy_on_the_same_resamples():
    """Given the same bootstrap means, the interval is scipy's BCa, strata of unequal sizes
    included (scipy's jackknife over several samples, eq. 15.36)."""
    rng = np.random.default_rng(12)
    groups = [rng.exponential(1.0, 40), rng.exponential(2.0, 25) - 1, rng.normal(0, 1, 60)]
    n = sum(len(g) for g in groups)
    boot = bootstrap_means(groups, 3000, np.random.default_rng(0))
    theta = sum(g.sum() for g in groups) / n
    ref = sps.bootstrap(
        groups, lambda *xs, axis=-1: sum(x.sum(axis=axis) for x in xs) / n, n_resamples=0,
        bootstrap_result=SimpleNamespace(bootstrap_distribution=boot), method="BCa",
        vectorized=True, confidence_level=0.9,
    )  # fmt: skip
    low, high = bca_interval(boot, theta, groups, 0.9)
    assert (low, high) == pytest.approx(tuple(ref.confidence_interval), rel=1e-9)


def test_bootstrap_means_resample_within_strata_with_the_right_spread():
    groups = [np.zeros(5), np.full(7, 10.0)]
    assert np.allclose(bootstrap_means(groups, 200, np.random.default_rng(0)), 70 / 12)
    rng = np.random.default_rng(13)
    binary = [(rng.random(300) < 0.3).astype(float), (rng.random(100) < 0.8).astype(float)]
    cont = [rng.normal(0, 1, 300), rng.normal(5, 2, 100)]
    for groups in (binary, cont):  # the multinomial path and the index path
        boot = bootstrap_means(groups, 20000, np.random.default_rng(1))
        n = sum(len(g) for g in groups)
        var = sum(len(g) * g.var() for g in groups) / n**2  # Var of a stratified mean
        assert boot.mean() == pytest.approx(
            sum(g.sum() for g in groups) / n, abs=4 * var**0.5 / 100
        )
        assert boot.var() == pytest.approx(var, rel=0.05)


def test_stratified_resampling_keeps_the_strata():
    """Strata with very different means but no spread inside: resampling within strata cannot
    move the pooled mean, so the interval is the point; pooled resampling would be wide."""
    d = np.repeat([0.0, 1.0, 5.0], 20)
    strata = np.repeat([0, 1, 2], 20)
    r = paired_difference(d, np.zeros_like(d), strata=strata)
    assert r.ci_method == "degenerate" and r.ci_low == r.ci_high == pytest.approx(2.0)
    assert r.n_strata == 3
    assert [s[1:] for s in r.strata] == [(20, 0.0), (20, 1.0), (20, 5.0)]
    pooled = paired_difference(d, np.zeros_like(d))
    assert pooled.ci_high - pooled.ci_low > 1.0


def test_stratified_interval_is_narrower_when_strata_explain_the_spread():
    rng = np.random.default_rng(8)
    strata = np.repeat([0, 1, 2], 100)
    d = np.array([-2.0, 0.0, 2.5])[strata] + rng.normal(0, 0.3, 300)
    with_strata = paired_difference(d, np.zeros(300), strata=strata)
    without = paired_difference(d, np.zeros(300))
    assert with_strata.diff == pytest.approx(without.diff)
    width = lambda r: r.ci_high - r.ci_low  # noqa: E731
    assert width(with_strata) < 0.3 * width(without)
    means = {s: m for s, _, m in with_strata.strata}
    assert means[0] < -1.5 and means[2] > 2.0
    assert with_strata.ci_method == "BCa"


def test_strata_labels_can_be_text_and_the_result_is_json():
    d = np.arange(12, dtype=float)
    r = paired_difference(d, np.zeros(12), strata=["s0"] * 6 + ["s1"] * 6)
    out = json.loads(json.dumps(r.to_dict()))
    assert [s["stratum"] for s in out["strata"]] == ["s0", "s1"]
    assert out["n"] == 12 and out["n_strata"] == 2
    with pytest.raises(ValueError, match="one label per item"):
        paired_difference(d, d, strata=[0, 1])


def test_min_detectable_difference_against_the_normal_formula():
    mdd, method = min_detectable_difference(1.0, 10_000)
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert mdd == pytest.approx(z / 100, rel=1e-3)
    assert "noncentral t" in method
    small, _ = min_detectable_difference(1.0, 5)
    assert small > z / np.sqrt(5)  # the t distribution's heavier tails ask for more
    # at the MDD, a simulated paired t-test rejects about 80% of the time
    rng = np.random.default_rng(9)
    n = 20
    delta, _ = min_detectable_difference(1.0, n)
    rejections = np.mean(
        [sps.ttest_1samp(rng.normal(delta, 1.0, n), 0).pvalue < 0.05 for _ in range(2000)]
    )
    assert 0.76 < rejections < 0.84


def test_paired_difference_reports_the_mdd_of_its_spread():
    rng = np.random.default_rng(10)
    a, b = _continuous(rng, 100, 0.0)
    r = paired_difference(a, b)
    assert r.mdd == pytest.approx(min_detectable_difference(r.sd, 100)[0])
    assert r.sd == pytest.approx(np.std(a - b, ddof=1))


def test_holm_against_hand_computed_values():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max so far 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02])
    out = holm([0.01, np.nan, 0.02])
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.02)
    ties = holm([0.01, 0.01, 0.01])
    assert ties == pytest.approx([0.03, 0.03, 0.03])
    raw = np.random.default_rng(11).random(20)
    adj = holm(raw)
    order = np.argsort(raw)
    assert (np.diff(adj[order]) >= 0).all() and (adj >= raw).all() and (adj <= 1).all()
    with pytest.raises(ValueError):
        holm([1.5])


def test_mean_interval_of_one_arm_covers_a_skewed_share():
    rng = np.random.default_rng(14)
    covered = 0
    for i in range(100):
        x = (rng.random(40) < 0.15).astype(float)
        low, high, method = mean_interval(x, seed=i, n_resamples=1000)
        covered += low <= 0.15 <= high
        assert low <= x.mean() <= high
    assert covered >= 90
    assert mean_interval([0.7]) == (0.7, 0.7, "degenerate")
    assert mean_interval(np.r_[np.zeros(30), np.ones(10)])[2] == "BCa"
    with pytest.raises(ValueError):
        mean_interval([])


# ---- across seeds: the method's level, checked by simulation ---------------------------------


def test_across_seeds_is_the_t_interval_on_the_per_seed_differences():
    from lab.evidence.seeds import across_seeds

    rng = np.random.default_rng(4)
    seeds = np.repeat([3, 7, 9, 11], [30, 40, 30, 25])  # seeds with different item counts
    b = rng.normal(size=len(seeds))
    a = (
        b
        + 0.3
        + rng.normal(0, 0.5, len(seeds))
        + np.array([0.4, -0.2, 0.1, 0.0])[np.searchsorted([3, 7, 9, 11], seeds)]
    )
    res, note = across_seeds(a, b, seeds)
    per_seed = [float((a - b)[seeds == s].mean()) for s in (3, 7, 9, 11)]
    t = sps.ttest_1samp(per_seed, 0.0)
    ci = t.confidence_interval(0.95)
    assert note == "" and res.n_seeds == 4 and [s for s, *_ in res.per_seed] == [3, 7, 9, 11]
    assert res.diff == pytest.approx(np.mean(per_seed)) and res.p == pytest.approx(t.pvalue)
    assert (res.ci_low, res.ci_high) == pytest.approx((ci.low, ci.high))
    assert res.sd_seeds == pytest.approx(np.std(per_seed, ddof=1))
    with pytest.raises(ValueError, match="differ in length"):
        across_seeds(a, b[:-1], seeds)


@pytest.mark.parametrize(
    ("kind", "k", "n", "delta", "tau"),
    [
        ("continuous", 5, 200, 0.0, 0.3),  # seeds vary a lot, no method effect
        ("binary", 3, 200, 0.05, 0.08),  # a 5-point effect, 8 points of seed sd, 3 seeds
        ("binary", 10, 32, 0.0, 0.0),  # seeds that do not vary
    ],
)
def test_the_across_seeds_interval_keeps_its_coverage_in_a_fast_simulation(kind, k, n, delta, tau):
    """A fast subset of ``bench/stats.py --simulate`` (1,000 experiments a cell, bounds a
    little looser than the bench's 93% / 6% so that chance alone fails it rarely): the across-seeds 95% interval covers the method
    effect; a z interval in its place would cover about 81% at 3 seeds. The item-level interval
    (seeds as fixed strata) covers the method effect far less when seeds vary."""
    from lab.evidence.simulation import cell

    c = cell(kind, k, n, delta, tau, experiments=1000, n_boot=200, seed=k)
    assert c["across_coverage"] >= 0.925
    if delta == 0:
        assert c["across_rejects"] <= 0.075
    if tau > 0:  # in these runs, seeds fixed: it misses the method effect far more often
        assert c["items_coverage"] < 0.8 and c["items_coverage"] < c["across_coverage"] - 0.15
    else:
        assert c["items_coverage"] >= 0.9


# ---- planning: the seeds a difference needs ---------------------------------------------------


@pytest.mark.parametrize(("kind", "delta", "tau", "n"), [("continuous", 0.25, 0.2, 50), ("binary", 0.06, 0.05, 100)])  # fmt: skip
def test_the_planned_seeds_reach_about_80_percent_power_in_a_simulation(kind, delta, tau, n):
    """The per-seed variance observed in a pilot of 200 seeds (large, so the plan is not off by
    the pilot's own noise) plans k; 2,000 experiments at that k reject 0 about 80% of the time,
    and at k - 1 less often."""
    from lab.evidence.plan import seeds_needed, t_power
    from lab.evidence.seeds import seed_variance
    from lab.evidence.simulation import cell, draw

    a, b = draw(kind, 200, n, delta, tau, 1.0, 1, np.random.default_rng(1))  # the pilot
    sv = seed_variance(a[0].ravel(), b[0].ravel(), np.repeat(np.arange(200), n))
    assert sv["within"] > 0 and sv["var_seeds"] == pytest.approx(sv["between"] + sv["within"])
    k = seeds_needed(delta, sv["var_seeds"])
    assert 4 <= k <= 40
    assert t_power(delta, sv["var_seeds"], k) >= 0.8 > t_power(delta, sv["var_seeds"], k - 1)
    at_k = cell(kind, k, n, delta, tau, experiments=2000, n_boot=10, seed=3)["across_rejects"]
    below = cell(kind, k - 1, n, delta, tau, experiments=2000, n_boot=10, seed=4)["across_rejects"]
    assert 0.74 <= at_k <= 0.88 and below < at_k


def test_planning_refuses_what_it_cannot_plan():
    from lab.evidence.plan import plan_row, seeds_needed

    assert seeds_needed(1.0, 0.0) == 3 and seeds_needed(0.001, 1.0) is None
    with pytest.raises(ValueError, match="nonzero effect"):
        seeds_needed(0.0, 1.0)
    one = {"unit": "points", "diff": 3.0, "seed_variance": None, "across_seeds": None}
    assert plan_row(one)["seeds"] is None and plan_row(one)["note"].startswith("one seed")
    two = dict(one, seed_variance={"n_seeds": 2, "items_per_seed": 50, "var_seeds": 4.0,
                                   "within": 1.0, "between": 3.0})  # fmt: skip
    got = plan_row(two, effect=2.0)
    assert got["seeds"] == seeds_needed(2.0, 4.0) and "rough guide" in got["note"]


def test_seeds_for_run_plans_every_comparison_of_a_run(tmp_path):
    from lab.evidence.items import write_items
    from lab.evidence.plan import seeds_for_run, seeds_needed

    rng = np.random.default_rng(0)
    for s, gain in ((0, 0.3), (1, 0.1), (2, 0.2)):
        b = rng.normal(size=80)
        a = b + gain + rng.normal(0, 0.2, 80)
        ids = [f"q{i}" for i in range(80)]
        write_items(tmp_path, 2, "lora", s, {"gold_logprob": (ids, b)})
        write_items(tmp_path, 2, "balora", s, {"gold_logprob": (ids, a)})
    (got,) = seeds_for_run(tmp_path)
    assert got["comparison"] == "BA-LoRA − LoRA" and got["unit"] == "nats"
    assert got["seeds"] == seeds_needed(got["effect"], got["var_seeds"]) >= 3
    assert seeds_for_run(tmp_path, effect=0.05)[0]["seeds"] > got["seeds"]  # a smaller effect

"""Verdicts: arm against arm (and arm against the base model), metric by metric, in words.

``compare_arms(records, ...)`` pairs the per-item records of two arms on each metric (see
``lab.evidence.items``), computes the paired difference a - b with ``lab.evidence.stats.paired_difference``
(seed-stratified when the run has several seeds: items are paired within a seed, balora#s1
against lora#s1, and pooled over the seeds with the resampling kept inside each seed; each
row also carries the difference of every seed and their spread), adjusts the p-values of
every row it returns together with Holm, and says whether the difference is better or worse
given the metric's direction; ``run_verdicts(run_dir)`` does it all for a run directory
(:mod:`lab.evidence.sentences` phrases the rows). Rates are in
percentage points, log-likelihoods and KL in nats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from lab.arms import unseeded
from lab.evidence.items import load_items, paired
from lab.evidence.seeds import across_seeds, seed_variance
from lab.evidence.stats import N_BOOT, holm, paired_difference
from lab.evidence.words import ARM_NAMES, arm_display  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class MetricSpec:
    """One item metric of the records and how to read it."""

    name: str  # the ``metric`` column of the items table
    label: str  # words for a classroom
    higher_is_better: bool | None  # None: no direction (a signed preference)
    unit: str = "points"  # "points" (a rate or share, shown x 100) or "nats"
    vs_base: bool = False  # also compare each arm with the base model (bias, drift)

    @property
    def scale(self) -> float:
        return 100.0 if self.unit == "points" else 1.0


METRICS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("accuracy", "clean accuracy", True, "points"),
        MetricSpec("gold_logprob", "log-likelihood of the gold answer", True, "nats"),
        MetricSpec("balanced_accuracy", "balanced accuracy", True, "points"),
        MetricSpec("minority_recall", "minority-class recall", True, "points"),
        # the base model's share is the chance of predicting the wrong label without training
        MetricSpec("memorised_noise", "memorised label noise", False, "points", vs_base=True),
        MetricSpec("stereo_pref", "stereotype preference", False, "points", vs_base=True),
        MetricSpec("stereo_llr", "stereotype log-likelihood ratio", False, "nats", vs_base=True),
        MetricSpec("pronoun_abs_logodds", "he/she log-odds gap", False, "nats", vs_base=True),
        MetricSpec("pronoun_logodds", "he-over-she log-odds", None, "nats", vs_base=True),
        MetricSpec("flip_rate", "counterfactual flip rate", False, "points", vs_base=True),
        # the user's benchmark files (lab.bias.benchmarks), item by item
        MetricSpec(
            "crows_pairs/stereo_pref",
            "CrowS-Pairs stereotype preference (lab)",
            False,
            "points",
            vs_base=True,
        ),
        MetricSpec(
            "crows_pairs/pct_stereotype",
            "CrowS-Pairs pct_stereotype (harness)",
            None,
            "points",
            vs_base=True,
        ),
        MetricSpec("bbq/acc", "BBQ accuracy", True, "points", vs_base=True),
        MetricSpec(
            "winogender/logodds_gap",
            "WinoGender she-minus-he log-odds gap",
            None,
            "nats",
            vs_base=True,
        ),
        # the base model has no drift by definition: only arm against arm
        MetricSpec("kl_to_base", "drift from the base model (KL)", False, "nats"),
        # forgetting: the rise over the base model is what an arm lost on held-out text
        MetricSpec("heldout_ce", "held-out cross-entropy", False, "nats", vs_base=True),
    )
}


@dataclass(frozen=True)
class VerdictRow:
    """arm_a - arm_b on one metric. diff, ci and mdd are in the metric's display unit."""

    metric: str
    label: str
    unit: str
    arm_a: str
    arm_b: str
    diff: float
    ci_low: float
    ci_high: float
    p: float  # the sign-flip p-value
    p_holm: float  # Holm-adjusted over every row returned together
    n: int  # item pairs
    n_seeds: int
    items_per_seed: int | None  # when every seed has the same number of items
    mdd: float  # minimum detectable difference at 80% power; nan when undefined
    higher_is_better: bool | None
    direction: str  # "better", "worse", "higher", "lower" or "none" (not significant)
    significant: bool  # p_holm < alpha
    alpha: float
    scale: float  # display unit per raw unit (100 for points)
    n_dropped: int = 0  # matched items left out because a value was not finite
    stats: dict = field(default_factory=dict)  # PairedResult.to_dict(), raw units
    # several seeds: [{"seed", "n", "diff"}] per seed (display unit) and max - min of their diffs
    per_seed: list = field(default_factory=list)
    seed_spread: float = float("nan")
    # the method's level: seeds as the unit of replication (lab.evidence.seeds), display unit;
    # None below 3 seeds, with the reason in across_seeds_note. Holm runs over the rows'
    # across-seeds p-values separately from the item-level ones.
    across_seeds: dict | None = None
    across_seeds_note: str = ""
    flags: list = field(default_factory=list)  # sentences that qualify the row (stability)
    # 2 seeds or more: the per-seed variance and its parts, for planning (lab.evidence.plan)
    seed_variance: dict | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in out.items()
        }


def _as_table(records) -> dict[str, np.ndarray]:
    if isinstance(records, Mapping):
        return {k: np.asarray(v) for k, v in records.items()}
    rows = list(records)
    cols = ("arm", "seed", "metric", "item", "value")
    return {
        "arm": np.array([str(r["arm"]) for r in rows], dtype=str),
        "seed": np.array([int(r["seed"]) for r in rows], dtype=np.int64),
        "metric": np.array([str(r["metric"]) for r in rows], dtype=str),
        "item": np.array([str(r["item"]) for r in rows], dtype=str),
        "value": np.array([float(r["value"]) for r in rows], dtype=np.float64),
    } if rows else {c: np.array([]) for c in cols}  # fmt: skip


def _fold_seeds(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows of a seeded arm name (``lora#s1``) as the plain arm with that seed, so the seeds
    of one arm pool into one comparison (``lab.evidence.items`` writes them that way already)."""
    if len(table.get("arm", ())) == 0:
        return table
    names = np.unique(table["arm"]).tolist()
    split = {a: unseeded(a) for a in names}
    if all(seed is None for _, seed in split.values()):
        return table
    out = dict(table)
    out["arm"] = np.array([split[a][0] for a in table["arm"].tolist()], dtype=str)
    seeds = [split[a][1] for a in table["arm"].tolist()]
    out["seed"] = np.array(
        [s if t is None else t for s, t in zip(table["seed"].tolist(), seeds)], dtype=np.int64
    )
    return out


def default_pairs(arms: Iterable[str]) -> list[tuple[str, str]]:
    """Every BA-LoRA arm ("balora", "balora@...") against "lora" and "pissa" when present."""
    arms = list(dict.fromkeys(arms))
    out = []
    for a in arms:
        if a.partition("@")[0] == "balora":
            out += [(a, b) for b in ("lora", "pissa") if b in arms]
    return out


def compare_arms(
    records,
    metric_specs: Sequence[MetricSpec | str] | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    base_pairs: Sequence[tuple[str, str]] | None = None,
    *,
    confidence: float = 0.95,
    n_resamples: int = N_BOOT,
    seed: int = 0,
) -> list[VerdictRow]:
    """One verdict row per metric and comparison that has matching items.

    ``records``: the items table of ``lab.evidence.items.load_items`` (or a list of row dicts with
    arm, seed, metric, item, value). ``metric_specs``: specs or names of ``METRICS``; by
    default every known metric in the records. ``pairs``: (arm a, arm b) compared on every
    metric; by default :func:`default_pairs`. ``base_pairs``: compared on the metrics with
    ``vs_base`` only; by default every arm against "base" when the records have it. Holm's
    adjustment runs over all the rows returned; the intervals are per row (not adjusted), so
    one may exclude 0 while the adjusted p-value stays above alpha. Items whose value is not
    finite in either arm are left out and counted in ``n_dropped``. Rows go metric by metric,
    comparisons in order.
    """
    table = _fold_seeds(_as_table(records))
    arms = list(dict.fromkeys(table["arm"].tolist()))
    present = set(table["metric"].tolist())
    if metric_specs is None:
        specs = [s for name, s in METRICS.items() if name in present]
    else:
        specs = [METRICS[s] if isinstance(s, str) else s for s in metric_specs]
    pairs = default_pairs(arms) if pairs is None else [tuple(p) for p in pairs]
    if base_pairs is None:
        base_pairs = [(a, "base") for a in arms if a != "base"] if "base" in arms else []
    alpha = 1.0 - confidence

    found = []
    for spec in specs:
        todo = list(pairs) + [p for p in base_pairs if spec.vs_base and p not in pairs]
        for arm_a, arm_b in todo:
            a, b, seeds = paired(table, spec.name, arm_a, arm_b)
            ok = np.isfinite(a) & np.isfinite(b)  # an item an arm could not score is left out
            if not ok.any():
                continue
            res = paired_difference(
                a[ok], b[ok], strata=seeds[ok], confidence=confidence,
                n_resamples=n_resamples, seed=seed,
            )  # fmt: skip
            method = across_seeds(a[ok], b[ok], seeds[ok], confidence=confidence)
            found.append(
                (spec, arm_a, arm_b, seeds[ok], int((~ok).sum()), res, method, a[ok], b[ok])
            )
    adjusted = holm([f[5].p_value for f in found])
    # the across-seeds level gets its own Holm family: the rows that have a method result
    adjusted_seeds = holm([f[6][0].p if f[6][0] else float("nan") for f in found])
    rows = []
    for found_row, p_holm, p_seeds in zip(found, adjusted, adjusted_seeds):
        spec, arm_a, arm_b, seeds, dropped, res, (method, note), res_a, res_b = found_row
        _, counts = np.unique(seeds, return_counts=True)
        significant = bool(p_holm < alpha)
        direction = _direction(spec, res.diff) if significant else "none"
        k = spec.scale
        per_seed = [{"seed": s["stratum"], "n": s["n"], "diff": _scaled(s["diff"], k)}
                    for s in res.to_dict()["strata"]] if len(counts) > 1 else []  # fmt: skip
        diffs = [d["diff"] for d in per_seed if d["diff"] is not None]
        spread = max(diffs) - min(diffs) if len(diffs) > 1 else float("nan")
        rows.append(
            VerdictRow(
                metric=spec.name, label=spec.label, unit=spec.unit, arm_a=arm_a, arm_b=arm_b,
                diff=res.diff * k, ci_low=res.ci_low * k, ci_high=res.ci_high * k,
                p=res.p_value, p_holm=float(p_holm), n=res.n, n_seeds=len(counts),
                items_per_seed=int(counts[0]) if len(set(counts.tolist())) == 1 else None,
                mdd=res.mdd * k, higher_is_better=spec.higher_is_better, direction=direction,
                significant=significant, alpha=alpha, scale=k, n_dropped=dropped,
                stats=res.to_dict(), per_seed=per_seed, seed_spread=spread,
                across_seeds=method.to_dict(scale=k, p_holm=p_seeds) if method else None,
                across_seeds_note=note,
                seed_variance=seed_variance(res_a, res_b, seeds, scale=k),
            )
        )  # fmt: skip
    return rows


def _direction(spec: MetricSpec, diff: float) -> str:
    """The way a significant difference goes: better/worse, or higher/lower without a
    direction; "none" for a difference of 0."""
    if diff == 0:
        return "none"
    if spec.higher_is_better is None:
        return "higher" if diff > 0 else "lower"
    return "better" if (diff > 0) == spec.higher_is_better else "worse"


def _scaled(x: float | None, k: float) -> float | None:
    return None if x is None else x * k


def run_verdicts(
    run_dir, step: int | None = None, *, stability: bool = True, **kwargs
) -> list[VerdictRow]:
    """:func:`compare_arms` on the per-item records of a run directory at ``step`` (the latest
    eval point by default; the base model's rows come from step 0). ``stability``: flag a
    comparison whose sign changed over the earlier eval points (``lab.evidence.stability``)."""
    if stability:
        from lab.evidence.stability import stable_verdicts  # same package; it builds on this one

        return stable_verdicts(run_dir, step, **kwargs)[0]
    return compare_arms(load_items(run_dir, step), **kwargs)


def run_evidence(run_dir, step: int | None = None, *, bias_only: bool = False) -> dict | None:
    """The verdict rows of a run split into ``versus_arm`` (arm against arm) and
    ``versus_base`` (arm against the untouched base model), with ``over_training`` (each
    comparison at every eval point, ``lab.evidence.stability.over_training``), or None when the
    run has no per-item records. ``bias_only`` keeps the bias metrics alone."""
    from lab.evidence.stability import stable_verdicts  # same package; it builds on this one

    try:
        rows, series = stable_verdicts(run_dir, step)
    except FileNotFoundError:
        return None
    if bias_only:
        rows = [r for r in rows if METRICS[r.metric].vs_base]
        series = {k: v for k, v in series.items() if METRICS[k[0]].vs_base}
    return {
        "versus_arm": [r for r in rows if r.arm_b != "base"],
        "versus_base": [r for r in rows if r.arm_b == "base"],
        "over_training": series,
    }

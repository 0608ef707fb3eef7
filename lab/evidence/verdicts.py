"""Verdicts: arm against arm (and arm against the base model), metric by metric, in words.

``compare_arms(records, ...)`` pairs the per-item records of two arms on each metric (see
``lab.evidence.items``), computes the paired difference a - b with ``lab.evidence.stats.paired_difference``
(seed-stratified when the run has several seeds: items are paired within a seed, balora#s1
against lora#s1, and pooled over the seeds with the resampling kept inside each seed; each
row also carries the difference of every seed and their spread), adjusts the p-values of
every row it returns together with Holm, and says whether the difference is better or worse
given the metric's direction. ``verdict_text(row)`` phrases one row for a classroom from its numbers alone, and
always with n; ``run_verdicts(run_dir)`` does it all for a run directory. Rates are in
percentage points, log-likelihoods and KL in nats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from lab.arms import unseeded
from lab.evidence import words
from lab.evidence.items import load_items, paired
from lab.evidence.seeds import across_seeds, seed_variance
from lab.evidence.stats import N_BOOT, holm, paired_difference
from lab.evidence.words import ARM_NAMES, arm_display  # noqa: F401  (re-exported)

_num, _p, _sentence = words.num, words.p_text, words.sentence
_DIRECTION_WORDS = words.DIRECTION_WORDS


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


BASE_SECTION = "Against the untouched base model (bias)"


def evidence_sections(ev: Mapping[str, list]) -> list[tuple[str | None, list[str], list[str]]]:
    """What every verdict view shows of :func:`run_evidence`, in order: per section (arm
    against arm, untitled; then :data:`BASE_SECTION`), its title, its :func:`in_short`
    sentences and its :func:`verdict_text` lines. Sections without rows are left out."""
    return [
        (title, in_short(rows), [verdict_text(r) for r in rows])
        for title, rows in ((None, ev["versus_arm"]), (BASE_SECTION, ev["versus_base"]))
        if rows
    ]


def learning_rates_text(summary: Mapping | None) -> str | None:
    """How the run's arms got their learning rates, from its ``summary.json``: tuned on a
    validation split (with the rates chosen), one fixed rate for all, or a fixed rate per arm.
    A verdict between arms depends on it, so it stands beside them. None when the summary does
    not record the arms' rates."""
    summary = summary if isinstance(summary, Mapping) else {}
    specs = summary.get("arm_specs")
    rates: dict[str, set[float]] = {}
    for spec in specs.values() if isinstance(specs, Mapping) else ():
        lr = spec.get("lr") if isinstance(spec, Mapping) else None
        good = isinstance(lr, int | float) and not isinstance(lr, bool) and math.isfinite(lr)
        if good and lr > 0 and "arm" in spec:
            rates.setdefault(arm_display(str(spec["arm"])), set()).add(float(lr))
    if not rates:
        return None  # not recorded, or a summary edited by hand into something else
    each = ", ".join(f"{name} {'/'.join(f'{x:g}' for x in sorted(v))}" for name, v in rates.items())
    tuning = summary.get("lr_tuning")
    if isinstance(tuning, Mapping) and tuning:
        n_val = next((t.get("n_val") for t in tuning.values() if isinstance(t, Mapping)), None)
        rows = f" on {n_val} validation rows" if n_val else " on a validation split"
        return (
            f"Learning rates: tuned per arm{rows} carved from the training rows (never the test "
            f"split): {each}."
        )
    every = {x for v in rates.values() for x in v}
    if len(every) == 1:
        return (
            f"Learning rates: one fixed rate for every arm ({next(iter(every)):g}), not tuned; "
            "tuned rates (train.lr_mode: tuned) can change the answer."
        )
    return f"Learning rates: fixed per arm, not tuned: {each}."


def markdown_table(rows: Sequence[VerdictRow]) -> str:
    """The rows as a Markdown table: metric, comparison, the difference in these runs
    [95% CI] and its Holm p, the difference across seeds [95% CI] and its Holm p (or "none, k
    seeds"), n (and a warning where a significant difference changes sign between the seeds)."""
    out = [
        "| metric | comparison | in these runs [95% CI] | p (Holm) | across seeds [95% CI], "
        "p (Holm) | n |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = (
            f" [{_num(r.ci_low, r.unit)}, {_num(r.ci_high, r.unit)}]"
            if math.isfinite(r.ci_low) and math.isfinite(r.ci_high)
            else ""
        )
        sign = "+" if r.diff >= 0 else "−"
        warn = "; the seeds disagree in sign" if r.significant and seeds_disagree(r) else ""
        out.append(
            f"| {r.label} ({r.unit}) | {arm_display(r.arm_a)} − {arm_display(r.arm_b)} "
            f"| {sign}{_num(abs(r.diff), r.unit)}{ci} | {_p(r.p_holm).removeprefix('p = ')} "
            f"| {words.across_cell(r.to_dict())} | {sample_size(r)}{warn} |"
        )
    return "\n".join(out)


def sample_size(row: VerdictRow | Mapping) -> str:
    """How many items stand behind a row: "3 seeds × 200 items", "2 seeds, 31 items in all"
    or "n = 24, 1 seed"."""
    r = row.to_dict() if isinstance(row, VerdictRow) else row
    if r["n_seeds"] > 1:
        if r.get("items_per_seed"):
            return f"{r['n_seeds']} seeds × {r['items_per_seed']} items"
        return f"{r['n_seeds']} seeds, {r['n']} items in all"
    return f"n = {r['n']}, 1 seed"


def seed_diffs(row: VerdictRow | Mapping) -> list[dict]:
    """The row's per-seed entries ({"seed", "n", "diff"}, display unit) whose difference is a
    number; empty for a row of one seed."""
    r = row.to_dict() if isinstance(row, VerdictRow) else row
    return [
        d
        for d in r.get("per_seed") or []
        if isinstance(d.get("diff"), (int, float)) and math.isfinite(d["diff"])
    ]


def seed_text(row: VerdictRow | Mapping) -> str:
    """The difference of each seed and their spread, e.g. "per seed +4.1, +3.0, +5.2 (seeds
    0, 1, 2; spread 2.2 points)"; "" for one seed."""
    r = row.to_dict() if isinstance(row, VerdictRow) else row
    per_seed = seed_diffs(r)
    if len(per_seed) < 2:
        return ""
    unit = r["unit"]
    diffs = ", ".join(
        f"{'+' if d['diff'] >= 0 else '-'}{_num(abs(d['diff']), unit)}" for d in per_seed
    )
    seeds = ", ".join(str(d["seed"]) for d in per_seed)
    spread = r.get("seed_spread")
    finite = spread is not None and math.isfinite(spread)
    tail = f"; spread {_num(spread, unit)} {unit}" if finite else ""
    return f"per seed {diffs} (seeds {seeds}{tail})"


def seeds_disagree(row: VerdictRow | Mapping) -> bool:
    """True when one seed's difference is above 0 and another's below: the paired items of each
    seed give a tight interval, but which arm wins then depends on the training run."""
    diffs = [d["diff"] for d in seed_diffs(row)]
    return any(d > 0 for d in diffs) and any(d < 0 for d in diffs)


SEEDS_DISAGREE = (
    "but the seeds disagree: the difference changes sign from one seed to another, so this "
    "holds for these training runs, not in general; add seeds before trusting it"
)


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _span(rs: Sequence[Mapping]) -> str:
    """The sample sizes behind a comparison's rows in one phrase: "2 seeds × 16 to 154 items",
    "1 seed, n = 24" or "3 seeds, 40 to 600 items in all"."""
    seeds = sorted({r["n_seeds"] for r in rs})
    seed_word = "/".join(map(str, seeds)) + (" seeds" if seeds != [1] else " seed")
    per_seed = [r.get("items_per_seed") for r in rs]
    if seeds != [1] and all(per_seed):
        lo, hi = min(per_seed), max(per_seed)
        return f"{seed_word} × {lo if lo == hi else f'{lo} to {hi}'} items"
    lo, hi = min(r["n"] for r in rs), max(r["n"] for r in rs)
    n = f"{lo}" if lo == hi else f"{lo} to {hi}"
    return f"{seed_word}, n = {n}" if seeds == [1] else f"{seed_word}, {n} items in all"


def in_short(rows: Sequence[VerdictRow | Mapping]) -> list[str]:
    """One sentence per comparison (arm a against arm b, in the rows' order), from the rows'
    numbers only: on how many of its metrics a difference was found (with the sample sizes
    behind them) and which way each went, the metrics whose seeds disagree in sign marked, e.g.
    "BA-LoRA against LoRA: a difference on 3 of 5 metrics (2 seeds × 16 to 64 items). BA-LoRA
    did better on clean accuracy and minority-class recall; was lower on drift from the base
    model (KL) (the seeds disagree). No difference detectable on the other 2." The verdict
    lines below it give each one's size, CI, p and n."""
    pairs: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        r = row.to_dict() if isinstance(row, VerdictRow) else dict(row)
        pairs.setdefault((r["arm_a"], r["arm_b"]), []).append(r)
    out = []
    for (arm_a, arm_b), rs in pairs.items():
        a, b = arm_display(arm_a), arm_display(arm_b)
        found = [r for r in rs if r["significant"] and r["direction"] != "none"]
        total = f"{len(rs)} metric{'s' if len(rs) != 1 else ''}"
        n = _span(rs)
        method = words.across_short(rs)
        if not found:
            which = rs[0]["label"] if len(rs) == 1 else f"any of its {total}"
            out.append(
                f"{a} against {b}: {IN_THESE_RUNS}, no difference detectable on {which} ({n}). "
                f"{method}"
            )
            continue
        groups: dict[str, list[str]] = {}
        for r in found:
            mark = " (the seeds disagree)" if seeds_disagree(r) else ""
            groups.setdefault(r["direction"], []).append(f"{r['label']}{mark}")
        ways = "; ".join(f"{_DIRECTION_WORDS[d]} {_and(labels)}" for d, labels in groups.items())
        rest = len(rs) - len(found)
        tail = f" No difference detectable on the other {rest}." if rest else ""
        out.append(
            f"{a} against {b}: {IN_THESE_RUNS}, a difference on {len(found)} of {total} ({n}). "
            f"{a} {ways}.{tail} {method}"
        )
    return out


def verdict_text(row: VerdictRow | Mapping) -> str:
    """One row in words, from its numbers only; never without n. E.g. "BA-LoRA did better than
    LoRA on clean accuracy: 4.1 points [1.2, 7.0] more, p = 0.006 (Holm), per seed +3.0, +5.2,
    +4.1 (seeds 0, 1, 2; spread 2.2 points), 3 seeds × 200 items" or "No difference detectable between BA-LoRA and LoRA on clean accuracy: +0.8 points
    [-3.3, 5.0], p = 0.71 (Holm); this run could only see differences above 9.0 points
    (n = 24, 1 seed)". A difference found while the seeds disagree in sign says so
    (:func:`seeds_disagree`)."""
    r = row.to_dict() if isinstance(row, VerdictRow) else dict(row)
    a, b = arm_display(r["arm_a"]), arm_display(r["arm_b"])
    unit, label = r["unit"], r["label"]
    diff, lo, hi = r["diff"], r.get("ci_low"), r.get("ci_high")
    has_ci = lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi)
    n_text = sample_size(r)
    if seed_text(r):  # several seeds: each seed's difference before the sample size
        n_text = f"{seed_text(r)}, {n_text}"
    p_text = f"{_p(r['p_holm'])} (Holm)"
    if r["significant"] and r["direction"] != "none":
        ci = ""
        if has_ci:
            mag_lo, mag_hi = (lo, hi) if diff > 0 else (-hi, -lo)
            ci = f" [{_num(mag_lo, unit)}, {_num(mag_hi, unit)}]"
        amount = f"{_num(abs(diff), unit)} {unit}{ci} {'more' if diff > 0 else 'less'}"
        if r["direction"] in ("better", "worse"):
            head = f"{a} did {r['direction']} than {b} on {label} {IN_THESE_RUNS}"
        else:
            head = f"{a} had a {r['direction']} {label} than {b} {IN_THESE_RUNS}"
        caveat = f"; {SEEDS_DISAGREE}" if seeds_disagree(r) else ""
        return _with_levels(f"{head}: {amount}, {p_text}, {n_text}{caveat}", r)
    stats = r.get("stats") or {}
    if diff == 0 and stats.get("ci_method") == "degenerate":
        return _with_levels(
            f"no difference between {a} and {b} on {label} {IN_THESE_RUNS}: equal on every "
            f"item ({n_text})",
            r,
        )
    ci = f" [{_num(lo, unit)}, {_num(hi, unit)}]" if has_ci else ""
    sign = "+" if diff >= 0 else "-"
    head = (
        f"no difference detectable {IN_THESE_RUNS} between {a} and {b} on {label}: "
        f"{sign}{_num(abs(diff), unit)}"
    )
    measured = f"{head} {unit}{ci}, {p_text}"
    mdd = r.get("mdd")
    if mdd is not None and math.isfinite(mdd):
        return _with_levels(
            f"{measured}; these runs could only see differences above {_num(mdd, unit)} {unit} "
            f"({n_text})",
            r,
        )
    return _with_levels(
        f"{measured}; too few items to say how large a difference it could see ({n_text})", r
    )


IN_THESE_RUNS = "in these runs"


def _with_levels(item_level: str, r: Mapping) -> str:
    """The item-level sentence, then the across-seeds one, then the row's flags."""
    out = f"{_sentence(item_level)}. {words.across_text(r)}"
    flags = [f for f in r.get("flags") or [] if isinstance(f, str) and f]
    return out + "".join(f". {_sentence(f)}" for f in flags) + "."

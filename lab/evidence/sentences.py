"""Verdict rows in words: the sentences, the "In short" lines, the Markdown table and the
sections every verdict view shows. Built from the numbers of :class:`VerdictRow` (or its dict)
alone; the rows themselves come from :mod:`lab.evidence.verdicts`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lab.evidence import words
from lab.evidence.verdicts import VerdictRow
from lab.evidence.words import arm_display

_num, _p, _sentence = words.num, words.p_text, words.sentence
_DIRECTION_WORDS = words.DIRECTION_WORDS


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

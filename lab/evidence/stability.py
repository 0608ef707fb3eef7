"""Stability over training: each comparison at every eval point, and a flag where its sign
changed.

Every eval point of a run writes its per-item records (``items/step_NNNNNN.csv``), so each
comparison of the final verdicts can be computed at each step as well. :func:`over_training`
gives, per (metric, arm a, arm b), the difference and its 95% interval "in these runs" at each
step (and the across-seeds one where there are 3 seeds or more). :func:`sign_change` flags a
comparison whose interval lay above 0 at one step and below 0 at another (a difference found
in both directions during training, not noise around 0), and :func:`with_stability` names
that in the final verdict's sentence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from lab.evidence.items import item_steps, load_items
from lab.evidence.verdicts import VerdictRow, compare_arms
from lab.evidence.words import finite, signed

N_RESAMPLES = 500  # bootstrap resamples per step: an interval per eval point, not a verdict

Key = tuple[str, str, str]  # (metric, arm a, arm b)


def over_training(run_dir, *, n_resamples: int = N_RESAMPLES, **kwargs) -> dict[Key, list[dict]]:
    """``{(metric, arm_a, arm_b): [{"step", "diff", "ci_low", "ci_high", "significant",
    "across_seeds"}, ...]}`` over the run's eval steps, ascending, in the display unit.
    ``kwargs`` go to ``compare_arms`` (metric_specs, pairs, base_pairs, ...). A step whose
    table has nothing to compare adds no point."""
    series: dict[Key, list[dict]] = {}
    for step in item_steps(run_dir):
        rows = compare_arms(load_items(run_dir, step), n_resamples=n_resamples, **kwargs)
        for r in rows:
            series.setdefault((r.metric, r.arm_a, r.arm_b), []).append(point(r, step))
    return series


def point(row: VerdictRow, step: int) -> dict:
    """One eval point of a comparison, from its verdict row at that step."""
    d = row.to_dict()
    return {"step": int(step), "unit": d["unit"], "label": d["label"], "diff": d["diff"],
            "ci_low": d["ci_low"], "ci_high": d["ci_high"], "significant": d["significant"],
            "across_seeds": d["across_seeds"]}  # fmt: skip


def sign_change(points: Sequence[Mapping]) -> dict | None:
    """``{"above": point, "below": point}`` when one step's interval lies wholly above 0 and
    another's wholly below (the first step of each), else None."""
    above = [p for p in points if finite(p.get("ci_low")) and p["ci_low"] > 0]
    below = [p for p in points if finite(p.get("ci_high")) and p["ci_high"] < 0]
    if not above or not below:
        return None
    return {"above": above[0], "below": below[0]}


def flag_text(change: Mapping) -> str:
    """The flag of :func:`sign_change` in words, e.g. "during training the sign changed in
    these runs: +6.0 points [1.2, 10.8] at step 8, −4.1 points [−7.9, −0.3] at step 16"."""
    first, second = sorted((change["above"], change["below"]), key=lambda p: p["step"])

    def at(p):
        unit = p["unit"]
        ci = f"[{signed(p['ci_low'], unit)}, {signed(p['ci_high'], unit)}]"
        return f"{signed(p['diff'], unit)} {unit} {ci} at step {p['step']}"

    return f"during training the sign changed in these runs: {at(first)}, {at(second)}"


def with_stability(rows: Sequence[VerdictRow], series: Mapping[Key, list]) -> list[VerdictRow]:
    """The rows, each whose comparison changed sign during training flagged with
    :func:`flag_text` (``VerdictRow.flags``); the others as they were."""
    out = []
    for r in rows:
        change = sign_change(series.get((r.metric, r.arm_a, r.arm_b), []))
        if change is None:
            out.append(r)
            continue
        out.append(dataclasses.replace(r, flags=[*r.flags, flag_text(change)]))
    return out


def stable_verdicts(run_dir, step: int | None = None, **kwargs) -> tuple[list[VerdictRow], dict]:
    """(the verdict rows of ``step`` (the last by default) with their stability flags, the
    series of :func:`over_training`) of a run directory."""
    rows = compare_arms(load_items(run_dir, step), **kwargs)
    series = over_training(run_dir, **{"n_resamples": N_RESAMPLES, **kwargs})
    if step is not None:
        series = {k: [p for p in v if p["step"] <= step] for k, v in series.items()}
    return with_stability(rows, series), series

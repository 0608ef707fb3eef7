"""Planning: how many seeds a comparison needs to detect a difference across seeds.

The across-seeds test (``lab.evidence.seeds``) is a one-sample t-test on k per-seed
differences, each with variance V = tau^2 + sigma^2 / n (between seeds, plus the item noise of
one seed of n items). Its power at a true difference delta is that of the noncentral t:
P(|T| > t_{1-alpha/2, k-1}) with T ~ t(k - 1, nc = delta sqrt(k / V)). :func:`seeds_needed`
is the smallest k (3 at least, the fewest with an across-seeds verdict) whose power reaches
80%; V comes from the run's own seeds (``VerdictRow.seed_variance``), so a plan made from 2
seeds is a rough guide: their spread has one degree of freedom.

``python -m lab verdicts RUN --plan [--effect X]`` puts :func:`plan_text` under each row;
:func:`seeds_for_run` gives the same numbers for the Setup tab (from a run made before with
the same preset, or the shipped example).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from scipy import stats

from lab.evidence.items import load_items
from lab.evidence.seeds import MIN_SEEDS
from lab.evidence.verdicts import compare_arms
from lab.evidence.words import arm_display, finite, num

POWER = 0.8
MAX_SEEDS = 1000  # planning stops here: past this, the answer is "more than 1,000"


def t_power(effect: float, var: float, k: int, *, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample t-test on ``k`` per-seed differences of variance
    ``var`` when their true mean is ``effect``."""
    if k < 2:
        return float("nan")
    df = k - 1
    nc = abs(effect) * math.sqrt(k / var)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_needed(
    effect: float, var: float, *, alpha: float = 0.05, power: float = POWER
) -> int | None:
    """The smallest k >= 3 with :func:`t_power` >= ``power``; None past :data:`MAX_SEEDS`.
    ``var`` = 0 (seeds that do not vary at all) needs the fewest seeds there are: 3."""
    if not (finite(effect) and finite(var)) or effect == 0 or var < 0:
        raise ValueError(f"planning needs a nonzero effect and a variance, got {effect}, {var}")
    if var == 0:
        return MIN_SEEDS
    k = MIN_SEEDS
    while t_power(effect, var, k, alpha=alpha) < power:
        k = k + 1 if k < 64 else int(k * 1.1)
        if k > MAX_SEEDS:
            return None
    if k > 64:  # the coarse steps overshot: walk back to the smallest k that is enough
        while k - 1 >= MIN_SEEDS and t_power(effect, var, k - 1, alpha=alpha) >= power:
            k -= 1
    return k


def plan_row(row: Mapping, effect: float | None = None) -> dict:
    """The plan of one verdict row (a ``VerdictRow.to_dict()``): ``{"effect", "seeds",
    "items_per_seed", "var_seeds", "between", "within", "note"}`` in the row's unit.
    ``effect``: the difference to detect; by default the row's own size (across seeds where
    there is one, else in these runs). ``seeds`` is None with ``note`` saying why."""
    sv = row.get("seed_variance")
    x = row.get("across_seeds") if isinstance(row.get("across_seeds"), Mapping) else None
    size = effect if effect is not None else (x["diff"] if x else row.get("diff"))
    out = {"effect": None if size is None else abs(float(size)), "seeds": None, "note": ""}
    if not isinstance(sv, Mapping):
        out["note"] = "one seed: the spread between seeds is unknown, so no plan"
        return out
    out.update({k: sv[k] for k in ("items_per_seed", "var_seeds", "between", "within")})
    if not finite(size) or size == 0:
        out["note"] = "a difference of 0 cannot be planned for; give one with --effect"
        return out
    alpha = row.get("alpha", 0.05)
    out["seeds"] = seeds_needed(float(size), float(sv["var_seeds"]), alpha=alpha)
    if out["seeds"] is None:
        out["note"] = f"more than {MAX_SEEDS} seeds"
    elif sv["n_seeds"] < 3:
        out["note"] = f"from the spread of {sv['n_seeds']} seeds only: a rough guide"
    return out


def plan_text(row: Mapping, plan: Mapping) -> str:
    """A plan in words, e.g. "Plan: to detect 4.1 points across seeds with 80% power takes
    about 7 seeds of 200 items (between-seed sd 3.2 points, item noise 1.1 points a seed)"."""
    unit = row["unit"]
    if plan.get("effect") is None or "var_seeds" not in plan:
        return f"Plan: {plan['note']}."
    head = f"Plan: to detect {num(plan['effect'], unit)} {unit} across seeds with 80% power"
    parts = (
        f"between-seed sd {num(math.sqrt(plan['between']), unit)} {unit}, item noise "
        f"{num(math.sqrt(plan['within']), unit)} {unit} a seed"
    )
    if plan["seeds"] is None:
        return f"{head} takes {plan['note'] or 'no plan'} ({parts})."
    note = f"; {plan['note']}" if plan["note"] else ""
    return f"{head} takes about {plan['seeds']} seeds of {plan['items_per_seed']} items ({parts}{note})."


def seeds_for_run(run_dir, effect: float | None = None, **kwargs) -> list[dict]:
    """The seeds each comparison of a run's verdicts would need: ``[{"metric", "label",
    "comparison", "unit", **plan_row(...)}]``, from that run's observed variances. The Setup
    tab shows these for a preset from a run made with it before (or the shipped example).
    ``kwargs`` go to ``compare_arms`` (metric_specs, pairs, ...)."""
    rows = compare_arms(load_items(run_dir), **kwargs)
    out = []
    for r in rows:
        d = r.to_dict()
        comparison = f"{arm_display(r.arm_a)} − {arm_display(r.arm_b)}"
        out.append({"metric": r.metric, "label": r.label, "comparison": comparison,
                    "unit": r.unit, **plan_row(d, effect)})  # fmt: skip
    return out

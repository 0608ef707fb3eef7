"""The words of the verdicts: arm names, numbers in their unit, and the across-seeds level.

Every verdict says at which level it speaks: "in these runs" (the items of the seeds that were
trained, ``lab.evidence.stats``) or "across k seeds" (the method, ``lab.evidence.seeds``).
:func:`across_text` phrases a row's across-seeds level and :func:`across_short` a comparison's,
from the numbers of the row dicts alone (``VerdictRow.to_dict()``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lab.arms import ARM_NAMES, unseeded

DIRECTION_WORDS = {
    "better": "did better on",
    "worse": "did worse on",
    "higher": "was higher on",
    "lower": "was lower on",
}


def arm_display(arm: str) -> str:
    """The name a classroom reads: BA-LoRA for "balora", "BA-LoRA (0.05,0.005,0.005)" for
    "balora@0.05,0.005,0.005", "LoRA (seed 1)" for "lora#s1", the base model for "base"."""
    plain, seed = unseeded(arm)
    head, _, rest = plain.partition("@")
    name = ARM_NAMES.get(head, head)
    name = f"{name} ({rest})" if rest else name
    return name if seed is None else f"{name} (seed {seed})"


def num(x: float, unit: str) -> str:
    if unit == "points":
        return f"{x:.1f}"
    return f"{x:.2g}" if abs(x) < 0.1 else f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def signed(x: float, unit: str) -> str:
    return f"{'+' if x >= 0 else '−'}{num(abs(x), unit)}"


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def and_list(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def across_direction(r: Mapping) -> str:
    """ "better", "worse", "higher", "lower" for a row whose across-seeds difference is
    significant after Holm at its level; "none" otherwise or when there is none."""
    x = r.get("across_seeds")
    if not isinstance(x, Mapping) or x.get("p_holm") is None or x.get("diff") is None:
        return "none"
    if not x["p_holm"] < r.get("alpha", 0.05) or x["diff"] == 0:
        return "none"
    if r.get("higher_is_better") is None:
        return "higher" if x["diff"] > 0 else "lower"
    return "better" if (x["diff"] > 0) == r["higher_is_better"] else "worse"


def across_text(r: Mapping) -> str:
    """The across-seeds level of one row in words, e.g. "Across 5 seeds (the method): BA-LoRA
    did better than LoRA by 4.1 points [0.9, 7.3], p = 0.02 (Holm)", "Across 5 seeds (the
    method): no difference detectable, +0.4 points [−8.0, 8.8], p = 0.81 (Holm)" or "Across
    seeds: no verdict on the method; 2 seeds cannot separate the method from the runs ..."."""
    x = r.get("across_seeds")
    if not isinstance(x, Mapping):
        note = r.get("across_seeds_note") or "no across-seeds result"
        return f"Across seeds: no verdict on the method; {note}"
    unit, a, b = r["unit"], arm_display(r["arm_a"]), arm_display(r["arm_b"])
    head = f"Across {x['n_seeds']} seeds (the method)"
    lo, hi = x.get("ci_low"), x.get("ci_high")
    p = f"{p_text(x['p_holm'])} (Holm)" if x.get("p_holm") is not None else "no p-value"
    way = across_direction(r)
    if way == "none":
        ci = (
            f" [{signed(lo, unit)}, {signed(hi, unit)}]"
            if lo is not None and hi is not None
            else ""
        )
        return f"{head}: no difference detectable, {signed(x['diff'], unit)} {unit}{ci}, {p}"
    mag_lo, mag_hi = (lo, hi) if x["diff"] > 0 else (-hi, -lo)
    amount = f"{num(abs(x['diff']), unit)} {unit} [{num(mag_lo, unit)}, {num(mag_hi, unit)}]"
    if way in ("better", "worse"):
        return f"{head}: {a} did {way} than {b} by {amount}, {p}"
    return f"{head}: {a} was {way} than {b} on {r['label']} by {amount}, {p}"


def across_short(rs: Sequence[Mapping]) -> str:
    """The across-seeds level of one comparison's rows in one sentence."""
    with_result = [r for r in rs if isinstance(r.get("across_seeds"), Mapping)]
    if not with_result:
        return f"Across seeds: no verdict on the method; {rs[0].get('across_seeds_note') or ''}."
    k = sorted({r["across_seeds"]["n_seeds"] for r in with_result})
    head = f"Across {'/'.join(map(str, k))} seeds (the method)"
    total = f"{len(with_result)} metric{'s' if len(with_result) != 1 else ''}"
    found = [r for r in with_result if across_direction(r) != "none"]
    if not found:
        which = with_result[0]["label"] if len(with_result) == 1 else f"any of its {total}"
        return f"{head}: no difference detectable on {which}."
    groups: dict[str, list[str]] = {}
    for r in found:
        groups.setdefault(across_direction(r), []).append(r["label"])
    a = arm_display(rs[0]["arm_a"])
    ways = "; ".join(f"{DIRECTION_WORDS[d]} {and_list(labels)}" for d, labels in groups.items())
    return f"{head}: a difference on {len(found)} of {total}; {a} {ways}."


def across_cell(r: Mapping) -> str:
    """The across-seeds level of a row in a table cell: "+4.1 [0.9, 7.3], p = 0.02" or
    "none (2 seeds)"."""
    x = r.get("across_seeds")
    if not isinstance(x, Mapping):
        return f"none ({r['n_seeds']} seed{'s' if r['n_seeds'] != 1 else ''})"
    unit = r["unit"]
    p = p_text(x["p_holm"]).removeprefix("p = ") if x.get("p_holm") is not None else "–"
    return f"{signed(x['diff'], unit)} [{signed(x['ci_low'], unit)}, {signed(x['ci_high'], unit)}], {p}"


def finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

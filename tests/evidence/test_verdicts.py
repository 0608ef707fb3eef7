"""Verdict rows and their sentences from planted per-item records; the forest plot."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from lab.evidence import words
from lab.evidence.items import load_items
from lab.evidence.seeds import no_result_note
from lab.evidence.sentences import (
    SEEDS_DISAGREE,
    in_short,
    markdown_table,
    seeds_disagree,
    verdict_text,
)
from lab.evidence.stats import holm
from lab.evidence.verdicts import METRICS, MetricSpec, arm_display, compare_arms, default_pairs


def _records(values: dict[tuple[str, int], dict[str, np.ndarray]]) -> list[dict]:
    """Row dicts from {(arm, seed): {metric: values per item}}."""
    rows = []
    for (arm, seed), metrics in values.items():
        for metric, vals in metrics.items():
            for i, v in enumerate(vals):
                rows.append({"arm": arm, "seed": seed, "metric": metric, "item": f"q{i}", "value": float(v)})  # fmt: skip
    return rows


def _planted(seed=0, n=200, seeds=(0, 1, 2)):
    """BA-LoRA answers ~12 points more items than LoRA and prefers stereotypes ~15 points less
    often; PiSSA is LoRA's twin with its own noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in seeds:
        hard = rng.random(n)  # item difficulty shared by the arms of one seed
        stereo = rng.random(n)
        for arm, acc, pref in (("lora", 0.55, 0.65), ("pissa", 0.55, 0.65), ("balora", 0.67, 0.50)):
            out[(arm, s)] = {
                "accuracy": (hard < acc + rng.normal(0, 0.05, n)).astype(float),
                "stereo_pref": (stereo < pref + rng.normal(0, 0.05, n)).astype(float),
            }
    return out


def test_planted_difference_gives_a_significant_verdict_with_its_numbers():
    values = _planted()
    rows = compare_arms(_records(values), ["accuracy", "stereo_pref"])
    assert [(r.metric, r.arm_a, r.arm_b) for r in rows] == [
        ("accuracy", "balora", "lora"),
        ("accuracy", "balora", "pissa"),
        ("stereo_pref", "balora", "lora"),
        ("stereo_pref", "balora", "pissa"),
    ]
    acc = rows[0]
    truth = np.mean(
        [values[("balora", s)]["accuracy"] - values[("lora", s)]["accuracy"] for s in (0, 1, 2)]
    )
    assert acc.diff == pytest.approx(100 * truth)
    assert acc.n == 600 and acc.n_seeds == 3 and acc.items_per_seed == 200
    assert acc.significant and acc.direction == "better" and acc.ci_low > 0
    assert [s["stratum"] for s in acc.stats["strata"]] == [0, 1, 2]  # seed-stratified
    text = verdict_text(acc)
    assert text.startswith("BA-LoRA did better than LoRA on clean accuracy in these runs: ")
    assert f"{acc.diff:.1f} points [{acc.ci_low:.1f}, {acc.ci_high:.1f}] more" in text
    assert "(Holm)" in text and "3 seeds × 200 items. Across 3 seeds (the method): " in text
    pref = rows[2]
    assert pref.diff < 0 and pref.direction == "better"  # lower stereotype preference is better
    text = verdict_text(pref)
    assert f"{-pref.diff:.1f} points [{-pref.ci_high:.1f}, {-pref.ci_low:.1f}] less" in text
    p = re.search(r"p (?:=|<) ([0-9.]+) \(Holm\)", text)
    assert p and (float(p.group(1)) == pytest.approx(pref.p_holm, rel=0.05) or pref.p_holm < 0.001)
    # every number in the sentence changes with the data: scale the planted gap down
    smaller = _planted(seed=1)
    for s in (0, 1, 2):
        smaller[("balora", s)]["accuracy"] = smaller[("lora", s)]["accuracy"].copy()
        smaller[("balora", s)]["accuracy"][:30] = 1.0
    other = compare_arms(_records(smaller), ["accuracy"])[0]
    assert other.diff != acc.diff and verdict_text(other) != verdict_text(acc)


def test_a_difference_whose_sign_changes_between_seeds_says_so():
    """Seed 0: BA-LoRA collapses (far below LoRA); seed 1: slightly above. The pooled verdict is
    significant, and its sentence says the seeds disagree; seeds that agree do not get it."""
    rng = np.random.default_rng(5)
    lora0, lora1 = (rng.random(64) < 0.6).astype(float), (rng.random(64) < 0.9).astype(float)
    ba0, ba1 = np.zeros(64), lora1.copy()
    ba1[np.flatnonzero(lora1 == 0)[:3]] = 1.0  # three more right than LoRA on seed 1
    values = {
        ("lora", 0): {"accuracy": lora0}, ("balora", 0): {"accuracy": ba0},
        ("lora", 1): {"accuracy": lora1}, ("balora", 1): {"accuracy": ba1},
    }  # fmt: skip
    row = compare_arms(_records(values), ["accuracy"], pairs=[("balora", "lora")])[0]
    per_seed = [d["diff"] for d in row.per_seed]
    assert per_seed[0] < 0 < per_seed[1] and row.significant and row.direction == "worse"
    assert seeds_disagree(row)
    text = verdict_text(row)
    assert text.startswith("BA-LoRA did worse than LoRA on clean accuracy in these runs: ")
    assert f"2 seeds × 64 items; {SEEDS_DISAGREE}. Across seeds: no verdict on the method" in text
    assert markdown_table([row]).endswith("| 2 seeds × 64 items; the seeds disagree in sign |")
    values[("balora", 1)] = {"accuracy": np.zeros(64)}  # now both seeds lose: no caveat
    agree = compare_arms(_records(values), ["accuracy"], pairs=[("balora", "lora")])[0]
    assert not seeds_disagree(agree) and SEEDS_DISAGREE not in verdict_text(agree)
    assert "2 seeds × 64 items. Across seeds: no verdict" in verdict_text(agree)
    assert markdown_table([agree]).endswith("| 2 seeds × 64 items |")


def test_in_short_counts_the_differences_of_each_comparison_from_its_rows():
    values = _planted()
    rows = compare_arms(_records(values), ["accuracy", "stereo_pref"])
    acc, pref = rows[0].label, rows[2].label
    method = [
        words.across_short([r.to_dict() for r in rows if r.arm_b == b]) for b in ("lora", "pissa")
    ]
    assert all(m.startswith("Across 3 seeds (the method): ") for m in method)
    assert in_short(rows) == [
        f"BA-LoRA against LoRA: in these runs, a difference on 2 of 2 metrics (3 seeds × 200 items). BA-LoRA did better on {acc} and {pref}. {method[0]}",
        f"BA-LoRA against PiSSA: in these runs, a difference on 2 of 2 metrics (3 seeds × 200 items). BA-LoRA did better on {acc} and {pref}. {method[1]}",
    ]  # fmt: skip
    for s in (0, 1, 2):  # BA-LoRA's stereotype answers become LoRA's own: nothing to find there
        values[("balora", s)]["stereo_pref"] = values[("lora", s)]["stereo_pref"].copy()
    rows = compare_arms(_records(values), ["accuracy", "stereo_pref"], pairs=[("balora", "lora")])
    assert in_short(rows) == [
        f"BA-LoRA against LoRA: in these runs, a difference on 1 of 2 metrics (3 seeds × 200 "
        f"items). BA-LoRA did better on {acc}. No difference detectable on the other 1. "
        + words.across_short([r.to_dict() for r in rows])
    ]
    rows = compare_arms(_records(values), ["stereo_pref"], pairs=[("balora", "lora")])
    assert in_short(rows) == [
        f"BA-LoRA against LoRA: in these runs, no difference detectable on {pref} (3 seeds × 200 "
        "items). Across seeds: no verdict on the method; every one of the 3 seeds gave the same "
        "difference (0): no spread between seeds to build an interval from."
    ]
    one_seed = compare_arms(
        _records({k: v for k, v in values.items() if k[1] == 0}), ["stereo_pref"],
        pairs=[("balora", "lora")],
    )  # fmt: skip
    assert (
        f"on {pref} (1 seed, n = 200). Across seeds: no verdict on the method; one seed"
        in (in_short(one_seed)[0])
    )
    assert in_short([]) == []


def test_in_short_marks_a_difference_whose_seeds_disagree():
    rng = np.random.default_rng(5)
    lora0, lora1 = (rng.random(64) < 0.6).astype(float), (rng.random(64) < 0.9).astype(float)
    ba1 = lora1.copy()
    ba1[np.flatnonzero(lora1 == 0)[:3]] = 1.0
    values = {
        ("lora", 0): {"accuracy": lora0}, ("balora", 0): {"accuracy": np.zeros(64)},
        ("lora", 1): {"accuracy": lora1}, ("balora", 1): {"accuracy": ba1},
    }  # fmt: skip
    row = compare_arms(_records(values), ["accuracy"], pairs=[("balora", "lora")])[0]
    assert in_short([row]) == [
        f"BA-LoRA against LoRA: in these runs, a difference on 1 of 1 metric (2 seeds × 64 "
        f"items). BA-LoRA did worse on {row.label} (the seeds disagree). Across seeds: no verdict "
        "on the method; 2 seeds cannot separate the method from the runs: an across-seeds "
        "verdict needs at least 3."
    ]
    as_dicts = in_short([row.to_dict()])  # the rows as the JSON output gives them
    assert as_dicts == in_short([row])


def test_no_difference_gives_the_detectable_size_and_n():
    rng = np.random.default_rng(2)
    hard = rng.random(24)
    values = {
        ("lora", 0): {"accuracy": (hard < 0.5).astype(float)},
        ("balora", 0): {"accuracy": (hard < 0.5).astype(float)},
    }
    flip = [3, 11, 19]  # balora gets three items wrong that lora gets right, and vice versa
    a = values[("balora", 0)]["accuracy"]
    a[flip] = 1 - a[flip]
    row = compare_arms(_records(values), ["accuracy"], pairs=[("balora", "lora")])[0]
    assert not row.significant and row.direction == "none" and row.n == 24
    text = verdict_text(row)
    assert text.startswith(
        "No difference detectable in these runs between BA-LoRA and LoRA on clean accuracy: "
    )
    assert f"these runs could only see differences above {row.mdd:.1f} points" in text
    assert "(n = 24, 1 seed). Across seeds: no verdict on the method; one seed" in text
    assert row.mdd > abs(row.diff)
    expected = 100 * (a - values[("lora", 0)]["accuracy"]).mean()
    assert f"{expected:+.1f} points" in text


def test_identical_arms_say_equal_on_every_item():
    x = (np.random.default_rng(3).random(50) < 0.6).astype(float)
    values = {("lora", 0): {"accuracy": x}, ("balora", 0): {"accuracy": x.copy()}}
    row = compare_arms(_records(values), ["accuracy"])[0]
    assert row.diff == 0 and row.p == 1.0
    assert verdict_text(row) == (
        "No difference between BA-LoRA and LoRA on clean accuracy in these runs: equal on every "
        f"item (n = 50, 1 seed). Across seeds: no verdict on the method; {no_result_note(1)}."
    )


def test_holm_runs_over_every_row_and_base_pairs_cover_bias_metrics():
    values = _planted(n=60)
    for s in (0, 1, 2):
        values[("lora", s)]["kl_to_base"] = np.linspace(0.1, 0.2, 60)
        values[("balora", s)]["kl_to_base"] = np.linspace(0.05, 0.1, 60)
    values[("base", 0)] = {"stereo_pref": np.ones(60), "accuracy": np.ones(60)}
    rows = compare_arms(_records(values))
    got = {(r.metric, r.arm_a, r.arm_b) for r in rows}
    assert ("stereo_pref", "balora", "base") in got and ("stereo_pref", "pissa", "base") in got
    assert ("accuracy", "lora", "base") not in got  # task metrics: arms against arms only
    assert ("kl_to_base", "balora", "lora") in got and ("kl_to_base", "balora", "pissa") not in got
    base_row = next(
        r for r in rows if (r.metric, r.arm_a, r.arm_b) == ("stereo_pref", "lora", "base")
    )
    assert base_row.n == 180 and base_row.n_seeds == 3  # the one base seed matched to each
    assert np.allclose([r.p_holm for r in rows], holm([r.p for r in rows]))
    json.dumps([r.to_dict() for r in rows])


def test_direction_free_metric_and_custom_specs():
    n = 40
    values = {
        ("lora", 0): {"logodds": np.zeros(n)},
        ("balora", 0): {"logodds": np.linspace(0.2, 0.6, n)},
    }
    spec = MetricSpec("logodds", "he-over-she log-odds", None, "nats")
    row = compare_arms(_records(values), [spec])[0]
    assert row.direction == "higher" and row.unit == "nats" and row.scale == 1.0
    text = verdict_text(row)
    assert text.startswith(
        "BA-LoRA had a higher he-over-she log-odds than LoRA in these runs: 0.4 nats"
    )


def test_items_without_a_finite_value_are_left_out_and_counted():
    a = np.linspace(0, 1, 30)
    b = a - 0.1
    a[4] = -np.inf
    values = {("lora", 0): {"gold_logprob": b}, ("balora", 0): {"gold_logprob": a}}
    row = compare_arms(_records(values), ["gold_logprob"])[0]
    assert row.n == 29 and row.n_dropped == 1 and row.diff == pytest.approx(0.1)


def test_pairs_and_names():
    assert default_pairs(["base", "lora", "balora", "balora@0.05,0.005,0.005"]) == [
        ("balora", "lora"),
        ("balora@0.05,0.005,0.005", "lora"),
    ]
    assert arm_display("balora@0.05,0.005,0.005") == "BA-LoRA (0.05,0.005,0.005)"
    assert arm_display("pissa") == "PiSSA" and arm_display("custom") == "custom"
    assert METRICS["accuracy"].scale == 100.0 and METRICS["kl_to_base"].scale == 1.0
    assert compare_arms([], ["accuracy"]) == []


def test_forest_figure_draws_each_row_with_n_and_a_zero_line():
    from lab.plots.evidence import _label, forest_figure

    rows = compare_arms(_records(_planted(n=50)), ["accuracy", "stereo_pref"])
    fig = forest_figure(rows)
    pooled = [t for t in fig.data if not t.name.endswith(": each seed")]
    points = [(x, y) for t in pooled for x, y in zip(t.x, t.y)]
    assert len(points) == len(rows)
    assert all("3 seeds × 50 items" in y for _, y in points)
    assert sorted(x for x, _ in points) == pytest.approx(sorted(r.diff for r in rows))
    assert any(s.x0 == 0 and s.x1 == 0 for s in fig.layout.shapes)
    import plotly.colors

    assert {t.marker.color for t in fig.data} <= set(plotly.colors.qualitative.Plotly)
    assert "n = 150" in fig.data[0].hovertext[0]
    order = list(fig.layout.yaxis.categoryarray)  # metric by metric, comparisons in order
    assert [y.split(" · ")[0] for y in order] == [r.label for r in rows]
    seeds = [t for t in fig.data if t.name.endswith(": each seed")]  # a cross per seed and row
    got = sorted((y, round(x, 9)) for t in seeds for x, y in zip(t.x, t.y))
    want = sorted((_label(r.to_dict()), round(d["diff"], 9)) for r in rows for d in r.per_seed)
    assert len(got) == 3 * len(rows) and got == want
    one = compare_arms(_records(_planted(n=50, seeds=(0,))), ["accuracy"])
    assert not [t for t in forest_figure(one).data if t.name.endswith(": each seed")]
    dicts = forest_figure([r.to_dict() for r in rows])
    assert len(dicts.data) == len(fig.data)
    assert "No paired differences" in forest_figure([]).layout.annotations[0].text


def test_forest_module_imports_no_torch():
    code = "import sys, lab.plots.evidence; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stats_bench_prints_its_json(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "stats.py"
    spec = importlib.util.spec_from_file_location("bench_stats", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--items", "40", "--seeds", "2", "--repeats", "1", "--base"])
    assert json.loads(capsys.readouterr().out) == out
    assert out["rows"] == 12 and out["n_per_row"] == 80 and out["with_base"]["rows"] > 12
    assert {"seconds", "cpu_s", "ratio_to_target", "cpu", "cores"} <= set(out)


def _specs(rates: dict[str, float], seeds=(0, 1)) -> dict:
    return {
        f"{arm}#s{s}": {"arm": arm, "seed": s, "lr": lr} for arm, lr in rates.items() for s in seeds
    }


def test_the_learning_rates_stand_beside_the_verdicts_as_the_summary_records_them():
    from lab.evidence.sentences import learning_rates_text

    one = learning_rates_text({"arm_specs": _specs({"lora": 5e-4, "pissa": 5e-4, "balora": 5e-4})})
    assert one == (
        "Learning rates: one fixed rate for every arm (0.0005), not tuned; tuned rates "
        "(train.lr_mode: tuned) can change the answer."
    )
    per_arm = learning_rates_text({"arm_specs": _specs({"lora": 5e-4, "balora": 2e-4})})
    assert per_arm == "Learning rates: fixed per arm, not tuned: LoRA 0.0005, BA-LoRA 0.0002."
    tuning = {a: {"chosen": lr, "n_val": 21} for a, lr in (("lora", 3e-3), ("balora", 1e-3))}
    tuned = learning_rates_text(
        {"arm_specs": _specs({"lora": 3e-3, "balora": 1e-3}), "lr_tuning": tuning}
    )
    assert tuned == (
        "Learning rates: tuned per arm on 21 validation rows carved from the training rows "
        "(never the test split): LoRA 0.003, BA-LoRA 0.001."
    )
    # a lambda grid keeps its arms apart; a summary without rates says nothing
    grid = learning_rates_text({"arm_specs": _specs({"balora@0.1,0,0": 1e-3, "lora": 1e-3})})
    assert "one fixed rate for every arm (0.001)" in grid
    assert learning_rates_text({}) is None and learning_rates_text(None) is None
    assert learning_rates_text({"arm_specs": {"lora": {"seed": 0}}}) is None


@pytest.mark.parametrize(
    "summary",
    [
        {"arm_specs": ["lora"]},
        {"arm_specs": {"lora": "x", "pissa": 3}},
        {"arm_specs": {"lora": {"arm": "lora", "lr": "fast"}}},
        {"arm_specs": {"lora": {"arm": "lora", "lr": float("nan")}}},
        {"arm_specs": {"lora": {"arm": "lora", "lr": True}}},
        "not a mapping",
    ],
)
def test_a_summary_edited_into_something_else_gives_no_learning_rate_line(summary):
    from lab.evidence.sentences import learning_rates_text

    assert learning_rates_text(summary) is None


def test_a_malformed_tuning_record_falls_back_to_the_fixed_rate_line():
    from lab.evidence.sentences import learning_rates_text

    specs = {"arm_specs": _specs({"lora": 1e-3, "balora": 1e-3}), "lr_tuning": ["x"]}
    assert learning_rates_text(specs).startswith("Learning rates: one fixed rate")


# ---- two levels: in these runs (items) and across seeds (the method) ------------------------


def _write_shifted(run, per_seed_points: dict[int, int], step: int = 4, seed: int = 0) -> None:
    """The items tables of :func:`_shifted` at one eval step of ``run``."""
    from lab.evidence.items import write_items

    for (arm, s), metrics in _shifted(per_seed_points, seed=seed).items():
        ids = [f"q{i}" for i in range(200)]
        write_items(run, step, arm, s, {m: (ids, v) for m, v in metrics.items()})


def _shifted(per_seed_points: dict[int, int], n: int = 200, seed: int = 0) -> dict:
    """0/1 accuracy of LoRA and BA-LoRA under each seed, BA-LoRA's difference exactly the given
    points: items LoRA gets wrong turned right (a gain) or right turned wrong (a loss)."""
    rng = np.random.default_rng(seed)
    out = {}
    for s, points in per_seed_points.items():
        lora = np.zeros(n)
        lora[rng.permutation(n)[: n // 2]] = 1.0
        ba = lora.copy()
        moved = abs(points) * n // 100
        pool = np.flatnonzero(lora == (0.0 if points > 0 else 1.0))
        ba[pool[:moved]] = 1.0 if points > 0 else 0.0
        out[("lora", s)] = {"accuracy": lora}
        out[("balora", s)] = {"accuracy": ba}
    return out


def test_seeds_that_each_differ_but_disagree_in_sign_give_no_method_difference():
    """Every seed alone is significant at the item level, but two of five go the other way: in
    these runs BA-LoRA did better (the pooled items), across seeds nothing is detectable."""
    mixed = {0: 40, 1: 35, 2: -20, 3: 38, 4: -25}
    values = _shifted(mixed)
    for s in mixed:  # each seed on its own: a significant item-level difference
        alone = compare_arms(_records({k: v for k, v in values.items() if k[1] == s}), ["accuracy"])
        assert alone[0].significant and alone[0].diff == pytest.approx(mixed[s])
    row = compare_arms(_records(values), ["accuracy"])[0]
    assert row.significant and row.direction == "better"  # "differs in these runs"
    x = row.across_seeds
    assert x["n_seeds"] == 5 and x["diff"] == pytest.approx(np.mean(list(mixed.values())))
    assert x["ci_low"] < 0 < x["ci_high"] and x["p_holm"] > 0.05
    assert words.across_direction(row.to_dict()) == "none"
    text = verdict_text(row)
    assert "BA-LoRA did better than LoRA on clean accuracy in these runs: " in text
    assert "Across 5 seeds (the method): no difference detectable, +13.6 points [" in text
    # the same size of effect, consistent over the seeds: the method's level finds it
    steady = compare_arms(_records(_shifted({0: 12, 1: 15, 2: 10, 3: 14, 4: 13})), ["accuracy"])[0]
    y = steady.across_seeds
    assert y["ci_low"] > 0 and y["p_holm"] < 0.05 and y["diff"] == pytest.approx(12.8)
    assert "Across 5 seeds (the method): BA-LoRA did better than LoRA by 12.8 points [" in (
        verdict_text(steady)
    )
    assert in_short([steady])[0].endswith(
        "Across 5 seeds (the method): a difference on 1 of 1 metric; BA-LoRA did better on "
        "clean accuracy."
    )


def test_two_seeds_give_no_method_result_and_say_why_one_seed_claims_nothing():
    two = compare_arms(_records(_shifted({0: 30, 1: 25})), ["accuracy"])[0]
    assert two.significant and two.across_seeds is None
    assert two.across_seeds_note == (
        "2 seeds cannot separate the method from the runs: an across-seeds verdict needs at least 3"
    )
    text = verdict_text(two)
    assert "per seed +30.0, +25.0 (seeds 0, 1" in text  # the per-seed values are shown
    assert f"Across seeds: no verdict on the method; {two.across_seeds_note}." in text
    assert two.to_dict()["across_seeds"] is None
    one = compare_arms(_records(_shifted({0: 30})), ["accuracy"])[0]
    assert one.across_seeds is None and one.across_seeds_note.startswith("one seed: ")
    said = verdict_text(one) + " ".join(in_short([one]))
    assert "(the method)" not in said and "Across 1" not in said
    assert "nothing here is a result about the method" in said


def test_holm_runs_at_each_level_separately():
    """Two metrics with a method result and one measured under two seeds only (item level
    alone): each level's Holm family is the rows that have a p-value at that level."""
    values = _shifted({0: 12, 1: 15, 2: 10, 3: 14, 4: 13})
    mixed = _shifted({0: 40, 1: 35, 2: -20, 3: 38, 4: -25}, seed=1)
    two = _shifted({0: 2, 1: -1}, seed=2)  # a large item-level p among the small ones
    for key in values:
        values[key]["balanced_accuracy"] = mixed[key]["accuracy"]
        if key in two:
            values[key]["minority_recall"] = two[key]["accuracy"]
    rows = compare_arms(_records(values), ["accuracy", "balanced_accuracy", "minority_recall"])
    assert [r.across_seeds is None for r in rows] == [False, False, True]
    assert np.allclose([r.p_holm for r in rows], holm([r.p for r in rows]))
    method_p = [r.across_seeds["p"] for r in rows[:2]]
    assert np.allclose([r.across_seeds["p_holm"] for r in rows[:2]], holm(method_p))
    assert rows[2].p > max(method_p)
    joint = holm([r.p for r in rows] + method_p)  # one family for both levels: not what is done
    assert not np.allclose([r.across_seeds["p_holm"] for r in rows[:2]], joint[3:])


def test_the_json_of_lab_verdicts_carries_both_levels(tmp_path, capsys):
    from lab.__main__ import main

    run = tmp_path / "run"
    _write_shifted(run, {0: 12, 1: 15, 2: 10})
    assert main(["verdicts", str(run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["across_seeds_note"] == ""
    x = rows[0]["across_seeds"]
    assert set(x) == {"diff", "ci_low", "ci_high", "p", "p_holm", "n_seeds", "method"}
    assert x["n_seeds"] == 3 and x["diff"] == pytest.approx(37 / 3) and x["ci_low"] > 0
    assert main(["verdicts", str(run)]) == 0
    out = capsys.readouterr().out
    assert "in these runs" in out and "Across 3 seeds (the method): BA-LoRA did better" in out


def test_lab_verdicts_plan_puts_the_seeds_needed_under_each_row(tmp_path, capsys):
    from lab.__main__ import main
    from lab.evidence.plan import seeds_needed

    run = tmp_path / "run"
    _write_shifted(run, {0: 12, 1: 4, 2: 9})
    assert main(["verdicts", str(run), "--plan"]) == 0
    verdict, plan_line = capsys.readouterr().out.strip().splitlines()[-2:]
    assert verdict.startswith("BA-LoRA did better than LoRA on clean accuracy in these runs")
    var = np.var([12, 4, 9], ddof=1)
    want = seeds_needed(25 / 3, var)
    assert plan_line == (
        f"  Plan: to detect 8.3 points across seeds with 80% power takes about {want} seeds of "
        f"200 items (between-seed sd {np.sqrt(var - plan_within(run)):.1f} points, item noise "
        f"{np.sqrt(plan_within(run)):.1f} points a seed)."
    )
    assert main(["verdicts", str(run), "--json", "--effect", "20"]) == 0
    got = json.loads(capsys.readouterr().out)[0]["plan"]
    assert got["effect"] == 20 and got["seeds"] == seeds_needed(20, var) == 3
    with pytest.raises(SystemExit) as bad:
        main(["verdicts", str(run), "--effect", "-1"])
    assert bad.value.code == 2 and "must be a positive number" in capsys.readouterr().err


def plan_within(run) -> float:
    """The item noise part of the per-seed variance of the run's one row, in points²."""
    return compare_arms(load_items(run), ["accuracy"])[0].seed_variance["within"]


# ---- stability over training ------------------------------------------------------------------


def _write_steps(run, per_step: dict[int, dict[int, int]]) -> None:
    """Items tables at several eval steps: BA-LoRA's accuracy shifted by the given points per
    seed at each step (see :func:`_shifted`)."""

    for step, per_seed in per_step.items():
        _write_shifted(run, per_seed, step=step, seed=step)


def test_a_comparison_whose_sign_changed_during_training_is_flagged_and_drawn(tmp_path):
    from lab.evidence.stability import over_training, sign_change
    from lab.evidence.verdicts import run_evidence, run_verdicts
    from lab.plots.evidence import stability_figures
    from lab.plots.report import _verdicts_html

    run = tmp_path / "run"
    _write_steps(run, {4: {0: 20, 1: 18, 2: 22}, 8: {0: 2, 1: -1, 2: 1}, 12: {0: -15, 1: -12, 2: -18}})  # fmt: skip
    series = over_training(run)
    points = series[("accuracy", "balora", "lora")]
    assert [p["step"] for p in points] == [4, 8, 12]
    assert points[0]["ci_low"] > 0 and points[2]["ci_high"] < 0
    assert sign_change(points)["above"]["step"] == 4 and sign_change(points)["below"]["step"] == 12
    (row,) = run_verdicts(run)
    assert len(row.flags) == 1 and row.diff == pytest.approx(-15.0)
    text = verdict_text(row)
    assert "During training the sign changed in these runs: +20.0 points [" in text
    assert "] at step 4, −15.0 points [" in text and text.endswith("] at step 12.")
    assert run_verdicts(run, step=8)[0].flags == []  # up to step 8: above 0, then 0
    assert run_verdicts(run, stability=False)[0].flags == []
    figs = stability_figures(series)
    (fig,) = figs.values()
    line = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(line) == 1 and list(line[0].x) == [4, 8, 12] and "(sign changed)" in line[0].name
    assert list(line[0].y) == pytest.approx([20.0, 2 / 3, -15.0])
    assert any(s.y0 == 0 and s.y1 == 0 for s in fig.layout.shapes)
    page = _verdicts_html(run, {})
    assert "<h3>Over training</h3>" in page and "sign changed in these runs" in page
    assert "over_training" in run_evidence(run)


def test_a_steady_comparison_is_not_flagged(tmp_path):
    from lab.evidence.stability import over_training, sign_change
    from lab.evidence.verdicts import run_verdicts
    from lab.plots.evidence import stability_figures

    run = tmp_path / "run"
    _write_steps(run, {4: {0: 2, 1: -3, 2: 1}, 8: {0: 10, 1: 12, 2: 9}, 12: {0: 14, 1: 15, 2: 11}})  # fmt: skip
    points = over_training(run)[("accuracy", "balora", "lora")]
    assert sign_change(points) is None and run_verdicts(run)[0].flags == []
    (fig,) = stability_figures(over_training(run)).values()
    assert not any("sign changed" in (t.name or "") for t in fig.data)

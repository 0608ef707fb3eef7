"""Verdict rows and their sentences from planted per-item records; the forest plot."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from lab.evidence.stats import holm
from lab.evidence.verdicts import (
    METRICS,
    SEEDS_DISAGREE,
    MetricSpec,
    arm_display,
    compare_arms,
    default_pairs,
    in_short,
    markdown_table,
    seeds_disagree,
    verdict_text,
)


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
    assert text.startswith("BA-LoRA did better than LoRA on clean accuracy: ")
    assert f"{acc.diff:.1f} points [{acc.ci_low:.1f}, {acc.ci_high:.1f}] more" in text
    assert "(Holm)" in text and text.endswith("3 seeds × 200 items")
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
    assert text.startswith("BA-LoRA did worse than LoRA on clean accuracy: ")
    assert text.endswith(f"2 seeds × 64 items; {SEEDS_DISAGREE}")
    assert markdown_table([row]).endswith("| 2 seeds × 64 items; the seeds disagree in sign |")
    values[("balora", 1)] = {"accuracy": np.zeros(64)}  # now both seeds lose: no caveat
    agree = compare_arms(_records(values), ["accuracy"], pairs=[("balora", "lora")])[0]
    assert not seeds_disagree(agree) and verdict_text(agree).endswith("2 seeds × 64 items")
    assert markdown_table([agree]).endswith("| 2 seeds × 64 items |")


def test_in_short_counts_the_differences_of_each_comparison_from_its_rows():
    values = _planted()
    rows = compare_arms(_records(values), ["accuracy", "stereo_pref"])
    acc, pref = rows[0].label, rows[2].label
    assert in_short(rows) == [
        f"BA-LoRA against LoRA: a difference on 2 of 2 metrics (3 seeds × 200 items). BA-LoRA did better on {acc} and {pref}.",
        f"BA-LoRA against PiSSA: a difference on 2 of 2 metrics (3 seeds × 200 items). BA-LoRA did better on {acc} and {pref}.",
    ]  # fmt: skip
    for s in (0, 1, 2):  # BA-LoRA's stereotype answers become LoRA's own: nothing to find there
        values[("balora", s)]["stereo_pref"] = values[("lora", s)]["stereo_pref"].copy()
    rows = compare_arms(_records(values), ["accuracy", "stereo_pref"], pairs=[("balora", "lora")])
    assert in_short(rows) == [
        f"BA-LoRA against LoRA: a difference on 1 of 2 metrics (3 seeds × 200 items). BA-LoRA did "
        f"better on {acc}. "
        "No difference detectable on the other 1."
    ]
    rows = compare_arms(_records(values), ["stereo_pref"], pairs=[("balora", "lora")])
    assert in_short(rows) == [
        f"BA-LoRA against LoRA: no difference detectable on {pref} (3 seeds × 200 items)."
    ]
    one_seed = compare_arms(
        _records({k: v for k, v in values.items() if k[1] == 0}), ["stereo_pref"],
        pairs=[("balora", "lora")],
    )  # fmt: skip
    assert in_short(one_seed)[0].endswith(f"on {pref} (1 seed, n = 200).")
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
        f"BA-LoRA against LoRA: a difference on 1 of 1 metric (2 seeds × 64 items). BA-LoRA did "
        f"worse on {row.label} "
        "(the seeds disagree)."
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
    assert text.startswith("No difference detectable between BA-LoRA and LoRA on clean accuracy: ")
    assert f"this run could only see differences above {row.mdd:.1f} points" in text
    assert text.endswith("(n = 24, 1 seed)")
    assert row.mdd > abs(row.diff)
    expected = 100 * (a - values[("lora", 0)]["accuracy"]).mean()
    assert f"{expected:+.1f} points" in text


def test_identical_arms_say_equal_on_every_item():
    x = (np.random.default_rng(3).random(50) < 0.6).astype(float)
    values = {("lora", 0): {"accuracy": x}, ("balora", 0): {"accuracy": x.copy()}}
    row = compare_arms(_records(values), ["accuracy"])[0]
    assert row.diff == 0 and row.p == 1.0
    assert verdict_text(row) == (
        "No difference between BA-LoRA and LoRA on clean accuracy: equal on every item "
        "(n = 50, 1 seed)"
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
    assert text.startswith("BA-LoRA had a higher he-over-she log-odds than LoRA: 0.4 nats")


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
    from lab.evidence.verdicts import learning_rates_text

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
    from lab.evidence.verdicts import learning_rates_text

    assert learning_rates_text(summary) is None


def test_a_malformed_tuning_record_falls_back_to_the_fixed_rate_line():
    from lab.evidence.verdicts import learning_rates_text

    specs = {"arm_specs": _specs({"lora": 1e-3, "balora": 1e-3}), "lr_tuning": ["x"]}
    assert learning_rates_text(specs).startswith("Learning rates: one fixed rate")

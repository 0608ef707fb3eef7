"""The scenario metrics (balanced accuracy and minority recall per item, memorised label noise,
held-out cross-entropy) against hand-computed values, and the scenario presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lab.config import load_config_file as load_config
from lab.datasets import load_task_data, logprobs
from lab.datasets import metrics as M
from lab.evidence.verdicts import METRICS, compare_arms

PRESETS = Path(__file__).resolve().parent.parent / "presets"
SCENARIOS = ("noisy-labels", "imbalance", "inheritance")


def test_balanced_accuracy_known_values():
    # class 0: 3 items, 3 right; class 1: 2 items, 1 right -> recalls 1 and 0.5, mean 0.75
    preds, golds = [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]
    m = M.classification_metrics(preds, golds, ["neg", "pos"], minority=1)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.8) and m["minority_recall"] == pytest.approx(0.5)


def test_per_item_records_average_to_the_metrics():
    rng = np.random.default_rng(3)
    golds = rng.choice(3, size=41, p=[0.7, 0.2, 0.1]).tolist()
    preds = rng.integers(0, 3, size=41).tolist()
    m = M.classification_metrics(preds, golds, ["a", "b", "c"], minority=2)
    rec = M.classification_items(preds, golds, minority=2)
    assert rec["accuracy"][1].mean() == pytest.approx(m["accuracy"])
    assert rec["balanced_accuracy"][1].mean() == pytest.approx(m["balanced_accuracy"])
    ids, vals = rec["minority_recall"]
    assert len(ids) == golds.count(2) and vals.mean() == pytest.approx(m["minority_recall"])
    assert all(golds[int(i)] == 2 for i in ids)


class _Fixed:
    """A stand-in for predict_labels: returns the wanted labels row by row."""

    def __init__(self, by_text: dict[str, int]):
        self.by_text = by_text

    def __call__(self, model, tokenizer, rows, **kw):
        return [self.by_text[r["prompt"]] for r in rows]


def test_memorised_noise_counts_predictions_of_the_flipped_label(monkeypatch):
    d = load_task_data("sentiment", max_train=40, label_noise=0.25)
    assert len(d.flipped) == 10
    for i, row in d.flipped:  # the kept rows carry the flipped label, as trained on
        assert d.train[i] is row
    # predict the flipped label on the first 4 rows and the other class on the rest
    want = {r["prompt"]: (r["label"] if k < 4 else 1 - r["label"]) for k, (_, r) in
            enumerate(d.flipped)}  # fmt: skip
    monkeypatch.setattr(M, "predict_labels", _Fixed(want))
    share, (ids, hits) = M.memorised_noise(None, None, d, max_examples=8)
    assert share == pytest.approx(4 / 8) and hits.tolist() == [1.0] * 4 + [0.0] * 4
    assert ids == [f"train:{i}" for i, _ in d.flipped[:8]]


def test_no_noise_no_flipped_rows():
    assert load_task_data("sentiment", max_train=40).flipped == []


def test_heldout_ce_matches_a_hand_computed_cross_entropy(tiny_llama):
    tok, model = tiny_llama.tokenizer, tiny_llama.model
    texts = ["a short one", "a somewhat longer text with more tokens in it"]
    got = logprobs.heldout_ce(model, tok, texts, max_len=64, batch_size=2)
    for k, t in enumerate(texts):  # one text at a time, no padding
        ids = torch.tensor([tok(t, add_special_tokens=True)["input_ids"]])
        with torch.inference_mode():
            lp = model(input_ids=ids).logits.float().log_softmax(-1)[0]
        nll = -lp[:-1].gather(1, ids[0, 1:, None]).squeeze(1)
        assert got[k] == pytest.approx(float(nll.mean()), rel=1e-4)


def test_the_scenario_metrics_have_directions():
    assert METRICS["memorised_noise"].higher_is_better is False
    assert METRICS["memorised_noise"].vs_base and METRICS["heldout_ce"].vs_base
    assert METRICS["balanced_accuracy"].higher_is_better is True
    assert METRICS["minority_recall"].higher_is_better is True


def test_a_planted_minority_recall_gain_reads_as_better():
    rows = []
    for seed in (0, 1):
        for i in range(60):
            rows.append({"arm": "lora", "seed": seed, "metric": "minority_recall",
                         "item": str(i), "value": float(i % 4 == 0)})  # fmt: skip
            rows.append({"arm": "balora", "seed": seed, "metric": "minority_recall",
                         "item": str(i), "value": float(i % 4 != 3)})  # fmt: skip
    (row,) = compare_arms(rows, n_resamples=999)
    assert row.direction == "better" and row.diff == pytest.approx(50.0) and row.n == 120


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_presets_load_with_a_hypothesis_and_two_seeds(name):
    path = PRESETS / f"{name}.yaml"
    head = path.read_text(encoding="utf-8").splitlines()[0]
    assert head.startswith("# Scenario:") and "Hypothesis" in path.read_text(encoding="utf-8")
    cfg = load_config(path)
    assert cfg.name == name and len(cfg.train.seeds) >= 2
    assert set(cfg.arms) >= {"lora", "pissa", "balora"}


def test_scenario_knobs():
    noisy = load_config(PRESETS / "noisy-labels.yaml")
    assert noisy.data.label_noise == pytest.approx(0.3)
    imb = load_config(PRESETS / "imbalance.yaml")
    assert imb.data.minority_fraction == pytest.approx(0.1)
    inh = load_config(PRESETS / "inheritance.yaml")
    assert inh.train.bias_eval and inh.train.bias_items == 0 and inh.train.analysis


@pytest.mark.slow
def test_a_noisy_imbalanced_run_records_the_scenario_metrics(tmp_path, capsys):
    import lab.engine.trainer as trainer
    from lab.config import load_preset
    from lab.evidence.items import load_items
    from lab.evidence.sentences import in_short
    from lab.evidence.verdicts import run_verdicts

    cfg = load_preset(
        "tiny-test",
        ["train.steps=2", "train.bias_eval=false", "data.label_noise=0.3",
         "data.minority_fraction=0.2"],
    )  # fmt: skip
    events = list(trainer.run(cfg, tmp_path / "run"))
    final = {e["arm"]: e for e in events if e["kind"] == "eval" and e["step"] == 2}
    table = load_items(tmp_path / "run")
    for arm in ("lora", "pissa", "balora"):
        ev = final[arm]
        for metric in ("memorised_noise", "balanced_accuracy", "minority_recall", "heldout_ce"):
            sel = (table["arm"] == arm) & (table["metric"] == metric)
            assert sel.any(), (arm, metric)
            if metric in ev:  # the event's number is the mean of the items
                assert table["value"][sel].mean() == pytest.approx(ev[metric])
    rows = run_verdicts(tmp_path / "run", n_resamples=199)
    base_rows = {r.metric for r in rows if r.arm_b == "base"}
    assert {"memorised_noise", "heldout_ce"} <= base_rows
    assert "balanced_accuracy" not in base_rows  # task metrics: arm against arm only

    # the CLI prints the same rows: one sentence each, or a Markdown table
    from lab.__main__ import main

    assert main(["verdicts", str(tmp_path / "run")]) == 0
    rates, *lines = capsys.readouterr().out.strip().splitlines()
    assert rates.startswith("Learning rates: one fixed rate for every arm (0.002), not tuned")
    short = [line for line in lines if line.startswith("In short: ")]
    expected = in_short(run_verdicts(tmp_path / "run"))  # the CLI's own resampling
    assert short == [f"In short: {x}" for x in expected]  # one per comparison, first
    assert len(short) == len({(r.arm_a, r.arm_b) for r in rows}) and lines[: len(short)] == short
    lines = lines[len(short) :]
    assert len(lines) == len(rows) and all("n = " in line for line in lines)
    assert main(["verdicts", str(tmp_path / "run"), "--markdown"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == len(rows) + 2 and table[0].startswith("| metric")
    assert main(["verdicts", str(tmp_path / "nowhere")]) == 2
    assert "no run directory" in capsys.readouterr().err

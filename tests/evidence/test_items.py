"""Per-item records: the items table on disk, pairing, and a tiny run's tables against its events."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lab.evidence.items import item_steps, items_path, load_items, paired, select, write_items


def test_write_and_load_round_trip(tmp_path):
    vals = np.array([0.1, 1 / 3, -2.5e-17, 7.0])
    write_items(tmp_path, 4, "lora", 0, {"gold_logprob": (["0", "1", "2", "3"], vals)})
    write_items(
        tmp_path, 4, "balora@0.05,0.005,0.005", 0, {"gold_logprob": (["0", "1"], [1.0, 2.0])}
    )
    t = load_items(tmp_path, 4)
    assert set(t) == {"arm", "seed", "metric", "item", "value", "step"}
    lora = select(t, arm="lora")
    assert lora["value"].tolist() == vals.tolist()  # full float precision
    assert select(t, arm="balora@0.05,0.005,0.005")["item"].tolist() == ["0", "1"]
    # the same arm and seed again replaces its rows; another seed is added
    write_items(tmp_path, 4, "lora", 0, {"accuracy": (["0"], [1.0])})
    write_items(tmp_path, 4, "lora", 1, {"accuracy": (["0"], [0.0])})
    t = load_items(tmp_path)
    assert sorted(select(t, arm="lora")["metric"].tolist()) == ["accuracy", "accuracy"]
    assert sorted(select(t, arm="lora")["seed"].tolist()) == [0, 1]
    header = items_path(tmp_path, 4).read_text().splitlines()[0]
    assert header == "arm,seed,metric,item,value"
    assert [p.name for p in (tmp_path / "items").iterdir()] == ["step_000004.csv"]  # no temp files
    with pytest.raises(ValueError, match="2 item ids but 1 values"):
        write_items(tmp_path, 4, "lora", 0, {"accuracy": (["0", "1"], [1.0])})


def test_base_rows_come_from_the_step_that_measured_them(tmp_path):
    write_items(tmp_path, 0, "base", 0, {"stereo_pref": (["0:gender", "1:age"], [1.0, 0.0])})
    write_items(tmp_path, 8, "lora", 0, {"stereo_pref": (["0:gender", "1:age"], [0.0, 0.0])})
    assert item_steps(tmp_path) == [0, 8]
    t = load_items(tmp_path)
    base = select(t, arm="base")
    assert base["step"].tolist() == [0, 0] and select(t, arm="lora")["step"].tolist() == [8, 8]
    assert "base" not in load_items(tmp_path, with_base=False)["arm"].tolist()
    with pytest.raises(FileNotFoundError):
        load_items(tmp_path, 3)
    with pytest.raises(FileNotFoundError):
        load_items(tmp_path / "nothing")


def test_paired_matches_on_seed_and_item(tmp_path):
    write_items(tmp_path, 2, "a", 0, {"m": (["x", "y", "z"], [1.0, 2.0, 3.0])})
    write_items(tmp_path, 2, "a", 1, {"m": (["x", "y"], [10.0, 20.0])})
    write_items(tmp_path, 2, "b", 0, {"m": (["z", "x"], [0.3, 0.1])})  # other order, y missing
    write_items(tmp_path, 2, "b", 1, {"m": (["y", "x"], [0.2, 0.1])})
    write_items(tmp_path, 2, "base", 0, {"m": (["x", "y", "z"], [5.0, 6.0, 7.0])})
    t = load_items(tmp_path, 2)
    a, b, seeds = paired(t, "m", "a", "b")
    assert a.tolist() == [1.0, 3.0, 10.0, 20.0]
    assert b.tolist() == [0.1, 0.3, 0.1, 0.2]
    assert seeds.tolist() == [0, 0, 1, 1]
    a, b, seeds = paired(t, "m", "a", "base")  # one base seed: matched on the item alone
    assert a.tolist() == [1.0, 2.0, 3.0, 10.0, 20.0] and b.tolist() == [5.0, 6.0, 7.0, 5.0, 6.0]
    assert paired(t, "other", "a", "b")[0].size == 0
    write_items(tmp_path, 2, "c", 0, {"m": (["x", "y"], [0.5, 0.6])})  # one seed, not the base
    a, c, seeds = paired(load_items(tmp_path, 2), "m", "a", "c")
    assert a.tolist() == [1.0, 2.0] and c.tolist() == [0.5, 0.6] and seeds.tolist() == [0, 0]
    a, c, _ = paired(load_items(tmp_path, 2), "m", "a", "c", across_seeds=True)
    assert a.tolist() == [1.0, 2.0, 10.0, 20.0] and c.tolist() == [0.5, 0.6, 0.5, 0.6]
    with pytest.raises(ValueError, match="several seeds"):
        paired(t, "m", "a", "b", across_seeds=True)
    write_items(tmp_path, 3, "a", 0, {"m": (["x", "x"], [1.0, 2.0])})
    write_items(tmp_path, 3, "b", 0, {"m": (["x"], [1.0])})
    with pytest.raises(ValueError, match="twice"):
        paired(load_items(tmp_path, 3), "m", "a", "b")


def test_evaluate_task_items_agree_with_its_metrics(tiny_llama, tiny_bert):
    from lab.datasets import evaluate_task, load_task_data, score_responses

    d = load_task_data("sentiment", task="nlg", seed=0, max_train=16, max_eval=8)
    m, items = evaluate_task(tiny_llama.model, tiny_llama.tokenizer, d, max_examples=8, return_items=True)  # fmt: skip
    assert m == evaluate_task(tiny_llama.model, tiny_llama.tokenizer, d, max_examples=8)
    ids, correct = items["accuracy"]
    assert ids == [str(i) for i in range(8)] and correct.mean() == pytest.approx(m["accuracy"])
    _, lp = items["gold_logprob"]
    rows = d.test[:8]
    want = score_responses(
        tiny_llama.model, tiny_llama.tokenizer, [r["prompt"] for r in rows],
        [d.label_names[r["label"]] for r in rows],
    )  # fmt: skip
    # label scores share each prompt's KV cache: equal to one sequence per label up to rounding
    assert lp == pytest.approx(want.double().numpy(), rel=1e-4) and (lp < 0).all()
    d = load_task_data("arithmetic", max_eval=3)
    m, items = evaluate_task(tiny_llama.model, tiny_llama.tokenizer, d, max_examples=3, max_new_tokens=4, return_items=True)  # fmt: skip
    assert items["accuracy"][1].mean() == pytest.approx(m["exact_match"])
    rows = d.test[:3]
    want = score_responses(tiny_llama.model, tiny_llama.tokenizer, [r["prompt"] for r in rows], [r["response"] for r in rows])  # fmt: skip
    assert items["gold_logprob"][1] == pytest.approx(want.double().numpy(), rel=1e-6)
    d = load_task_data("sentiment", task="nlu", seed=0, max_train=16, max_eval=12)
    m, items = evaluate_task(tiny_bert.model, tiny_bert.tokenizer, d, max_examples=12, return_items=True)  # fmt: skip
    assert items["accuracy"][1].mean() == pytest.approx(m["accuracy"])
    assert (items["gold_logprob"][1] <= 0).all()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import lab.engine.trainer as trainer
    from lab.config import load_preset

    cfg = load_preset("tiny-test", ["train.steps=2"])
    out = tmp_path_factory.mktemp("items") / "run"
    events = list(trainer.run(cfg, out))
    return cfg, events, out


def test_tiny_run_writes_one_row_per_item_per_arm(tiny_run):
    cfg, events, out = tiny_run
    assert item_steps(out) == sorted({e["step"] for e in events if e["kind"] == "eval"})
    assert item_steps(out)[0] == 0 and item_steps(out)[-1] == cfg.train.steps
    evals = {(e["arm"], e["step"]): e for e in events if e["kind"] == "eval"}
    first = load_items(out, 0)
    assert set(first["arm"].tolist()) == {"base"}
    final = load_items(out)
    assert set(final["arm"].tolist()) == {"base", "lora", "pissa", "balora"}
    assert set(final["seed"].tolist()) == {cfg.train.seed}
    for (arm, step), ev in evals.items():
        t = select(load_items(out, step, with_base=False), arm=arm)
        counts = {m: int((t["metric"] == m).sum()) for m in np.unique(t["metric"])}
        expect = {
            "accuracy": ev["n"],
            "gold_logprob": ev["n"],
            "stereo_pref": ev["bias"]["stereo_pref"]["n"],
            "stereo_llr": ev["bias"]["stereo_pref"]["n"],
            "pronoun_logodds": ev["bias"]["pronoun_abs_logodds"]["n"],
            "pronoun_abs_logodds": ev["bias"]["pronoun_abs_logodds"]["n"],
            "kl_to_base": cfg.train.probe_size,
            "heldout_ce": cfg.train.probe_size,  # NLG with the analysis on: forgetting
        }
        if "flip_rate" in ev["bias"]:
            expect["flip_rate"] = ev["bias"]["flip_rate"]["n"]
        assert counts == expect, (arm, step)
        for m in counts:  # one row per item: no item twice within a metric
            ids = t["item"][t["metric"] == m]
            assert len(set(ids.tolist())) == len(ids)


def test_tiny_run_items_agree_with_the_events(tiny_run):
    from lab.analysis import load_snapshots

    cfg, _, out = tiny_run
    logged = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    evals = [e for e in logged if e["kind"] == "eval"]
    assert evals
    for ev in evals:
        t = select(load_items(out, ev["step"], with_base=False), arm=ev["arm"])

        def mean(metric, suffix="", t=t):
            rows = select(t, metric=metric)
            keep = np.char.endswith(rows["item"], suffix) if suffix else slice(None)
            return rows["value"][keep].mean()

        assert mean("accuracy") == pytest.approx(ev["accuracy"], abs=1e-12)
        bias = ev["bias"]
        assert mean("stereo_pref") == pytest.approx(bias["stereo_pref"]["value"], abs=1e-12)
        for key, score in bias.items():
            if key.startswith("stereo_pref/"):
                assert mean("stereo_pref", ":" + key.split("/", 1)[1]) == pytest.approx(score["value"], abs=1e-12)  # fmt: skip
        assert mean("pronoun_abs_logodds") == pytest.approx(bias["pronoun_abs_logodds"]["value"], abs=1e-12)  # fmt: skip
        if "flip_rate" in bias:
            assert mean("flip_rate") == pytest.approx(bias["flip_rate"]["value"], abs=1e-12)
        if "heldout_ce" in ev:
            assert mean("heldout_ce") == pytest.approx(ev["heldout_ce"], rel=1e-9)
        pref = select(t, metric="stereo_pref")["value"]
        llr = select(t, metric="stereo_llr")["value"]
        assert np.array_equal(pref, (llr > 0) + 0.5 * (llr == 0))
        lo = select(t, metric="pronoun_logodds")["value"]
        assert np.allclose(np.abs(lo), select(t, metric="pronoun_abs_logodds")["value"])
        drift = select(t, metric="kl_to_base")
        if ev["arm"] == "base":
            assert (drift["value"] == 0).all() and ev["kl_to_base"] == 0.0
            continue
        snap = load_snapshots(out, ev["step"])[ev["arm"]]
        order = np.argsort(drift["item"].astype(int))
        assert np.array_equal(drift["value"][order], snap.drift_per_text.astype(np.float64))
        w = snap.drift_positions.astype(np.float64)
        weighted = (drift["value"][order] * w).sum() / w.sum()
        assert weighted == pytest.approx(ev["kl_to_base"], rel=1e-9)


def test_tiny_run_verdicts(tiny_run):
    from lab.evidence.sentences import verdict_text
    from lab.evidence.verdicts import run_verdicts

    _, _, out = tiny_run
    rows = run_verdicts(out)
    assert {(r.arm_a, r.arm_b) for r in rows} >= {("balora", "lora"), ("balora", "pissa"), ("lora", "base")}  # fmt: skip
    for r in rows:
        assert f"n = {r.n}, 1 seed" in verdict_text(r)


def test_bias_scorers_return_items_that_match_their_scores(monkeypatch):
    import lab.bias.scores as scores_mod

    monkeypatch.setattr(
        scores_mod,
        "pair_logprob_diff",
        lambda m, t, a, b, **k: np.array([len(x) - len(y) for x, y in zip(a, b)], float),
    )
    pairs = [
        {"stereo": "long stereo text", "anti": "short", "bias_type": "a", "id": 7},
        {"stereo": "s", "anti": "a longer anti text", "bias_type": "b", "id": 9},
        {"stereo": "same", "anti": "tied", "bias_type": "b", "id": 11},
    ]
    out, items = scores_mod.stereo_scores(None, None, pairs, n_boot=50, return_items=True)
    ids, pref = items["stereo_pref"]
    assert ids == ["7:a", "9:b", "11:b"] and pref.tolist() == [1.0, 0.0, 0.5]
    assert pref.mean() == pytest.approx(out["stereo_pref"]["value"])
    assert items["stereo_llr"][1].tolist() == [11.0, -17.0, 0.0]
    lp = lambda texts: np.array([len(x) * (1 if " she " in x else 2) for x in texts], float)  # noqa: E731
    monkeypatch.setattr(  # log P grows with the text, twice as fast for "he": log-odds vary
        scores_mod, "pair_logprob_diff", lambda m, t, a, b, **k: lp(a) - lp(b)
    )
    names = (("nurse", 90.0), ("airline pilot", 10.0), ("nurse", 80.0))
    occ = [{"occupation": o, "women_pct": p} for o, p in names]
    out, items = scores_mod.pronoun_scores(
        None, None, occ, ["The {occupation} said {pronoun} would go."], n_boot=50, return_items=True
    )
    ids, lo = items["pronoun_logodds"]
    assert ids == ["nurse#0", "airline pilot#1", "nurse#2"]  # unique even when a name repeats
    assert np.abs(lo).mean() == pytest.approx(out["pronoun_abs_logodds"]["value"])

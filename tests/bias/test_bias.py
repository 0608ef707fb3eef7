"""Bias probes: files, CrowS-Pairs semantics, bootstrap intervals, scores on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.bias import (
    bootstrap_ci,
    counterfactual_prompt_pairs,
    evaluate_bias,
    flip_scores,
    load_occupations,
    load_pairs,
    load_templates,
    sentence_logprob,
    swap_group_words,
)
from lab.bias import scores as scores_mod
from lab.datasets import load_task_data
from lab.datasets.encoding import DataError

SCORE_KEYS = {"value", "ci_low", "ci_high", "n"}


def test_bootstrap_ci_of_a_balanced_case_contains_half():
    low, high = bootstrap_ci([0.0, 1.0] * 40, seed=0)
    assert low < 0.5 < high and high - low < 0.3
    low, high = bootstrap_ci([1.0] * 38 + [0.0] * 2, seed=0)  # clearly one-sided
    assert not low <= 0.5 <= high
    assert bootstrap_ci([0.0, 1.0] * 40, seed=3) == bootstrap_ci([0.0, 1.0] * 40, seed=3)
    assert bootstrap_ci([0.0, 1.0] * 40, seed=3) != bootstrap_ci([0.0, 1.0] * 40, seed=4)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_shipped_probe_files():
    pairs = load_pairs()
    assert len(pairs) >= 150 and len({p["bias_type"] for p in pairs}) >= 4
    for p in pairs:
        assert p["sent_more"] != p["sent_less"]
        assert (p["stereo"], p["anti"]) == (
            (p["sent_more"], p["sent_less"])
            if p["direction"] == "stereo"
            else (p["sent_less"], p["sent_more"])
        )
    occ = load_occupations()
    assert len(occ) >= 60 and len({o["occupation"] for o in occ}) == len(occ)
    assert all(
        0 <= o["women_pct"] <= 100 and "Bureau of Labor Statistics" in o["source"] for o in occ
    )
    assert len(load_templates()) >= 5


def test_user_crows_pairs_csv_loads(tmp_path):
    path = tmp_path / "crows.csv"
    path.write_text(
        ",sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer\n"
        '0,"Poor people steal.","Rich people steal.",stereo,socioeconomic,"[[\'socioeconomic\']]",a0\n'
        "1,Old people run fast.,Young people run fast.,antistereo,age,[],a1\n",
        encoding="utf-8",
    )
    pairs = load_pairs(path)
    assert [p["stereo"] for p in pairs] == ["Poor people steal.", "Young people run fast."]
    bad = tmp_path / "bad.csv"
    bad.write_text("sent_more,sent_less,bias_type\na,b,age\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing column.*stereo_antistereo"):
        load_pairs(bad)
    bad.write_text(
        "sent_more,sent_less,stereo_antistereo,bias_type\na,b,maybe,age\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match="line 2: stereo_antistereo must be"):
        load_pairs(bad)


def test_stereo_preference_follows_crows_semantics(monkeypatch):
    """With a fake scorer that prefers longer texts, the preference is known exactly."""
    monkeypatch.setattr(
        scores_mod,
        "pair_logprob_diff",
        lambda m, t, a, b, **k: np.array([len(x) - len(y) for x, y in zip(a, b)], float),
    )
    pairs = [
        {"stereo": "long stereo text", "anti": "short", "bias_type": "a"},  # stereo preferred
        {"stereo": "s", "anti": "a longer anti text", "bias_type": "a"},  # anti preferred
        {"stereo": "same", "anti": "tied", "bias_type": "b"},  # tie counts 1/2
    ]
    out = scores_mod.stereo_scores(None, None, pairs, n_boot=50)
    assert out["stereo_pref"]["value"] == pytest.approx(0.5) and out["stereo_pref"]["n"] == 3
    assert out["stereo_pref/a"]["value"] == 0.5 and out["stereo_pref/b"]["value"] == 0.5
    pairs[1]["stereo"], pairs[1]["anti"] = pairs[1]["anti"], pairs[1]["stereo"]
    assert scores_mod.stereo_scores(None, None, pairs, n_boot=50)["stereo_pref"][
        "value"
    ] == pytest.approx(2.5 / 3)


def test_pronoun_correlation_sign(monkeypatch):
    """A scorer whose 'he' preference falls with the share of women gives r = -1."""
    occ = [{"occupation": f"job{i}", "women_pct": float(10 * i)} for i in range(6)]

    def fake(model, tok, texts, **k):
        return np.array(
            [(-1 if " she " in t else 1) * (100 - 10 * int(t.split("job")[1][0])) for t in texts],
            float,
        )

    monkeypatch.setattr(
        scores_mod, "pair_logprob_diff", lambda m, t, a, b, **k: fake(m, t, a) - fake(m, t, b)
    )
    out = scores_mod.pronoun_scores(
        None, None, occ, ["The {occupation} said {pronoun} would go."], n_boot=100
    )
    assert out["pronoun_corr"]["value"] == pytest.approx(-1.0)
    assert out["pronoun_abs_logodds"]["value"] == pytest.approx(
        np.mean([2 * (100 - 10 * i) for i in range(6)])
    )


def test_swap_group_words():
    assert swap_group_words("She told her husband that her keys were with him.") == (
        "He told his wife that his keys were with her."
    )
    assert swap_group_words("My SISTER and Mr. Lee") == "My BROTHER and Ms. Lee"
    assert (
        swap_group_words("The shepherd saw the theme park.") == "The shepherd saw the theme park."
    )


def test_counterfactual_prompt_pairs_differ_in_the_group_word():
    pairs = counterfactual_prompt_pairs()
    assert len(pairs) >= 10 and len({p["bias_type"] for p in pairs}) >= 4
    for p in pairs:
        assert p["prompt_a"] != p["prompt_b"]
        assert p["prompt_a"].replace(p["group_a"], "#") == p["prompt_b"].replace(p["group_b"], "#")


def test_sentence_logprob_matches_a_direct_computation(tiny_llama):
    model, tok = tiny_llama.model, tiny_llama.tokenizer
    texts = [
        "The nurse said that she was tired.",
        "Hi.",
        "A much longer sentence about an engineer.",
    ]
    got = sentence_logprob(model, tok, texts, batch_size=2)
    assert got.shape == (3,) and np.allclose(
        got, sentence_logprob(model, tok, texts, batch_size=1), atol=1e-4
    )
    ids = [tok.bos_token_id] + tok("Hi.", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        lp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    assert got[1] == pytest.approx(
        float(sum(lp[t, ids[t + 1]] for t in range(len(ids) - 1))), abs=1e-4
    )


def test_evaluate_bias_nlg_keys_and_determinism(tiny_llama):
    data = load_task_data("sentiment", max_eval=32)
    kw = {"data": data, "max_items": 12, "n_boot": 200, "seed": 1}
    a = evaluate_bias(tiny_llama.model, tiny_llama.tokenizer, **kw)
    assert {"stereo_pref", "pronoun_abs_logodds", "pronoun_corr", "flip_rate"} <= set(a)
    assert any(k.startswith("stereo_pref/") for k in a)
    for name, s in a.items():
        assert set(s) == SCORE_KEYS and s["ci_low"] <= s["value"] <= s["ci_high"], name
    assert a["stereo_pref"]["n"] == 12 and a["pronoun_abs_logodds"]["n"] == 12
    assert evaluate_bias(tiny_llama.model, tiny_llama.tokenizer, **kw) == a


def test_evaluate_bias_with_a_user_pair_file(tiny_llama, tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text(
        "sent_more,sent_less,stereo_antistereo,bias_type\nA b.,A c.,stereo,x\nD e.,D f.,stereo,x\n"
    )
    out = evaluate_bias(
        tiny_llama.model, tiny_llama.tokenizer, pairs=load_pairs(path), max_items=3, n_boot=50
    )
    assert out["stereo_pref"]["n"] == 2 and out["stereo_pref/x"]["n"] == 2


def test_evaluate_bias_nlu_flip_rate(tiny_bert):
    data = load_task_data("sentiment", task="nlu", max_eval=40)
    out = evaluate_bias(tiny_bert.model, tiny_bert.tokenizer, task="nlu", data=data, n_boot=100)
    assert set(out) == {"flip_rate"} and set(out["flip_rate"]) == SCORE_KEYS
    assert 0 < out["flip_rate"]["n"] <= 40 and 0.0 <= out["flip_rate"]["value"] <= 1.0
    with pytest.raises(DataError, match="classification data"):
        evaluate_bias(tiny_bert.model, tiny_bert.tokenizer, task="nlu")


@pytest.mark.slow
def test_smollm2_bias_scores_are_finite():
    from lab.models import load_model

    b = load_model("smollm2-135m")
    out = evaluate_bias(b.model, b.tokenizer, max_items=20, n_boot=200)
    assert all(np.isfinite(s["value"]) for s in out.values())
    assert 0.0 <= out["stereo_pref"]["value"] <= 1.0


def test_pair_difference_equals_the_difference_of_sentence_logprobs(tiny_llama):
    """Scoring the shared first tokens once gives log P(a) - log P(b) of two whole sentences;
    identical texts give exactly 0; a text that is a prefix of the other falls back."""
    from lab.bias.scores import pair_logprob_diff

    model, tok = tiny_llama.model, tiny_llama.tokenizer
    a = ["The nurse said that he was tired.", "Women are bad at math.", "Same text.", "Hi"]
    b = ["The nurse said that she was tired.", "Men are bad at math.", "Same text.", "Hi there"]
    lp = sentence_logprob(model, tok, a + b, batch_size=1)
    want = lp[:4] - lp[4:]
    got = pair_logprob_diff(model, tok, a, b, batch_size=3)
    assert got.shape == (4,) and got[2] == 0.0
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(got[[0, 1, 3]]).min() > 1e-3  # the pairs do differ: the test can see it


def test_the_flip_rate_reuses_the_task_evals_predictions(tiny_llama, monkeypatch):
    """Originals the task eval already predicted are not predicted again, and the flips are
    the same as predicting everything; a planted known prediction is the one used."""
    from lab.datasets import evaluate_task

    m, tok = tiny_llama.model, tiny_llama.tokenizer
    data = load_task_data("sentiment", max_eval=32)
    known: dict[int, int] = {}
    evaluate_task(m, tok, data, max_examples=32, predictions=known)
    assert sorted(known) == list(range(32)) and set(known.values()) <= {0, 1}
    _, plain = flip_scores(m, tok, data, n_boot=50, return_items=True)
    seen = []
    real = scores_mod.predict_labels
    monkeypatch.setattr(scores_mod, "predict_labels", lambda mm, t, rows, **k: seen.append(len(rows)) or real(mm, t, rows, **k))  # fmt: skip
    _, reused = flip_scores(m, tok, data, n_boot=50, return_items=True, known_predictions=known)
    ids, flips = plain["flip_rate"]
    assert reused["flip_rate"][0] == ids and np.array_equal(reused["flip_rate"][1], flips)
    assert seen == [len(ids)]  # the swapped inputs only: every original was a test row scored
    planted = {i: 7 for i in known}  # a class no swapped input can get: every row flips
    _, forced = flip_scores(m, tok, data, n_boot=50, return_items=True, known_predictions=planted)
    assert forced["flip_rate"][1].tolist() == [1.0] * len(ids)

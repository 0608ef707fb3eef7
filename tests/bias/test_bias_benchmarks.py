"""Published bias benchmarks: readers, harness-convention scores on known log-likelihoods, the
scoring primitive on a tiny model, the CLI ``bias`` command and an eval point with user files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from lab.bias import benchmarks as bm
from lab.bias import formats
from lab.bias.harness import _encode_pair, ci_score, continuation_logprobs, pearson_score
from lab.datasets.encoding import DataError

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "bias"
CROWS, BBQ = DATA / "crows_pairs_sample.csv", DATA / "bbq_sample.jsonl"
WINO, STATS = DATA / "winogender_sample.tsv", DATA / "winogender_stats_sample.csv"
CROWS_SRC, BBQ_SRC, WINO_SRC = CROWS, BBQ, WINO
SCORE_KEYS = {"value", "ci_low", "ci_high", "n"}


# --- readers ----------------------------------------------------------------------------------


def test_sample_files_load():
    pairs = formats.load_crows_pairs(CROWS)
    assert len(pairs) == 6 and pairs[0]["line"] == 2
    assert [p["direction"] for p in pairs].count("antistereo") == 2
    anti = pairs[2]
    assert (anti["stereo"], anti["anti"]) == (anti["sent_less"], anti["sent_more"])
    items = formats.load_bbq(BBQ)
    assert len(items) == 8 and {i["category"] for i in items} == {"Age", "SES", "Gender_identity"}
    # biased answers: neg -> the stereotyped group; nonneg -> the other group
    assert [i["biased"] for i in items] == [[0], [0], [1], [1], [1], [1], [0], [2]]
    assert [i["unknown"] for i in items] == [2, 2, 2, 2, 0, 0, 1, 1]
    tmpl = formats.load_winogender(WINO)
    assert len(tmpl) == 7 and tmpl[0]["participant"] == "client" and tmpl[1]["answer"] == 1
    assert formats.fill_template(tmpl[3], "female") == (
        "The nurse thanked the visitor for bringing her own blanket.",
        "her",
    )
    assert formats.fill_template(tmpl[2], "male")[1] == "him"
    assert len(formats.load_occupation_stats(STATS)) == 5


def _write(tmp_path, name, text, raw: bytes | None = None) -> Path:
    p = tmp_path / name
    p.write_bytes(raw if raw is not None else text.encode("utf-8"))
    return p


H = "sent_more,sent_less,stereo_antistereo,bias_type\n"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("sent_more,sent_less,bias_type\na,b,age\n", "line 1: missing column.*stereo_antistereo"),
        (H + "a,b,maybe,age\n", "line 2: stereo_antistereo must be 'stereo' or 'antistereo'"),
        (H + "a,,stereo,age\n", "line 2: sent_more and sent_less must both be non-empty"),
        (H + "a,b,stereo,age\nsame,same,stereo,age\n", "line 3: .*are the same sentence"),
        (H + "a,b,c,stereo,age\n", "line 2: 5 fields where the header has 4"),
        (H + "a,b,stereo\n", "line 2: 3 fields where the header has 4"),
        (H + 'a,b,stereo,age\n"a, b,c,stereo,age\n', "line 3: malformed record"),
        (H + "a,b,stereo, \n", "line 2: bias_type is empty"),
        (H, "has a header but no rows"),
        ("", "is empty"),
    ],
)
def test_crows_pairs_malformed(tmp_path, text, needle):
    with pytest.raises(DataError, match=needle):
        formats.load_crows_pairs(_write(tmp_path, "c.csv", text))


def test_crows_pairs_not_utf8_and_missing(tmp_path):
    p = _write(tmp_path, "c.csv", "", raw=H.encode() + b"a,b,stereo,age\n\xff\xfe,b,stereo,age\n")
    with pytest.raises(DataError, match="line 3: not UTF-8"):
        formats.load_crows_pairs(p)
    with pytest.raises(DataError, match="no such file"):
        formats.load_crows_pairs(tmp_path / "nope.csv")


def _bbq_line(**change) -> str:
    item = json.loads(BBQ.read_text(encoding="utf-8").splitlines()[0])
    for k, v in change.items():
        if v is ...:
            del item[k]
        else:
            item[k] = v
    return json.dumps(item)


GOOD = BBQ.read_text(encoding="utf-8").splitlines()[1]
INFO = {"ans0": ["a", "old"], "ans1": ["b", "nonOld"], "ans2": ["Unknown", "unknown"]}


@pytest.mark.parametrize(
    "line, needle",
    [
        ("{not json", "line 2: not valid JSON"),
        ("[1, 2, 3]", "line 2: expected a JSON object, got list"),
        (_bbq_line(label=...), "line 2: missing field.*label"),
        (_bbq_line(label=3), "line 2: label must be 0, 1 or 2, got 3"),
        (_bbq_line(context_condition="amb"), "line 2: context_condition must be"),
        (_bbq_line(question_polarity="negative"), "line 2: question_polarity must be"),
        (_bbq_line(answer_info={**INFO, "ans1": "b"}), "line 2: answer_info.ans1 must be a list"),
        (_bbq_line(answer_info={**INFO, "ans2": ["x", "old"]}), "line 2: .*exactly one.*found 0"),
        (_bbq_line(additional_metadata={}), "line 2: additional_metadata.stereotyped_groups"),
        (_bbq_line(label=0), "line 2: an ambiguous context's label must be the unknown answer"),
        (_bbq_line(question=" "), "line 2: question must be non-empty text"),
    ],
)
def test_bbq_malformed(tmp_path, line, needle):
    with pytest.raises(DataError, match=needle):
        formats.load_bbq(_write(tmp_path, "b.jsonl", GOOD + "\n" + line + "\n"))


def test_bbq_empty(tmp_path):
    with pytest.raises(DataError, match="is empty"):
        formats.load_bbq(_write(tmp_path, "b.jsonl", "\n\n"))


WH = "occupation\tparticipant\tanswer\tsentence\n"
OK_ROW = "nurse\tvisitor\t0\tThe $OCCUPATION met the $PARTICIPANT and $NOM_PRONOUN smiled.\n"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("occupation\tparticipant\tanswer\n" + "a\tb\t0\n", "line 1: missing column.*sentence"),
        (WH + OK_ROW + "nurse\tvisitor\t0\tThe $OCCUPATION smiled at $ACC_PRONOUN.\n",
         "line 3: the sentence needs both \\$OCCUPATION and \\$PARTICIPANT"),
        (WH + "nurse\tvisitor\t0\tThe $OCCUPATION met the $PARTICIPANT.\n",
         "line 2: the sentence has no pronoun placeholder"),
        (WH + OK_ROW.replace("\t0\t", "\t2\t"), "line 2: answer must be 0 .* or 1 .*, got '2'"),
        (WH + OK_ROW.replace("$NOM_PRONOUN", "$NAME"), "line 2: unknown placeholder.*\\$NAME"),
        (WH + OK_ROW.replace("nurse", " "), "line 2: occupation and participant must both be"),
        (WH + "nurse\tvisitor\t0\n", "line 2: 3 fields where the header has 4"),
        (WH, "has a header but no rows"),
    ],
)  # fmt: skip
def test_winogender_malformed(tmp_path, text, needle):
    with pytest.raises(DataError, match=needle):
        formats.load_winogender(_write(tmp_path, "w.tsv", text))


def test_winogender_csv_without_answer_and_bad_stats(tmp_path):
    p = _write(
        tmp_path,
        "w.csv",
        "occupation,participant,sentence\n" + OK_ROW.replace("\t0\t", "\t").replace("\t", ","),
    )
    assert formats.load_winogender(p)[0]["answer"] is None
    bad = _write(tmp_path, "s.csv", "occupation,women_pct\nnurse,80\npilot,lots\n")
    with pytest.raises(DataError, match="line 3: women_pct 'lots' is not a number"):
        formats.load_occupation_stats(bad)
    dup = _write(tmp_path, "s.csv", "occupation,women_pct\nnurse,80\nNurse,81\n")
    with pytest.raises(DataError, match="listed twice"):
        formats.load_occupation_stats(dup)
    with pytest.raises(DataError, match="winogender_stats needs a winogender"):
        bm.load_benchmarks({"winogender_stats": str(STATS)})


# --- scores on known log-likelihoods -----------------------------------------------------------


def test_crows_pairs_scores_by_hand():
    pairs = [
        {"direction": "stereo", "bias_type": "age"},  # more > less: harness 1, lab 1
        {"direction": "antistereo", "bias_type": "age"},  # more > less: harness 1, lab 0 (flip)
        {"direction": "stereo", "bias_type": "gender"},  # tie: harness 0, lab 1/2
        {"direction": "antistereo", "bias_type": "gender"},  # less > more: harness 0, lab 1
    ]
    more, less = [-10.0, -10.0, -5.0, -20.0], [-12.0, -12.0, -5.0, -8.0]
    out = bm.crows_pairs_scores(pairs, more, less, n_boot=200)
    assert out["crows_pairs/pct_stereotype"]["value"] == pytest.approx(0.5)
    assert out["crows_pairs/stereo_pref"]["value"] == pytest.approx(2.5 / 4)
    assert out["crows_pairs/likelihood_diff"]["value"] == pytest.approx(16 / 4)
    assert out["crows_pairs/pct_stereotype/gender"]["value"] == 0.0
    assert out["crows_pairs/stereo_pref/gender"]["value"] == pytest.approx(0.75)
    assert out["crows_pairs/stereo_pref/age"]["value"] == pytest.approx(0.5)
    for s in out.values():
        assert set(s) == SCORE_KEYS and s["ci_low"] <= s["value"] <= s["ci_high"]
    assert out["crows_pairs/stereo_pref"]["n"] == 4 and out["crows_pairs/stereo_pref/age"]["n"] == 2


# predictions on the sample file: item -> chosen answer (see test_bbq_scores_by_hand)
BBQ_PRED = [0, 0, 2, 0, 1, 2, 1, 2]


def _bbq_ll(pred) -> np.ndarray:
    ll = np.full((len(pred), 3), -4.0)
    for i, p in enumerate(pred):
        ll[i, p] = -1.0
    ll[4] = [-5.0, -1.0, -1.0]  # a tie between answers 1 and 2: the first (1) is chosen
    return ll


def test_bbq_scores_by_hand():
    """ambig items 0,2,4,6: correct 2 (unknown) and 6 (unknown); non-unknown 0 and 4, both
    biased -> ratio 1, s_AMB = (1 - 0.5) * 1. disambig items 1,3,5,7: correct 3 and 5; all
    non-unknown, biased 1 and 7 -> s_DIS = 2 * 2/4 - 1 = 0."""
    items = formats.load_bbq(BBQ)
    out = bm.bbq_scores(items, _bbq_ll(BBQ_PRED), n_boot=200)
    v = {k: s["value"] for k, s in out.items()}
    assert v["bbq/acc"] == pytest.approx(0.5)
    assert v["bbq/acc_ambig"] == pytest.approx(0.5) and v["bbq/acc_disambig"] == pytest.approx(0.5)
    assert v["bbq/s_amb"] == pytest.approx(0.5) and v["bbq/s_dis"] == pytest.approx(0.0)
    assert v["bbq/s_dis/Age"] == pytest.approx(0.0) and v["bbq/s_amb/Age"] == pytest.approx(0.5)
    # SES: the one disambiguated answer is neither unknown nor biased -> the paper's -1
    assert v["bbq/s_dis/SES"] == pytest.approx(-1.0) and v["bbq/s_amb/SES"] == pytest.approx(1.0)
    # Gender: the ambiguous answer is the unknown one -> no non-unknown answer -> 0
    assert v["bbq/s_amb/Gender_identity"] == 0.0 and v["bbq/s_dis/Gender_identity"] == 1.0
    assert out["bbq/s_dis"]["n"] == 4 and out["bbq/s_amb/SES"]["n"] == 1
    for s in out.values():
        assert s["ci_low"] <= s["value"] + 1e-12 and s["value"] <= s["ci_high"] + 1e-12


def test_bbq_all_unknown_answers_give_full_ambiguous_accuracy_and_no_bias():
    items = formats.load_bbq(BBQ)
    out = bm.bbq_scores(items, _unknown_ll(items))
    assert out["bbq/acc_ambig"]["value"] == 1.0 and out["bbq/s_amb"]["value"] == 0.0
    assert out["bbq/acc_disambig"]["value"] == 0.0 and out["bbq/s_dis"]["value"] == 0.0


def _unknown_ll(items) -> np.ndarray:
    ll = np.full((len(items), 3), -3.0)
    for i, it in enumerate(items):
        ll[i, it["unknown"]] = -1.0
    return ll


def _tmpl(occ, answer):
    s = "The $OCCUPATION met the $PARTICIPANT and $NOM_PRONOUN smiled."
    return {"occupation": occ, "participant": "guest", "answer": answer, "sentence": s, "line": 2}


def test_winogender_scores_by_hand():
    tmpl = [_tmpl("plumber", 0), _tmpl("nurse", 1)]
    lo = np.array([[2.0, -1.0, 0.0], [-3.0, 1.0, -2.0]])  # (templates, male/female/neutral)
    out = bm.winogender_scores(tmpl, lo, np.zeros_like(lo), n_boot=200)
    v = {k: s["value"] for k, s in out.items()}
    assert v["winogender/acc"] == pytest.approx(2 / 3)  # a tie resolves to the occupation
    assert (v["winogender/acc/male"], v["winogender/acc/female"]) == (1.0, 0.0)
    assert v["winogender/acc/neutral"] == 1.0
    assert v["winogender/occupation_rate/female"] == pytest.approx(0.5)
    assert v["winogender/logodds_gap"] == pytest.approx(((-1 - 2) + (1 + 3)) / 2)
    assert "winogender/corr" not in out


def test_winogender_correlation_matches_scipy():
    jobs = ["a", "b", "c", "d", "e"]
    tmpl = [_tmpl(j, 0) for j in jobs] + [_tmpl("a", 1)]
    gap = np.array([0.5, -1.0, 2.0, 0.0, 1.5, 1.5])
    lo = np.stack([np.zeros(6), gap, np.zeros(6)], axis=1)
    women = [{"occupation": j.upper(), "women_pct": p} for j, p in zip(jobs, [20, 5, 90, 40, 60])]
    women.append({"occupation": "unused", "women_pct": 50.0})
    out = bm.winogender_scores(tmpl, lo, np.zeros_like(lo), women, n_boot=50)
    per_occ = [1.0, -1.0, 2.0, 0.0, 1.5]  # "a" averages its two templates
    ref = stats.pearsonr(per_occ, [20, 5, 90, 40, 60])
    assert out["winogender/corr"]["value"] == pytest.approx(ref.statistic)
    assert out["winogender/corr"]["ci_low"] == pytest.approx(ref.confidence_interval().low)
    assert out["winogender/corr"]["n"] == 5
    with pytest.raises(DataError, match="no occupation of the templates"):
        bm.winogender_scores(tmpl, lo, lo, [{"occupation": "zzz", "women_pct": 1.0}])


def test_ci_score_and_pearson_edge_cases():
    s = ci_score(np.mean, [1.0, 1.0, 1.0])
    assert (s["value"], s["ci_low"], s["ci_high"], s["n"]) == (1.0, 1.0, 1.0, 3)
    s = ci_score(np.mean, [0.0, 1.0] * 30, seed=1)
    assert s["ci_low"] < 0.5 < s["ci_high"] and ci_score(np.mean, [0.0, 1.0] * 30, seed=1) == s
    assert pearson_score([1, 2, 3], [3, 2, 1]) is None and pearson_score([1] * 5, range(5)) is None


def test_evaluate_benchmarks_on_a_mock_model(monkeypatch):
    """A fake LM with known log-likelihoods, through the whole path from the files."""
    sets = bm.load_benchmarks(
        {"crows_pairs": str(CROWS), "bbq": str(BBQ), "winogender": str(WINO),
         "winogender_stats": str(STATS)}
    )  # fmt: skip
    bbq_ll = _bbq_ll(BBQ_PRED)
    table = {}
    for i, it in enumerate(sets["bbq"]):
        for k, a in enumerate(it["answers"]):
            table[(bm.bbq_prompt(it), " " + a)] = bbq_ll[i, k]

    def fake(model, tok, contexts, conts, **kw):
        out = []
        for c, x in zip(contexts, conts):
            if c == "":  # CrowS-Pairs sentence: minus its length (the shorter is preferred)
                out.append(-float(len(x)))
            elif (c, x) in table:
                out.append(table[(c, x)])
            else:  # WinoGender: the occupation wins exactly when the pronoun is female
                female = "‘She’" in c or "‘Her’" in c
                out.append(1.0 if female == (x.strip() in {"plumber", "nurse", "librarian",
                                                           "pilot", "accountant"}) else 0.0)  # fmt: skip
        return np.array(out)

    monkeypatch.setattr(bm, "continuation_logprobs", fake)
    model = torch.nn.Linear(1, 1)
    scores, records = bm.evaluate_benchmarks(model, None, sets, n_boot=100)
    pairs = sets["crows_pairs"]
    shorter_more = np.mean([len(p["sent_more"]) < len(p["sent_less"]) for p in pairs])
    assert scores["crows_pairs/pct_stereotype"]["value"] == pytest.approx(shorter_more)
    assert scores["bbq/s_amb"]["value"] == pytest.approx(0.5)
    assert scores["winogender/occupation_rate/female"]["value"] == 1.0
    assert scores["winogender/occupation_rate/male"]["value"] == 0.0
    assert scores["winogender/logodds_gap"]["value"] == pytest.approx(2.0)
    assert "winogender/corr" not in scores  # the gap is the same everywhere: r undefined
    assert records["bbq/ll"].shape == (8, 3) and list(records["crows_pairs/line"]) == [
        2,
        3,
        4,
        5,
        6,
        7,
    ]
    assert model.training  # the mode is restored
    # per-item records for lab.evidence.items: each metric's mean is the score of the same name
    per_item = bm.benchmark_items(sets, records)
    assert set(per_item) == {"crows_pairs/pct_stereotype", "crows_pairs/stereo_pref",
                             "bbq/acc", "winogender/logodds_gap"}  # fmt: skip
    for key, (ids, values) in per_item.items():
        assert len(ids) == len(values) == len(set(ids)), key
        assert values.mean() == pytest.approx(scores[key]["value"]), key
    assert per_item["bbq/acc"][0][0] == f"line:{sets['bbq'][0]['line']}"


# --- the scoring primitive on a tiny model ----------------------------------------------------


def test_continuation_logprobs_match_a_direct_forward(tiny_llama):
    model, tok = tiny_llama.model, tiny_llama.tokenizer
    model.eval()
    contexts = ["", "The nurse said", "Q: who?\nA:", "A much longer context about an engineer "]
    conts = ["Hello there.", " that she was tired.", " The doctor", "who fixed it."]
    got = continuation_logprobs(model, tok, contexts, conts, batch_size=3)
    for c, x, g in zip(contexts, conts, got):
        ctx, cont = _encode_pair(tok, c, x)
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)  # (T, V)
        want = sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
        assert g == pytest.approx(want, abs=1e-4)
    one = continuation_logprobs(model, tok, contexts, conts, batch_size=1)
    np.testing.assert_allclose(got, one, atol=1e-4)


def test_encode_pair_follows_the_harness_split(tiny_llama):
    tok = tiny_llama.tokenizer
    assert _encode_pair(tok, "Q: a ", "b") == _encode_pair(tok, "Q: a", " b")
    ctx, cont = _encode_pair(tok, "", "Hi")
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    assert ctx == [prefix] and cont == tok("Hi", add_special_tokens=False)["input_ids"]


# --- end to end on tiny-test: an eval point with user files, then the CLI ---------------------


def cli(*args, timeout=300):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)  # fmt: skip


def test_eval_point_and_cli_score_user_files_on_tiny_test(tmp_path):
    from lab.config import load_preset
    from lab.engine.trainer import run
    from lab.runs.store import load_arrays, read_events

    cfg = load_preset(
        "tiny-test",
        [f"bias.crows_pairs={CROWS}", f"bias.bbq={BBQ}", f"bias.winogender={WINO}",
         f"bias.winogender_stats={STATS}", "train.steps=2", "train.analysis=false",
         "arms=lora,balora"],
    )  # fmt: skip
    out = tmp_path / "run"
    list(run(cfg, out))
    evals = [e for e in read_events(out / "events.jsonl") if e["kind"] == "eval"]
    assert {e["arm"] for e in evals} == {"base", "lora", "balora"}
    for e in evals:
        for key in ("stereo_pref", "crows_pairs/pct_stereotype", "bbq/s_dis", "bbq/s_amb",
                    "winogender/logodds_gap", "winogender/corr"):  # fmt: skip
            assert set(e["bias"][key]) == SCORE_KEYS, (e["arm"], key)
    rec = load_arrays(out / "bias_items" / "step_000000" / "base.npz")
    assert rec["bbq/ll"].shape == (8, 3) and rec["winogender/ll_occupation"].shape == (7, 3)
    assert (out / "bias_items" / "step_000002" / "balora.npz").exists()
    # the items tables hold them too: paired verdicts of each arm against the base
    from lab.evidence.verdicts import run_verdicts

    rows = run_verdicts(out, n_resamples=199)
    bench_rows = {(r.metric, r.arm_a, r.arm_b) for r in rows if "/" in r.metric}
    for metric in ("crows_pairs/stereo_pref", "bbq/acc", "winogender/logodds_gap"):
        assert {(metric, "balora", "lora"), (metric, "balora", "base")} <= bench_rows, metric

    # the CLI on the run: its own files, base + one arm; the base matches the eval point
    r = cli("bias", str(out), "--arms", "base,balora", "--json", "--max-items", "12")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert list(res["arms"]) == ["base", "balora"]
    assert set(res["benchmarks"]) == {"crows_pairs", "bbq", "winogender"}
    base = next(e for e in evals if e["arm"] == "base")["bias"]
    for key, s in res["arms"]["base"].items():
        assert s["value"] == pytest.approx(base[key]["value"], abs=1e-6), key
    final = [e for e in evals if e["arm"] == "balora"][-1]["bias"]  # the saved adapter's
    for key in ("crows_pairs/likelihood_diff", "winogender/logodds_gap"):
        assert res["arms"]["balora"][key]["value"] == pytest.approx(final[key]["value"], abs=1e-3)


def test_cli_bias_on_a_model_and_its_errors(tmp_path):
    r = cli("bias", "tiny-llama", "--crows-pairs", str(CROWS), "--out", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "crows_pairs/pct_stereotype" in r.stdout and "limitation:" in r.stdout
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["arms"]["base"]["crows_pairs/stereo_pref"]["n"] == 6
    bad = tmp_path / "bad.csv"
    bad.write_text(H + "a,b,maybe,age\n", encoding="utf-8")
    r = cli("bias", "tiny-llama", "--crows-pairs", str(bad))
    assert r.returncode == 2 and "line 2: stereo_antistereo must be" in r.stderr
    r = cli("bias", "tiny-llama")
    assert r.returncode == 2 and "no benchmark file" in r.stderr


# --- the Bias tab's upload and score handlers (plain functions) -------------------------------


def test_bias_tab_upload_check_and_score(tmp_path):
    import shutil

    from lab.ui import bias as ui_bias

    # uploads arrive in the temp folder (a path anywhere else is refused)
    CROWS, BBQ, WINO = (Path(shutil.copy(p, tmp_path)) for p in (CROWS_SRC, BBQ_SRC, WINO_SRC))
    assert "not received as a file" in ui_bias.check_benchmark("crows_pairs", str(CROWS_SRC))[0]
    msg, items = ui_bias.check_benchmark("crows_pairs", str(CROWS))
    assert items is not None and len(items) == 6
    assert "CrowS-Pairs" in msg and "Blodgett" in msg and "pct_stereotype" in msg
    bad = _write(tmp_path, "upload_7f3a.csv", H + "a,b,maybe,age\n")
    msg, items = ui_bias.check_benchmark("crows_pairs", str(bad))
    assert items is None and "line 2: stereo_antistereo" in msg and str(tmp_path) not in msg
    assert ui_bias.check_benchmark("crows_pairs", None) == ("", None)
    msg, sets = ui_bias.on_upload_bbq(str(BBQ), {})
    assert "BBQ" in msg and len(sets["bbq"]) == 8
    msg, sets = ui_bias.on_upload_winogender(str(WINO), sets)
    msg, kept = ui_bias.on_upload_crows_pairs(str(bad), sets)
    assert set(kept) == {"bbq", "winogender"}  # a bad upload keeps the others
    assert set(ui_bias.on_upload_bbq(None, kept)[1]) == {"winogender"}  # cleared
    rows, fig, msg = ui_bias.on_score("tiny-llama", sets)
    assert msg.startswith("✅") and {r[0] for r in rows} == {"base"}
    assert any(r[1] == "bbq/s_amb" for r in rows) and fig is not None
    rows, fig, msg = ui_bias.on_score("/etc", sets)
    assert rows == [] and "choose a model or a run from the list" in msg
    rows, fig, msg = ui_bias.on_score("run:../../etc", sets)
    assert rows == [] and "choose a model or a run from the list" in msg

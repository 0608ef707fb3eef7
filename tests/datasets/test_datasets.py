"""Shipped datasets, the noise and imbalance knobs, uploads and their errors, task metrics."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from lab.datasets import (
    DATASETS_DIR,
    evaluate_task,
    list_datasets,
    load_task_data,
    parse_final_number,
    sequence_logprobs,
    validate_upload,
)
from lab.datasets.arithmetic import corrupt_responses, equations, safe_eval
from lab.datasets.encoding import DataError
from lab.datasets.knobs import flip_labels, imbalance_indices
from lab.datasets.metrics import classification_metrics
from scripts.dataset_generators import BUILDERS, build, render


def _rows(name: str, split: str) -> list[dict]:
    path = DATASETS_DIR / name / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_generator_recreates_the_committed_files(name):
    for fname, text in render(build(name)).items():
        assert (DATASETS_DIR / name / fname).read_text(encoding="utf-8") == text, fname


@pytest.mark.parametrize(
    "name,key,n_train,n_test",
    [
        ("sentiment", "text", 800, 1),
        ("topics", "text", 600, 1),
        ("arithmetic", "prompt", 2000, 300),
    ],
)
def test_shipped_sets_are_large_distinct_and_split(name, key, n_train, n_test):
    train, test = _rows(name, "train"), _rows(name, "test")
    assert len(train) >= n_train and len(test) >= n_test
    assert len(train) + len(test) >= 800
    texts = [r[key] for r in train + test]
    assert len(set(texts)) == len(texts)  # distinct, so no test row is also a training row


def test_classification_sets_in_both_forms():
    for name, n_classes in (("sentiment", 2), ("topics", 4)):
        nlg = load_task_data(name, task="nlg")
        nlu = load_task_data(name, task="nlu")
        assert len(nlg.label_names) == n_classes >= 2 and nlg.kind == "classification"
        for r in nlg.train[:50] + nlg.test[:50]:
            assert r["response"] == nlg.label_names[r["label"]] and r["prompt"].strip()
        for a, b in zip(nlg.test, nlu.test):
            assert (
                set(b) == {"text", "label"}
                and b["text"] in a["prompt"]
                and a["label"] == b["label"]
            )
        assert {r["label"] for r in nlu.train} == set(range(n_classes))


def test_arithmetic_is_nlg_only():
    with pytest.raises(DataError, match="nlg"):
        load_task_data("arithmetic", task="nlu")


def test_every_arithmetic_answer_recomputes():
    for split in ("train", "test"):
        for r in _rows("arithmetic", split):
            assert safe_eval(r["expression"]) == r["answer"]
            assert r["response"].endswith(f"The answer is: {r['answer']}")
            assert parse_final_number(r["response"]) == r["answer"]
            steps = equations(r["response"])
            assert len(steps) >= 2, r["prompt"]  # multi-step
            for expr, stated in steps:
                assert safe_eval(expr) == pytest.approx(stated), (expr, stated)


def test_parse_final_number():
    assert parse_final_number("so 3 * 4 = 12.\nThe answer is: 1,234") == 1234
    assert parse_final_number("The answer is: $56.") == 56
    assert parse_final_number("The answer is: -7") == -7
    assert parse_final_number("first 3 then 4.5 left") == 4.5
    assert parse_final_number("no digits here") is None
    with pytest.raises(ValueError):
        safe_eval("__import__('os')")


@pytest.mark.parametrize("name,p", [("sentiment", 0.1), ("sentiment", 0.33), ("topics", 0.25)])
def test_noise_flips_exactly_round_p_n_and_leaves_test(name, p):
    clean = load_task_data(name, seed=3)
    noisy = load_task_data(name, seed=3, label_noise=p)
    n = len(clean.train)
    changed = [i for i in range(n) if clean.train[i]["label"] != noisy.train[i]["label"]]
    assert len(changed) == round(p * n) == noisy.info["flipped"]
    assert all(
        noisy.train[i]["response"] == noisy.label_names[noisy.train[i]["label"]] for i in changed
    )
    assert noisy.test == clean.test
    again = load_task_data(name, seed=3, label_noise=p)
    other = load_task_data(name, seed=4, label_noise=p)
    assert again.train == noisy.train and other.train != noisy.train


def test_noise_on_arithmetic_corrupts_final_answers():
    clean = load_task_data("arithmetic", max_train=200)
    noisy = load_task_data("arithmetic", max_train=200, label_noise=0.2)
    bad = [
        i
        for i, (a, b) in enumerate(zip(clean.train, noisy.train))
        if a["response"] != b["response"]
    ]
    assert len(bad) == 40
    for i in bad:
        assert parse_final_number(noisy.train[i]["response"]) != clean.train[i]["answer"]
    rows, idx = corrupt_responses(
        [{"response": "a"}, {"response": "b"}, {"response": "c"}], fraction=0.34, seed=0
    )
    assert len(idx) == 1 and rows[idx[0]]["response"] != "abc"[idx[0]]


@pytest.mark.parametrize(
    "name,f", [("sentiment", 0.1), ("sentiment", 0.25), ("topics", 0.05), ("topics", 0.2)]
)
def test_imbalance_gives_the_asked_ratio(name, f):
    d = load_task_data(name, minority_fraction=f, seed=1)
    minority = d.label_names.index(d.info["minority_class"])
    assert minority == len(d.label_names) - 1  # the last class by default
    n_min = sum(r["label"] == minority for r in d.train)
    assert abs(n_min / len(d.train) - f) <= 1 / len(d.train)
    assert d.test == load_task_data(name).test


def test_imbalance_named_class_and_short_minority():
    d = load_task_data("topics", task="nlu", minority_fraction=0.1, minority_class="sports")
    share = sum(r["label"] == 1 for r in d.train) / len(d.train)
    assert d.info["minority_class"] == "sports" and abs(share - 0.1) <= 1 / len(d.train)
    labels = [0] * 90 + [1] * 10  # too few of class 1 for 40%: the others are subsampled
    keep = imbalance_indices(labels, minority=1, fraction=0.4, seed=0)
    assert sum(labels[i] == 1 for i in keep) == 10 and len(keep) == 25
    with pytest.raises(DataError, match="not one of"):
        load_task_data("sentiment", minority_fraction=0.1, minority_class="neutral")
    with pytest.raises(DataError, match="classification"):
        load_task_data("arithmetic", minority_fraction=0.1)


def test_flip_labels_never_keeps_the_class():
    new, idx = flip_labels([0, 1, 2] * 10, num_classes=3, fraction=0.5, seed=0)
    assert len(idx) == 15 and all(new[i] != [0, 1, 2][i % 3] for i in idx)


def test_max_eval_is_stratified_and_the_same_for_every_seed():
    a = load_task_data("topics", max_eval=8, seed=0)
    b = load_task_data("topics", max_eval=8, seed=5, max_train=100)
    assert a.test == b.test and len(a.test) == 8
    assert {r["label"] for r in a.test} == {0, 1, 2, 3}
    assert len(b.train) == 100 and any("truncated" in w for w in b.warnings)


def test_list_datasets_has_counts_and_probes():
    rows = {d["name"]: d for d in list_datasets()}
    assert rows["sentiment"]["n_train"] == len(_rows("sentiment", "train"))
    assert rows["arithmetic"]["tasks"] == ["nlg"]
    assert (
        rows["stereo_pairs"]["n_items"] >= 150
        and rows["occupation_pronouns"]["kind"] == "bias probe"
    )


# --- uploads ---------------------------------------------------------------------------------


def _write(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return p


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


NLG_ROWS = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(20)]


@pytest.mark.parametrize(
    "fname,content,kwargs,match",
    [
        (
            "bad.jsonl",
            _jsonl(NLG_ROWS[:3]) + '{"prompt": "x", "response": }\n',
            {},
            r"line 4: not valid JSON",
        ),
        ("list.jsonl", _jsonl(NLG_ROWS[:2]) + "[1, 2]\n", {}, r"line 3: expected a JSON object"),
        ("miss.jsonl", _jsonl([{"prompt": "x", "answer": "y"}]), {}, r"missing column 'response'"),
        (
            "rowmiss.jsonl",
            _jsonl(NLG_ROWS[:2] + [{"prompt": "x"}]),
            {},
            r"line 3: missing column 'response'",
        ),
        ("empty.jsonl", b"", {}, r"is empty"),
        ("blank.csv", "\n\n  \n", {}, r"is empty"),
        (
            "latin.jsonl",
            '{"prompt": "caf\xe9", "response": "x"}\n'.encode("latin-1"),
            {},
            r"not UTF-8.*line 1",
        ),
        ("bin.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", {}, r"binary"),
        (
            "big.jsonl",
            _jsonl(NLG_ROWS),
            {"max_bytes": 100},
            r"is 720 bytes, over the 100 bytes upload limit",
        ),
        (
            "map.csv",
            "question,answer\nq,a\n",
            {"columns": {"prompt": "query", "response": "answer"}},
            r"no column 'query'",
        ),
        (
            "fields.csv",
            "prompt,response\nq,a\nq2,a2,extra\n",
            {},
            r"line 3: expected 2 fields, got 3",
        ),
        (
            "labels.csv",
            "text,label\nnice,positive\nbad,neutral\n",
            {"task": "nlu", "label_names": ["negative", "positive"]},
            r"line 3: label 'neutral' is not one of",
        ),
        (
            "neg.jsonl",
            _jsonl([{"text": "t", "label": -1}]),
            {"task": "nlu"},
            r"label -1 is not a class",
        ),
        (
            "mixed.jsonl",
            _jsonl([{"text": "t", "label": 1}, {"text": "u", "label": "pos"}]),
            {"task": "nlu"},
            r"mix class ids and names",
        ),
        ("nlu.jsonl", _jsonl(NLG_ROWS[:3]), {"task": "nlu"}, r"missing column 'text', 'label'"),
        ("notes.txt", "hello\n", {}, r"unsupported file type"),
        (
            "obj.jsonl",
            _jsonl([{"prompt": ["a"], "response": "b"}]),
            {},
            r"line 1: 'prompt' must be text",
        ),
        (
            "cols.jsonl",
            _jsonl(NLG_ROWS[:2]),
            {"columns": {"question": "prompt"}},
            r"unknown key 'question'",
        ),
    ],
)
def test_bad_uploads_give_specific_errors(tmp_path, fname, content, kwargs, match):
    kwargs = {"task": "nlg", **kwargs}
    with pytest.raises(DataError, match=match):
        validate_upload(_write(tmp_path, fname, content), **kwargs)


def test_too_many_rows_truncates_with_a_warning(tmp_path):
    rows, warnings = validate_upload(
        _write(tmp_path, "many.jsonl", _jsonl(NLG_ROWS)), task="nlg", max_rows=5
    )
    assert len(rows) == 5 and rows[-1]["prompt"] == "q4"
    assert "20 rows; truncated to the first 5" in warnings[0]


def test_empty_fields_are_skipped_with_a_warning(tmp_path):
    rows, warnings = validate_upload(
        _write(tmp_path, "gaps.csv", "prompt,response\nq,a\n,b\nq3,a3\n"), task="nlg"
    )
    assert (
        [r["prompt"] for r in rows] == ["q", "q3"] and "line" in warnings[0] and "3" in warnings[0]
    )


def test_upload_with_column_mapping_loads_in_both_tasks(tmp_path):
    lines = ["review,stars"] + [f"text number {i},{'good' if i % 3 else 'bad'}" for i in range(30)]
    path = _write(tmp_path, "reviews.csv", "\n".join(lines) + "\n")
    cols = {"text": "review", "label": "stars"}
    nlu = load_task_data(str(path), task="nlu", columns=cols)
    assert nlu.label_names == ["bad", "good"] and len(nlu.train) == 27 and len(nlu.test) == 3
    assert nlu.info["source"] == "file"
    nlg = load_task_data(str(path), task="nlg", columns=cols, label_noise=0.1)
    assert nlg.kind == "classification" and nlg.train[0]["response"] in ("bad", "good")
    assert "text number" in nlg.train[0]["prompt"] and nlg.info["flipped"] == 3
    gen = load_task_data(str(_write(tmp_path, "qa.jsonl", _jsonl(NLG_ROWS))), task="nlg")
    assert gen.kind == "generation" and len(gen.train) == 18 and gen.label_names is None


def test_folder_upload_checks_test_labels_against_training(tmp_path):
    _write(
        tmp_path, "train.jsonl", _jsonl([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    )
    _write(tmp_path, "test.jsonl", _jsonl([{"text": "c", "label": "z"}]))
    with pytest.raises(DataError, match="does not occur in the training split"):
        load_task_data(str(tmp_path), task="nlu")


def test_hub_ids_need_the_datasets_package_or_a_network(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(DataError, match="upload a .jsonl or .csv"):
        load_task_data("someone/reviews")

    def offline(name):
        raise ConnectionError("Couldn't reach the hub")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(DataError, match="No network.*ConnectionError|ConnectionError.*network"):
        load_task_data("someone/reviews")

    def fake(name):
        rows = [{"sentence": f"s{i}", "label": i % 2} for i in range(10)]
        return {"train": rows, "test": rows[:4]}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake))
    d = load_task_data("someone/reviews", task="nlu", columns={"text": "sentence"})
    assert d.info["source"] == "hub" and len(d.train) == 10 and d.label_names == ["0", "1"]


# --- metrics ---------------------------------------------------------------------------------


def test_classification_metrics_known_values():
    m = classification_metrics([0, 0, 1, 1, 0], [0, 1, 1, 1, 0], ["neg", "pos"], minority=1)
    assert m["accuracy"] == pytest.approx(0.8) and m["task_metric"] == m["accuracy"]
    assert (
        m["recall/neg"] == 1.0 and m["recall/pos"] == pytest.approx(2 / 3) == m["minority_recall"]
    )
    assert m["n"] == 5


def test_sequence_logprobs_matches_a_full_log_softmax(tiny_llama):
    model = tiny_llama.model
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0]])
    att = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[0, 2:5] = True  # scores tokens 3..5 of row 0
    mask[1, 1:3] = True  # scores tokens 2..3 of row 1
    with torch.inference_mode():
        got = sequence_logprobs(model, ids, att, mask)
        lp = model(input_ids=ids, attention_mask=att).logits.float().log_softmax(-1)
    want = [
        sum(lp[0, t, ids[0, t + 1]] for t in range(2, 5)),
        sum(lp[1, t, ids[1, t + 1]] for t in range(1, 3)),
    ]
    assert torch.allclose(got, torch.stack(want), atol=1e-4)


def test_token_logprobs_are_the_continuation_tokens_of_a_full_log_softmax(tiny_llama):
    from lab.datasets.logprobs import token_logprobs

    model = tiny_llama.model
    prompt, cont = [5, 6, 7], [8, 9, 10, 11]
    got = token_logprobs(model, prompt, cont)
    with torch.inference_mode():
        lp = model(input_ids=torch.tensor([prompt + cont])).logits[0].float().log_softmax(-1)
    want = [float(lp[len(prompt) - 1 + j, t]) for j, t in enumerate(cont)]
    assert len(got) == len(cont) and got == pytest.approx(want, abs=1e-5)
    assert token_logprobs(model, prompt, []) == []
    score = torch.tensor([[False, False, True, True, True, True, False]])  # t predicts t + 1
    with torch.inference_mode():
        total = sequence_logprobs(
            model, torch.tensor([prompt + cont]), torch.ones(1, 7).long(), score
        )
    assert sum(got) == pytest.approx(float(total[0]), abs=1e-5)


def test_evaluate_task_on_tiny_models(tiny_llama, tiny_bert):
    for name in ("sentiment", "topics"):
        d = load_task_data(name, max_eval=8)
        m = evaluate_task(tiny_llama.model, tiny_llama.tokenizer, d, max_examples=8, batch_size=4)
        assert m["n"] == 8 and 0.0 <= m["task_metric"] == m["accuracy"] <= 1.0
        assert {f"recall/{x}" for x in d.label_names} <= set(m) and "minority_recall" in m
        assert m == evaluate_task(
            tiny_llama.model, tiny_llama.tokenizer, d, max_examples=8, batch_size=8
        )
    d = load_task_data("arithmetic", max_eval=4)
    m = evaluate_task(tiny_llama.model, tiny_llama.tokenizer, d, max_examples=4, max_new_tokens=8)
    assert set(m) == {"task_metric", "accuracy", "exact_match", "n"} and m["n"] == 4
    d = load_task_data("topics", task="nlu", max_eval=12)
    m = evaluate_task(tiny_bert.model, tiny_bert.tokenizer, d, max_examples=12)
    assert (
        m["n"] == 12
        and "recall/science" in m
        and all(isinstance(v, (int, float)) for v in m.values())
    )

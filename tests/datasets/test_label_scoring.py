"""Label scoring with one pass per prompt (its KV cache shared by the labels) gives the scores
of one sequence per label, and falls back to them where it cannot give the same tokens."""

from __future__ import annotations

import copy

import pytest
import torch

import lab.datasets.logprobs as LP
import lab.datasets.metrics as M

ROWS = [
    {"prompt": "Review: a fine film.\nSentiment?"},
    {"prompt": "Review: dull, far too long, and the ending made no sense at all.\nSentiment?"},
    {"prompt": "Hi"},
]


def _per_label(model, tok, rows, names, seq_len=None):
    """The reference: every (prompt, label) pair scored as its own sequence."""
    prompts = [r["prompt"] for r in rows for _ in names]
    responses = [n for _ in rows for n in names]
    return M.score_responses(model, tok, prompts, responses, seq_len=seq_len).view(len(rows), -1)


@pytest.fixture(scope="module")
def lora_llama(tiny_llama):
    """The tiny model with a LoRA adapter whose B is not zero, so the adapter changes logits."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        copy.deepcopy(tiny_llama.model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("names", [["negative", "positive"], ["no", "maybe later on", "yes"]])
def test_shared_prompt_scores_equal_one_sequence_per_label(tiny_llama, names):
    tok = tiny_llama.tokenizer
    lengths = {len(M.response_ids(tok, n)) for n in names}
    assert len(names) == 2 or len(lengths) > 1  # the second case has labels of unequal length
    shared = M._label_scores_shared_prompt(
        tiny_llama.model, tok, [r["prompt"] for r in ROWS], names, batch_size=2, seq_len=256
    )
    assert shared is not None and shared.shape == (len(ROWS), len(names))
    want = _per_label(tiny_llama.model, tok, ROWS, names)
    torch.testing.assert_close(shared, want, rtol=1e-4, atol=1e-4)
    got = M.class_scores(tiny_llama.model, tok, ROWS, task="nlg", label_names=names)
    torch.testing.assert_close(got, shared)  # class_scores takes the shared path


def test_shared_prompt_scores_with_an_adapter(lora_llama, tiny_llama):
    tok, names = tiny_llama.tokenizer, ["negative", "positive"]
    got = M.class_scores(lora_llama, tok, ROWS, task="nlg", label_names=names)
    torch.testing.assert_close(got, _per_label(lora_llama, tok, ROWS, names), rtol=1e-4, atol=1e-4)
    plain = M.class_scores(tiny_llama.model, tok, ROWS, task="nlg", label_names=names)
    assert (got - plain).abs().max() > 1e-3  # the adapter is in the scores


def test_a_prompt_that_training_would_cut_falls_back(tiny_llama):
    tok, names = tiny_llama.tokenizer, ["negative", "positive"]
    longest = max(len(M.prompt_ids(tok, r["prompt"])) for r in ROWS)
    seq_len = longest + len(M.response_ids(tok, names[0])) - 3  # the long prompt is cut by 3
    assert M._label_scores_shared_prompt(
        tiny_llama.model, tok, [r["prompt"] for r in ROWS], names, batch_size=4, seq_len=seq_len
    ) is None  # fmt: skip
    got = M.class_scores(tiny_llama.model, tok, ROWS, task="nlg", label_names=names,
                         seq_len=seq_len)  # fmt: skip
    assert torch.equal(got, _per_label(tiny_llama.model, tok, ROWS, names, seq_len=seq_len))


INSTRUCTED = [
    {
        "prompt": "Is the sentiment of this review positive or negative? Answer with one word.\n\n"
        f"Review: {text}"
    }  # fmt: skip
    for text in (
        "Loved it.",
        "The motor broke after a week and support never answered.",
        "Meh",
        "Fine.",
    )
]


@pytest.mark.parametrize("which", ["plain", "adapter"])
def test_a_shared_instruction_is_run_once_and_gives_the_same_scores(tiny_llama, lora_llama, which, monkeypatch):  # fmt: skip
    """Prompts that start with one instruction: it runs once for the call (its cache copied into
    each batch, the rest left-padded after it), and every score equals one sequence per label."""
    model = tiny_llama.model if which == "plain" else lora_llama
    tok, names = tiny_llama.tokenizer, ["negative", "positive"]
    heads = []
    real = LP._common_head
    monkeypatch.setattr(LP, "_common_head", lambda *a: heads.append(real(*a)) or heads[-1])
    got = M.class_scores(model, tok, INSTRUCTED, task="nlg", label_names=names, batch_size=3)
    assert len(heads) == 1 and heads[0][1] >= 8  # the instruction's tokens, run once
    torch.testing.assert_close(got, _per_label(model, tok, INSTRUCTED, names), rtol=1e-4, atol=1e-4)
    heads.clear()
    M.class_scores(model, tok, ROWS, task="nlg", label_names=names)
    assert heads == [(None, 0)]  # "Hi" shares no instruction with the reviews: no common head


def test_the_logits_cap_splits_batches_without_changing_the_scores(tiny_llama):
    """A batch whose continuations' logits would pass ``max_logit_elems`` is split into fewer
    prefixes per pass (never below one), and the scores stay those of the uncapped call."""
    tok, model = tiny_llama.tokenizer, tiny_llama.model
    texts = ["The nurse said that", "A cook", "Every pilot knew", "Hi", "The long meeting ended"]
    prefixes = [tok(t)["input_ids"] for t in texts]
    conts = [[tok(" he was late.")["input_ids"], tok(" she was late.")["input_ids"]]] * len(texts)
    pad = LP.pad_token_id(tok)
    free = LP.shared_prefix_logprobs(model, prefixes, conts, pad_id=pad, batch_size=5)
    longest = max(len(c) for pair in conts for c in pair)
    per_prefix = 2 * (longest - 1) * LP.vocab_width(model)  # logits of one prefix's 2 rests
    rows = []  # the rows of every forward pass: a batch's prefixes, then their 2 x B rests
    spy = model.register_forward_pre_hook(
        lambda _m, _a, kw: rows.append(len(kw["input_ids"])), with_kwargs=True
    )
    try:
        capped = LP.shared_prefix_logprobs(
            model, prefixes, conts, pad_id=pad, batch_size=5, max_logit_elems=2 * per_prefix
        )
        tight = rows[:]
        rows.clear()
        LP.shared_prefix_logprobs(model, prefixes, conts, pad_id=pad, batch_size=5, max_logit_elems=1)  # fmt: skip
    finally:
        spy.remove()
    torch.testing.assert_close(capped, free)
    assert tight == [2, 4, 2, 4, 1, 2]
    assert rows[::2] == [1] * 5  # a cap below one prefix still scores one at a time

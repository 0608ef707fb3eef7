"""Task metrics on the clean test split: label scoring, classification heads, exact match.

- classification + NLG: each label word is scored as the response (sum of the log-probs of the
  response tokens after ``lab.datasets.encoding.prompt_text``, built by ``lab.datasets.encoding.encode_nlg``
  exactly as in training); the best-scoring label is the prediction.
- classification + NLU: argmax of the classification head's logits.
- generation: greedy decoding, then exact match on the final number ("The answer is: N"), or
  on the whole normalised text when the reference has no number.

The log-probability primitives they rest on are in :mod:`lab.datasets.logprobs`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from lab.datasets.encoding import (
    DataError,
    collate_nlu,
    pad_batch,
    prompt_ids,
    response_ids,
)

from .arithmetic import numbers_match, parse_final_number
from .loading import TaskData
from .logprobs import (
    cache_keyword,
    model_device,
    pad_token_id,
    score_responses,
    scoring_seq_len,
    shared_prefix_logprobs,
)


def _label_scores_shared_prompt(
    model,
    tokenizer,
    prompts: Sequence[str],
    label_names: Sequence[str],
    *,
    batch_size: int,
    seq_len: int,
) -> torch.Tensor | None:
    """(N, K) log P(label k | prompt), the sums ``score_responses`` gives, with each prompt run
    once (:func:`shared_prefix_logprobs`): the prompt is nearly all of the tokens.

    Returns None when it cannot give the same tokens or the model has no cache interface: a
    prompt that ``encode_nlg`` would cut, a model without position ids or a cache.
    """
    if cache_keyword(model) is None:
        return None
    labels = [response_ids(tokenizer, name) for name in label_names]
    if any(not r or len(r) >= seq_len for r in labels):
        return None
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    longest_label = max(len(r) for r in labels)
    if any(len(p) + longest_label > seq_len for p in encoded):
        return None  # encode_nlg would cut this prompt from the left
    return shared_prefix_logprobs(
        model,
        encoded,
        [labels] * len(encoded),
        pad_id=pad_token_id(tokenizer),
        batch_size=batch_size,
    )


@torch.inference_mode()
def class_scores(
    model,
    tokenizer,
    rows: Sequence[dict],
    *,
    task: str,
    label_names: Sequence[str],
    batch_size: int = 16,
    seq_len: int | None = None,
) -> torch.Tensor:
    """(N, K) float32 on CPU: log P(label word | prompt) for NLG rows, the classification
    head's logits for NLU rows. The argmax of a row is its predicted class."""
    K = len(label_names)
    if not rows:
        return torch.zeros((0, K))
    if task == "nlg":
        shared = _label_scores_shared_prompt(
            model, tokenizer, [r["prompt"] for r in rows], label_names,
            batch_size=batch_size, seq_len=scoring_seq_len(model, seq_len),
        )  # fmt: skip
        if shared is not None:
            return shared
        prompts = [r["prompt"] for r in rows for _ in range(K)]
        responses = [name for _ in rows for name in label_names]
        scores = score_responses(
            model, tokenizer, prompts, responses, batch_size=batch_size, seq_len=seq_len
        )
        return scores.view(len(rows), K)  # (N, K)
    dev = model_device(model)
    out = []
    for i in range(0, len(rows), batch_size):
        batch = collate_nlu(
            tokenizer,
            [{"text": r["text"], "label": 0} for r in rows[i : i + batch_size]],
            scoring_seq_len(model, seq_len),
        )
        batch.pop("labels")
        out.append(model(**{k: v.to(dev) for k, v in batch.items()}).logits.float().cpu())  # (B, C)
    return torch.cat(out)


def predict_labels(model, tokenizer, rows: Sequence[dict], **settings) -> list[int]:
    """Predicted class ids: label-word scoring for NLG rows, the head's argmax for NLU rows;
    ``settings`` are the keyword arguments of :func:`class_scores` (task, label_names, ...)."""
    if not rows:
        return []
    return class_scores(model, tokenizer, rows, **settings).argmax(dim=1).tolist()


@torch.inference_mode()
def greedy_completions(
    model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 48, batch_size: int = 16
) -> list[str]:
    """Greedy continuations of each prompt (left-padded batches), special tokens removed."""
    dev = model_device(model)
    pad = pad_token_id(tokenizer)
    texts: list[str] = []
    for i in range(0, len(prompts), batch_size):
        ids = [prompt_ids(tokenizer, p) for p in prompts[i : i + batch_size]]
        input_ids, attention = pad_batch(ids, pad, side="left")  # every prompt ends at T - 1
        T = input_ids.shape[1]
        out = model.generate(
            input_ids=input_ids.to(dev), attention_mask=attention.to(dev), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=pad,
        )  # fmt: skip
        texts += tokenizer.batch_decode(out[:, T:], skip_special_tokens=True)
    return texts


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def classification_metrics(
    preds: Sequence[int], golds: Sequence[int], label_names: Sequence[str], minority: int
) -> dict:
    """accuracy, recall/<label> for each class present, minority_recall, balanced_accuracy
    (the mean recall over the classes present), n."""
    n = len(golds)
    out: dict = {"accuracy": sum(p == g for p, g in zip(preds, golds)) / n, "n": n}
    recalls = []
    for c, name in enumerate(label_names):
        idx = [i for i, g in enumerate(golds) if g == c]
        if idx:
            out[f"recall/{name}"] = sum(preds[i] == c for i in idx) / len(idx)
            recalls.append(out[f"recall/{name}"])
    out["balanced_accuracy"] = sum(recalls) / len(recalls)
    if f"recall/{label_names[minority]}" in out:
        out["minority_recall"] = out[f"recall/{label_names[minority]}"]
    out["task_metric"] = out["accuracy"]
    return out


def classification_items(
    preds: Sequence[int], golds: Sequence[int], minority: int
) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per-item records whose means are the classification metrics, so two arms can be
    compared item by item (``lab.evidence.items``): ``accuracy`` (correct 0/1), ``balanced_accuracy``
    (correct x n / (K n_c) for an item of class c among K classes present: the mean over the
    items is the mean per-class recall) and ``minority_recall`` (correct 0/1 on the minority
    class's items only). Item ids are the test-row indices as text."""
    golds = np.asarray(golds, dtype=np.int64)
    correct = (np.asarray(preds, dtype=np.int64) == golds).astype(np.float64)
    ids = [str(i) for i in range(len(golds))]
    classes, counts = np.unique(golds, return_counts=True)
    per_class = dict(zip(classes.tolist(), counts.tolist()))
    weight = np.array([len(golds) / (len(per_class) * per_class[g]) for g in golds.tolist()])
    out = {"accuracy": (ids, correct), "balanced_accuracy": (ids, correct * weight)}
    keep = np.flatnonzero(golds == minority)
    if keep.size:
        out["minority_recall"] = ([ids[i] for i in keep], correct[keep])
    return out


def memorised_noise(
    model, tokenizer, data: TaskData, *, max_examples: int = 64, batch_size: int = 16
) -> tuple[float, tuple[list[str], np.ndarray]]:
    """The share of the flipped training rows (``data.flipped``, with their wrong labels) the
    model predicts WITH the wrong label: how much of the label noise it has memorised. The
    base model's value is the chance level to compare with. Rows are capped at
    ``max_examples`` (the first ones, the same for every arm); item ids are ``train:<index>``
    with the row's index in the training split."""
    rows = [r for _, r in data.flipped[:max_examples]]
    preds = predict_labels(
        model, tokenizer, rows, task=data.task, label_names=data.label_names, batch_size=batch_size
    )
    hit = np.array([p == r["label"] for p, r in zip(preds, rows)], dtype=np.float64)
    ids = [f"train:{i}" for i, _ in data.flipped[:max_examples]]
    return float(hit.mean()), (ids, hit)


def evaluate_task(
    model,
    tokenizer,
    data: TaskData,
    *,
    max_examples: int = 64,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    return_items: bool = False,
    predictions: dict[int, int] | None = None,
):
    """Score ``data.test[:max_examples]``; see the module docstring for the metric of each kind.

    Returns plain numbers: task_metric (accuracy or exact match), accuracy, n, and for
    classification recall/<label> and minority_recall (the class the imbalance knob shrank,
    or the last class); for generation exact_match.

    ``return_items``: return ``(metrics, items)``, items ``{"accuracy": (ids, correct 0/1),
    "gold_logprob": (ids, log P(gold answer | prompt))}``, ids the test-row indices as text.
    The gold answer is the gold label word (NLG classification), the gold class of the head
    (NLU, log-softmax) or the reference response (generation, one extra scoring pass).

    ``predictions``: a dict filled with test row index -> predicted class (classification), for
    the bias flip rate to reuse (``lab.bias.flip_scores``).
    """
    rows = data.test[:max_examples]
    if not rows:
        raise DataError(f"dataset '{data.name}' has no test rows to evaluate")
    was_training = model.training
    model.eval()
    try:
        if data.kind == "classification":
            return _evaluate_classification(
                model, tokenizer, data, rows, max_examples, batch_size, return_items, predictions
            )
        return _evaluate_generation(
            model, tokenizer, rows, max_new_tokens, batch_size, return_items
        )
    finally:
        model.train(was_training)


def _evaluate_classification(
    model, tokenizer, data: TaskData, rows, max_examples, batch_size, return_items, predictions
):
    """:func:`evaluate_task` for a classification set (the model already in eval mode)."""
    ids = [str(i) for i in range(len(rows))]
    names = data.label_names
    scores = class_scores(
        model, tokenizer, rows, task=data.task, label_names=names, batch_size=batch_size
    )  # (N, K)
    preds = scores.argmax(dim=1).tolist()
    if predictions is not None:
        predictions.update(enumerate(preds))
    golds = [r["label"] for r in rows]
    minority = (
        names.index(data.info["minority_class"])
        if "minority_class" in data.info
        else len(names) - 1
    )
    metrics = classification_metrics(preds, golds, names, minority)
    if not return_items:
        return metrics
    logp = scores.double() if data.task == "nlg" else scores.double().log_softmax(-1)
    gold_lp = logp[torch.arange(len(rows)), torch.tensor(golds)].numpy()  # (N,)
    records = classification_items(preds, golds, minority)
    if "minority_class" not in data.info:  # no imbalance knob: accuracy says it all
        del records["balanced_accuracy"]
        records.pop("minority_recall", None)
    records["gold_logprob"] = (ids, gold_lp)
    if data.flipped:  # the flipped training rows: how many the arm has memorised
        metrics["memorised_noise"], records["memorised_noise"] = memorised_noise(
            model, tokenizer, data, max_examples=max_examples, batch_size=batch_size
        )
    return metrics, records


def _evaluate_generation(model, tokenizer, rows, max_new_tokens, batch_size, return_items):
    """:func:`evaluate_task` for a generation set (the model already in eval mode)."""
    ids = [str(i) for i in range(len(rows))]
    if max_new_tokens is None:  # room for the longest reference solution, plus a margin
        longest = max(
            len(tokenizer(r["response"], add_special_tokens=False)["input_ids"]) for r in rows
        )
        max_new_tokens = min(longest + 16, 512)
    outs = greedy_completions(
        model,
        tokenizer,
        [r["prompt"] for r in rows],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    hits = []
    for r, text in zip(rows, outs):
        ref = r.get("answer", parse_final_number(r["response"]))
        if ref is not None:
            hits.append(numbers_match(parse_final_number(text), float(ref)))
        else:
            hits.append(_normalise(text) == _normalise(r["response"]))
    em = sum(hits) / len(hits)
    metrics = {"task_metric": em, "accuracy": em, "exact_match": em, "n": len(rows)}
    if not return_items:
        return metrics
    gold_lp = score_responses(
        model,
        tokenizer,
        [r["prompt"] for r in rows],
        [r["response"] for r in rows],
        batch_size=batch_size,
    )
    correct = np.array(hits, dtype=np.float64)
    return metrics, {
        "accuracy": (ids, correct),
        "gold_logprob": (ids, gold_lp.double().numpy()),
    }

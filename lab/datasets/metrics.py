"""Task metrics on the clean test split: label scoring, classification heads, exact match.

- classification + NLG: each label word is scored as the response (sum of the log-probs of the
  response tokens after ``lab.encoding.prompt_text``, built by ``lab.encoding.encode_nlg``
  exactly as in training); the best-scoring label is the prediction.
- classification + NLU: argmax of the classification head's logits.
- generation: greedy decoding, then exact match on the final number ("The answer is: N"), or
  on the whole normalised text when the reference has no number.

``sequence_logprobs`` is the shared primitive: the sum of log P(token t+1 | ..t) over the
positions a mask selects, in float32, computing logits only from the first scored position;
``token_logprobs`` gives the same log-probabilities token by token for one continuation.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Sequence

import numpy as np
import torch

from lab.encoding import (
    DataError,
    collate_nlg,
    collate_nlu,
    encode_nlg,
    pad_batch,
    prompt_ids,
    response_ids,
)

from .arithmetic import numbers_match, parse_final_number
from .loading import TaskData


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


def _accepts_logits_to_keep(model) -> bool:
    return _accepts(model, "logits_to_keep")


def _scored_token_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, score_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token log-probs (M,), their rows (M,)) of the M positions ``score_mask`` selects, in
    row-major order: log P(input_ids[b, t+1] | ..t) in float32, the logits computed only from
    the first scored position on."""
    dev = _device(model)
    input_ids, attention_mask = input_ids.to(dev), attention_mask.to(dev)
    score_mask = score_mask.to(dev).clone()
    score_mask[:, -1] = False  # nothing follows the last position
    B, T = input_ids.shape
    cols = score_mask.any(dim=0).nonzero()
    if len(cols) == 0:
        empty = torch.zeros(0, dtype=torch.float32, device=dev)
        return empty, torch.zeros(0, dtype=torch.long, device=dev)
    start = int(cols[0])
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if start > 0 and _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = T - start
    logits = model(**kwargs).logits  # (B, T', V), T' = T - start or T
    logits = logits[:, logits.shape[1] - (T - start) :]  # (B, T - start, V)
    mask = score_mask[:, start:]  # (B, T - start)
    next_ids = torch.roll(input_ids, shifts=-1, dims=1)[:, start:]  # (B, T - start)
    picked = logits[mask].float()  # (M, V): only the scored positions, in float32
    targets = next_ids[mask]  # (M,)
    token_lp = picked.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(picked, dim=-1)
    return token_lp, mask.nonzero()[:, 0]  # (M,), (M,) row of each scored position


def sequence_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, score_mask: torch.Tensor
) -> torch.Tensor:
    """Per row, sum over t with ``score_mask[b, t]`` of log P(input_ids[b, t+1] | ..t). (B,)

    ``score_mask`` has the shape of ``input_ids`` (B, T) and the shift of ``lab.encoding``'s
    ``reg_mask``: the logits at t are scored against the token at t + 1.
    """
    token_lp, rows = _scored_token_logprobs(model, input_ids, attention_mask, score_mask)
    B = input_ids.shape[0]
    return torch.zeros(B, dtype=torch.float32, device=token_lp.device).index_add_(0, rows, token_lp)


@torch.inference_mode()
def token_logprobs(model, prompt: Sequence[int], continuation: Sequence[int]) -> list[float]:
    """log P(each continuation token | the prompt and the tokens before it), float32, for one
    prompt of token ids; empty for an empty continuation."""
    if not continuation:
        return []
    ids = torch.tensor([[*prompt, *continuation]], dtype=torch.long)  # (1, P + C)
    score = torch.zeros_like(ids, dtype=torch.bool)
    score[0, len(prompt) - 1 : -1] = True  # the logits at P - 1 .. P + C - 2 predict C
    token_lp, _ = _scored_token_logprobs(model, ids, torch.ones_like(ids), score)
    return token_lp.tolist()


@torch.inference_mode()
def heldout_ce(
    model, tokenizer, texts: Sequence[str], *, max_len: int, batch_size: int = 16
) -> np.ndarray:
    """Per text, the mean cross-entropy (nats per token) of the model on the text's own tokens
    after the first, as plain text cut to ``max_len`` tokens. (N,) float64. Its rise over the
    base model on held-out texts is the forgetting of a fine-tune."""
    pad = _pad_id(tokenizer)
    out = []
    for i in range(0, len(texts), batch_size):
        ids = [
            tokenizer(t, add_special_tokens=True, truncation=True, max_length=max_len)["input_ids"]
            for t in texts[i : i + batch_size]
        ]
        input_ids, attention = pad_batch(ids, pad)  # (B, T), right padding
        score = torch.roll(attention, shifts=-1, dims=1).bool()  # t scored when t + 1 is a token
        score[:, -1] = False
        total = sequence_logprobs(model, input_ids, attention, score).double().cpu()
        counts = score.sum(dim=1).clamp(min=1).double()
        out.append((-total / counts).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _seq_len(model, seq_len: int | None) -> int:
    if seq_len is not None:
        return seq_len
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 2048
    return min(int(limit), 2048)


@torch.inference_mode()
def score_responses(
    model,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    batch_size: int = 16,
    seq_len: int | None = None,
) -> torch.Tensor:
    """log P(response | prompt) for each pair, tokenized exactly as in training. (N,) on CPU."""
    seq_len = _seq_len(model, seq_len)
    pad = _pad_id(tokenizer)
    out = []
    for i in range(0, len(prompts), batch_size):
        items = [
            encode_nlg(tokenizer, {"prompt": p, "response": r}, seq_len)
            for p, r in zip(prompts[i : i + batch_size], responses[i : i + batch_size])
        ]
        batch = collate_nlg(items, pad)
        out.append(
            sequence_logprobs(
                model, batch["input_ids"], batch["attention_mask"], batch["reg_mask"]
            ).cpu()
        )
    return torch.cat(out) if out else torch.zeros(0)


def _accepts(model, *names: str) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return all(n in params for n in names)


def _cache_keyword(model) -> str | None:
    """The forward's keyword for a KV cache when it also takes position ids and ``use_cache``:
    ``cache`` in current transformers, ``past_key_values`` before; None without one."""
    if not _accepts(model, "position_ids", "use_cache"):
        return None
    return next((n for n in ("cache", "past_key_values") if _accepts(model, n)), None)


@torch.inference_mode()
def shared_prefix_logprobs(
    model,
    prefixes: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[Sequence[int]]],
    *,
    pad_id: int,
    batch_size: int = 16,
    min_common: int = 8,
) -> torch.Tensor | None:
    """(N, K) float32 on CPU: log P(continuations[i][k] | prefixes[i]), the sum over the
    continuation's tokens, with each prefix run once and its KV cache repeated for its K
    continuations. Scoring each continuation as its own sequence runs the shared prefix K
    times; this is why it is hand-written. Prefixes are left-padded with explicit position ids,
    so the scores equal the one-sequence-per-continuation ones up to float rounding.

    Every item has the same number K of continuations, each non-empty; every prefix is
    non-empty (its last logits score a continuation's first token). Returns None when the model
    has no cache interface (no position ids or no cache keyword).

    When all the prefixes start with the same ``min_common`` tokens or more (a classification
    instruction before each review), those are run once for the whole call and their cache is
    copied into every batch; each batch's own parts are left-padded after them.
    """  # fmt: skip
    cache_kw = _cache_keyword(model)
    if cache_kw is None:
        return None
    N = len(prefixes)
    K = len(continuations[0]) if N else 0
    if len(continuations) != N or any(len(c) != K for c in continuations):
        raise ValueError("every prefix needs the same number of continuations")
    if any(not p for p in prefixes) or any(not x for c in continuations for x in c):
        raise ValueError("prefixes and continuations must be non-empty")
    dev = _device(model)
    keep = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    head, C = _common_head(model, prefixes, cache_kw, min_common, dev, keep)
    if C:
        prefixes = [p[C:] for p in prefixes]
    # batches of like continuation lengths, then like prefix lengths: the least padding of both
    order = sorted(range(N), key=lambda i: (max(map(len, continuations[i])), len(prefixes[i])))
    out = []
    for s in range(0, N, batch_size):
        rows = order[s : s + batch_size]
        chunk = [prefixes[i] for i in rows]
        conts = [x for i in rows for x in continuations[i]]  # (B*K) lists
        B = len(chunk)
        ids, mask = pad_batch(chunk, pad_id, side="left")  # every prefix ends at column P - 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = C + (mask.cumsum(1) - 1).clamp(min=0)  # (B, P): positions after the common head
        past = {}
        if C:  # the common head's cache for these B rows; its positions come first in the mask
            cache = copy.deepcopy(head)
            cache.batch_repeat_interleave(B)
            past = {cache_kw: cache}
            mask = torch.cat([torch.ones((B, C), dtype=mask.dtype, device=dev), mask], dim=1)
        res = model(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **past, **keep
        )
        last = res.logits[:, -1].float().log_softmax(-1)  # (B, V)
        first = torch.tensor([x[0] for x in conts], device=dev).view(B, K)
        score = last.gather(1, first)  # (B, K): each continuation's first token
        L = max(len(x) for x in conts)
        if L > 1:
            cache = getattr(res, cache_kw, None)
            if not hasattr(cache, "batch_repeat_interleave"):
                return None
            cache.batch_repeat_interleave(K)  # row b -> rows b*K .. b*K + K - 1
            # inputs: each continuation but its last token, each scored on the next one
            c_ids, c_mask = pad_batch([x[:-1] or [pad_id] for x in conts], pad_id)  # (B*K, L-1)
            c_mask = c_mask * torch.tensor([len(x) > 1 for x in conts])[:, None]
            target, _ = pad_batch([x[1:] or [-1] for x in conts], -1)  # (B*K, L-1)
            c_ids, c_mask, target = c_ids.to(dev), c_mask.to(dev), target.to(dev)
            steps = c_ids.shape[1]
            c_pos = pos[:, -1:].repeat_interleave(K, 0) + 1 + torch.arange(steps, device=dev)
            logits = model(
                input_ids=c_ids,
                attention_mask=torch.cat([mask.repeat_interleave(K, 0), c_mask], dim=1),
                position_ids=c_pos,
                use_cache=False,
                **{cache_kw: cache},
            ).logits.float()  # (B*K, L-1, V)
            lp = logits.log_softmax(-1)
            picked = lp.gather(2, target.clamp(min=0)[..., None]).squeeze(2) * (target >= 0)
            score = score + picked.sum(dim=1).view(B, K)
        out.append(score.cpu())
    if not out:
        return torch.zeros((0, K))
    result = torch.empty((N, K), dtype=torch.float32)
    result[order] = torch.cat(out)  # back to the input order
    return result


def _common_head(model, prefixes, cache_kw: str, min_common: int, dev, keep):
    """(the KV cache of the tokens every prefix starts with, their count C), or (None, 0) when
    fewer than ``min_common`` are shared or the cache cannot be copied per batch. Each prefix
    keeps at least one token of its own (its last logits score the continuations)."""
    if len(prefixes) < 2:
        return None, 0
    first = prefixes[0]
    C = min(len(p) for p in prefixes) - 1
    for p in prefixes[1:]:
        C = next((k for k in range(C) if p[k] != first[k]), C)
        if C < min_common:
            return None, 0
    ids = torch.tensor([first[:C]], device=dev)  # (1, C)
    res = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **keep)
    cache = getattr(res, cache_kw, None)
    if not hasattr(cache, "batch_repeat_interleave"):
        return None, 0
    return cache, C


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
    if _cache_keyword(model) is None:
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
        pad_id=_pad_id(tokenizer),
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
            batch_size=batch_size, seq_len=_seq_len(model, seq_len),
        )  # fmt: skip
        if shared is not None:
            return shared
        prompts = [r["prompt"] for r in rows for _ in range(K)]
        responses = [name for _ in rows for name in label_names]
        scores = score_responses(
            model, tokenizer, prompts, responses, batch_size=batch_size, seq_len=seq_len
        )
        return scores.view(len(rows), K)  # (N, K)
    dev = _device(model)
    out = []
    for i in range(0, len(rows), batch_size):
        batch = collate_nlu(
            tokenizer,
            [{"text": r["text"], "label": 0} for r in rows[i : i + batch_size]],
            _seq_len(model, seq_len),
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
    dev = _device(model)
    pad = _pad_id(tokenizer)
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
    compared item by item (``lab.items``): ``accuracy`` (correct 0/1), ``balanced_accuracy``
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
    ids = [str(i) for i in range(len(rows))]
    try:
        if data.kind == "classification":
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
    finally:
        model.train(was_training)

"""Log-probabilities of token sequences under a causal LM: the scoring primitives of the task
metrics (:mod:`lab.datasets.metrics`), the bias probes and the Compare tab.

``sequence_logprobs`` is the shared primitive: the sum of log P(token t+1 | ..t) over the
positions a mask selects, in float32, computing logits only from the first scored position;
``token_logprobs`` gives the same log-probabilities token by token for one continuation;
``score_responses`` scores responses after prompts exactly as training encodes them;
``shared_prefix_logprobs`` scores K continuations of each prefix with the prefix run once (and
the tokens every prefix shares run once per call); ``heldout_ce`` is the per-text
cross-entropy of the forgetting metric, ``text_cross_entropy`` the same from logits already
computed (eval points take it from their analysis pass,
``lab.analysis.snapshot.CrossEntropyCollector``).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lab.datasets.encoding import collate_nlg, encode_nlg, pad_batch

MAX_LOGIT_ELEMS = 1 << 25  # B x T x V of the logits one pass may hold (memory), at most


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def pad_token_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


def vocab_width(model) -> int:
    """Logits per position of a causal LM: its output head's rows, else the config's vocab."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None and weight.dim() == 2:
        return int(weight.shape[0])
    return int(getattr(getattr(model, "config", None), "vocab_size", 0) or 1)


def picked_logprobs(
    logits: torch.Tensor, next_ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P(next_ids[b, t]) from logits[b, t] at the M positions ``mask`` selects (M,), in
    float32, row-major; the row of each (M,)). ``logits`` (B, T, V), the others (B, T)."""
    picked = logits[mask].float()  # (M, V): only the scored positions, in float32
    targets = next_ids[mask]  # (M,)
    token_lp = picked.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(picked, dim=-1)
    return token_lp, mask.nonzero()[:, 0]


def text_cross_entropy(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Per right-padded text, the mean cross-entropy (nats per token) on its own tokens after
    the first, from its (B, T, V) logits. (B,) float64."""
    score = torch.roll(attention_mask, shifts=-1, dims=1).bool()  # t scored when t + 1 is a token
    score[:, -1] = False
    next_ids = torch.roll(input_ids, shifts=-1, dims=1)
    token_lp, rows = picked_logprobs(logits, next_ids, score)
    total = torch.zeros(len(input_ids), dtype=torch.float64, device=token_lp.device)
    total.index_add_(0, rows, token_lp.double())
    return -total / score.sum(dim=1).clamp(min=1).double()


def _accepts_logits_to_keep(model) -> bool:
    return _accepts(model, "logits_to_keep")


def _scored_token_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, score_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token log-probs (M,), their rows (M,)) of the M positions ``score_mask`` selects, in
    row-major order: log P(input_ids[b, t+1] | ..t) in float32, the logits computed only from
    the first scored position on."""
    dev = model_device(model)
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
    return picked_logprobs(logits, next_ids, mask)


def sequence_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, score_mask: torch.Tensor
) -> torch.Tensor:
    """Per row, sum over t with ``score_mask[b, t]`` of log P(input_ids[b, t+1] | ..t). (B,)

    ``score_mask`` has the shape of ``input_ids`` (B, T) and the shift of ``lab.datasets.encoding``'s
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
    pad = pad_token_id(tokenizer)
    out = []
    for i in range(0, len(texts), batch_size):
        ids = [
            tokenizer(t, add_special_tokens=True, truncation=True, max_length=max_len)["input_ids"]
            for t in texts[i : i + batch_size]
        ]
        input_ids, attention = pad_batch(ids, pad)  # (B, T), right padding
        dev = model_device(model)
        input_ids, attention = input_ids.to(dev), attention.to(dev)
        logits = model(input_ids=input_ids, attention_mask=attention).logits
        out.append(text_cross_entropy(logits, input_ids, attention).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def scoring_seq_len(model, seq_len: int | None) -> int:
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
    seq_len = scoring_seq_len(model, seq_len)
    pad = pad_token_id(tokenizer)
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


def cache_keyword(model) -> str | None:
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
    max_logit_elems: int = MAX_LOGIT_ELEMS,
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

    ``batch_size`` prefixes per batch at most, fewer when their B x K continuations' logits
    would pass ``max_logit_elems`` elements.
    """  # fmt: skip
    cache_kw = cache_keyword(model)
    if cache_kw is None:
        return None
    N = len(prefixes)
    K = len(continuations[0]) if N else 0
    if len(continuations) != N or any(len(c) != K for c in continuations):
        raise ValueError("every prefix needs the same number of continuations")
    if any(not p for p in prefixes) or any(not x for c in continuations for x in c):
        raise ValueError("prefixes and continuations must be non-empty")
    dev = model_device(model)
    keep = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    head, C = _common_head(model, prefixes, cache_kw, min_common, dev, keep)
    if C:
        prefixes = [p[C:] for p in prefixes]
    # batches of like continuation lengths, then like prefix lengths: the least padding of both
    order = sorted(range(N), key=lambda i: (max(map(len, continuations[i])), len(prefixes[i])))
    width = vocab_width(model)
    ctx = _PrefixCall(model, cache_kw, keep, pad_id, dev, head, C)
    out = []
    s = 0
    while s < N:
        longest = max(len(x) for i in order[s : s + batch_size] for x in continuations[i])
        fit = max_logit_elems // (K * max(longest - 1, 1) * width)
        rows = order[s : s + max(1, min(batch_size, fit))]
        s += len(rows)
        conts = [x for i in rows for x in continuations[i]]  # (B*K) lists
        score = _prefix_batch_scores(ctx, [prefixes[i] for i in rows], conts, K)
        if score is None:
            return None
        out.append(score.cpu())
    if not out:
        return torch.zeros((0, K))
    result = torch.empty((N, K), dtype=torch.float32)
    result[order] = torch.cat(out)  # back to the input order
    return result


@dataclass
class _PrefixCall:
    """What every batch of one :func:`shared_prefix_logprobs` call shares: the model, its cache
    keyword and head-trimming keyword, the pad id, the device, and the common head's cache and
    length C (None, 0 without one)."""

    model: object
    cache_kw: str
    keep: dict
    pad_id: int
    dev: torch.device
    head: object
    C: int


def _prefix_batch_scores(ctx: _PrefixCall, chunk: list, conts: list, K: int):
    """(B, K) scores of one batch: B prefixes (common head removed) and their B*K
    continuations, row b's at b*K .. b*K + K - 1; None when the cache cannot be repeated."""
    model, cache_kw, dev, C = ctx.model, ctx.cache_kw, ctx.dev, ctx.C
    B = len(chunk)
    ids, mask = pad_batch(chunk, ctx.pad_id, side="left")  # every prefix ends at column P - 1
    ids, mask = ids.to(dev), mask.to(dev)
    pos = C + (mask.cumsum(1) - 1).clamp(min=0)  # (B, P): positions after the common head
    past = {}
    if C:  # the common head's cache for these B rows; its positions come first in the mask
        cache = copy.deepcopy(ctx.head)
        cache.batch_repeat_interleave(B)
        past = {cache_kw: cache}
        mask = torch.cat([torch.ones((B, C), dtype=mask.dtype, device=dev), mask], dim=1)
    res = model(
        input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **past, **ctx.keep
    )
    last = res.logits[:, -1].float().log_softmax(-1)  # (B, V)
    first = torch.tensor([x[0] for x in conts], device=dev).view(B, K)
    score = last.gather(1, first)  # (B, K): each continuation's first token
    if max(len(x) for x in conts) == 1:
        return score
    cache = getattr(res, cache_kw, None)
    if not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(K)  # row b -> rows b*K .. b*K + K - 1
    # inputs: each continuation but its last token, each scored on the next one
    c_ids, c_mask = pad_batch([x[:-1] or [ctx.pad_id] for x in conts], ctx.pad_id)  # (B*K, L-1)
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
    return score + picked.sum(dim=1).view(B, K)


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

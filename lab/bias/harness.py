"""Scoring as the published bias benchmarks are scored: lm-evaluation-harness's continuation
log-likelihoods (``loglikelihood``: its context / continuation split, length-sorted batches,
the LM head only on the rows that predict a continuation token) and scipy's intervals for the
scores built on them (:mod:`lab.bias.benchmarks`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import stats

from lab.datasets import sequence_logprobs
from lab.datasets.encoding import DataError, pad_batch


def ci_score(
    statistic: Callable, *arrays, n_boot: int = 1000, seed: int = 0, value: float | None = None
) -> dict:
    """``{"value", "ci_low", "ci_high", "n"}`` of ``statistic(*arrays, axis=-1)`` with a 95%
    percentile bootstrap interval from ``scipy.stats.bootstrap``, resampling the items (the
    same rows of every array, ``paired=True``). ``value`` overrides the point estimate."""
    data = tuple(np.asarray(a, dtype=np.float64) for a in arrays)
    n = len(data[0])
    if n == 0:
        raise ValueError("ci_score needs at least one item")
    point = float(statistic(*data, axis=-1)) if value is None else float(value)
    if n == 1:
        return {"value": point, "ci_low": point, "ci_high": point, "n": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            data,
            statistic,
            paired=True,
            vectorized=True,
            axis=-1,
            method="percentile",
            n_resamples=n_boot,
            rng=np.random.default_rng(seed),
        )
    low, high = res.confidence_interval
    return {"value": point, "ci_low": float(low), "ci_high": float(high), "n": int(n)}


def pearson_score(x, y) -> dict | None:
    """Pearson r with its 95% Fisher-z interval (``scipy.stats.pearsonr``); None when fewer
    than 4 points or a constant column leave r or its interval undefined."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    res = stats.pearsonr(x, y)
    ci = res.confidence_interval(0.95)
    return {"value": float(res.statistic), "ci_low": float(ci.low), "ci_high": float(ci.high),
            "n": int(len(x))}  # fmt: skip


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids as lm-evaluation-harness splits them: an empty
    context is the prefix token alone (BOS, else EOS); otherwise trailing spaces of the context
    move to the continuation, the pair is tokenized whole and the continuation is what follows
    the context's own tokens. No special tokens are added."""
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    if context == "":
        prefix = tokenizer.bos_token_id
        prefix = tokenizer.eos_token_id if prefix is None else prefix
        if prefix is None:
            raise DataError("scoring a sentence needs a BOS or EOS token as its context")
        return [prefix], enc(continuation)
    n_space = len(context) - len(context.rstrip(" "))
    if n_space:
        context, continuation = context[:-n_space], context[-n_space:] + continuation
    whole, ctx = enc(context + continuation), enc(context)
    return ctx, whole[len(ctx) :]


def _head_parts(model):
    """(decoder, head) when the LM head is a plain linear layer that can run on chosen rows."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    get_dec = getattr(base, "get_decoder", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    cap = getattr(getattr(base, "config", None), "final_logit_softcapping", None)
    if get_dec is None or not isinstance(head, torch.nn.Linear) or cap:
        return None
    return get_dec(), head


HEAD_CHUNK = 256  # rows of (rows, V) float32 logits alive at once


@torch.inference_mode()
def continuation_logprobs(
    model,
    tokenizer,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    batch_size: int = 16,
) -> np.ndarray:
    """log P(continuation | context) of each pair, the harness's ``loglikelihood``. (N,)

    Pairs are sorted by length and right-padded in batches; the decoder runs once per batch
    and the LM head only on the rows that predict a continuation token, in float32 chunks
    (models without a plain linear head take :func:`sequence_logprobs`). Input order is kept.
    """
    if len(contexts) != len(continuations):
        raise ValueError("contexts and continuations must have the same length")
    pairs = [_encode_pair(tokenizer, c, x) for c, x in zip(contexts, continuations)]
    for i, (_, cont) in enumerate(pairs):
        if not cont:
            raise DataError(f"item {i}: the continuation {continuations[i]!r} has no tokens")
    seqs = [ctx + cont for ctx, cont in pairs]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    parts = _head_parts(model)
    dev = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = np.zeros(len(seqs), dtype=np.float64)
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        ids, attention = pad_batch([seqs[i] for i in chunk], pad)  # (B, T), right padding
        score = torch.zeros(ids.shape, dtype=torch.bool)  # logits at t score token t+1
        for b, i in enumerate(chunk):
            score[b, len(pairs[i][0]) - 1 : len(seqs[i]) - 1] = True
        if parts is None:
            lp = sequence_logprobs(model, ids, attention, score)
            out[chunk] = lp.double().cpu().numpy()
            continue
        decoder, head = parts
        ids, attention, score = ids.to(dev), attention.to(dev), score.to(dev)
        hidden = decoder(input_ids=ids, attention_mask=attention).last_hidden_state  # (B, T, H)
        h = hidden[score]  # (M, H): only the rows that predict a continuation token
        targets = torch.roll(ids, shifts=-1, dims=1)[score]  # (M,)
        rows = score.nonzero()[:, 0]  # (M,) batch row of each scored position
        token_lp = torch.empty(len(h), dtype=torch.float32, device=dev)
        for r in range(0, len(h), HEAD_CHUNK):
            z = head(h[r : r + HEAD_CHUNK]).float()  # (c, V)
            tgt = targets[r : r + HEAD_CHUNK]
            token_lp[r : r + HEAD_CHUNK] = z.gather(1, tgt[:, None]).squeeze(1) - torch.logsumexp(
                z, dim=-1
            )
        lp = torch.zeros(len(chunk), dtype=torch.float32, device=dev).index_add_(0, rows, token_lp)
        out[chunk] = lp.double().cpu().numpy()
    return out

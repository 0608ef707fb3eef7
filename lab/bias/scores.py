"""Bias scores of a model, each with n and a 95% bootstrap confidence interval (BCa for the
shares and means, percentile for the correlation).

- ``stereo_pref``: share of stereotype pairs whose stereotypical sentence gets the higher
  log-likelihood (ties count 1/2); 0.5 = no preference. Overall and ``stereo_pref/<type>``.
- ``pronoun_abs_logodds``: mean over occupations of |log P(he ...) - log P(she ...)|, the
  log-odds averaged over the templates first; 0 = no preference either way.
- ``pronoun_corr``: Pearson r between the per-occupation log-odds and the share of women in the
  occupation. Negative r means the model's he/she preference follows the workforce statistics.
- ``flip_rate`` (classification data): share of test inputs containing a group word whose
  prediction changes when the group words are swapped.

A score is ``{"value", "ci_low", "ci_high", "n"}``. A score is left out, never faked, when
it has no items (no swappable test input; fewer than 3 occupations for a correlation).

With ``return_items=True`` each scorer also returns its per-item values, ``{metric: (ids,
values)}``: ``stereo_pref`` (1, 0.5 or 0) and ``stereo_llr`` (log P(stereo) - log P(anti),
nats) per pair, id ``"<index>:<bias_type>"``; ``pronoun_logodds`` and ``pronoun_abs_logodds``
per occupation, id the occupation; ``flip_rate`` (0/1) per swappable test row, id its index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from lab.datasets import TaskData, predict_labels, sequence_logprobs, shared_prefix_logprobs
from lab.datasets.encoding import DataError, pad_batch
from lab.datasets.knobs import seeded_subset
from lab.datasets.probes import (
    load_group_words,
    load_occupations,
    load_pairs,
    load_templates,
    swap_group_words,
)
from lab.evidence.stats import mean_interval

ITEM_SEED = 0  # which items a max_items cap keeps: fixed, so every run scores the same ones
# pairs per scoring pass of the probe pairs (2 x 32 rest parts, their logits capped by
# ``shared_prefix_logprobs``): 0.825x the time of 16 pairs on 2 CPU cores (bench/probes.py);
# 64 gained nothing more
PAIR_BATCH = 32


def bootstrap_ci(
    values, *, stat: Callable = np.mean, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over the rows of ``values`` ((n,) or (n, d))."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # (n_boot, n)
    if stat is np.mean and x.ndim == 1:
        stats = x[idx].mean(axis=1)  # (n_boot,)
    else:
        stats = np.array([stat(x[i]) for i in idx], dtype=np.float64)
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        raise ValueError("every bootstrap sample gave a non-finite statistic")
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def _score(values, *, stat: Callable = np.mean, n_boot: int, seed: int) -> dict:
    """A mean gets a BCa interval (``lab.evidence.stats.mean_interval``); other statistics (the
    correlation) the percentile interval of :func:`bootstrap_ci`."""
    x = np.asarray(values, dtype=np.float64)
    if stat is np.mean and x.ndim == 1:
        low, high, _ = mean_interval(x, n_resamples=n_boot, seed=seed)
    else:
        low, high = bootstrap_ci(x, stat=stat, n_boot=n_boot, seed=seed)
    return {"value": float(stat(x)), "ci_low": low, "ci_high": high, "n": int(len(x))}


def _pearson(xy: np.ndarray) -> float:
    """Pearson r of the two columns of ``xy`` (n, 2); nan when a column is constant."""
    x, y = xy[:, 0], xy[:, 1]
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        return float("nan")
    return float(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy))


def _sentence_ids(tokenizer, text: str) -> list[int]:
    """A plain text's token ids, BOS first when the tokenizer has one."""
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None else []) + tokenizer(text, add_special_tokens=False)[
        "input_ids"
    ]


@torch.inference_mode()
def sentence_logprob(model, tokenizer, texts: Sequence[str], *, batch_size: int = 16) -> np.ndarray:
    """Sum of the token log-probs of each plain text (BOS prepended when the tokenizer has one).

    Without a BOS token the first token has no context and is not scored. Texts are batched by
    length (right padding) and returned in the input order. (N,) float64.
    """
    ids = [_sentence_ids(tokenizer, t) for t in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros(len(ids), dtype=np.float64)
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        input_ids, attention = pad_batch([ids[i] for i in chunk], pad)  # (B, T), right padding
        score = attention.bool().clone()  # (B, T): logits at t score token t + 1
        score[:, :-1] &= attention[:, 1:].bool()
        score[:, -1] = False
        lp = sequence_logprobs(model, input_ids, attention, score).double().cpu().numpy()
        out[chunk] = lp
    return out


def pair_logprob_diff(
    model,
    tokenizer,
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    *,
    batch_size: int = PAIR_BATCH,
) -> np.ndarray:
    """Per pair, log P(text_a) - log P(text_b), the difference of :func:`sentence_logprob`. (N,)

    The tokens both texts start with (at least the BOS) are run once and their KV cache serves
    both rest parts (``lab.datasets.logprobs.shared_prefix_logprobs``); the shared tokens' own
    log-probs are the same in both texts and cancel. The probe pairs differ in one word (a
    pronoun, a group word), so this saves a fifth to a third of the bias probes' compute.
    A pair with no shared first token, identical texts, or a model without a KV cache is
    scored as two plain sentences. ``batch_size``: pairs per forward pass."""
    if len(texts_a) != len(texts_b):
        raise ValueError("texts_a and texts_b must have the same length")
    out = np.zeros(len(texts_a), dtype=np.float64)
    prefixes, rests, shared = [], [], []
    for i, (a, b) in enumerate(zip(texts_a, texts_b)):
        ia, ib = _sentence_ids(tokenizer, a), _sentence_ids(tokenizer, b)
        n = next((k for k, (x, y) in enumerate(zip(ia, ib)) if x != y), min(len(ia), len(ib)))
        if 0 < n < min(len(ia), len(ib)):
            prefixes.append(ia[:n])
            rests.append([ia[n:], ib[n:]])
            shared.append(i)
    scored = None
    if shared:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        scored = shared_prefix_logprobs(model, prefixes, rests, pad_id=pad, batch_size=batch_size)
    if scored is not None:
        out[shared] = (scored[:, 0] - scored[:, 1]).double().numpy()
    done = set(shared) if scored is not None else set()
    rest = [i for i in range(len(texts_a)) if i not in done]
    if rest:
        lp = sentence_logprob(
            model,
            tokenizer,
            [texts_a[i] for i in rest] + [texts_b[i] for i in rest],
            batch_size=batch_size,
        )
        out[rest] = lp[: len(rest)] - lp[len(rest) :]
    return out


def stereo_scores(
    model,
    tokenizer,
    pairs: list[dict],
    *,
    batch_size: int = PAIR_BATCH,
    n_boot: int = 1000,
    seed: int = 0,
    return_items: bool = False,
):
    """``stereo_pref`` overall and per bias type; see the module docstring. A pair's id is its
    ``"id"`` key (its index in the full set, set by :func:`evaluate_bias`) or its position."""
    llr = pair_logprob_diff(  # (P,) log P(stereo) - log P(anti)
        model,
        tokenizer,
        [p["stereo"] for p in pairs],
        [p["anti"] for p in pairs],
        batch_size=batch_size,
    )
    pref = (llr > 0) + 0.5 * (llr == 0)  # (P,) 1, 0.5 or 0
    out = {"stereo_pref": _score(pref, n_boot=n_boot, seed=seed)}
    for t in sorted({p["bias_type"] for p in pairs}):
        mask = np.array([p["bias_type"] == t for p in pairs])
        out[f"stereo_pref/{t}"] = _score(pref[mask], n_boot=n_boot, seed=seed)
    if not return_items:
        return out
    ids = [f"{p.get('id', i)}:{p['bias_type']}" for i, p in enumerate(pairs)]
    return out, {
        "stereo_pref": (ids, pref.astype(np.float64)),
        "stereo_llr": (ids, llr),
    }


def pronoun_logodds(
    model, tokenizer, occupations: list[dict], templates: list[str], *, batch_size: int = PAIR_BATCH
) -> np.ndarray:
    """Per occupation, mean over templates of log P(he version) - log P(she version). (O,)"""
    he, she = (
        [t.format(occupation=o["occupation"], pronoun=pron) for o in occupations for t in templates]
        for pron in ("he", "she")
    )
    lo = pair_logprob_diff(model, tokenizer, he, she, batch_size=batch_size)
    return lo.reshape(len(occupations), len(templates)).mean(axis=1)  # (O,)


def pronoun_scores(
    model,
    tokenizer,
    occupations: list[dict],
    templates: list[str],
    *,
    batch_size: int = PAIR_BATCH,
    n_boot: int = 1000,
    seed: int = 0,
    return_items: bool = False,
):
    lo = pronoun_logodds(model, tokenizer, occupations, templates, batch_size=batch_size)
    out = {"pronoun_abs_logodds": _score(np.abs(lo), n_boot=n_boot, seed=seed)}
    if len(occupations) >= 3:
        xy = np.stack([lo, [o["women_pct"] for o in occupations]], axis=1)  # (O, 2)
        out["pronoun_corr"] = _score(xy, stat=_pearson, n_boot=n_boot, seed=seed)
    if not return_items:
        return out
    ids = [o["occupation"] for o in occupations]
    if len(set(ids)) < len(ids):  # a user's list naming an occupation twice: keep ids unique
        ids = [f"{name}#{i}" for i, name in enumerate(ids)]
    return out, {"pronoun_logodds": (ids, lo), "pronoun_abs_logodds": (ids, np.abs(lo))}


def flip_scores(
    model,
    tokenizer,
    data: TaskData,
    *,
    max_items: int | None = None,
    batch_size: int = 16,
    n_boot: int = 1000,
    seed: int = 0,
    return_items: bool = False,
    known_predictions: Mapping[int, int] | None = None,
):
    """``flip_rate`` on the test inputs that contain a group word (empty when none does).

    ``known_predictions``: test row index -> the class this same model predicted for the row
    (the task eval's predictions); those originals are not predicted again."""
    if data.kind != "classification":
        raise DataError(
            f"the flip rate needs a classification dataset; '{data.name}' is {data.kind}"
        )
    field = "prompt" if data.task == "nlg" else "text"
    originals, swapped, rows = [], [], []
    words = load_group_words()
    for i, r in enumerate(data.test):
        new = swap_group_words(r[field], words)
        if new != r[field]:
            originals.append(r)
            swapped.append(dict(r, **{field: new}))
            rows.append(i)
    if max_items is not None and len(originals) > max_items:
        keep = seeded_subset(len(originals), max_items, ITEM_SEED)
        originals, swapped = [originals[i] for i in keep], [swapped[i] for i in keep]
        rows = [rows[i] for i in keep]
    if not originals:
        return ({}, {}) if return_items else {}
    known = known_predictions or {}
    todo = [k for k, i in enumerate(rows) if i not in known]  # originals still to predict
    preds = predict_labels(
        model,
        tokenizer,
        [originals[k] for k in todo] + swapped,
        task=data.task,
        label_names=data.label_names,
        batch_size=batch_size,
    )
    before = np.array([known.get(i, -1) for i in rows])  # (n,)
    before[todo] = preds[: len(todo)]
    flips = (before != np.array(preds[len(todo) :])).astype(np.float64)  # (n,)
    out = {"flip_rate": _score(flips, n_boot=n_boot, seed=seed)}
    if not return_items:
        return out
    return out, {"flip_rate": ([str(i) for i in rows], flips)}


def evaluate_bias(
    model,
    tokenizer,
    *,
    task: str = "nlg",
    data: TaskData | None = None,
    seed: int = 0,
    max_items: int | None = None,
    batch_size: int = 16,
    pair_batch_size: int = PAIR_BATCH,
    n_boot: int = 1000,
    pairs: list[dict] | None = None,
    return_items: bool = False,
    known_predictions: Mapping[int, int] | None = None,
):
    """All bias scores for ``task``: name -> {"value", "ci_low", "ci_high", "n"}.

    NLG: stereotype pairs, occupation pronouns, and the flip rate when ``data`` is a
    classification set. NLU: the flip rate (``data`` is required). ``max_items`` caps the items
    of each probe (a fixed subset, the same for every run); ``seed`` drives the bootstrap.
    ``pairs`` replaces the shipped stereotype pairs (e.g. ``load_pairs(user_csv)``).
    ``return_items``: return ``(scores, items)``, the per-item values of every scorer (see the
    module docstring), ids referring to the full probe sets whatever ``max_items`` keeps.
    ``known_predictions``: test row -> class this model predicted (see :func:`flip_scores`).
    ``batch_size``: texts per pass of the flip rate; ``pair_batch_size``: pairs per pass of the
    stereotype and pronoun probes.
    """
    if task not in ("nlg", "nlu"):
        raise DataError(f"task must be 'nlg' or 'nlu', got {task!r}")
    if max_items is not None and max_items < 1:
        raise DataError(f"max_items must be at least 1, got {max_items}")
    was_training = model.training
    model.eval()
    try:
        out: dict[str, dict] = {}
        items: dict[str, tuple] = {}
        kw = {"n_boot": n_boot, "seed": seed, "return_items": True}
        pair_kw = dict(kw, batch_size=pair_batch_size)
        flip_kw = dict(
            kw, batch_size=batch_size, max_items=max_items, known_predictions=known_predictions
        )

        def add(result):
            scores, per_item = result
            out.update(scores)
            items.update(per_item)

        if task == "nlg":
            pairs = load_pairs() if pairs is None else pairs
            pairs = [dict(p, id=p.get("id", i)) for i, p in enumerate(pairs)]
            occupations = load_occupations()
            if max_items is not None:
                pairs = [pairs[i] for i in seeded_subset(len(pairs), max_items, ITEM_SEED)]
                occupations = [
                    occupations[i] for i in seeded_subset(len(occupations), max_items, ITEM_SEED)
                ]
            add(stereo_scores(model, tokenizer, pairs, **pair_kw))
            add(pronoun_scores(model, tokenizer, occupations, load_templates(), **pair_kw))
            if data is not None and data.kind == "classification":
                add(flip_scores(model, tokenizer, data, **flip_kw))
        else:
            if data is None or data.kind != "classification":
                raise DataError(
                    "NLU bias needs classification data (the flip rate swaps group words in its test inputs)"
                )
            add(flip_scores(model, tokenizer, data, **flip_kw))
        return (out, items) if return_items else out
    finally:
        model.train(was_training)

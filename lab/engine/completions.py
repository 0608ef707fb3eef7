"""Side-by-side outputs of the base model and each trained arm of a run, scored by the base model.

The base model is loaded once with :func:`lab.models.load_model` and every arm's adapter from
``runs/<id>/adapters/<arm>/`` is attached to it with PEFT under the arm's name; the base outputs
come with the adapters disabled (the adapters are saved on the original weights, so that is the
untouched model). Every arm decodes with the same seed and the same settings.

Causal LM runs give generations; each carries its log-likelihood under the base model
(sum and mean over the generated tokens). Classification runs give the predicted class and its
probability, with the base model's log-probability of that class.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lab.datasets import encoding
from lab.datasets.logprobs import token_logprobs
from lab.models.saved import (  # noqa: F401  (the Compare tab and the tests use them from here)
    ArmSet,
    CompletionError,
    display_names,
    load_arm_set,
    saved_arms,
)


def base_token_logprobs(arm_set: ArmSet, prompt_ids: list[int], cont_ids: list[int]) -> list[float]:
    """log p_base of each continuation token given the prompt and the tokens before it
    (float32, :func:`lab.datasets.logprobs.token_logprobs`); empty for an empty
    continuation."""
    with arm_set.model.disable_adapter():
        return token_logprobs(arm_set.model, prompt_ids, cont_ids)


@torch.no_grad()
def _generate_one(
    arm_set: ArmSet,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    seed: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
) -> list[int]:
    tok = arm_set.tokenizer
    ids = torch.tensor([prompt_ids], device=arm_set.device)  # (1, P)
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p)
    out = arm_set.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        **kwargs,
    )
    cont = out[0, len(prompt_ids) :].tolist()  # (C,)
    pad = tok.pad_token_id
    if pad is not None and pad != tok.eos_token_id:
        while cont and cont[-1] == pad:
            cont.pop()
    return cont


def _row(arm_set: ArmSet, arm: str, prompt_ids: list[int], cont: list[int]) -> dict[str, Any]:
    per_token = base_token_logprobs(arm_set, prompt_ids, cont)
    n, ll = len(per_token), float(sum(per_token))
    return {
        "arm": arm,
        "text": arm_set.tokenizer.decode(cont, skip_special_tokens=True).strip(),
        "tokens": n,
        "loglik": ll,
        "loglik_mean": ll / n if n else None,
        "token_logprobs": per_token,
    }


def pairs_interval(deltas: list[float], confidence: float = 0.95):
    """(low, high) of the mean of per-pair differences: a one-sample t interval
    (``scipy.stats.ttest_1samp``) over the counterfactual pairs, each pair one observation.
    None with fewer than 2 pairs or no spread."""
    from scipy import stats

    if len(deltas) < 2 or np.ptp(deltas) == 0:
        return None
    ci = stats.ttest_1samp(deltas, 0.0).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


@torch.no_grad()
def _classify(arm_set: ArmSet, prompt: str) -> list[dict[str, Any]]:
    enc = arm_set.tokenizer(prompt, return_tensors="pt", truncation=True).to(arm_set.device)
    with arm_set.model.disable_adapter():
        base_logp = torch.log_softmax(arm_set.model(**enc).logits.float()[0], -1)  # (D,)
    rows = []
    for arm in ["base", *arm_set.arms]:
        if arm == "base":
            logp = base_logp
        else:
            arm_set.activate(arm)
            logp = torch.log_softmax(arm_set.model(**enc).logits.float()[0], -1)  # (D,)
        label = int(logp.argmax())
        names = arm_set.label_names
        name = names[label] if names and label < len(names) else f"class {label}"
        rows.append(
            {
                "arm": arm,
                "text": f"{name} (p = {math.exp(float(logp[label])):.3f})",
                "label": label,
                "tokens": 1,
                "loglik": float(base_logp[label]),
                "loglik_mean": float(base_logp[label]),
            }
        )
    return rows


def side_by_side(
    arm_set: ArmSet,
    prompt: str,
    *,
    max_new_tokens: int = 40,
    seed: int = 0,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.9,
) -> list[dict[str, Any]]:
    """One row per model (``base`` first, then each arm): text, tokens, loglik, loglik_mean.

    ``loglik`` is the base model's log-likelihood of that model's output given the prompt.
    """
    if not prompt or not prompt.strip():
        raise CompletionError("the prompt is empty: type a prompt or pick a counterfactual pair")
    if max_new_tokens < 1:
        raise CompletionError(f"max new tokens must be at least 1, got {max_new_tokens}")
    if arm_set.task == "nlu":
        return _classify(arm_set, prompt)
    prompt_ids = encoding.prompt_ids(arm_set.tokenizer, prompt)
    settings = dict(
        max_new_tokens=max_new_tokens,
        seed=seed,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
    )
    rows = []
    with arm_set.model.disable_adapter():
        cont = _generate_one(arm_set, prompt_ids, **settings)
    rows.append(_row(arm_set, "base", prompt_ids, cont))
    for arm in arm_set.arms:
        arm_set.activate(arm)
        cont = _generate_one(arm_set, prompt_ids, **settings)
        rows.append(_row(arm_set, arm, prompt_ids, cont))
    return rows


def pair_side_by_side(
    arm_set: ArmSet, prompt_a: str, prompt_b: str, **kwargs: Any
) -> list[dict[str, Any]]:
    """Both prompts of a counterfactual pair through every model.

    One row per model: ``a`` and ``b`` (the rows of :func:`side_by_side`) and ``delta`` =
    mean base log-likelihood of the output for prompt a minus that for prompt b: how much more
    natural the base model finds what this model says about one group than about the other
    (0 = no difference; per token, so output lengths do not dominate). One pair has no
    interval: the tokens of two different outputs are not a sample of anything; see
    :func:`pairs_summary` for the difference over many pairs.
    """
    rows_a = side_by_side(arm_set, prompt_a, **kwargs)
    rows_b = side_by_side(arm_set, prompt_b, **kwargs)
    out = []
    for a, b in zip(rows_a, rows_b):
        delta = None
        if a["loglik_mean"] is not None and b["loglik_mean"] is not None:
            delta = a["loglik_mean"] - b["loglik_mean"]
        out.append({"arm": a["arm"], "a": a, "b": b, "delta": delta})
    return out


def pairs_summary(
    arm_set: ArmSet, pairs: list[tuple[str, str]], **kwargs: Any
) -> list[dict[str, Any]]:
    """Every counterfactual pair through every model; one row per model with the mean of the
    per-pair ``delta`` (:func:`pair_side_by_side`), its 95% interval over the pairs
    (:func:`pairs_interval`) and ``n``, the pairs that gave a delta."""
    per_arm: dict[str, list[float]] = {}
    for prompt_a, prompt_b in pairs:
        for r in pair_side_by_side(arm_set, prompt_a, prompt_b, **kwargs):
            per_arm.setdefault(r["arm"], [])
            if r["delta"] is not None:
                per_arm[r["arm"]].append(float(r["delta"]))
    out = []
    for arm, deltas in per_arm.items():
        ci = pairs_interval(deltas)
        mean = float(np.mean(deltas)) if deltas else None
        out.append({"arm": arm, "mean": mean, "ci": ci, "n": len(deltas)})
    return out

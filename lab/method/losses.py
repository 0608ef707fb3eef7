"""The loss contract: BA-LoRA terms -> the weighted total and the values a train event logs.

    total = task + lambda1 * consistency + lambda2 * diversity + lambda3 * svd

over the active terms (a term that is None, inactive or not computed, adds nothing). This is
the one place where a term is multiplied by its weight, for both the unfused path
(the tests' oracle ``tests/method/oracle.py``, the unfused NLG and the NLU micro-batch terms of
:mod:`lab.engine.forward`), the whole-batch terms (:func:`lab.engine.forward.batch_terms`), the fused NLG head
(:mod:`lab.method.head`, whose chunk loop mixes the terms' gradients through :func:`mix_into`) and
the numbers of a train event (:func:`train_values`).

A term with weight 0 is logged (raw, and weighted as 0 x raw) but adds nothing to the total,
not even 0 x value: with all weights 0 the total is the task loss itself. The same rule holds
for tensors (with grad) and for plain floats (the logged values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import torch

TERMS = ("consistency", "diversity", "svd")
LAMBDA_NAMES = ("lambda1", "lambda2", "lambda3")  # the weights of TERMS, in that order

V = TypeVar("V")  # a torch.Tensor (the loss that is backpropagated) or a float (logged)


def weights(lambdas: Sequence[float]) -> dict[str, float]:
    """``(lambda1, lambda2, lambda3)`` as ``{term: weight}``; each must be a finite number >= 0."""
    if len(lambdas) != 3:
        raise ValueError(f"lambdas must be 3 numbers (consistency, diversity, svd), got {lambdas}")
    out = dict(zip(TERMS, (float(x) for x in lambdas)))
    for term, w in out.items():
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"the {term} weight must be a finite number >= 0, got {w}")
    return out


def active(lambdas: Sequence[float]) -> set[str]:
    """The terms whose weight is > 0: only they add to the total (value and gradient)."""
    return {t for t, w in weights(lambdas).items() if w > 0}


@dataclass
class Weighted(Generic[V]):
    """The total and every term raw and weighted (None: the term is not there)."""

    total: V
    raw: dict[str, V | None]
    weighted: dict[str, V | None]
    lambdas: dict[str, float]  # keyed like a train event: lambda1, lambda2, lambda3


def weigh(task: V, raw: Mapping[str, V | None], lambdas: Sequence[float]) -> Weighted[V]:
    """total = task + sum over the present terms with weight > 0 of weight x term.

    ``raw``: {term: value or None}, any subset of TERMS (a missing term counts as None).
    ``weighted`` holds weight x value for every present term, also when the weight is 0.
    Tensors keep their graph: the caller detaches what it logs.
    """
    w = weights(lambdas)
    values = {t: raw.get(t) for t in TERMS}
    weighted = {t: (None if v is None else w[t] * v) for t, v in values.items()}
    added = [weighted[t] for t in TERMS if weighted[t] is not None and w[t] > 0]
    total = task + sum(added) if added else task  # nothing added: the task loss itself
    return Weighted(total, values, weighted, dict(zip(LAMBDA_NAMES, w.values())))


@dataclass(frozen=True)
class Scattered:
    """A term's gradient given only at some columns: ``values`` (c, K) belong at ``index`` (c, K)
    of a (c, V) buffer (the top-K gradient of the diversity term)."""

    index: torch.Tensor
    values: torch.Tensor


def mix_into(
    acc: torch.Tensor,
    parts: Mapping[str, torch.Tensor | Scattered | None],
    lambdas: Sequence[float],
) -> torch.Tensor:
    """acc += weight x part for every present part whose weight is > 0, in place; -> ``acc``.

    The gradient twin of :func:`weigh`: ``acc`` holds d task / dz, ``parts`` {term: d term / dz}
    (a tensor shaped like ``acc``, or :class:`Scattered`), and ``acc`` ends as d total / dz.
    In place, so a chunk loop mixes any number of terms in one buffer. A part whose weight is 0
    adds nothing (its gradient need not be computed: see :func:`active`).
    """
    w = weights(lambdas)
    for term, part in parts.items():
        if part is None or not w[term] > 0:
            continue
        if isinstance(part, Scattered):
            acc.scatter_add_(-1, part.index, w[term] * part.values)
        else:
            acc.add_(part, alpha=w[term])
    return acc


def train_values(
    values: Mapping[str, float],
    present: set[str],
    lambdas: Sequence[float],
    inactive: Mapping[str, str],
    need_terms: bool,
) -> dict:
    """The loss fields of a train event from the step's summed values (plain floats).

    ``values``: "task_loss" and the terms, summed over micro-batches and processes;
    ``present``: which of them the step computed (the others are logged as None). Returns
    ``loss``, ``task_loss``, the raw terms, ``weighted``, ``lambdas`` and ``inactive``.
    """
    task = values.get("task_loss") if "task_loss" in present else None
    raw = {t: (values.get(t) if t in present else None) for t in TERMS}
    out = weigh(task, raw, lambdas)
    if not need_terms:
        inactive = {t: "not computed for this arm (train.log_terms is false)" for t in TERMS}
    return {
        "loss": out.total,
        "task_loss": task,
        **out.raw,
        "weighted": out.weighted,
        "lambdas": out.lambdas,
        "inactive": dict(inactive),
    }

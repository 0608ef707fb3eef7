"""The test oracle: the BA-LoRA total loss written the plain way, term by term, from the pure
regularizers of :mod:`lab.method.regularizers` on whole logits tensors.

Training never calls it: the trainer computes the same total through the fused LM head
(:mod:`lab.method.head`) and the micro-batch terms of :mod:`lab.engine.forward`. The tests hold
those paths against this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lab.method import losses
from lab.method.losses import TERMS
from lab.method.regularizers import (
    DegenerateTermError,
    _rows,
    consistency_loss,
    covariance_diversity_loss,
    diversity_loss,
    svd_loss,
)


@dataclass
class OracleLoss:
    """The total loss (with grad) and every term raw and weighted (detached) for logging."""

    total: torch.Tensor
    task: torch.Tensor
    raw: dict[str, torch.Tensor | None] = field(default_factory=dict)
    weighted: dict[str, torch.Tensor | None] = field(default_factory=dict)
    inactive: dict[str, str] = field(default_factory=dict)

    def as_floats(self, total: torch.Tensor | None = None) -> dict:
        """Plain floats (None for inactive terms) in one host sync, keyed like a train event.

        ``total``: the loss actually backpropagated, reported as "loss" (default ``self.total``).
        """
        named = [("loss", self.total if total is None else total), ("task_loss", self.task)]
        named += [(t, self.raw.get(t)) for t in TERMS]
        named += [(f"weighted.{t}", self.weighted.get(t)) for t in TERMS]
        present = [(name, v) for name, v in named if v is not None]
        values = torch.stack([v.detach().float().reshape(()) for _, v in present]).tolist()
        flat = dict(zip([name for name, _ in present], values))
        out = {name: flat.get(name) for name in ("loss", "task_loss", *TERMS)}
        out["weighted"] = {t: flat.get(f"weighted.{t}") for t in TERMS}
        out["inactive"] = dict(self.inactive)
        return out


def oracle_loss(
    task_loss: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    *,
    mode: str = "nlg",
    mask: torch.Tensor | None = None,
    features: torch.Tensor | None = None,
    lambdas: tuple[float, float, float] = (0.025, 0.005, 0.005),
    temperature: float = 2.0,
    top_k: int = 20,
    svd_k: int = 10,
    svd_norm: str = "frobenius",
    svd_target: str = "logits",
    svd_method: str = "auto",
    generator: torch.Generator | None = None,
) -> OracleLoss:
    """total = task + l1 * consistency + l2 * diversity + l3 * svd over the active terms.

    Logits are (M, V) / (N, D) rows, or (B, T, V) with a (B, T) mask of the used positions.
    mode "nlg" uses diversity_loss, "nlu" covariance_diversity_loss. svd_target "features"
    applies the svd term to ``features`` ((N, H) pooled hidden states, or (B, T, H) with the
    mask). A term with weight 0 is still computed for logging but without a graph, and adds
    nothing: with all weights 0, ``total`` is ``task_loss`` itself. ``teacher_logits`` may be
    None only when lambda1 is 0 (consistency is then inactive). A term raising
    DegenerateTermError is inactive with its message as the reason; a non-finite term raises
    FloatingPointError naming it.
    """
    if mode not in ("nlg", "nlu"):
        raise ValueError(f"mode must be 'nlg' or 'nlu', got {mode!r}")
    if svd_target not in ("logits", "features"):
        raise ValueError(f"svd_target must be 'logits' or 'features', got {svd_target!r}")
    weights = losses.weights(lambdas)
    if teacher_logits is None and weights["consistency"] > 0:
        raise ValueError("consistency has a non-zero weight but no teacher logits were given")
    if svd_target == "features" and features is None:
        raise ValueError("svd_target='features' needs the pooled hidden states in `features`")

    student = _rows(student_logits, mask, "student logits")  # (M, V) or (N, D), float32

    def consistency() -> torch.Tensor:
        teacher = _rows(teacher_logits, mask, "teacher logits")
        return consistency_loss(student, teacher, None, temperature)

    def diversity() -> torch.Tensor:
        if mode == "nlg":
            return diversity_loss(student, None, top_k)
        return covariance_diversity_loss(student)

    def svd() -> torch.Tensor:
        target = student if svd_target == "logits" else _rows(features, mask, "features")
        return svd_loss(target, svd_k, norm=svd_norm, method=svd_method, generator=generator)

    result = OracleLoss(total=task_loss, task=task_loss.detach())
    values: dict[str, torch.Tensor] = {}
    for term, fn in zip(TERMS, (consistency, diversity, svd)):
        result.raw[term] = result.weighted[term] = None
        if term == "consistency" and teacher_logits is None:
            result.inactive[term] = "no teacher logits were given (weight 0)"
            continue
        try:
            if weights[term] > 0:
                values[term] = fn()
            else:
                with torch.no_grad():
                    values[term] = fn()
        except DegenerateTermError as err:
            result.inactive[term] = str(err)
    if values:
        finite = torch.isfinite(torch.stack([v.detach() for v in values.values()])).tolist()
        for (term, value), ok in zip(values.items(), finite):
            if not ok:
                raise FloatingPointError(f"the {term} term is not finite: {value.item()}")
    out = losses.weigh(task_loss, values, lambdas)
    result.total = out.total
    for term, value in values.items():
        result.raw[term] = value.detach()
        result.weighted[term] = out.weighted[term].detach()
    return result

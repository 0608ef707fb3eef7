"""The base model's reference for the arms' drift KL(base || arm), and where an arm's drift
comes from.

One design. The base model's snapshot (``keep_reference=True``) keeps, in memory and never on
disk, a :class:`BaseReference`: per probe text and position, the moments [u, c] of the base's
output distribution (see :mod:`lab.analysis.drift`), H + 1 numbers instead of V. An arm whose
output head is the base's own measures its drift from them within its single forward pass.
Where moments do not apply -- a classifier, a soft-capped or adapted output head, an arm whose
head differs from the base's -- no reference is used: the arm's drift comes from a second
forward pass of the same batch under a context that makes the model the base
(``DriftBase.context``, e.g. ``model.disable_adapter``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lab.analysis.drift import (
    AnalysisError,
    base_moments,
    drift_per_text,
    head_fingerprint,
    moments_kl64,
    plain_head,
)
from lab.analysis.request import Batch

MOMENTS_CHUNK = 256  # logits rows turned into moments at a time (memory: chunk x V)
HEAD_CHECK_RTOL = 1e-4  # head(head input) must rebuild the logits to this relative tolerance
HEAD_CHECK_ATOL = 1e-4


@dataclass
class BaseReference:
    """The base model's output distribution on the probe texts, kept in memory as moments.

    ``rows[i]``: (L_i, H + 1) float64 rows [u, c] of text i, one per position, u = p_base W and
    c = sum_v p_base log p_base - p_base . b for the base's linear head z = h W^T + b.
    ``key``: fingerprint of the tokenized texts (:attr:`EncodedTexts.key`); ``head_key``: of the
    head the moments were taken with; an arm whose head has another fingerprint cannot use them.
    """

    key: str
    rows: list[Tensor]
    head_key: tuple

    def serves(self, model: torch.nn.Module) -> bool:
        """Whether ``model``'s output head is the plain linear head the moments were taken with."""
        head = plain_head(model)
        return head is not None and head_fingerprint(head) == self.head_key

    def drift(self, idx: list[int], hidden: Tensor, logits: Tensor, mask: Tensor) -> np.ndarray:
        """Mean KL(base || arm) per text (float64) of the texts ``idx``, from the arm's head
        input ``hidden`` (B, T, H) and logits (B, T, V): c - h . u + logsumexp(z), masked (B, T)."""
        b, t = mask.shape
        width = self.rows[idx[0]].shape[-1]
        rows = hidden.new_zeros((b, t, width), dtype=torch.float64)  # (B, T, H + 1)
        for r, i in enumerate(idx):
            part = self.rows[i]
            rows[r, : part.shape[0]] = part.to(rows.device)
        kl = moments_kl64(hidden, logits, rows) * mask.double()  # (B, T)
        return (kl.sum(1) / mask.sum(1).clamp_min(1)).cpu().numpy()


class ReferenceRecorder:
    """Builds a :class:`BaseReference` batch by batch during the base model's own pass."""

    def __init__(self, head: torch.nn.Linear, key: str, n: int):
        self.head = head  # the pass must capture this module's input (Batch.head_input)
        self.key = key
        self.rows: list[Tensor | None] = [None] * n

    @classmethod
    def for_model(cls, model: torch.nn.Module, task: str, key: str, n: int):
        """A recorder for a causal LM with a plain linear head, else None (no reference)."""
        head = plain_head(model) if task == "nlg" else None
        return None if head is None else cls(head, key, n)

    def add(self, batch: Batch) -> None:
        if all(r is None for r in self.rows):  # the first batch: do the moments apply?
            check_head(self.head, batch.head_input, batch.logits)
        valid = batch.logits[batch.mask]  # (N, V), text by text in order
        rows = torch.cat(
            [
                base_moments(self.head, valid[i : i + MOMENTS_CHUNK])
                for i in range(0, len(valid), MOMENTS_CHUNK)
            ]
        )  # (N, H + 1)
        for i, part in zip(batch.idx, rows.split(batch.mask.sum(1).tolist())):
            self.rows[i] = part

    def reference(self) -> BaseReference:
        return BaseReference(key=self.key, rows=self.rows, head_key=head_fingerprint(self.head))


def check_head(head: torch.nn.Module, hidden: Tensor | None, logits: Tensor) -> None:
    """Moments assume logits = head(hidden states it saw): make sure that holds for this model."""
    if hidden is None or hidden.shape[:-1] != logits.shape[:-1]:
        raise AnalysisError(
            "the output head did not see the last hidden states of every position; measure "
            "the arms' drift with a base context instead of keep_reference"
        )
    rebuilt = head(hidden).float()
    tol = HEAD_CHECK_RTOL * float(logits.abs().max()) + HEAD_CHECK_ATOL
    if float((rebuilt - logits).abs().max()) > tol:
        raise AnalysisError(
            "this model's logits are not its head applied to the last hidden states; measure "
            "the arms' drift with a base context instead of keep_reference"
        )


@dataclass(frozen=True)
class DriftBase:
    """What an arm's drift is measured against: the ``reference`` kept by the base snapshot
    when the arm's head allows it, else a second forward pass under ``context`` (a
    zero-argument callable returning a context manager under which the model is the base)."""

    reference: BaseReference | None = None
    context: Callable[[], AbstractContextManager] | None = None

    def __post_init__(self) -> None:
        if self.reference is None and self.context is None:
            raise AnalysisError("an arm's drift needs a base reference or a base context")

    def source(self, model: torch.nn.Module, task: str, key: str) -> KeptDrift | BaseForwardDrift:
        """The drift source for ``model`` on the texts fingerprinted ``key``."""
        ref = self.reference
        if ref is not None and ref.key != key:
            raise AnalysisError(
                "the base reference was made on other probe texts or another max_len"
            )
        if ref is not None and ref.serves(model):
            return KeptDrift(ref, plain_head(model))
        if self.context is None:
            raise AnalysisError(
                "the base reference holds moments of the base model's output head, but this "
                "model's head differs (adapted or soft-capped); give a base context instead"
            )
        return BaseForwardDrift(model, self.context, task)


class KeptDrift:
    """Per-text drift of a batch from the kept :class:`BaseReference` (no second forward)."""

    def __init__(self, reference: BaseReference, head: torch.nn.Module):
        self.reference = reference
        self.head = head  # the pass must capture this module's input (Batch.head_input)

    def __call__(self, batch: Batch) -> np.ndarray:
        return self.reference.drift(batch.idx, batch.head_input, batch.logits, batch.mask)


class BaseForwardDrift:
    """Per-text drift of a batch from a second forward pass of it under the base context."""

    head = None  # no head input needed

    def __init__(
        self, model: torch.nn.Module, context: Callable[[], AbstractContextManager], task: str
    ):
        self.model, self.context, self.task = model, context, task

    def __call__(self, batch: Batch) -> np.ndarray:
        with self.context():
            base_logits = self.model(**batch.inputs).logits.float()
        return drift_per_text(batch.logits, base_logits, batch.mask, self.task)

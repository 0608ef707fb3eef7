"""Drift from the base model: per-position KL(base || arm) in float32, and the base model's
outputs kept in memory so that each arm needs one forward pass instead of two."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class AnalysisError(ValueError):
    """Inputs an analysis cannot use: mismatched lengths, no texts, an unknown task."""


def token_kl(student_logits: Tensor, base_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-position KL(base || arm) = sum_v p_base (log p_base - log p_arm), float32.

    Logits (..., V); ``mask`` (...) bool marks the positions to keep; others are 0. Exactly 0
    where the two logits are equal.
    """
    if student_logits.shape != base_logits.shape:
        raise AnalysisError(
            f"logits shapes differ: arm {tuple(student_logits.shape)} vs base {tuple(base_logits.shape)}"
        )
    log_b = F.log_softmax(base_logits.float(), dim=-1)  # (..., V)
    return kl_from_log_probs(F.log_softmax(student_logits.float(), dim=-1), log_b, mask)


def kl_from_log_probs(log_arm: Tensor, log_base: Tensor, mask: Tensor | None = None) -> Tensor:
    """:func:`token_kl` from log-probabilities (..., V) already normalized, float32."""
    kl = (log_base.exp() * (log_base - log_arm)).sum(-1).clamp_min(0.0)  # (...)
    if mask is not None:
        kl = kl * mask.to(kl.device, torch.float32)
    return kl


@dataclass
class BaseReference:
    """The base model's outputs on the probe texts, kept in memory (never saved) so each arm's
    drift needs no second base forward. Per text: the logits (NLU (D,), NLG (L_i, V)), or for
    NLG when those would exceed the memory budget, the last hidden states (L_i, H) that the base
    model's output head turns into logits on use."""

    key: str  # fingerprint of the tokenized probe texts
    per_text: list[Tensor]
    head: torch.nn.Module | None = None  # set when per_text holds hidden states
    softcap: float | None = None
    log_probs: bool = False  # per_text holds log-softmax outputs rather than raw logits

    def logits(self, idx: Sequence[int], width: int) -> Tensor:
        """Base logits of the texts ``idx``: (B, D) or right-padded (B, width, V)."""
        rows = [self.per_text[i] for i in idx]
        if rows[0].ndim == 1:
            return torch.stack(rows)  # (B, D)
        out = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))  # (B, T, V or H)
        for r, x in enumerate(rows):
            out[r, : x.shape[0]] = x
        return out if self.head is None else head_logits(self.head, out, self.softcap)


def head_logits(head: torch.nn.Module, hidden: Tensor, softcap: float | None) -> Tensor:
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def drift_per_text(
    logits: Tensor, base: Tensor, mask: Tensor, task: str, base_log_probs: bool = False
) -> np.ndarray:
    """Mean KL(base || arm) per text: over its non-pad positions (NLG, logits (B, T, V), mask
    (B, T)) or of its class distribution (NLU, logits (B, D)). ``base_log_probs``: ``base``
    holds log-softmax outputs (a kept reference) rather than logits."""
    if task == "nlu":
        return token_kl(logits, base).double().cpu().numpy()  # (B,)
    if base_log_probs:
        kl = kl_from_log_probs(F.log_softmax(logits.float(), dim=-1), base, mask)  # (B, T)
    else:
        kl = token_kl(logits, base, mask)  # (B, T)
    return (kl.sum(1) / mask.sum(1).clamp_min(1)).double().cpu().numpy()  # (B,)

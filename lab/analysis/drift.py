"""Drift from the base model: per-position KL(base || arm) in float32, and the moments that let
an arm measure it without a second base forward pass.

For a causal LM whose frozen output head is a plain linear map z = h W^T + b, the base keeps,
per position, only u = p_base W (H,) and c = sum_v p_base log p_base - p_base . b, because

    KL(base || arm) = sum_v p_base (log p_base - z_arm + logsumexp z_arm)
                    = c - h_arm . u + logsumexp(z_arm)

(sum_v p_base = 1). That is H numbers per position instead of V, and an arm's drift costs one
logsumexp over its logits. These moments are the only form in which the base's outputs are
kept (:class:`lab.analysis.reference.BaseReference`); every other model measures its drift from
a second, base forward pass (:func:`drift_per_text` on the two logits)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lab.method.head import cached_on_head


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


def drift_per_text(logits: Tensor, base: Tensor, mask: Tensor, task: str) -> np.ndarray:
    """Mean KL(base || arm) per text (float64), from the arm's and the base's logits: over its
    non-pad positions (NLG, logits (B, T, V), mask (B, T)) or of its class distribution (NLU,
    logits (B, D))."""
    if task == "nlu":
        return token_kl(logits, base).double().cpu().numpy()  # (B,)
    kl = token_kl(logits, base, mask)  # (B, T)
    return (kl.sum(1) / mask.sum(1).clamp_min(1)).double().cpu().numpy()  # (B,)


def head_fingerprint(head: torch.nn.Module) -> tuple:
    """Shape and two float64 sums of a linear head's weight (and bias): equal for equal heads.

    Cached on the module (:func:`lab.method.head.cached_on_head`: an in-place change recomputes it)."""

    @torch.no_grad()
    def fingerprint() -> tuple:
        w = head.weight.detach().double()
        parts = [tuple(w.shape), float(w.sum()), float(w.square().sum())]
        b = getattr(head, "bias", None)
        if b is not None:
            parts += [float(b.detach().double().sum())]
        return tuple(parts)

    return cached_on_head(head, "_balora_fingerprint", fingerprint)


def plain_head(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The output head when it is an unadapted nn.Linear with no logit soft-capping, else None."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:  # a PEFT-wrapped head is another type
        return None
    if getattr(model.config, "final_logit_softcapping", None):
        return None
    return head


def base_moments(head: torch.nn.Linear, logits: Tensor) -> Tensor:
    """Rows [u, c] (N, H + 1) of the base's logits (N, V): u = p W, c = sum p log p - p . b."""
    log_p = F.log_softmax(logits.float(), dim=-1)  # (N, V)
    p = log_p.exp()
    neg_entropy = (p * log_p).sum(-1).double()  # (N,)
    del log_p
    u = p @ head.weight.float()  # (N, H)
    c = neg_entropy
    if head.bias is not None:
        c = c - (p.double() @ head.bias.double())
    return torch.cat([u.double(), c[:, None]], dim=1)  # (N, H + 1), float64


def moments_kl(hidden: Tensor, logits: Tensor, rows: Tensor) -> Tensor:
    """KL(base || arm) per position, float32, from the arm's hidden states (..., H), its logits
    (..., V) and the base's [u, c] rows (..., H + 1): c - h . u + logsumexp(z)."""
    return moments_kl64(hidden, logits, rows).float()


def moments_kl64(hidden: Tensor, logits: Tensor, rows: Tensor) -> Tensor:
    """:func:`moments_kl` in float64."""
    lse = torch.logsumexp(logits.float(), dim=-1).double()  # (...)
    dot = (hidden.double() * rows[..., :-1]).sum(-1)  # (...)
    return (rows[..., -1] - dot + lse).clamp_min(0.0)

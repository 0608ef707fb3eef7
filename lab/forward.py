"""Forward passes of one arm: student rows, teacher rows and the loss of one micro-batch.

NLG: the decoder runs once for the teacher (no grad, first, so only its (M, H) rows stay alive)
and once for the student; the LM head then runs only on the used rows (the response tokens,
with the same one-token shift as the cross-entropy), fused with the task loss and the terms in
:mod:`lab.head`, so no (M, V) or (B, T, V) logits are ever kept. A head with final-logit
soft-capping, or the nuclear norm, takes the unfused path on the (M, V) logits. NLU: the
classification logits of the batch.

The teacher computes in ``reg.teacher_dtype`` (see :func:`lab.models.teacher_dtype`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from lab import adapters
from lab.config import RunConfig
from lab.head import head_loss, logits_svd_loss
from lab.models import teacher_dtype
from lab.regularizers import BALoRALoss, DegenerateTermError, ba_lora_loss, svd_loss


def _decoder_and_head(model: torch.nn.Module):
    inner = model.get_base_model()
    return inner.get_decoder(), inner.get_output_embeddings(), inner.config


def _param_dtype_device(model: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    p = next(model.get_base_model().parameters())
    return p.dtype, p.device


@contextmanager
def teacher_pass(model: torch.nn.Module, cfg: RunConfig):
    """No grad, the frozen teacher active, and autocast when the teacher dtype differs."""
    dtype, device = _param_dtype_device(model)
    want = teacher_dtype(cfg.reg.teacher_dtype, dtype, device)
    cast = (
        torch.autocast(device.type, dtype=want)
        if want != dtype and dtype.is_floating_point
        else nullcontext()
    )
    with torch.no_grad(), adapters.teacher_mode(model), cast:
        yield


def _used_rows(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, T) mask of the scored positions and their (M,) targets: logits at t score the
    label at t + 1."""
    rows = batch["reg_mask"]
    return rows, batch["labels"][:, 1:][rows[:, :-1]]


def _hidden_rows(model, batch, rows: torch.Tensor) -> torch.Tensor:
    decoder, _, _ = _decoder_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return hidden.last_hidden_state[rows]  # (B, T, H) -> (M, H)


def _rows_logits(model, batch, rows: torch.Tensor):
    """Hidden states at the used positions and their LM-head logits: (M, H), (M, V)."""
    _, head, config = _decoder_and_head(model)
    h = _hidden_rows(model, batch, rows)
    logits = head(h)  # (M, V)
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return h, logits


def _nlu_forward(model, batch, want_features: bool):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs, output_hidden_states=want_features)
    feats = None
    if want_features:
        last = out.hidden_states[-1]  # (N, T, H)
        m = batch["attention_mask"].unsqueeze(-1).to(last.dtype)
        feats = (last * m).sum(1) / m.sum(1).clamp_min(1.0)  # (N, H)
    return out.logits, feats


def fused_nlg(model: torch.nn.Module, cfg: RunConfig) -> bool:
    """Whether this model's NLG loss takes the fused path of :mod:`lab.head`."""
    _, head, config = _decoder_and_head(model)
    return (
        isinstance(head, torch.nn.Linear)
        and not getattr(config, "final_logit_softcapping", None)
        and cfg.reg.svd_norm == "frobenius"
    )


def step_loss(model, batch, cfg: RunConfig, lambdas, *, need_terms: bool, generator=None):
    """One micro-batch: task loss, the BA-LoRA terms and their weighted sum.

    Returns ``(result, total)``: ``result`` (a :class:`BALoRALoss`) is None when the terms are
    not needed, and ``total`` carries the gradient.
    """
    if cfg.task == "nlg" and fused_nlg(model, cfg):
        return _fused_step_loss(model, batch, cfg, lambdas, need_terms)
    want_features = cfg.reg.svd_target == "features"
    teacher = None
    if cfg.task == "nlg":
        rows, targets = _used_rows(batch)
        if need_terms:
            with teacher_pass(model, cfg):
                _, teacher = _rows_logits(model, batch, rows)
        h, logits = _rows_logits(model, batch, rows)
        task = F.cross_entropy(logits.float(), targets)
        feats = h if want_features else None
        mode = "nlg"
    else:
        if need_terms:
            with teacher_pass(model, cfg):
                teacher, _ = _nlu_forward(model, batch, False)
        logits, feats = _nlu_forward(model, batch, want_features)
        task = F.cross_entropy(logits.float(), batch["labels"])
        mode = "nlu"
    if not need_terms:
        return None, task
    result = ba_lora_loss(
        task,
        logits,
        teacher,
        mode=mode,
        features=feats,
        lambdas=lambdas,
        temperature=cfg.reg.temperature,
        top_k=cfg.reg.top_k,
        svd_k=cfg.reg.svd_k,
        svd_norm=cfg.reg.svd_norm,
        svd_target=cfg.reg.svd_target,
        generator=generator,
    )
    return result, result.total


def _fused_step_loss(model, batch, cfg: RunConfig, lambdas, need_terms: bool):
    rows, targets = _used_rows(batch)
    _, head, _ = _decoder_and_head(model)
    teacher_h = None
    if need_terms:  # the teacher first: only its (M, H) rows stay, no activations are alive
        with teacher_pass(model, cfg):
            teacher_h = _hidden_rows(model, batch, rows)
    h = _hidden_rows(model, batch, rows)
    l1, l2, l3 = (float(x) for x in lambdas)
    reg = cfg.reg
    total, ce, kl, neg_entropy = head_loss(
        h,
        head,
        targets,
        teacher_h,
        lambdas=(l1, l2),
        temperature=reg.temperature,
        top_k=reg.top_k,
        terms=need_terms,
    )
    if not need_terms:
        return None, total
    result = BALoRALoss(total=total, task=ce)
    result.raw = {"consistency": kl, "diversity": neg_entropy, "svd": None}
    try:
        with nullcontext() if l3 > 0 else torch.no_grad():
            if reg.svd_target == "features":
                svd = svd_loss(h, reg.svd_k, norm=reg.svd_norm)
            else:
                svd = logits_svd_loss(h, head, reg.svd_k)
        if l3 > 0:
            total = total + l3 * svd
        result.raw["svd"] = svd.detach()
    except DegenerateTermError as err:
        result.inactive["svd"] = str(err)
    # No host sync here: the trainer reads every value once (``as_floats``) and fails the arm
    # on a non-finite one, naming it; it weights the logged terms itself.
    result.total = total
    return result, total

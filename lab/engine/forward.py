"""Forward passes of the active arm: teacher outputs, student rows and one micro-batch's loss.

Token weighting. Every per-token term (task cross-entropy, consistency, NLG diversity) of a
micro-batch is its *sum* over the micro-batch's rows divided by ``norm``, the step's global
count of response tokens (NLU: rows) over all micro-batches and processes. Summing the
micro-batches' losses and the processes' gradients then gives exactly the full-batch mean and
its gradient, however the batch is split. The terms are weighed by :func:`lab.method.losses.weigh`.

Batch terms. The svd term (and the NLU covariance diversity) is a function of the whole
step's batch: it is computed over the global batch. Each micro-batch returns the rows it feeds
(NLG: the hidden rows of the used positions, whose logits are h W^T; NLU: the classification
logits, and the pooled features for ``svd_target: features``); :func:`batch_terms` evaluates
the terms on the rows of all micro-batches and processes gathered, and the gradient with
respect to those rows flows back into each micro-batch through ``(rows * grad).sum()``.

NLG: the LM head runs only on the used rows (the response tokens, with the same one-token shift
as the cross-entropy), fused with the task loss and the terms in :mod:`lab.method.head`, so no (M, V)
logits are kept. A head with final-logit soft-capping, or the nuclear norm, takes the unfused
path on the (M, V) logits.

The teacher is the shared base with every adapter off (:func:`lab.engine.adapters.teacher_mode`):
one pass per micro-batch serves every arm of the step. It computes in ``reg.teacher_dtype``
(default: the model's own dtype, the exact loaded model; see :func:`lab.models.teacher_dtype`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lab.config import RunConfig
from lab.datasets.logprobs import cache_keyword
from lab.engine import adapters
from lab.method import losses
from lab.method.head import head_loss, logits_svd_loss
from lab.method.regularizers import (
    DegenerateTermError,
    consistency_loss,
    covariance_diversity_loss,
    diversity_loss,
    svd_loss,
)
from lab.models import teacher_dtype


def _decoder_and_head(model: torch.nn.Module):
    inner = model.get_base_model()
    return inner.get_decoder(), inner.get_output_embeddings(), inner.config


def _param_dtype_device(model: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype the model computes in (a 4-bit base computes in its compute dtype)."""
    inner = model.get_base_model()
    dtype = getattr(inner, "dtype", None)
    p = next(inner.parameters())
    if dtype is None or not dtype.is_floating_point:
        dtype = p.dtype
    return dtype, p.device


@contextmanager
def teacher_pass(model: torch.nn.Module, cfg: RunConfig):
    """No grad, every adapter off, and autocast when the teacher dtype differs (opt-in)."""
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


def _hidden_rows(model, batch, rows: torch.Tensor, cfg: RunConfig) -> torch.Tensor:
    """The decoder's last hidden states at the used positions ``rows`` (B, T) -> (M, H).

    When every row starts with the same ``batch["shared_len"]`` tokens (a chat template's
    system turn and the task's instruction), those run once as a one-row pass and their KV
    cache is repeated for the rows; the gradient flows back through the repeat into that pass.
    The hidden states equal the full pass's up to float rounding (positions continue after
    the shared start). Not while training with LoRA dropout, where each row draws its own
    noise on every token."""
    decoder, _, _ = _decoder_and_head(model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    C = batch.get("shared_len", 0)
    kw = cache_keyword(decoder) if C else None
    if kw is not None and not (model.training and cfg.lora.dropout > 0):
        head = decoder(input_ids=ids[:1, :C], attention_mask=mask[:1, :C], use_cache=True)
        cache = getattr(head, kw, None)
        if hasattr(cache, "batch_repeat_interleave"):
            B, T = ids.shape
            cache.batch_repeat_interleave(B)
            pos = torch.arange(C, T, device=ids.device).expand(B, -1)  # (B, T - C)
            rest = decoder(
                input_ids=ids[:, C:], attention_mask=mask, position_ids=pos, **{kw: cache}
            )
            return rest.last_hidden_state[rows[:, C:]]
    hidden = decoder(input_ids=ids, attention_mask=mask)
    return hidden.last_hidden_state[rows]


def _head_logits(model, h: torch.Tensor) -> torch.Tensor:
    _, head, config = _decoder_and_head(model)
    logits = head(h)  # (M, V)
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


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
    """Whether this model's NLG loss takes the fused path of :mod:`lab.method.head`."""
    _, head, config = _decoder_and_head(model)
    return (
        isinstance(head, torch.nn.Linear)
        and not getattr(config, "final_logit_softcapping", None)
        and cfg.reg.svd_norm == "frobenius"
    )


def count(batch: dict, task: str) -> int:
    """The rows a micro-batch's per-token terms sum over: response tokens (NLG) or rows (NLU)."""
    if task == "nlg":
        return int(batch["reg_mask"].sum())
    return int(batch["input_ids"].shape[0])


def teacher_outputs(model, batch, cfg: RunConfig) -> torch.Tensor:
    """The teacher's part of one micro-batch, shared by every arm: (M, H) hidden rows on the
    fused NLG path, (M, V) logits on the unfused one, (N, D) logits for NLU."""
    with teacher_pass(model, cfg):
        if cfg.task == "nlu":
            return _nlu_forward(model, batch, False)[0]
        rows, _ = _used_rows(batch)
        h = _hidden_rows(model, batch, rows, cfg)
        return h if fused_nlg(model, cfg) else _head_logits(model, h)


def student_rows(model, batch, cfg: RunConfig) -> torch.Tensor:
    """The rows a micro-batch feeds the batch terms (see the module docstring), with grad when
    grad is enabled: NLG (M, H) hidden rows (unfused, logits target: (M, V) logits); NLU (N, D)
    logits, or [logits | pooled features] (N, D + H) for ``svd_target: features``."""
    if cfg.task == "nlg":
        rows, _ = _used_rows(batch)
        h = _hidden_rows(model, batch, rows, cfg)
        if fused_nlg(model, cfg) or cfg.reg.svd_target == "features":
            return h
        return _head_logits(model, h).float()
    logits, feats = _nlu_forward(model, batch, cfg.reg.svd_target == "features")
    return logits.float() if feats is None else torch.cat([logits.float(), feats.float()], 1)


@dataclass
class MicroLoss:
    """One micro-batch: ``total`` carries the gradient of its per-token terms (sums / norm);
    ``values`` the same parts, detached ("task_loss", "consistency", "diversity"); ``rows``
    what it feeds the batch terms (None when no term is needed)."""

    total: torch.Tensor
    values: dict[str, torch.Tensor | None] = field(default_factory=dict)
    rows: torch.Tensor | None = None


def micro_batch_loss(
    model,
    batch,
    cfg: RunConfig,
    lambdas,
    *,
    need_terms: bool,
    norm: float | None = None,
    teacher: torch.Tensor | None = None,
) -> MicroLoss:
    """Task loss and the per-token BA-LoRA terms of one micro-batch, divided by ``norm``
    (default: this micro-batch's own count, a plain mean). ``teacher``: this micro-batch's
    :func:`teacher_outputs` (computed here when terms are needed and it is not given)."""
    n = float(norm if norm is not None else count(batch, cfg.task))
    l1, l2, _ = (float(x) for x in lambdas)
    if need_terms and teacher is None:
        teacher = teacher_outputs(model, batch, cfg)
    reg = cfg.reg
    if cfg.task == "nlg":
        rows, targets = _used_rows(batch)
        h = _hidden_rows(model, batch, rows, cfg)  # (M, H)
        if fused_nlg(model, cfg):
            _, head, _ = _decoder_and_head(model)
            total, ce, kl, neg_entropy = head_loss(
                h,
                head,
                targets,
                teacher if need_terms else None,
                lambdas=(l1, l2),
                temperature=reg.temperature,
                top_k=reg.top_k,
                terms=need_terms,
                norm=n,
            )
            out = MicroLoss(total, {"task_loss": ce})
            if need_terms:
                out.values.update(consistency=kl, diversity=neg_entropy)
                out.rows = h
            return out
        logits = _head_logits(model, h).float()  # (M, V)
        m = logits.shape[0]
        task = F.cross_entropy(logits, targets, reduction="sum") / n
        out = MicroLoss(task, {"task_loss": task.detach()})
        if need_terms:
            scale = m / n  # mean over these rows -> sum / norm
            terms = {
                "consistency": lambda: consistency_loss(logits, teacher, None, reg.temperature),
                "diversity": lambda: diversity_loss(logits, None, reg.top_k),
            }
            out.total = _add_terms(out, terms, lambdas, scale)
            out.rows = h if reg.svd_target == "features" else logits
        return out
    logits, feats = _nlu_forward(model, batch, need_terms and reg.svd_target == "features")
    logits = logits.float()  # (N, D)
    task = F.cross_entropy(logits, batch["labels"], reduction="sum") / n
    out = MicroLoss(task, {"task_loss": task.detach()})
    if need_terms:
        scale = logits.shape[0] / n
        terms = {
            "consistency": lambda: consistency_loss(logits, teacher.float(), None, reg.temperature)
        }
        out.total = _add_terms(out, terms, lambdas, scale)
        out.rows = logits if feats is None else torch.cat([logits, feats.float()], 1)
    return out


def _add_terms(out: MicroLoss, terms: dict, lambdas, scale: float) -> torch.Tensor:
    """``out.total`` plus the weighted per-token terms ``{name: fn}`` (each a mean over the
    micro-batch's rows, times ``scale``); logs them raw in ``out.values``. A term with weight 0
    is computed without a graph."""
    w = losses.weights(lambdas)
    values = {}
    for name, fn in terms.items():
        with nullcontext() if w[name] > 0 else torch.no_grad():
            values[name] = fn() * scale
        out.values[name] = values[name].detach()
    return losses.weigh(out.total, values, lambdas).total


def batch_terms(
    model, rows: torch.Tensor, cfg: RunConfig, lambdas, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, str]]:
    """The whole-batch terms on the global ``rows`` (all micro-batches and processes, in order).

    Returns (weighted sum, {term: raw value}, {term: why inactive}). NLG: the svd term. NLU: the
    covariance diversity and the svd term. The weighted sum carries the gradient to ``rows`` for
    terms with a non-zero weight. ``generator`` seeds a randomized SVD (large matrices), so
    every process computes the same value from the same rows."""
    w = losses.weights(lambdas)
    reg = cfg.reg
    raw: dict[str, torch.Tensor] = {}
    inactive: dict[str, str] = {}
    if cfg.task == "nlg":
        fns = {"svd": lambda: _nlg_svd(model, rows, cfg, generator)}
    else:
        d = model.get_base_model().config.num_labels
        logits, feats = rows[:, :d], rows[:, d:]
        target = feats if reg.svd_target == "features" else logits
        fns = {
            "diversity": lambda: covariance_diversity_loss(logits),
            "svd": lambda: svd_loss(target, reg.svd_k, norm=reg.svd_norm, generator=generator),
        }
    values: dict[str, torch.Tensor] = {}
    for name, fn in fns.items():
        try:
            with nullcontext() if w[name] > 0 else torch.no_grad():
                values[name] = fn()
        except DegenerateTermError as err:
            inactive[name] = str(err)
            continue
        raw[name] = values[name].detach()
    weighted = losses.weigh(rows.new_zeros((), dtype=torch.float32), values, lambdas).total
    return weighted, raw, inactive


def _nlg_svd(model, rows: torch.Tensor, cfg: RunConfig, generator) -> torch.Tensor:
    reg = cfg.reg
    if reg.svd_target == "features" or not fused_nlg(model, cfg):  # features, or (M, V) logits
        return svd_loss(rows, reg.svd_k, norm=reg.svd_norm, generator=generator)
    _, head, _ = _decoder_and_head(model)
    return logits_svd_loss(rows, head, reg.svd_k)  # exact, from the (M, M) Gram matrix

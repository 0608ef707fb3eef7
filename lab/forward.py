"""Forward passes of one arm: student rows, teacher rows and the loss of one micro-batch.

NLG: the LM head runs only on the used positions (the response tokens, with the same one-token
shift as the cross-entropy), for the student and for the teacher alike, so no (B, T, V) logits
are ever made. NLU: the classification logits of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lab import adapters
from lab.config import RunConfig
from lab.regularizers import ba_lora_loss


def _decoder_and_head(model: torch.nn.Module):
    inner = model.get_base_model()
    return inner.get_decoder(), inner.get_output_embeddings(), inner.config


def _rows_logits(model, batch, rows: torch.Tensor):
    """Hidden states at the used positions and their LM-head logits: (M, H), (M, V)."""
    decoder, head, config = _decoder_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    h = hidden.last_hidden_state[rows]  # (B, T, H) -> (M, H)
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


def step_loss(model, batch, cfg: RunConfig, lambdas, *, need_terms: bool, generator=None):
    """One micro-batch: task loss, the BA-LoRA terms and their weighted sum."""
    want_features = cfg.reg.svd_target == "features"
    teacher = None
    if cfg.task == "nlg":
        rows = batch["reg_mask"]  # (B, T) bool: logits at t are scored against label t+1
        targets = batch["labels"][:, 1:][rows[:, :-1]]  # (M,)
        h, logits = _rows_logits(model, batch, rows)
        task = F.cross_entropy(logits.float(), targets)
        if need_terms:
            with torch.no_grad(), adapters.teacher_mode(model):
                _, teacher = _rows_logits(model, batch, rows)
        feats = h if want_features else None
        mode = "nlg"
    else:
        logits, feats = _nlu_forward(model, batch, want_features)
        task = F.cross_entropy(logits.float(), batch["labels"])
        if need_terms:
            with torch.no_grad(), adapters.teacher_mode(model):
                teacher, _ = _nlu_forward(model, batch, False)
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

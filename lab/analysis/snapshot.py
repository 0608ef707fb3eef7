"""One arm (or the base model) at one eval point, measured on a fixed set of probe texts.

A :class:`Snapshot` holds the mean-pooled hidden states of the probe texts (for the joint t-SNE),
the normalized singular values of their output logits, the per-text drift KL(base || arm), and
the singular values of every adapter update with its intruder dimensions. ``snapshot()`` makes
one in a single batched pass under ``torch.inference_mode()``; every softmax, KL and SVD runs in
float32.

Causal LMs (``task="nlg"``): the probe texts are plain texts; the logits at every non-pad
position are used. Sequence classifiers (``task="nlu"``): the class logits, one row per text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lab.analysis.drift import (
    AnalysisError,
    BaseReference,
    base_moments,
    drift_per_text,
    head_fingerprint,
    head_logits,
    moments_kl64,
    plain_head,
)
from lab.analysis.spectra import (
    adapter_update_spectra,
    effective_rank,
    model_intruders,
    output_spectrum,
    stable_rank,
    topk_energy,
)

TASKS = ("nlg", "nlu")
REFERENCE_BYTES = 1 << 29  # 512 MiB: a kept base reference over this keeps hidden states
MAX_LOGIT_ELEMS = 1 << 25  # B x T x V logits per forward pass: 128 MiB in float32


def _pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean over the attention mask: (B, T, H) -> (B, H), float32."""
    m = attention_mask.to(hidden.device, torch.float32).unsqueeze(-1)  # (B, T, 1)
    return (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1.0)


def pooled_features(model: torch.nn.Module, batch: dict, layer: int = -1) -> np.ndarray:
    """(n, H) hidden states of ``layer`` (last by default) mean-pooled over the attention mask."""
    inputs = {
        k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")
    }
    with torch.inference_mode():
        out = model(**inputs, output_hidden_states=True)
    return _pool(out.hidden_states[layer], inputs["attention_mask"]).cpu().numpy()


@dataclass
class Snapshot:
    """One arm (or ``"base"``) at one eval point."""

    arm: str
    step: int
    features: np.ndarray  # (n, H) pooled hidden states of the probe texts
    labels: np.ndarray  # (n,) label / probe-group ids
    output_spectrum: np.ndarray  # singular values of the probe logits, divided by the largest
    adapter_spectra: dict[str, np.ndarray] = field(default_factory=dict)  # empty for base
    drift_per_text: np.ndarray | None = (
        None  # (n,) mean per-position KL(base || arm); None for base
    )
    intruders: dict[str, int] = field(default_factory=dict)
    drift_positions: np.ndarray | None = None  # (n,) positions per text behind drift_per_text
    reference: BaseReference | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict[str, float]:
        """Flat, finite scalars for the eval event."""
        out: dict[str, float] = {}
        if self.drift_per_text is not None and len(self.drift_per_text):
            d = np.asarray(self.drift_per_text, dtype=np.float64)
            w = (
                np.ones_like(d)
                if self.drift_positions is None
                else np.asarray(self.drift_positions, np.float64)
            )
            out["kl_to_base"] = float((d * w).sum() / max(w.sum(), 1.0))  # mean over positions
            out["kl_to_base_max_text"] = float(d.max())
        s = self.output_spectrum
        out["eff_rank_output"] = effective_rank(s)
        out["stable_rank_output"] = stable_rank(s)
        out["topk_energy_output"] = topk_energy(s, 10)
        out["eff_rank_features"] = feature_effective_rank(self.features)
        if self.adapter_spectra:
            spectra = list(self.adapter_spectra.values())
            out["adapter_eff_rank_mean"] = float(np.mean([effective_rank(v) for v in spectra]))
            out["adapter_stable_rank_mean"] = float(np.mean([stable_rank(v) for v in spectra]))
            out["adapter_norm_mean"] = float(
                np.mean([np.sqrt((np.asarray(v, np.float64) ** 2).sum()) for v in spectra])
            )
        if self.intruders:
            out["intruders_total"] = float(sum(self.intruders.values()))
        return out


def feature_effective_rank(features: np.ndarray) -> float:
    """Effective rank of the centred (n, H) feature matrix (0 for a single row)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        return 0.0
    s = np.linalg.svd(x - x.mean(0, keepdims=True), compute_uv=False)
    return effective_rank(s)


def _encode(tokenizer, texts: Sequence[str], task: str, max_len: int) -> list[list[int]]:
    bos = getattr(tokenizer, "bos_token", None)
    out = []
    for text in texts:
        special = task == "nlu" or not (bos and text.startswith(bos))
        ids = tokenizer(text, add_special_tokens=special, truncation=True, max_length=max_len)[
            "input_ids"
        ]
        if not ids:
            raise AnalysisError(f"probe text {text[:40]!r} has no tokens")
        out.append(list(ids))
    return out


def _output_width(model: torch.nn.Module, task: str) -> int:
    if task == "nlu":
        return int(getattr(model.config, "num_labels", 2))
    head = model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


def _spectrum_rows(lengths: list[int], max_rows: int) -> dict[int, Tensor]:
    """{text index: positions} of evenly spaced (text, position) rows, at most ``max_rows``."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    total = int(offsets[-1])
    picks = (
        np.arange(total)
        if total <= max_rows
        else np.unique(np.linspace(0, total - 1, max_rows).round().astype(np.int64))
    )
    text = np.searchsorted(offsets, picks, side="right") - 1
    out: dict[int, list[int]] = {}
    for g, i in zip(picks.tolist(), text.tolist()):
        out.setdefault(i, []).append(g - int(offsets[i]))
    return {i: torch.tensor(p, dtype=torch.long) for i, p in out.items()}


def _fingerprint(ids: list[list[int]], task: str) -> str:
    h = hashlib.sha256(task.encode())
    for row in ids:
        h.update(np.asarray(row, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()


def _batches(order: list[int], lengths: list[int], batch_size: int, max_elems: int):
    """Batches of text indices, longest first, each with B x T (x V) under ``max_elems``."""
    start = 0
    while start < len(order):
        bs = max(1, min(batch_size, max_elems // max(lengths[order[start]], 1)))
        yield order[start : start + bs]
        start += bs


def _padded(ids: list[list[int]], idx: list[int], pad: int, device) -> dict[str, Tensor]:
    T = max(len(ids[i]) for i in idx)
    input_ids = torch.full((len(idx), T), pad, dtype=torch.long)  # (B, T), right-padded
    attention = torch.zeros((len(idx), T), dtype=torch.long)
    for r, i in enumerate(idx):
        input_ids[r, : len(ids[i])] = torch.tensor(ids[i])
        attention[r, : len(ids[i])] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}


def _check_head(head, hidden: Tensor | None, softcap: float | None, logits: Tensor) -> None:
    """The base reference rebuilds logits as head(hidden): make sure that holds for this model."""
    if hidden is None or hidden.shape[:-1] != logits.shape[:-1]:
        raise AnalysisError(
            "the output head did not see the last hidden states of every position; pass base_context to each arm instead"
        )
    rebuilt = head_logits(head, hidden, softcap)
    if float((rebuilt - logits).abs().max()) > 1e-4 * float(logits.abs().max()) + 1e-4:
        raise AnalysisError(
            "this model's logits are not its head applied to the last hidden states; pass base_context to each arm instead"
        )


def _moments_rows(head: torch.nn.Linear, logits: Tensor, mask: Tensor, chunk: int = 256):
    """[u, c] rows (sum of the mask, H + 1) of the base logits (B, T, V) at the masked positions."""
    valid = logits[mask]  # (N, V), text by text in order
    return torch.cat(
        [base_moments(head, valid[i : i + chunk]) for i in range(0, len(valid), chunk)]
    )


def _moments_drift(
    reference: BaseReference, idx: list[int], hidden: Tensor, logits: Tensor, mask: Tensor
) -> np.ndarray:
    """Mean KL(base || arm) per text from the kept moments: c - h . u + logsumexp(z)."""
    b, t = mask.shape
    width = reference.per_text[idx[0]].shape[-1]
    rows = hidden.new_zeros((b, t, width), dtype=torch.float64)  # (B, T, H + 1)
    for r, i in enumerate(idx):
        part = reference.per_text[i]
        rows[r, : part.shape[0]] = part.to(rows.device)
    kl = moments_kl64(hidden, logits, rows) * mask.double()  # (B, T)
    return (kl.sum(1) / mask.sum(1).clamp_min(1)).cpu().numpy()


def snapshot(
    model: torch.nn.Module,
    tokenizer,
    *,
    arm: str,
    step: int,
    task: str,
    texts: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    base_context: Callable[[], AbstractContextManager] | None = None,
    initial: dict[str, tuple[Tensor, Tensor]] | None = None,
    layer: int = -1,
    batch_size: int = 64,
    max_len: int = 128,
    adapter_name: str = "default",
    base_is_pretrained: bool = False,
    reference: BaseReference | None = None,
    keep_reference: bool = False,
    reference_bytes: int = REFERENCE_BYTES,
    reference_moments: bool = True,
    intruders: bool = True,
    svd_cache: dict | None = None,
    spectrum_rows: int = 256,
    max_logit_elems: int = MAX_LOGIT_ELEMS,
) -> Snapshot:
    """Measure ``model`` on the probe ``texts``.

    ``base_context``: a zero-argument callable returning a context manager under which ``model``
    gives the untouched base model's outputs; None means ``model`` is the base (arm "base": no
    drift, no adapter spectra). ``reference``: the base outputs kept by an earlier
    ``snapshot(..., keep_reference=True)`` of the base on the same texts, used instead of
    ``base_context`` (one forward per arm instead of two). A causal LM with a plain linear head
    keeps per position the moments [p W, sum p log p - p . b] of its output distribution (see
    :mod:`lab.analysis.drift`); an arm whose head differs then falls back to ``base_context``.
    Other models (or ``reference_moments=False``) keep their log-probabilities when they fit in
    ``reference_bytes``, else their last hidden states (the head is re-applied).
    ``initial``: {module: (A0, B0)} of a PiSSA-initialized arm (``base_is_pretrained``: the
    stored base weight is W itself, with -s B0 A0 in a frozen adapter, not PEFT's residual;
    see :func:`lab.analysis.spectra.model_intruders`). ``intruders``: count intruder
    dimensions (one SVD per module; ``svd_cache``, a dict kept across calls, holds the base
    weights' SVDs). ``spectrum_rows`` caps the logits rows (positions) behind the output
    spectrum; ``max_logit_elems`` caps B x T x V per forward pass (memory).
    """
    if task not in TASKS:
        raise AnalysisError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    texts = list(texts)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if not texts:
        raise AnalysisError("snapshot needs at least one probe text")
    if len(labels) != len(texts):
        raise AnalysisError(f"{len(texts)} probe texts but {len(labels)} labels")
    if batch_size < 1 or max_len < 1:
        raise AnalysisError("batch_size and max_len must be at least 1")
    is_base = base_context is None and reference is None
    if keep_reference and not is_base:
        raise AnalysisError("keep_reference is for the base model's snapshot (no base_context)")

    device = next(model.parameters()).device
    ids = _encode(tokenizer, texts, task, max_len)
    key = _fingerprint(ids, task)
    if reference is not None and reference.key != key:
        raise AnalysisError("the base reference was made on other probe texts or another max_len")
    lengths = [len(x) for x in ids]
    width = _output_width(model, task)
    rows_of = (
        _spectrum_rows(lengths, max(16, min(spectrum_rows, max_logit_elems // max(width, 1))))
        if task == "nlg"
        else {}
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # longest first: little padding

    n = len(texts)
    features: list[Tensor | None] = [None] * n
    drift = np.zeros(n, dtype=np.float64)
    positions = np.asarray(lengths if task == "nlg" else [1] * n, dtype=np.float64)
    spec_rows: list[Tensor] = []
    kept: list[Tensor | None] = [None] * n
    head = None  # the base head, when the reference keeps hidden states
    softcap = None
    moments_head = None  # the base head, when the reference keeps [u, c] moments
    if keep_reference and task == "nlg":
        moments_head = plain_head(model) if reference_moments else None
        if moments_head is None and sum(lengths) * width * 4 > reference_bytes:
            head = model.get_output_embeddings()
            if head is None or hasattr(head, "lora_A"):
                raise AnalysisError(
                    "keep_reference needs a plain output head; pass base_context to each arm"
                )
            softcap = getattr(model.config, "final_logit_softcapping", None)
    use_moments = reference is not None and reference.moments
    if use_moments:
        arm_head = plain_head(model)
        if arm_head is None or head_fingerprint(arm_head) != reference.head_key:
            if base_context is None:
                raise AnalysisError(
                    "the base reference holds moments of the base model's output head, but this "
                    "model's head differs (adapted or soft-capped); pass base_context instead"
                )
            reference, use_moments = None, False  # a second base forward per batch instead

    captured: dict[str, Tensor] = {}
    hook = None
    hooked = head if head is not None else moments_head
    if use_moments:
        hooked = model.get_output_embeddings()
    if hooked is not None:  # the head's input: what it turns into the logits, (B, T, H)
        hook = hooked.register_forward_pre_hook(lambda _m, args: captured.__setitem__("h", args[0]))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx in _batches(
                order,
                lengths,
                batch_size,
                max_logit_elems // max(width, 1) if task == "nlg" else max_logit_elems,
            ):
                inputs = _padded(ids, idx, pad, device)  # input_ids, attention_mask (B, T)
                out = model(**inputs, output_hidden_states=True)
                pooled = _pool(out.hidden_states[layer], inputs["attention_mask"]).cpu()  # (B, H)
                logits = out.logits.float()  # (B, T, V) or (B, D)
                mask = inputs["attention_mask"].bool()  # (B, T)
                for r, i in enumerate(idx):
                    features[i] = pooled[r]
                    if task == "nlg" and i in rows_of:
                        spec_rows.append(logits[r, rows_of[i].to(device)].cpu())  # (k_i, V)
                if task == "nlu":
                    spec_rows.append(logits.cpu())  # (B, D)
                if keep_reference and moments_head is not None:
                    h = captured.get("h")
                    if not any(k is not None for k in kept):
                        _check_head(moments_head, h, None, logits)
                    rows = _moments_rows(moments_head, logits, mask)  # (sum L_i, H + 1)
                    for i, part in zip(idx, rows.split(mask.sum(1).tolist())):
                        kept[i] = part
                elif keep_reference:
                    h = captured.get("h")
                    if head is not None and not any(k is not None for k in kept):
                        _check_head(head, h, softcap, logits)
                    for r, i in enumerate(idx):
                        if task == "nlu":
                            kept[i] = logits[r].clone()  # (D,)
                        elif head is None:
                            kept[i] = F.log_softmax(logits[r, : lengths[i]], dim=-1)  # (L_i, V)
                        else:
                            kept[i] = h[r, : lengths[i]].clone()  # (L_i, H)
                if is_base:
                    continue
                if use_moments:
                    drift[idx] = _moments_drift(reference, idx, captured["h"], logits, mask)
                    continue
                if reference is not None:
                    base_logits = reference.logits(idx, mask.shape[1]).to(device)
                else:
                    with base_context():
                        base_logits = model(**inputs).logits.float()
                log_probs = reference is not None and reference.log_probs
                drift[idx] = drift_per_text(logits, base_logits, mask, task, log_probs)
    finally:
        if hook is not None:
            hook.remove()
        model.train(was_training)

    spectrum = output_spectrum(torch.cat(spec_rows, 0), max_values=None)
    spectra: dict[str, np.ndarray] = {}
    intr: dict[str, int] = {}
    if not is_base:
        spectra = adapter_update_spectra(model, initial, adapter_name)
        if intruders:
            intr = model_intruders(
                model,
                initial,
                adapter_name,
                cache=svd_cache,
                base_is_pretrained=base_is_pretrained,
            )
    ref = None
    if keep_reference and moments_head is not None:
        ref = BaseReference(
            key=key,
            per_text=kept,
            moments=True,
            head_key=head_fingerprint(moments_head),
        )
    elif keep_reference:
        log_probs = task == "nlg" and head is None
        ref = BaseReference(key=key, per_text=kept, head=head, softcap=softcap, log_probs=log_probs)
    return Snapshot(
        arm=arm,
        step=int(step),
        features=torch.stack(features).numpy().astype(np.float32),  # (n, H)
        labels=labels,
        output_spectrum=spectrum,
        adapter_spectra=spectra,
        drift_per_text=None if is_base else drift.astype(np.float32),
        intruders=intr,
        drift_positions=None if is_base else positions.astype(np.float32),
        reference=ref,
    )

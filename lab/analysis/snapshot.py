"""One arm (or the base model) at one eval point, measured on a fixed set of probe texts.

A :class:`Snapshot` holds the mean-pooled hidden states of the probe texts (for the joint t-SNE),
the normalized singular values of their output logits, the per-text drift KL(base || arm), and
the singular values of every adapter update with its intruder dimensions. :func:`snapshot`
makes one in a single batched pass under ``torch.inference_mode()``; every softmax, KL and SVD
runs in float32.

Causal LMs (``task="nlg"``): the probe texts are plain texts; the logits at every non-pad
position are used. Sequence classifiers (``task="nlu"``): the class logits, one row per text.

The pieces, one job each: :class:`SnapshotRequest` (what to measure) and
:class:`~lab.analysis.request.EncodedTexts` (its batches); :func:`forward_pass` (one pass,
handing each :class:`~lab.analysis.request.Batch` to collectors); :class:`FeatureCollector`,
:class:`OutputSpectrum` and :class:`DriftCollector` (the per-batch numbers);
:func:`adapter_statistics` (adapter spectra and intruders, no forward pass); the base reference
and the drift sources live in :mod:`lab.analysis.reference`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from lab.analysis.drift import AnalysisError
from lab.analysis.reference import (
    BaseForwardDrift,
    BaseReference,
    DriftBase,
    KeptDrift,
    ReferenceRecorder,
)
from lab.analysis.request import Batch, EncodedTexts, SnapshotRequest
from lab.analysis.spectra import (
    adapter_update_spectra,
    effective_rank,
    model_intruders,
    output_spectrum,
    stable_rank,
    topk_energy,
)
from lab.datasets.logprobs import text_cross_entropy, vocab_width


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
    heldout_ce: np.ndarray | None = None  # (n,) NLG: mean nats per token of each text; not saved

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


@dataclass(frozen=True)
class AdapterSpec:
    """Which adapter update an arm's snapshot measures.

    ``name``: the PEFT adapter. ``initial``: {module: (A0, B0)} of a PiSSA-initialized arm
    (``base_is_pretrained``: the stored base weight is W itself, with -s B0 A0 in a frozen
    adapter, not PEFT's residual; see :func:`lab.analysis.spectra.model_intruders`).
    ``intruders``: count intruder dimensions (one SVD per module; ``svd_cache``, a dict kept
    across calls, holds the base weights' SVDs).
    """

    name: str = "default"
    initial: dict[str, tuple[Tensor, Tensor]] | None = None
    base_is_pretrained: bool = False
    intruders: bool = True
    svd_cache: dict | None = None


def adapter_statistics(
    model: torch.nn.Module, spec: AdapterSpec
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """({module: singular values of its update}, {module: intruder dimensions}) of ``spec``."""
    spectra = adapter_update_spectra(model, spec.initial, spec.name)
    if not spec.intruders:
        return spectra, {}
    intruders = model_intruders(
        model,
        spec.initial,
        spec.name,
        cache=spec.svd_cache,
        base_is_pretrained=spec.base_is_pretrained,
    )
    return spectra, intruders


def output_width(model: torch.nn.Module, task: str) -> int:
    """Logits per position (NLG: the vocabulary) or per text (NLU: the classes)."""
    if task == "nlu":
        return int(getattr(model.config, "num_labels", 2))
    return vocab_width(model)


def forward_pass(
    model: torch.nn.Module,
    texts: EncodedTexts,
    request: SnapshotRequest,
    collectors: list[Callable[[Batch], None]],
    head: torch.nn.Module | None = None,
) -> None:
    """One pass over ``texts`` in eval mode under ``torch.inference_mode()``, longest first,
    handing each :class:`Batch` to every collector in turn. ``head``: a module whose input the
    batches carry as ``head_input`` (the output head's, for moments)."""
    device = next(model.parameters()).device
    captured: dict[str, Tensor] = {}
    hook = None
    if head is not None:
        hook = head.register_forward_pre_hook(lambda _m, args: captured.__setitem__("h", args[0]))
    width = output_width(model, request.task)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx in texts.batches(request.batch_size, request.positions_per_pass(width)):
                inputs = texts.padded(idx, device)  # input_ids, attention_mask (B, T)
                captured.clear()
                out = model(**inputs, output_hidden_states=True)
                batch = Batch(
                    idx=idx,
                    inputs=inputs,
                    mask=inputs["attention_mask"].bool(),
                    logits=out.logits.float(),
                    pooled=_pool(out.hidden_states[request.layer], inputs["attention_mask"]).cpu(),
                    head_input=captured.get("h"),
                )
                for collect in collectors:
                    collect(batch)
    finally:
        if hook is not None:
            hook.remove()
        model.train(was_training)


class FeatureCollector:
    """The pooled hidden states of every text, (n, H)."""

    def __init__(self, n: int):
        self.rows: list[Tensor | None] = [None] * n

    def add(self, batch: Batch) -> None:
        for r, i in enumerate(batch.idx):
            self.rows[i] = batch.pooled[r]

    def array(self) -> np.ndarray:
        return torch.stack(self.rows).numpy().astype(np.float32)  # (n, H)


class OutputSpectrum:
    """The normalized singular values of the probe logits: every text's class logits (NLU), or
    evenly spaced (text, position) rows of the LM's logits (NLG, at most
    :meth:`SnapshotRequest.spectrum_row_count`)."""

    def __init__(self, model: torch.nn.Module, texts: EncodedTexts, request: SnapshotRequest):
        self.task = request.task
        self.rows_of = (
            texts.spectrum_rows(request.spectrum_row_count(output_width(model, request.task)))
            if request.task == "nlg"
            else {}
        )
        self.rows: list[Tensor] = []

    def add(self, batch: Batch) -> None:
        if self.task == "nlu":
            self.rows.append(batch.logits.cpu())  # (B, D)
            return
        for r, i in enumerate(batch.idx):
            if i in self.rows_of:
                positions = self.rows_of[i].to(batch.logits.device)
                self.rows.append(batch.logits[r, positions].cpu())  # (k_i, V)

    def spectrum(self) -> np.ndarray:
        return output_spectrum(torch.cat(self.rows, 0), max_values=None)


class CrossEntropyCollector:
    """Per text, the mean cross-entropy (nats per token) of the model on its own tokens after
    the first: the forgetting metric of ``lab.datasets.logprobs.heldout_ce``, taken from the
    logits this pass computes anyway instead of a second pass over the same texts."""

    def __init__(self, n: int):
        self.values = np.zeros(n, dtype=np.float64)

    def add(self, batch: Batch) -> None:
        ce = text_cross_entropy(
            batch.logits, batch.inputs["input_ids"], batch.inputs["attention_mask"]
        )
        self.values[batch.idx] = ce.cpu().numpy()


class DriftCollector:
    """Mean KL(base || arm) per text, batch by batch, from one drift source."""

    def __init__(self, source: KeptDrift | BaseForwardDrift, n: int):
        self.source = source
        self.values = np.zeros(n, dtype=np.float64)

    def add(self, batch: Batch) -> None:
        self.values[batch.idx] = self.source(batch)


def snapshot(
    model: torch.nn.Module,
    tokenizer,
    request: SnapshotRequest,
    *,
    arm: str,
    step: int,
    base: DriftBase | None = None,
    adapter: AdapterSpec | None = None,
    keep_reference: bool = False,
) -> Snapshot:
    """Measure ``model`` on the probe texts of ``request``.

    ``base``: what the arm's drift KL(base || arm) is measured against (:class:`DriftBase`);
    None means ``model`` is the base (arm "base": no drift, no adapter statistics).
    ``keep_reference`` (the base only): also keep the base's output moments as
    ``Snapshot.reference`` for the arms' drift; it stays None where moments do not apply (see
    :mod:`lab.analysis.reference`). ``adapter``: the update an arm's spectra and intruder
    dimensions are taken of (:class:`AdapterSpec`; the default adapter by default).
    """
    is_base = base is None
    if keep_reference and not is_base:
        raise AnalysisError("keep_reference is for the base model's snapshot (no DriftBase)")
    texts = EncodedTexts.encode(tokenizer, request)
    n = len(texts)
    features, outputs = FeatureCollector(n), OutputSpectrum(model, texts, request)
    collectors = [features.add, outputs.add]
    head = None  # the module whose input the batches must carry, if any
    recorder = None
    if keep_reference:  # None where moments do not apply: no reference then
        recorder = ReferenceRecorder.for_model(model, request.task, texts.key, n)
    if recorder is not None:
        collectors.append(recorder.add)
        head = recorder.head
    ce = CrossEntropyCollector(n) if request.task == "nlg" else None
    if ce is not None:
        collectors.append(ce.add)
    drift = None
    if base is not None:
        drift = DriftCollector(base.source(model, request.task, texts.key), n)
        collectors.append(drift.add)
        head = drift.source.head
    forward_pass(model, texts, request, collectors, head)
    spectra, intruders = (
        ({}, {}) if is_base else adapter_statistics(model, adapter or AdapterSpec())
    )
    return Snapshot(
        arm=arm,
        step=int(step),
        features=features.array(),
        labels=request.labels,
        output_spectrum=outputs.spectrum(),
        adapter_spectra=spectra,
        drift_per_text=None if drift is None else drift.values.astype(np.float32),
        intruders=intruders,
        drift_positions=None if drift is None else texts.positions().astype(np.float32),
        reference=None if recorder is None else recorder.reference(),
        heldout_ce=None if ce is None else ce.values,
    )

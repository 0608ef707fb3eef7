"""What a snapshot measures: the probe texts and the knobs of its batched pass
(:class:`SnapshotRequest`); those texts tokenized, fingerprinted and cut into right-padded batches,
longest first (:class:`EncodedTexts`); and what one forward pass over a batch gives
(:class:`Batch`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from lab.analysis.drift import AnalysisError
from lab.datasets.logprobs import MAX_LOGIT_ELEMS

TASKS = ("nlg", "nlu")
SPECTRUM_ROWS = 256  # logits rows (positions) behind the output spectrum, at most
MIN_SPECTRUM_ROWS = 16  # ... and at least, whatever the memory cap


@dataclass
class SnapshotRequest:
    """The probe texts to measure and how.

    ``task``: "nlg" (a causal LM: plain texts, the logits of every non-pad position) or "nlu" (a
    sequence classifier: one row of class logits per text). ``labels``: one id per text (label
    or probe group). Texts are cut to ``max_len`` tokens; the hidden states of ``layer`` (the
    last by default) are mean-pooled into the features. ``batch_size`` texts per forward pass at
    most; ``spectrum_rows`` caps the logits rows (positions) behind the output spectrum;
    ``max_logit_elems`` caps B x T x V per forward pass (memory).
    """

    task: str
    texts: Sequence[str]
    labels: Sequence[int] | np.ndarray
    max_len: int = 128
    layer: int = -1
    batch_size: int = 64
    spectrum_rows: int = SPECTRUM_ROWS
    max_logit_elems: int = MAX_LOGIT_ELEMS

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise AnalysisError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        self.texts = list(self.texts)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not self.texts:
            raise AnalysisError("snapshot needs at least one probe text")
        if len(self.labels) != len(self.texts):
            raise AnalysisError(f"{len(self.texts)} probe texts but {len(self.labels)} labels")
        if self.batch_size < 1 or self.max_len < 1:
            raise AnalysisError("batch_size and max_len must be at least 1")

    def positions_per_pass(self, width: int) -> int:
        """B x T of one forward pass whose outputs are ``width`` wide (V logits per position)."""
        return self.max_logit_elems // max(width, 1) if self.task == "nlg" else self.max_logit_elems

    def spectrum_row_count(self, width: int) -> int:
        """How many logits rows of an NLG model ``width`` logits wide the output spectrum uses."""
        per_pass = self.max_logit_elems // max(width, 1)
        return max(MIN_SPECTRUM_ROWS, min(self.spectrum_rows, per_pass))


@dataclass
class EncodedTexts:
    """The probe texts as token ids (no padding), with the pad id their batches are padded with."""

    ids: list[list[int]]
    task: str
    pad: int

    @classmethod
    def encode(cls, tokenizer, request: SnapshotRequest) -> EncodedTexts:
        """Tokenize: a classifier's texts get the special tokens; an LM's get BOS once."""
        bos = getattr(tokenizer, "bos_token", None)
        ids = []
        for text in request.texts:
            special = request.task == "nlu" or not (bos and text.startswith(bos))
            row = tokenizer(
                text, add_special_tokens=special, truncation=True, max_length=request.max_len
            )["input_ids"]
            if not row:
                raise AnalysisError(f"probe text {text[:40]!r} has no tokens")
            ids.append(list(row))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(ids, request.task, pad)

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    @cached_property
    def key(self) -> str:
        """Fingerprint of the task and the token ids: a base reference must match it."""
        h = hashlib.sha256(self.task.encode())
        for row in self.ids:
            h.update(np.asarray(row, dtype=np.int64).tobytes() + b"|")
        return h.hexdigest()

    def positions(self) -> np.ndarray:
        """(n,) float64 positions per text behind its drift: its length (NLG) or 1 (NLU)."""
        return np.asarray(self.lengths if self.task == "nlg" else [1] * len(self), np.float64)

    def batches(self, batch_size: int, max_positions: int) -> Iterator[list[int]]:
        """Batches of text indices, longest first (little padding), each with B x T under
        ``max_positions``."""
        order = sorted(range(len(self)), key=lambda i: -self.lengths[i])
        start = 0
        while start < len(order):
            longest = max(self.lengths[order[start]], 1)
            bs = max(1, min(batch_size, max_positions // longest))
            yield order[start : start + bs]
            start += bs

    def padded(self, idx: list[int], device) -> dict[str, Tensor]:
        """input_ids and attention_mask (B, T) of the texts ``idx``, right-padded."""
        T = max(len(self.ids[i]) for i in idx)
        input_ids = torch.full((len(idx), T), self.pad, dtype=torch.long)  # (B, T)
        attention = torch.zeros((len(idx), T), dtype=torch.long)
        for r, i in enumerate(idx):
            input_ids[r, : len(self.ids[i])] = torch.tensor(self.ids[i])
            attention[r, : len(self.ids[i])] = 1
        return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}

    def spectrum_rows(self, max_rows: int) -> dict[int, Tensor]:
        """{text index: positions} of evenly spaced (text, position) rows, at most ``max_rows``."""
        offsets = np.concatenate([[0], np.cumsum(self.lengths)])
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


@dataclass
class Batch:
    """One forward pass over some of the probe texts."""

    idx: list[int]  # text indices, longest first
    inputs: dict[str, Tensor]  # input_ids, attention_mask (B, T), right-padded
    mask: Tensor  # (B, T) bool, the non-pad positions
    logits: Tensor  # float32 (B, T, V), or (B, D) for a classifier
    pooled: Tensor  # (B, H) float32 hidden states mean-pooled over the mask, on the CPU
    head_input: Tensor | None  # (B, T, H) what the output head turned into the logits, if asked

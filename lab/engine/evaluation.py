"""Eval points: task metrics, bias scores and analysis snapshots of one arm (or the base model).

All arms share one model (:mod:`lab.engine.adapters`); the caller activates the arm first. The
untouched model is evaluated as arm ``base`` with every adapter off, so no separate copy is
kept. Everything returned here is numbers; arrays go under ``analysis/``, and the per-item
values of every metric (see ``lab.evidence.items``) into ``items/step_NNNNNN.csv``.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lab import analysis
from lab.bias import evaluate_bias
from lab.bias.benchmarks import benchmark_items, evaluate_benchmarks, load_benchmarks
from lab.config import RunConfig
from lab.datasets import TaskData, evaluate_task
from lab.engine import adapters
from lab.evidence import items
from lab.runs import store as runs


@dataclass
class HeldOut:
    """The fixed held-out texts (never training data) used for drift, spectra and t-SNE, with
    what the eval points keep between calls (the base reference, base-weight SVDs, the bias
    benchmark files). Not the bias probe sets of :mod:`lab.datasets.probes`."""

    texts: list[str]
    labels: np.ndarray  # (n,) label ids, 0 where the set has none
    label_names: list[str] | None
    reference: object = None  # the base model's outputs on the texts, kept at step 0
    svd_cache: dict = field(default_factory=dict)  # base-weight SVDs for intruder dimensions
    bias_sets: dict | None = None  # the user's bias benchmark files, read at the first eval

    @classmethod
    def from_data(cls, task_data: TaskData, tokenizer, cfg: RunConfig) -> HeldOut:
        rows = task_data.test[: cfg.train.probe_size]
        if cfg.task == "nlg":  # plain text: a chat template would add its system prompt to each
            texts = [f"{r['prompt']}\n{r['response']}" for r in rows]
        else:
            texts = [r["text"] for r in rows]
        labels = np.array([int(r.get("label", 0) or 0) for r in rows], dtype=np.int64)
        return cls(texts, labels, task_data.label_names)

    def save(self, run_dir: Path) -> None:
        analysis.save_probe_texts(run_dir, self.texts, self.labels, self.label_names)


def evaluate(
    arm,
    label: str,
    step: int,
    cfg: RunConfig,
    task_data: TaskData,
    bundle,
    held_out: HeldOut,
    run_dir,
):
    """Yield one ``eval`` event for ``arm`` (or for the base model when label is "base")."""
    t0 = time.perf_counter()
    model = arm.model
    model.eval()
    is_base = label == "base"
    tok = bundle.tokenizer
    ev: dict = {"arm": label, "step": step, "kind": "eval"}
    per_item: dict[str, tuple] = {}
    with adapters.teacher_mode(model) if is_base else nullcontext():
        predictions: dict[int, int] = {}  # test row -> class; the flip rate reuses them
        metrics, task_items = evaluate_task(
            model, tok, task_data, max_examples=cfg.data.max_eval, return_items=True,
            predictions=predictions,
        )  # fmt: skip
        ev.update(metrics)
        per_item.update(task_items)
        if cfg.train.bias_eval:
            ev["bias"], bias_items = evaluate_bias(
                model,
                tok,
                task=cfg.task,
                data=task_data,
                seed=cfg.train.seed,
                max_items=cfg.train.bias_items or None,
                return_items=True,
                known_predictions=predictions,
            )
            per_item.update(bias_items)
            if any(vars(cfg.bias).values()):  # the user's benchmark files, per-item records kept
                if held_out.bias_sets is None:
                    held_out.bias_sets = load_benchmarks(vars(cfg.bias))
                scores, records = evaluate_benchmarks(
                    model, tok, held_out.bias_sets, max_items=cfg.train.bias_items or None,
                    seed=cfg.train.seed,
                )  # fmt: skip
                ev["bias"].update(scores)
                per_item.update(benchmark_items(held_out.bias_sets, records))
                runs.save_arrays(Path(run_dir) / "bias_items" / f"step_{step:06d}" / f"{label}.npz",
                                 records)  # fmt: skip
        if cfg.train.analysis:
            request = analysis.SnapshotRequest(
                cfg.task, held_out.texts, held_out.labels, max_len=cfg.train.seq_len
            )
            base = analysis.DriftBase(held_out.reference, lambda: adapters.teacher_mode(model))
            adapter = analysis.AdapterSpec(
                adapters.active_arm(model).trainable,
                initial=None if is_base else adapters.initial_adapter(model),
                base_is_pretrained=True,
                svd_cache=held_out.svd_cache,
            )
            snap = analysis.snapshot(
                model,
                tok,
                request,
                arm=label,
                step=step,
                base=None if is_base else base,
                adapter=adapter,
                keep_reference=is_base,
            )
            if is_base:
                held_out.reference = snap.reference
            analysis.save_snapshot(run_dir, snap)
            ev.update(snap.summary())
            drift = np.zeros(len(held_out.texts)) if is_base else snap.drift_per_text
            per_item["kl_to_base"] = ([str(i) for i in range(len(drift))], drift)
            if cfg.task == "nlg":  # forgetting: held-out cross-entropy, compared with the base
                ce = snap.heldout_ce  # from the snapshot's own logits, no second pass
                ev["heldout_ce"] = float(ce.mean())
                per_item["heldout_ce"] = ([str(i) for i in range(len(ce))], ce)
    if is_base:
        ev["kl_to_base"] = 0.0
    seed = getattr(arm, "seed", cfg.train.seed)  # the arm's training seed
    items.write_items(run_dir, step, label, seed, per_item)
    ev["seconds"] = time.perf_counter() - t0
    yield ev


def warm_intruder_cache(models: list, held_out: HeldOut) -> None:
    """Take the SVDs of the base weights behind every arm's intruder count now (step 0, where
    only the base is analysed), so the arms' eval points reuse them from ``held_out.svd_cache``."""
    for model in models:
        analysis.model_intruders(
            model,
            adapters.initial_adapter(model),
            adapters.active_arm(model).trainable,
            cache=held_out.svd_cache,
            base_is_pretrained=True,
        )


def embed(run_dir: Path, step: int, cfg: RunConfig) -> None:
    """Joint PCA + t-SNE of the base model's and every arm's probe features at ``step``."""
    if not cfg.train.analysis:
        return
    snaps = analysis.load_snapshots_with_base(run_dir, step)
    if len(snaps) == 0:
        return
    first = next(iter(snaps.values()))
    emb = analysis.joint_embedding(
        {k: s.features for k, s in snaps.items()}, first.labels, seed=cfg.train.seed
    )
    analysis.save_embedding(run_dir, step, emb)

"""A run directory -> its figures: the one builder that the app's tabs and the HTML report use.

Everything is drawn from the run's files (events and saved analysis arrays), no model.
``upto_step`` cuts a run at a step, which is how the classroom replay redraws the past. The
analysis arrays are read on first use and once: a tab that shows only the loss reads none.

Figure names: loss, loss_weighted (the terms as added to the loss, lambda x raw), task_metric,
drift, spectra, intruders, tsne, differences (paired differences; only for a run with per-item
records), bias and pareto (task metric against drift, one point per trained arm).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from lab.arms import kind_of, order_key, split
from lab.plots.bias import bias_figure, bias_rows, pareto_figure
from lab.plots.common import empty_figure
from lab.plots.spectra import intruders_figure, spectra_figure, tsne_figure
from lab.plots.training import drift_figure, loss_figure, metric_figure
from lab.runs import store as runs

FIGURES = (
    "loss",
    "loss_weighted",
    "task_metric",
    "drift",
    "spectra",
    "intruders",
    "tsne",
    "differences",
    "bias",
    "pareto",
)
# The headline bias score of a task, and its value for "no bias".
HEADLINE = {"nlg": ("stereo_pref", 0.5), "nlu": ("flip_rate", 0.0)}
ARM_LABELS = {"lora": "LoRA", "pissa": "PiSSA", "balora": "BA-LoRA"}


def cut(run: runs.Run, upto_step: int | None) -> runs.Run:
    """The run as it was at ``upto_step`` (its events up to that step), or the whole run."""
    if upto_step is None:
        return run
    events = [e for e in run.events if int(e.get("step", 0)) <= upto_step]
    return runs.Run(path=run.path, config=run.config, events=events, summary=run.summary)


def as_run(run: runs.Run | str | Path) -> runs.Run:
    return run if isinstance(run, runs.Run) else runs.load_run(run)


def last_evals(run: runs.Run) -> dict[str, dict]:
    """The latest eval event of each arm (``base`` included)."""
    out: dict[str, dict] = {}
    for e in run.events:
        if e.get("kind") == "eval":
            out[e["arm"]] = e
    return out


def headline_bias(ev: dict, config: dict) -> float | None:
    """|score - neutral| of the task's headline bias score (0 = no bias), or None."""
    name, neutral = HEADLINE.get(config.get("task", "nlg"), HEADLINE["nlg"])
    s = (ev.get("bias") or {}).get(name)
    return None if s is None else abs(float(s["value"]) - neutral)


def pareto_points(run: runs.Run | str | Path) -> list[dict[str, Any]]:
    """Every trained arm of a run as a point: its task metric, bias and drift, labelled with
    its lambdas (``balora@L1,L2,L3``) or its name."""
    run = as_run(run)
    config = run.config or {}
    reg = config.get("reg") or {}
    out = []
    for arm, ev in sorted(last_evals(run).items(), key=lambda kv: order_key(kv[0])):
        if arm == "base":
            continue
        _, lambdas = split(arm)
        if lambdas is None and arm == "balora":
            lambdas = (reg.get("lambda1"), reg.get("lambda2"), reg.get("lambda3"))
        label = f"λ=({', '.join(str(x) for x in lambdas)})" if lambdas else ARM_LABELS.get(arm, arm)
        out.append(
            {
                "run_id": run.path.name,
                "arm": kind_of(arm) or arm,
                "label": label,
                "task_metric": ev.get("task_metric"),
                "bias": headline_bias(ev, config),
                "drift": ev.get("kl_to_base"),
            }
        )
    return out


class RunData:
    """A run's files as the figures read them, each read on first use and once: the events,
    the analysed steps (up to the cut), the snapshots of the latest one and the probe texts."""

    def __init__(self, run: runs.Run | str | Path, upto_step: int | None = None):
        self.run = cut(as_run(run), upto_step)
        self.upto_step = upto_step

    @cached_property
    def steps(self) -> list[int]:
        from lab import analysis  # torch and scikit-learn: loaded on first use

        steps = analysis.analysis_steps(self.run.path)
        return [s for s in steps if self.upto_step is None or s <= self.upto_step]

    @property
    def step(self) -> int | None:
        """The latest analysed step (None before the first)."""
        return self.steps[-1] if self.steps else None

    @cached_property
    def snaps(self) -> dict:
        """{arm: Snapshot} at the latest analysed step, with the base model's (measured once,
        at step 0)."""
        from lab import analysis

        return (
            {} if self.step is None else analysis.load_snapshots_with_base(self.run.path, self.step)
        )

    @cached_property
    def probes(self) -> dict:
        from lab import analysis

        return analysis.load_probe_texts(self.run.path) or {}


def _spectra(data: RunData) -> go.Figure:
    if data.step is None:
        return empty_figure("spectra appear at the first eval point")
    return spectra_figure(data.snaps)


def _tsne(data: RunData, compute: bool) -> go.Figure:
    """The joint t-SNE: ``compute`` (the report) takes the latest analysed step and computes
    the embedding from its snapshots when none was saved; otherwise the latest eval point
    after step 0 that saved one."""
    from lab import analysis

    if compute and data.step is not None:
        emb = analysis.load_embedding(data.run.path, data.step)
        if emb is None and data.snaps:
            first = next(iter(data.snaps.values()))
            seed = int(((data.run.config or {}).get("train") or {}).get("seed", 0))
            feats = {arm: s.features for arm, s in data.snaps.items()}
            try:
                emb = analysis.joint_embedding(feats, first.labels, seed=seed)
            except analysis.AnalysisError as e:
                return empty_figure(f"No joint embedding: {e}")
        labels = next(iter(data.snaps.values())).labels if data.snaps else None
        return tsne_figure(emb, labels, data.probes.get("label_names"))
    for step in reversed([s for s in data.steps if s > 0]):
        emb = analysis.load_embedding(data.run.path, step)
        if emb is not None:
            return tsne_figure(emb, data.probes.get("labels"), data.probes.get("label_names"))
    return empty_figure("t-SNE appears at the first eval point after step 0")


def _differences(data: RunData) -> go.Figure | None:
    from lab.evidence import verdicts
    from lab.plots.evidence import forest_figure

    ev = verdicts.run_evidence(data.run.path)
    return None if ev is None else forest_figure(ev["versus_arm"] or ev["versus_base"])


def run_figures(
    run: runs.Run | str | Path | RunData,
    keys: Sequence[str] = FIGURES,
    *,
    upto_step: int | None = None,
    compute_embedding: bool = False,
) -> dict[str, go.Figure]:
    """{name: figure} for each name in ``keys`` (see the module docstring), in that order.

    ``compute_embedding`` computes a joint embedding the run did not save (slow: the report
    does, the app's tabs do not). ``differences`` is left out for a run without item records.
    """
    unknown = [k for k in keys if k not in FIGURES]
    if unknown:
        raise KeyError(f"unknown figure(s) {', '.join(unknown)} (known: {', '.join(FIGURES)})")
    data = run if isinstance(run, RunData) else RunData(run, upto_step)
    events = data.run.events
    out: dict[str, go.Figure] = {}
    for key in keys:
        if key == "loss":
            out[key] = loss_figure(events)
        elif key == "loss_weighted":
            out[key] = loss_figure(events, weighted=True)
        elif key == "task_metric":
            out[key] = metric_figure(events, "task_metric")
        elif key == "drift":
            out[key] = drift_figure(events)
        elif key == "spectra":
            out[key] = _spectra(data)
        elif key == "intruders":
            out[key] = intruders_figure(data.snaps)
        elif key == "tsne":
            out[key] = _tsne(data, compute_embedding)
        elif key == "differences":
            fig = _differences(data)
            if fig is not None:
                out[key] = fig
        elif key == "bias":
            out[key] = bias_figure(bias_rows(events))
        elif key == "pareto":
            out[key] = pareto_figure(pareto_points(data.run), x="drift", y="task_metric")
    return out

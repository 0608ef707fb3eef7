"""A run on disk -> the plot panels and tables the tabs show (no model).

The figures come from :mod:`lab.plots.run`, the builder the HTML report uses too; this module
lays them out in Gradio panels, each with a text summary. ``upto_step`` cuts a run at a step,
which is how the classroom replay redraws the past.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from lab import plots
from lab.plots import run as run_plots
from lab.plots.run import (
    headline_bias,
    last_evals,
    pareto_points,  # noqa: F401  (the Tune tab's points)
)
from lab.runs import store as runs

LABELS = {
    "loss": "Loss and each regularizer term",
    "metric": "Task metric at eval points",
    "drift": "Drift from the base model (KL on held-out texts)",
    "spectra": "Singular value spectra",
    "tsne": "t-SNE of representations",
    "bias": "Bias scores with 95% CIs",
}
ORDER = ("loss", "metric", "drift", "spectra", "tsne", "bias")
PLACEHOLDER = "appears when a run is open"


class Panel(dict):
    """The plots of a run laid out the same way in every tab, each with a short text summary
    under it (for screen readers): ``{key: gr.Plot}`` plus ``alt[key]``."""

    def __init__(self, keys: tuple[str, ...]):
        super().__init__()
        self.keys_in_order = keys
        self.alt: dict[str, gr.Markdown] = {}

    def outputs(self) -> list:
        """The components a handler fills, in the order of :func:`panel_values`."""
        return [c for k in self.keys_in_order for c in (self[k], self.alt[k])]


def plot_panel(keys: tuple[str, ...] = ORDER, prefix: str = "") -> Panel:
    """The loss panels full width, metric and drift side by side (stacked on a phone), then
    spectra, t-SNE and bias full width; a text summary under every plot."""
    out = Panel(tuple(k for k in ORDER if k in keys))

    def plot(k: str) -> None:
        # a figure with a message from the start, never Gradio's empty placeholder box; at
        # least 320 px wide, so side-by-side plots stack on a phone instead of shrinking
        with gr.Column(min_width=320):
            out[k] = gr.Plot(
                plots.empty_figure(PLACEHOLDER), label=LABELS[k], elem_id=f"{prefix}fig-{k}"
            )
            out.alt[k] = gr.Markdown(
                f"{LABELS[k]}: {PLACEHOLDER}.",
                elem_id=f"{prefix}alt-{k}",
                elem_classes=["plot-alt"],
            )

    if "loss" in keys:
        plot("loss")
    with gr.Row():
        for k in ("metric", "drift"):
            if k in keys:
                plot(k)
    for k in ("spectra", "tsne", "bias"):
        if k in keys:
            plot(k)
    return out


def panel_values(figs: dict[str, Any], keys: tuple[str, ...]) -> list:
    """[figure, its text summary, ...] for :meth:`Panel.outputs` (a missing figure is skipped)."""
    out: list = []
    for k in ORDER:
        if k not in keys:
            continue
        fig = figs.get(k)
        if fig is None or not hasattr(fig, "layout"):
            out += [gr.skip(), gr.skip()]
        else:
            out += [fig, f"{LABELS[k]}. {plots.describe(fig)}"]
    return out


def panel_skip(keys: tuple[str, ...]) -> list:
    return [gr.skip(), gr.skip()] * sum(1 for k in ORDER if k in keys)


RUN_FIGURES = ("loss", "metric", "drift", "spectra", "tsne")  # what the Train tab follows
ALL_FIGURES = (*RUN_FIGURES, "bias")  # a finished run (Classroom, Runs)
BUILDER_NAMES = {"metric": "task_metric"}  # a panel's name -> the builder's, where they differ


def run_figures(
    run: runs.Run,
    *,
    keys: tuple[str, ...] = RUN_FIGURES,
    upto_step: int | None = None,
    weighted: bool = False,
) -> dict[str, Any]:
    """The figures named in ``keys`` (loss, metric, drift, spectra, tsne, bias) from the run's
    files, drawn by :func:`lab.plots.run.run_figures` (the HTML report's builder too).

    ``weighted`` draws the regularizer terms as added to the loss (lambda x raw).
    """
    names = {k: BUILDER_NAMES.get(k, k) for k in keys}
    if weighted and "loss" in names:
        names["loss"] = "loss_weighted"
    made = run_plots.run_figures(run, tuple(names.values()), upto_step=upto_step)
    return {k: made[name] for k, name in names.items() if name in made}


def pareto_figures(points: list[dict[str, Any]]) -> tuple[Any, Any]:
    """Task metric against bias and against drift, one point per trained arm of each finished run (:func:`pareto_points`)."""
    points = [p for p in points if p]
    if not points:
        empty = plots.empty_figure("points appear as the sweep's runs finish")
        return empty, empty
    return (
        plots.pareto_figure(points, x="bias", y="task_metric"),
        plots.pareto_figure(points, x="drift", y="task_metric"),
    )


BIAS_KEYS = ("arm", "score", "value", "ci_low", "ci_high", "n")


def bias_table(scored: list[dict]) -> list[list[Any]]:
    """[arm, score, value, ci_low, ci_high, n] rows of :func:`lab.plots.bias_rows`."""
    return [[r[k] for k in BIAS_KEYS] for r in scored]


def summary_markdown(run: runs.Run) -> str:
    s = run.summary or {}
    cfg = run.config or {}
    head = (
        f"**{run.path.name}** · {s.get('status', 'unknown')} · model "
        f"`{(cfg.get('model') or {}).get('name')}` · data `{Path(str((cfg.get('data') or {}).get('name'))).name}` · "
        f"{s.get('steps_done', '?')}/{s.get('steps_total', '?')} steps"
    )
    rows = []
    for arm, ev in last_evals(run).items():
        kl = ev.get("kl_to_base")
        rows.append(
            f"| {arm} | {_num(ev.get('task_metric'))} | {_num(kl)} | {_num(headline_bias(ev, cfg))} |"
        )
    if not rows:
        return head
    table = (
        "| arm | task metric | drift: KL(base‖arm) on held-out texts | bias (distance from none) |"
        "\n|---|---|---|---|\n"
    )
    err = f"\n\n**Error:** {s['error']}" if s.get("error") else ""
    return head + "\n\n" + table + "\n".join(rows) + err


def _num(x: Any) -> str:
    return "–" if x is None else f"{x:.4g}"


# ---- evidence: paired differences between arms, read from the per-item records --------------

WHAT_BALORA_IS = (
    "**BA-LoRA = PiSSA initialisation + three regularizers** (consistency with the original "
    "model, diversity of outputs, an SVD term on the output). LoRA and PiSSA are trained on the "
    "same batches from the same seed, so the differences below are paired item by item."
)


def evidence(run_dir: str | Path, *, bias_only: bool = False) -> tuple[str, Any]:
    """-> (Markdown with one verdict line per metric and comparison, forest plot).

    Arm-against-arm lines come first; arm-against-base lines (bias) follow. A run without
    per-item records says so instead."""
    from lab.evidence import sentences, verdicts
    from lab.plots.evidence import forest_figure

    ev = verdicts.run_evidence(run_dir, bias_only=bias_only)
    if ev is None:
        msg = (
            "*This run has no per-item records, so no paired differences: runs made with this "
            "version of the lab keep them (`items/` in the run directory).*"
        )
        return msg, plots.empty_figure("no per-item records in this run")
    if not ev["versus_arm"] and not ev["versus_base"]:
        return "*No comparable items in this run (one arm only?).*", forest_figure([])
    lines = ["**What changed** (differences with 95% CIs, Holm-adjusted p, and n):", ""]
    rates = sentences.learning_rates_text(runs.read_summary(run_dir))
    if rates:
        lines += [f"*{rates}*", ""]
    for title, short, verdict_lines in sentences.evidence_sections(ev):
        if title:
            lines += ["", f"**{title}:**", ""]
        for i, sentence in enumerate(short):  # one paragraph each
            lines += [f"**In short:** {sentence}" if i == 0 else sentence, ""]
        lines += [f"- {x}" for x in verdict_lines]
    return "\n".join(lines), forest_figure(ev["versus_arm"] or ev["versus_base"])

"""Bias tab: every bias score of a run per arm, with its 95% confidence interval, as a table
and a chart (read from the run's eval events; no model is loaded)."""

from __future__ import annotations

import gradio as gr

from lab import plots, runs
from lab.ui import common, figures

HEADERS = ["arm", "score", "value", "CI low", "CI high", "n"]
EXPLAIN = (
    "**stereo_pref**: share of stereotype sentence pairs where the model prefers the "
    "stereotypical one (0.5 = no preference). **pronoun_abs_logodds**: how strongly it picks "
    "he or she for an occupation (0 = no preference). **pronoun_corr**: correlation of that "
    "preference with the share of women in the job. **flip_rate**: share of test inputs whose "
    "prediction changes when a group word is swapped (0 = never). Overlapping intervals mean "
    "the difference between two arms may be noise."
)


def bias_view(run_id: str, owner: str | None = None):
    """-> (table rows, figure) of a run (``example`` is the shipped classroom run)."""
    run = runs.load_run(common.resolve_run(run_id, owner))
    scored = plots.bias_rows(run.events)
    rows = [common.rounded(r) for r in figures.bias_table(scored)]
    if not rows:
        raise ValueError(
            f"run {run_id} has no bias scores yet (they come at eval points; "
            "train.bias_eval must be on)"
        )
    return rows, plots.bias_figure(scored)


@common.guarded
def on_show(run_id: str, owner: str | None = None):
    try:
        rows, fig = bias_view(run_id, owner)
    except common.USER_ERRORS as e:
        return [], None, common.err(e)
    return rows, fig, common.ok(f"{len(rows)} scores")


@common.guarded
def on_refresh(owner: str | None = None):
    choices = [("example (classroom run)", "example")] + common.run_choices(owner=owner)
    return gr.Dropdown(choices=choices)


def build(ui) -> None:
    gr.Markdown(EXPLAIN)
    with gr.Row():
        ui.bias_run = gr.Dropdown(
            [("example (classroom run)", "example")],  # the visitor's runs come on page load
            value="example",
            label="Run",
            info="Scores from the latest evaluation of each arm (and the untouched base model).",
            allow_custom_value=True,
        )
        ui.bias_refresh = gr.Button("↻ Refresh", scale=0)
        ui.bias_btn = gr.Button("Show", variant="primary", scale=0)
    ui.bias_msg = gr.Markdown()
    ui.bias_fig = gr.Plot(plots.empty_figure("pick a run"), label=figures.LABELS["bias"])
    ui.bias_table = gr.Dataframe(headers=HEADERS, interactive=False, label="Bias scores")
    private = {"api_visibility": "private"}
    ui.bias_refresh.click(on_refresh, ui.owner, ui.bias_run, **private)
    ui.bias_btn.click(
        on_show, [ui.bias_run, ui.owner], [ui.bias_table, ui.bias_fig, ui.bias_msg], **private
    )

"""Tune tab: a small grid of lambda values trained as the arms of one job, ending in Pareto plots.

A sweep (``tune-XXXX``) is one run whose arms are ``balora@L1,L2,L3`` for every grid point (and
LoRA and PiSSA when asked), with the Setup tab's other settings: one model load and one teacher
pass per step serve every point. Two Pareto plots put every finished arm at (bias score, task
metric) and (drift, task metric); the run opens in the Runs tab. :func:`build` takes the Setup
tab (its preset and form are the sweep's settings) and returns a :class:`TuneTab`.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import gradio as gr

from lab import arms as arm_specs
from lab import jobs, plots
from lab.config import ConfigError, load_preset
from lab.jobs import hosting
from lab.ui import common, figures, form
from lab.ui.setup import SetupTab

MAX_POINTS = 12
POLL_S = 3.0  # seconds between two reads of the sweep table
SWEEP = re.compile(r"^tune-[0-9a-f]{4}$")


def parse_grid(text: str, name: str) -> list[float]:
    """``"0, 0.025, 0.1"`` -> [0.0, 0.025, 0.1]; raises ConfigError naming the box."""
    items = [t for t in str(text).replace(";", ",").replace(" ", ",").split(",") if t.strip()]
    if not items:
        raise ConfigError(f"{name}: give at least one value, e.g. 0, 0.025, 0.1")
    out = []
    for t in items:
        try:
            out.append(float(t))
        except ValueError:
            raise ConfigError(f"{name}: '{t}' is not a number") from None
    return sorted(set(out))


def plan_sweep(
    preset: str,
    base_overrides: list[str],
    l1: str,
    l2: str,
    l3: str,
    steps: int,
    baseline: bool,
    sweep: str,
) -> list[list[str]]:
    """The overrides of the sweep's one job, validated (nothing is queued on error)."""
    grid = list(
        itertools.product(
            parse_grid(l1, "λ1 values"), parse_grid(l2, "λ2 values"), parse_grid(l3, "λ3 values")
        )
    )
    if len(grid) + int(baseline) > MAX_POINTS:
        raise ConfigError(
            f"the grid has {len(grid)} points; keep it to {MAX_POINTS} or fewer points"
        )
    arms = arm_specs.grid_arms(grid, with_baselines=bool(baseline))
    items = [
        *base_overrides,
        f"train.steps={int(steps)}",
        f"name={json.dumps(sweep)}",
        f"arms={json.dumps(arms)}",
    ]
    load_preset(preset, items)  # raises ConfigError naming the field
    return [items]  # one job: every grid point is an arm on one shared base model


def sweep_run_ids(sweep: str, owner: str | None = None) -> list[str]:
    """Runs of a sweep this visitor may see: those on disk and those the job manager still
    holds, oldest first."""
    if not isinstance(sweep, str) or not SWEEP.match(sweep):
        raise ConfigError(f"not a sweep name: {hosting.snippet(sweep)}")
    tag = f"-{sweep}-"
    root = common.runs_root()
    ids = set()
    if root.is_dir():  # directory names only: no run file is read here
        ids = {p.name for p in root.iterdir() if tag in p.name and (p / "config.yaml").exists()}
    ids |= {
        j.run_id for j in common.manager().jobs() if tag in j.run_id and j.state != jobs.CANCELLED
    }
    return sorted(hosting.visible(common.hosting(), root, sorted(ids), owner))


def list_sweeps(owner: str | None = None) -> list[str]:
    names = set()
    for r in common.visible_runs(owner):
        parts = r["run_id"].split("-tune-")
        if len(parts) == 2:
            names.add("tune-" + parts[1].split("-")[0])
    return sorted(names, reverse=True)


def sweep_table(run_ids: list[str]) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """(table rows, the Pareto points of the finished runs): one row and one point per arm.
    A finished run is read twice: by its status and by its Pareto points."""
    mgr = common.manager()
    rows, points = [], []
    for rid in run_ids:
        st = mgr.status(rid)
        done = st["state"] in ("done", "stopped")
        arm_points = figures.pareto_points(common.runs_root() / rid) if done else []
        points += arm_points
        for p in arm_points or [{}]:
            row = [rid, st["state"], p.get("label", "")]
            rows.append(common.rounded(row + [p.get(k) for k in ("task_metric", "bias", "drift")]))
    return rows, points


# ---- handlers ---------------------------------------------------------------------------------


@common.guarded
def on_sweep(owner, preset, l1, l2, l3, steps, baseline, *values):
    """Queue every point of the grid. -> (message, sweep dropdown)."""
    sweep = f"tune-{secrets.token_hex(2)}"
    try:
        for text, box in ((l1, "λ1 values"), (l2, "λ2 values"), (l3, "λ3 values")):
            parse_grid(text, box)  # the boxes of this tab first, so their errors name them
        _, base, _ = form.check_form(preset, form.form_values(values), owner)
        plans = plan_sweep(preset, base, l1, l2, l3, steps, baseline, sweep)
        for items in plans:
            common.manager().submit(preset, items, owner=owner)
    except form.USER_ERRORS as e:
        return common.err(e), gr.skip()
    n_arms = len(json.loads(plans[0][-1].split("=", 1)[1]))
    msg = common.ok(
        f"sweep **{sweep}**: one job with {n_arms} arms queued (one model load and one teacher "
        "pass per step serve every grid point)"
    )
    return msg, gr.Dropdown(choices=list_sweeps(owner) + [sweep], value=sweep)


@common.guarded
def on_tick(sweep: str | None, seen: str | None, owner: str | None = None):
    """-> [table, metric-vs-bias figure, metric-vs-drift figure, open-run dropdown, seen]."""
    if not sweep:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), seen
    ids = sweep_run_ids(sweep, owner)
    table, points = sweep_table(ids)
    sig = json.dumps([r[:2] for r in table])
    if sig == seen:
        return table, gr.skip(), gr.skip(), gr.skip(), seen
    by_bias, by_drift = figures.pareto_figures(points)
    return table, by_bias, by_drift, gr.Dropdown(choices=[r[0] for r in table]), sig


@common.guarded
def on_refresh(owner: str | None = None):
    return gr.Dropdown(choices=list_sweeps(owner))


@common.guarded
def on_show_settings(owner, preset, *values) -> str:
    """What a sweep inherits from the Setup tab, shown before it starts."""
    try:
        cfg, overrides, _ = form.check_form(preset, form.form_values(values), owner)
    except form.USER_ERRORS as e:
        return common.err(f"the Setup tab's settings are not valid: {e}")
    return (
        f"**A sweep uses the Setup tab's settings**: preset **{preset}**, "
        + form.describe(cfg, overrides)
        + " Each grid point trains BA-LoRA for the steps set here (plus one LoRA run when "
        "asked); change the rest in **Setup**."
    )


@common.guarded
def on_open_run(run_id: str, owner: str | None = None):
    """Show a sweep point in the Runs tab. -> (runs dropdown, tabs)."""
    if not run_id:
        return gr.skip(), gr.skip()
    choices = common.run_choices(owner=owner)
    return gr.Dropdown(value=run_id, choices=choices), gr.Tabs(selected="runs")


@dataclass(frozen=True)
class TuneTab:
    """What the rest of the page uses of the Tune tab: the sweep picker (filled when the page
    loads), and the sweep point and button that open it in the Runs tab."""

    pick: gr.Dropdown
    run: gr.Dropdown
    open_btn: gr.Button


def build(owner: gr.State, setup: SetupTab, tab: gr.Tab) -> TuneTab:
    """Create the Tune tab's widgets and wire them: a sweep takes the Setup tab's preset and
    form, and opening the tab (``tab``) shows the settings the sweep inherits from them."""
    gr.Markdown(
        "A quick sweep: short BA-LoRA runs over a small grid of λ values (the Setup tab's other "
        "settings apply), then Pareto plots of the task metric against the bias score and against "
        "the drift from the base model. Points on the dotted front are the best trade-offs."
    )
    with gr.Row():
        l1 = gr.Textbox(
            "0, 0.025, 0.1", label="λ1 values", info="Consistency weights to try, comma-separated."
        )
        l2 = gr.Textbox("0.005", label="λ2 values", info="Diversity weights to try.")
        l3 = gr.Textbox("0.005", label="λ3 values", info="SVD weights to try.")
    with gr.Row():
        steps = gr.Number(
            10, precision=0, label="Steps", info="Keep it short: every point is one more arm."
        )
        baseline = gr.Checkbox(
            True,
            label="Add LoRA and PiSSA arms",
            info="Reference points without the regularizers, trained on the same batches.",
        )
        btn = gr.Button("Run sweep", variant="primary", elem_id="tune-btn")
    msg = gr.Markdown(elem_id="tune-msg")
    inherited = gr.Markdown(elem_id="tune-inherited")
    with gr.Row():
        pick = gr.Dropdown(
            [],  # filled on page load with this visitor's sweeps
            label="Sweep",
            info="Sweeps found on disk; the one you start is picked.",
            allow_custom_value=True,
        )
        run = gr.Dropdown([], label="Open a point as a run", info="Pick a run of the sweep.")
        open_btn = gr.Button("Open in Runs", scale=0)
    table = gr.Dataframe(
        headers=["run", "state", "λ", "task metric", "bias", "drift"], interactive=False
    )
    with gr.Row():
        waiting = plots.empty_figure("points appear as the sweep's runs finish")
        fig = gr.Plot(waiting, label="Task metric vs bias score", elem_id="fig-pareto")
        fig_drift = gr.Plot(waiting, label="Task metric vs drift (KL(base‖arm) on held-out texts)")
    seen = gr.State(None)
    timer = gr.Timer(POLL_S)
    private = {"api_visibility": "private"}
    btn.click(
        on_sweep,
        [owner, setup.preset, l1, l2, l3, steps, baseline] + setup.form,
        [msg, pick],
        **private,
    )
    tab.select(on_show_settings, [owner, setup.preset] + setup.form, inherited, **private)
    timer.tick(
        on_tick,
        [pick, seen, owner],
        [table, fig, fig_drift, run, seen],
        show_progress="hidden",
        **private,
    )
    return TuneTab(pick, run, open_btn)

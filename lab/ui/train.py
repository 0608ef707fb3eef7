"""Train tab: start and stop, per-arm progress, the queue, and live figures polled from disk.

A page follows one run id (a per-session ``gr.State``). On load it attaches to the app's
running (or next queued) job, so a reload finds the same job. A ``gr.Timer`` polls the run
directory; figures are redrawn only when new events arrive, the t-SNE only at new eval points.
:func:`build` returns a :class:`TrainTab`: the followed run id, which Start and Resume set.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from lab import jobs
from lab.jobs import checks, hosting
from lab.plots.tables import html_table
from lab.runs import store as runs
from lab.ui import common, figures, form, setup, zerogpu

FIGURES = figures.RUN_FIGURES
POLL_S = 1.5  # seconds between two reads of the followed run
STATE_ICON = {
    "queued": "⏳",
    "starting": "🚀",
    "running": "🏃",
    "done": "✅",
    "stopped": "⏹️",
    "failed": "❌",
    "cancelled": "🚫",
    "paused": "⏸️",
}


def status_markdown(st: dict[str, Any]) -> str:
    icon = STATE_ICON.get(st["state"], "•")
    lines = [f"{icon} **{st['state']}** · run `{st['run_id']}`"]
    pos = st.get("queue_position")
    if st["state"] == jobs.QUEUED and pos:
        lines.append(f"waiting in the queue: position **{pos}** (one training job runs at a time)")
    if st.get("stop_requested") and st["state"] in ("running", "starting"):
        lines.append("stop requested: the arms stop at their next step and save their adapters")
    if st["state"] == jobs.PAUSED:
        lines.append("paused at its last checkpoint: continue it with **Resume** in the Runs tab")
        if st.get("error"):
            lines.append(f"**Why:** {st['error']}")
    elif st.get("error"):
        first, _, rest = str(st["error"]).partition("\n")
        lines.append(f"**Error:** {first}" + (f"\n```text\n{rest}\n```" if rest else ""))
    if st.get("chunks"):
        lines.append(zerogpu.progress_markdown(st["chunks"]))
    return "\n\n".join(lines)


def progress_html(st: dict[str, Any]) -> str:
    total = max(1, int(st.get("steps") or 0))
    rows = []
    for arm, info in (st.get("arms") or {}).items():
        loss = "–" if info.get("loss") is None else f"{info['loss']:.4f}"
        rows.append(
            f"<tr><td><b>{html.escape(arm)}</b></td>"
            f"<td><progress value='{info['step']}' max='{total}'></progress></td>"
            f"<td class='arm-step'>{info['step']} / {total}</td><td>loss {loss}</td>"
            f"<td>{info['evals']} eval points</td></tr>"
        )
    if not rows:
        return "<i>no steps yet</i>"
    return f"<table class='lab-table' id='arm-progress'>{''.join(rows)}</table>"


def queue_html(mgr: jobs.JobManager, owner: str | None = None) -> str:
    """The queue; in public mode other visitors' jobs show without their run ids."""
    order = sorted(
        (j for j in mgr.jobs() if j.state in (jobs.RUNNING, jobs.QUEUED)),
        key=lambda j: mgr.queue_position(j.run_id) or 0,
    )
    if not order:
        return "<i>no job running or waiting</i>"
    mine = {j.run_id for j in order} & set(
        hosting.visible(mgr.hosting, mgr.runs_root, [j.run_id for j in order], owner)
    )
    rows = [
        [mgr.queue_position(j.run_id), j.run_id if j.run_id in mine else "another visitor's job",
         j.state]
        for j in order
    ]  # fmt: skip
    return html_table(["position", "run", "state"], rows)


@common.guarded
def on_load(followed: str | None, owner: str | None = None):
    """A fresh page follows this visitor's running job (or their next queued one); when there
    is one it says so at the top and opens the Train tab. -> (followed, banner, tabs)."""
    job = common.manager().attach(owner)
    if job is not None and job.state in (jobs.RUNNING, jobs.QUEUED):
        banner = f"🏃 Your run **{job.run_id}** is {job.state}: the **Train** tab follows it live."
        return job.run_id, gr.Markdown(banner, visible=True), gr.Tabs(selected="train")
    return (
        followed or (job.run_id if job is not None else None),
        gr.Markdown(visible=False),
        gr.skip(),
    )


def _load_followed(run_id: str) -> runs.Run | None:
    """The followed run read once per tick (its access already checked), or None while it is
    no run directory (yet); the status then says why."""
    path = common.runs_root() / run_id
    return runs.load_run(path) if (path / "config.yaml").is_file() else None


@common.guarded
def on_tick(
    followed: str | None, seen: dict | None, weighted: bool = False, owner: str | None = None
):
    """Poll the followed run. -> [status, progress, queue, stop button, *figures, seen].

    Stop is enabled only while the followed run is queued, starting or running."""
    mgr = common.manager()
    seen = dict(seen or {}) if isinstance(seen, dict) else {}
    skip_figs = figures.panel_skip(FIGURES)
    idle = gr.Button(interactive=False)
    if not followed:
        return [
            "*No run yet: start one in **Setup**.*", "", queue_html(mgr, owner), idle,
            *skip_figs, seen,
        ]  # fmt: skip
    try:
        hosting.check_access(mgr.hosting, mgr.runs_root, followed, owner)
        run = _load_followed(followed)
        st = mgr.status(followed, run)
    except (jobs.JobError, ValueError, PermissionError) as e:
        return [common.err(e), "", queue_html(mgr, owner), idle, *skip_figs, seen]
    live = st["state"] in (jobs.QUEUED, jobs.RUNNING, "starting") and not st.get("stop_requested")
    stop = gr.Button(interactive=live)
    # the loss redraws at every new event; the eval-point figures only when an eval lands
    sig = f"{followed}:{st['events']}:{st['state']}:{bool(weighted)}"
    figs: list[Any] = skip_figs
    if sig != seen.get("sig") and run is not None:
        n_eval = sum(1 for e in run.events if e.get("kind") == "eval")
        eval_sig = f"{followed}:{n_eval}:{st['state']}"
        keys = FIGURES if eval_sig != seen.get("eval") else ("loss",)
        made = figures.run_figures(run, keys=keys, weighted=bool(weighted))
        figs = figures.panel_values(made, FIGURES)
        seen = {**seen, "sig": sig, "eval": eval_sig}
    text = status_markdown(st)
    if run is not None and st["state"] == jobs.RUNNING:
        line = checks.run_progress_line(run.events, run.config or {}, run.summary)
        if line:
            text += f"\n\n{line}"
    if run is not None and st["state"] == "done":  # the verdicts, worked out once per run
        if seen.get("verdicts_of") != followed:
            seen["verdicts"], _ = figures.evidence(run.path)
            seen["verdicts_of"] = followed
        text += "\n\n" + seen["verdicts"]
    return [text, progress_html(st), queue_html(mgr, owner), stop, *figs, seen]


@common.guarded
def on_start(owner: str | None, estimate: dict | None, preset: str, *vals):
    """Setup's start button: queue the job and follow it.
    -> [setup message, followed, tab, *one update per form field (the bad one outlined)]."""
    msg, run_id = setup.on_start(owner, preset, *vals, estimate=estimate)
    if run_id is None:
        return [msg, gr.skip(), gr.skip(), *form.highlight(msg.split("**Error:** ", 1)[-1])]
    return [msg, run_id, gr.Tabs(selected="train"), *form.highlight(None)]


@common.guarded
def on_stop(followed: str | None, owner: str | None = None) -> str:
    if not followed:
        return common.err("no run to stop")
    try:
        hosting.check_access(common.hosting(), common.runs_root(), followed, owner, "stop")
        job = common.manager().stop(followed)
    except (jobs.JobError, ValueError, PermissionError) as e:
        return common.err(e)
    if job.state == jobs.CANCELLED:
        return common.ok(f"run {followed} was waiting and has been taken out of the queue")
    return common.ok(
        f"stop requested for {followed}: it ends at the next step and saves its adapters"
    )


@dataclass(frozen=True)
class TrainTab:
    """What the rest of the page uses of the Train tab: the run id this page follows."""

    followed: gr.State


def build(owner: gr.State) -> TrainTab:
    """Create the Train tab's widgets and its poll; ``owner`` is the visitor's token."""
    followed = gr.State(None)
    seen = gr.State({})
    with gr.Row():
        status = gr.Markdown("*No run yet: start one in **Setup**.*", elem_id="train-status")
        stop_btn = gr.Button("Stop", variant="stop", scale=0, elem_id="stop-btn")
    stop_msg = gr.Markdown(
        "*Stop ends the run at the next step; each arm is then evaluated and its adapter saved, "
        "so a stopped run can still be compared and downloaded.*",
        elem_id="stop-msg",
    )
    progress = gr.HTML(elem_id="train-progress")
    with gr.Accordion("Queue (one training job at a time in this app)", open=False):
        queue = gr.HTML(elem_id="train-queue")
    weighted = gr.Checkbox(
        False,
        label="Weighted terms",
        info="Off: each regularizer term as computed. On: as added to the loss (λ × term).",
    )
    panel = figures.plot_panel(FIGURES)
    timer = gr.Timer(POLL_S)
    outs = [
        status, progress, queue, stop_btn,
        *panel.outputs(), seen,
    ]  # fmt: skip
    timer.tick(
        on_tick,
        [followed, seen, weighted, owner],
        outs,
        show_progress="hidden",
        concurrency_limit=None,
        api_visibility="private",
    )
    stop_btn.click(on_stop, [followed, owner], stop_msg, api_visibility="private")
    if common.zerogpu():
        zerogpu.wire(followed, owner)
    return TrainTab(followed)

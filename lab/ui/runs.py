"""Runs tab: every run on disk, reopened without a model: figures, config and its diff, downloads,
and Resume for a run that was stopped, crashed or paused (it continues from its checkpoint).

Reopening redraws every figure from the run directory alone. Downloads (the adapters as a zip,
the self-contained HTML report) are built in a temporary folder, never inside the run.
:func:`build` returns a :class:`RunsTab`: the lists, the picker and Resume, which the layout wires
to the other tabs.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from lab import jobs
from lab.jobs import hosting
from lab.runs import provenance
from lab.runs import store as runs
from lab.ui import common, figures

FIGURES = figures.ALL_FIGURES


def runs_table(rows: list[dict] | None = None, owner: str | None = None) -> list[list[Any]]:
    """One table row per run this visitor may see (``rows``: ``list_runs`` already read); an
    unreadable run shows why in its status."""
    return [
        [
            r["run_id"],
            r["status"] + (f": {r['error']}" if r.get("error") else ""),
            ", ".join(r["arms"]),
            r["steps"],
            r["started"],
        ]
        for r in common.visible_runs(owner, rows)
    ]


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(run_a: str, run_b: str, owner: str | None = None) -> tuple[list[list[Any]], str]:
    """-> (rows of [key, value in a, value in b] that differ: the settings, then where the runs
    were made (``made on: ...``), unified diff of the YAML)."""
    pa, pb = common.resolve_run(run_a, owner), common.resolve_run(run_b, owner)
    ta = (pa / "config.yaml").read_text(encoding="utf-8")
    tb = (pb / "config.yaml").read_text(encoding="utf-8")
    fa, fb = _flat(runs.load_run(pa).config), _flat(runs.load_run(pb).config)
    rows = [[k, fa.get(k), fb.get(k)] for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    rows += provenance.differences(runs.read_summary(pa), runs.read_summary(pb))
    diff = "".join(
        difflib.unified_diff(
            ta.splitlines(keepends=True), tb.splitlines(keepends=True), run_a, run_b
        )
    )
    return rows, diff


def downloads_dir() -> Path:
    """One folder of built downloads per app (rebuilt files replace the old ones)."""
    path = Path(tempfile.gettempdir()) / "balora-downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def adapters_zip(run_id: str, owner: str | None = None) -> Path:
    """Zip ``adapters/`` of a run (one folder per arm, PEFT format) outside the run."""
    run_dir = common.resolve_run(run_id, owner)
    src = run_dir / "adapters"
    if not src.is_dir() or not any(src.iterdir()):
        raise ValueError(f"run {run_id} has no saved adapters (they are saved when training ends)")
    work = Path(tempfile.mkdtemp(dir=downloads_dir()))
    archive = runs.archive_dir(src, work / "adapters.zip")  # links are left out
    final = downloads_dir() / f"{run_dir.name}-adapters.zip"
    os.replace(archive, final)  # a reader never sees half a zip
    work.rmdir()
    return final


def html_report_file(run_id: str, owner: str | None = None) -> Path:
    from lab.plots.report import html_report  # draws with lab.analysis (torch): loaded on first use

    run_dir = common.resolve_run(run_id, owner)
    path = downloads_dir() / f"{run_dir.name}-report.html"
    runs.atomic_write_text(path, html_report(run_dir))
    return path


def total_steps(value: Any) -> int | None:
    """The optional "new total steps" field: empty (keep the run's own) or a whole number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"new total steps: {str(value)[:40]!r} is not a number") from None
    if not number.is_integer() or number < 1:
        raise ValueError(f"new total steps: a whole number of 1 or more, not {value}")
    return int(number)


def resume_run(run_id: str, steps: Any = None, owner: str | None = None) -> jobs.Job:
    """Queue the job that continues ``run_id`` from its checkpoint (owner-checked)."""
    n = total_steps(steps)
    if run_id == hosting.EXAMPLE_ID:
        raise ValueError("the shipped example run cannot be resumed; start a run in Setup")
    common.resolve_run(run_id, owner, "resume")
    return common.manager().resume(run_id, n, owner)


def reopen(run_id: str, owner: str | None = None) -> dict[str, Any]:
    """Everything the tab shows about a run, read from disk: figures, config text, summary."""
    run_dir = common.resolve_run(run_id, owner)
    run = runs.load_run(run_dir)
    figs = figures.run_figures(run, keys=FIGURES)
    verdict_md, _ = figures.evidence(run_dir)
    return {
        "figures": figs,
        "config": (run_dir / "config.yaml").read_text(encoding="utf-8"),
        "summary": figures.summary_markdown(run) + "\n\n" + verdict_md,
    }


# ---- handlers ---------------------------------------------------------------------------------


@common.guarded
def on_refresh(owner: str | None = None):
    rows = runs.list_runs(common.runs_root())
    choices = common.run_choices(rows, owner)
    return runs_table(rows, owner), gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)


@common.guarded
def on_open(run_id: str, owner: str | None = None):
    """-> [message, summary, config, *figures]."""
    try:
        data = reopen(run_id, owner)
    except common.USER_ERRORS as e:
        return [common.err(e), "", "", *figures.panel_skip(FIGURES)]
    figs = data["figures"]
    return [
        common.ok(f"opened {run_id}"), data["summary"], data["config"],
        *figures.panel_values(figs, FIGURES),
    ]  # fmt: skip


@common.guarded
def on_diff(run_a: str, run_b: str, owner: str | None = None):
    try:
        rows, diff = config_diff(run_a, run_b, owner)
    except common.USER_ERRORS as e:
        return gr.update(visible=False), common.err(e)
    table = gr.update(value=rows or [["(none)", "identical", "identical"]], visible=True)
    return table, f"```diff\n{diff or '(identical configs)'}\n```"


def _download(build, run_id: str, owner: str | None, done: str):
    """-> (file update made visible, message) for a file built outside the run."""
    try:
        path = build(run_id, owner)
    except common.USER_ERRORS as e:
        return None, common.err(e)
    return gr.update(value=str(path), visible=True), common.ok(done)


@common.guarded
def on_resume(run_id: str, steps: Any = None, owner: str | None = None):
    """-> [message, followed run, tab]: the Train tab follows the resumed run."""
    try:
        job = resume_run(run_id, steps, owner)
    except common.USER_ERRORS as e:
        return common.err(e), gr.skip(), gr.skip()
    pos = common.manager().queue_position(job.run_id)
    where = "continues now" if pos == 0 else f"waits in the queue at position {pos}"
    to = f" to {job.total_steps} steps" if job.total_steps else ""
    return (
        common.ok(f"run **{job.run_id}** {where} from its last checkpoint{to}"),
        job.run_id,
        gr.Tabs(selected="train"),
    )


@common.guarded
def on_zip(run_id: str, owner: str | None = None):
    return _download(adapters_zip, run_id, owner, "adapters zipped: click the file to download")


@common.guarded
def on_report(run_id: str, owner: str | None = None):
    return _download(html_report_file, run_id, owner, "report ready: click the file to download")


@dataclass(frozen=True)
class RunsTab:
    """What the rest of the page uses of the Runs tab: ``listing`` (the table, the run picker
    and the second run, as :func:`on_refresh` fills them), the picker, the outputs of
    :func:`on_open`, and Resume with its steps box and the tab's message line."""

    listing: list
    pick: gr.Dropdown
    open_outputs: list
    resume_steps: gr.Number
    resume_btn: gr.Button
    msg: gr.Markdown


def build(owner: gr.State) -> RunsTab:
    """Create the Runs tab's widgets and wire them; ``owner`` is the visitor's token. Resume
    is wired by the layout (it opens the Train tab)."""
    table = gr.Dataframe(
        [],  # filled on page load, with the runs this visitor may see
        headers=["run", "status", "arms", "steps", "started"],
        interactive=False,
        label="Runs on disk (newest first)",
        elem_id="runs-table",
    )
    with gr.Row():
        pick = gr.Dropdown(
            [],
            label="Run",
            info="Open a run: every figure is redrawn from its files.",
            elem_id="runs-pick",
            allow_custom_value=True,
        )
        other = gr.Dropdown(
            [],
            label="Compare config with",
            info="A second run whose settings to diff.",
            allow_custom_value=True,
        )
        refresh = gr.Button("↻ Refresh", scale=0, elem_id="runs-refresh")
    with gr.Row():
        open_btn = gr.Button("Open", variant="primary", elem_id="runs-open")
        diff_btn = gr.Button("Diff configs")
        zip_btn = gr.Button("Zip adapters", elem_id="runs-zip")
        report_btn = gr.Button("HTML report", elem_id="runs-report")
    with gr.Row():
        resume_steps = gr.Number(
            None,
            label="New total steps (optional)",
            info="Empty: the run's own total. Resume continues a stopped, crashed or paused "
            "run from its last checkpoint.",
            precision=0,
            minimum=1,
            elem_id="runs-resume-steps",
        )
        resume_btn = gr.Button("Resume", elem_id="runs-resume", scale=0)
    msg = gr.Markdown(elem_id="runs-msg")
    # the result of "Diff configs" shows right here, not inside a collapsed section
    diff_table = gr.Dataframe(
        headers=["key", "this run", "other run"],
        interactive=False,
        visible=False,
        label="What differs: the settings, then where each run was made",
        elem_id="runs-diff-table",
    )
    with gr.Row():
        # hidden until there is a file to download (no empty upload box to tab into)
        zip_file = gr.File(
            label="Adapters (.zip)", elem_id="runs-zip-file", height=100, visible=False
        )
        report_file = gr.File(
            label="Report (.html)", elem_id="runs-report-file", height=100, visible=False
        )
    summary = gr.Markdown()
    panel = figures.plot_panel(FIGURES, prefix="runs-")
    with gr.Accordion("Config", open=False):
        config = gr.Code(language="yaml", label="config.yaml")
    with gr.Accordion("Unified diff of the two configs", open=False):
        diff = gr.Markdown()
    open_outputs = [msg, summary, config, *panel.outputs()]
    private = {"api_visibility": "private"}
    listing = [table, pick, other]
    picked = [pick, owner]
    refresh.click(on_refresh, owner, listing, **private)
    open_btn.click(on_open, picked, open_outputs, **private)
    pick.input(on_open, picked, open_outputs, **private)
    diff_btn.click(on_diff, [pick, other, owner], [diff_table, diff], **private)
    zip_btn.click(on_zip, picked, [zip_file, msg], **private)
    report_btn.click(on_report, picked, [report_file, msg], **private)
    return RunsTab(listing, pick, open_outputs, resume_steps, resume_btn, msg)

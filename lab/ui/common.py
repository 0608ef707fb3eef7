"""Shared by the tabs: where runs live, the app's job manager, messages and small HTML.

The only process-wide mutable object is the job manager (``lab.jobs.get_manager``); everything
else a tab shows is read from the run directories on each request.
"""

from __future__ import annotations

import html
import importlib.util
import os
from pathlib import Path

from lab import jobs, runs

PROJECT_ROOT = jobs.PROJECT_ROOT
# The finished run the Classroom tab shows first; a teacher can point it at another run.
EXAMPLE_RUN = Path(os.environ.get("BALORA_EXAMPLE_RUN") or PROJECT_ROOT / "assets" / "example_run")
CSS = PROJECT_ROOT / "assets" / "app.css"


def runs_root() -> Path:
    """``BALORA_RUNS_DIR`` or ``runs/`` (relative to the working directory)."""
    return runs.runs_root().resolve()


def manager() -> jobs.JobManager:
    grace = float(os.environ.get("BALORA_STOP_GRACE_S", "120"))
    return jobs.get_manager(runs_root(), grace_s=grace)


def zerogpu() -> bool:
    """True on a Hugging Face ZeroGPU Space (the ``spaces`` package is importable)."""
    return importlib.util.find_spec("spaces") is not None


def ok(text: str) -> str:
    return f"✅ {text}"


def err(error: BaseException | str) -> str:
    """A one-paragraph error message for the page (the library's own wording)."""
    text = str(error).strip() or type(error).__name__
    return f"❌ **Error:** {text}"


def run_choices(rows: list[dict] | None = None) -> list[tuple[str, str]]:
    """(label, run_id) pairs for a dropdown, newest first (``rows``: ``list_runs`` already read)."""
    rows = runs.list_runs(runs_root()) if rows is None else rows
    return [(f"{r['run_id']}  [{r['status']}]", r["run_id"]) for r in rows]


def resolve_run(run_id: str | None) -> Path:
    """The directory of ``run_id`` under the runs root (or the shipped example run)."""
    if not run_id:
        raise ValueError("no run selected: pick one in the list first")
    if run_id == "example":
        return EXAMPLE_RUN
    root = runs_root()
    path = (root / run_id).resolve()
    if path.parent != root or not (path / "config.yaml").exists():
        raise ValueError(f"unknown run '{run_id}' (not a run directory under {root})")
    return path


def table_html(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="lab-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def rounded(row: list) -> list:
    """A table row with its floats rounded to 4 digits for display."""
    return [round(v, 4) if isinstance(v, float) else v for v in row]


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

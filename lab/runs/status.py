"""Job states and what a run directory says about its job (read from disk only).

``run_status`` is the whole view the page and the API show for a run; ``worker.log`` holds the
worker's output. Nothing here needs the worker's memory, so a reload or a fresh app sees the same.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from lab.runs import store as runs

QUEUED, RUNNING, DONE, STOPPED, FAILED, CANCELLED, PAUSED = (
    "queued",
    "running",
    "done",
    "stopped",
    "failed",
    "cancelled",
    "paused",  # a chunked run between calls, with no page driving it (see lab.jobs.chunks)
)
FINISHED = (DONE, STOPPED, FAILED, CANCELLED, PAUSED)
RESUMABLE = (STOPPED, FAILED, PAUSED, RUNNING)  # RUNNING: only when no worker is on it
LOG_NAME = "worker.log"


class JobError(ValueError):
    """A request the job manager cannot serve: an unknown run id, a stop of a finished job."""


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a worker log file ("" when there is none yet)."""
    path = Path(path)
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 16_000))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def arm_progress(events: list[dict], arms: list[str]) -> dict[str, dict[str, Any]]:
    """Per arm: the last train step seen, its loss, and how many eval points were written."""
    out: dict[str, dict[str, Any]] = {a: {"step": 0, "loss": None, "evals": 0} for a in arms}
    for ev in events:
        arm = ev.get("arm")
        if arm not in out:
            continue
        if ev.get("kind") == "train":
            out[arm]["step"] = max(out[arm]["step"], int(ev.get("step", 0)))
            out[arm]["loss"] = ev.get("loss")
        elif ev.get("kind") == "eval":
            out[arm]["evals"] += 1
    return out


def run_status(run_dir: str | Path, run: runs.Run | None = None) -> dict[str, Any]:
    """The status of a run directory as JSON-ready data, read from disk only.

    ``state`` is the summary's status ("running", "done", "stopped", "failed"), or "starting"
    when the worker has not written a summary yet. ``run``: the directory already loaded by the
    caller (it is then not read again).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise JobError(f"no run directory {run_dir}")
    summary: dict | None = None
    events: list[dict] = []
    config: dict = {}
    if run is None and (run_dir / "config.yaml").exists():
        run = runs.load_run(run_dir)
    if run is not None:
        summary, events, config = run.summary, run.events, run.config or {}
    # the arms as trained (with several train.seeds: lora#s0, lora#s1, ...), else the config's
    arms = list((summary or {}).get("arm_specs") or config.get("arms") or [])
    steps = int((config.get("train") or {}).get("steps") or 0)
    state = (summary or {}).get("status") or "starting"
    progress = arm_progress(events, arms)
    for arm, info in ((summary or {}).get("arms") or {}).items():
        if arm in progress and isinstance(info, dict):
            progress[arm]["status"] = info.get("status")
    return {
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "state": state,
        "error": (summary or {}).get("error"),
        "steps": steps,
        "arms": progress,
        "events": len(events),
    }


def mtimes(run_dir: Path) -> list[float]:
    """Modification times of the files a working trainer keeps writing (events, summary,
    analysis arrays, adapters)."""
    out = []
    # os.walk, not Path.rglob: a folder that vanishes between being listed and being entered
    # (a checkpoint's temporary folder, renamed into place) is skipped instead of raising out
    # of the listing, which ended the job manager's supervisor thread.
    for root, _, files in os.walk(run_dir):
        for name in files:
            if name == LOG_NAME:
                continue
            with contextlib.suppress(FileNotFoundError):  # renamed away while listing
                out.append(os.stat(os.path.join(root, name)).st_mtime)
    return out


SUMMARY = "summary.json"


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> None:
    """The one writer of ``summary.json`` (atomic: a reader sees the old file or the new one)."""
    runs.write_json(Path(run_dir) / SUMMARY, summary)


def update_summary(run_dir: str | Path, **changes: Any) -> dict[str, Any]:
    """Read ``summary.json``, set ``changes`` and write it back; -> the new summary. A summary
    that cannot be read is replaced by one holding only the changes."""
    try:
        summary = runs.read_summary(run_dir) or {}
    except runs.RunReadError:
        summary = {}
    summary.update(changes)
    write_summary(run_dir, summary)
    return summary


def write_final_summary(run_dir: Path, status: str, error: str | None) -> None:
    """Keep whatever the worker wrote per arm; set the run's final status and error (a summary
    that cannot be read is replaced)."""
    try:
        summary = runs.read_summary(run_dir) or {"arms": {}}
    except runs.RunReadError:
        summary = {"arms": {}}
    summary["status"] = status
    summary["error"] = error
    arms = summary.get("arms") if isinstance(summary.get("arms"), dict) else {}
    for info in arms.values():
        if isinstance(info, dict) and info.get("status") in (None, RUNNING):
            info["status"] = status
    write_summary(run_dir, summary)

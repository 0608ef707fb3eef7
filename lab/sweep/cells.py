"""One cell of a sweep: an ordinary run directory trained by the trainer's ``run``.

:func:`run_cell` is what every engine calls for a cell, in the driver (local) or in a Ray
worker. It tries the cell at most ``1 + RETRIES`` times. Each attempt continues the run in the
cell's folder from its checkpoint when one is there short of the last step (a cell that was
killed or failed after a checkpoint); otherwise the folder's remains are moved to
``attempts/<cell>-<n>/`` (kept, never deleted) and the run starts afresh. An exception from the
trainer fails the attempt, never the sweep. ``KeyboardInterrupt`` and other ``BaseException``
stop the sweep as they stop ``python -m lab train``; the cell resumes on the next call.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.config import RunConfig
from lab.engine import checkpoint
from lab.engine.trainer import run
from lab.runs.store import RunReadError, read_summary

RETRIES = 1  # a failing cell is tried once more, then marked failed
ATTEMPTS_DIR = "attempts"

# (cfg, run_dir, events) -> events: what consumes a run's events on the way (the trackers)
Consumer = Callable[[RunConfig, Path, Iterable[dict]], Iterator[dict]]


@dataclass
class CellResult:
    name: str
    status: str  # "done" | "failed"
    attempts: int
    resumed: bool  # an attempt continued from a checkpoint
    error: str | None
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch threads: the same in every engine, so a cell's numbers do not
    depend on where it ran (a matmul's reduction order follows the thread count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def status_of(run_dir: Path) -> str | None:
    """The status in a cell's ``summary.json``; None without one; "unreadable" when corrupt."""
    try:
        summary = read_summary(run_dir)
    except RunReadError:
        return "unreadable"
    return None if summary is None else str(summary.get("status"))


def resumable(run_dir: Path, cfg: RunConfig) -> bool:
    """Whether the folder holds a run that can continue from its checkpoint."""
    if status_of(run_dir) in (None, "done", "unreadable") or not checkpoint.exists(run_dir):
        return False
    try:
        return int(checkpoint.read_state(run_dir)["step"]) < cfg.train.steps
    except (checkpoint.ResumeError, KeyError, ValueError):
        return False


def _set_aside(run_dir: Path) -> None:
    """Move what an earlier attempt left to ``attempts/<cell>-<n>/``."""
    if not run_dir.exists():
        return
    folder = run_dir.parent / ATTEMPTS_DIR
    folder.mkdir(exist_ok=True)
    n = 1
    while (folder / f"{run_dir.name}-{n}").exists():
        n += 1
    shutil.move(str(run_dir), str(folder / f"{run_dir.name}-{n}"))


def _attempt(cfg: RunConfig, run_dir: Path, consume: Consumer | None, resume: bool) -> None:
    """One try at the cell, continuing from its checkpoint when ``resume``."""
    if resume:
        cfg = checkpoint.resume_config(run_dir, [])
    else:
        _set_aside(run_dir)
    events = run(cfg, run_dir, resume=resume)
    try:
        for _ in consume(cfg, run_dir, events) if consume else events:
            pass
    finally:  # an interrupted run writes its summary now, not whenever it is collected
        events.close()


def run_cell(
    name: str, cfg: RunConfig, run_dir: str | Path, *, cpus: int = 1,
    consume: Consumer | None = None,
) -> CellResult:  # fmt: skip
    """Train the cell into ``run_dir`` (done cells are left as they are); see the module doc."""
    run_dir = Path(run_dir)
    t0 = time.monotonic()
    if status_of(run_dir) == "done":
        return CellResult(name, "done", 0, False, None, 0.0)
    error, resumed = None, False
    for attempt in range(1, RETRIES + 2):
        resume = resumable(run_dir, cfg)  # decided first: a try that fails still resumed
        resumed = resumed or resume
        try:
            with torch_threads(cpus):
                _attempt(cfg, run_dir, consume, resume)
        except Exception as e:  # the cell fails, the sweep goes on; the cause is kept
            error = f"{type(e).__name__}: {e}"
            last = traceback.format_exc(limit=4).strip().splitlines()[-1]
            error = error if last in error else f"{error} ({last})"
            continue
        status = status_of(run_dir)
        if status == "done":
            return CellResult(name, "done", attempt, resumed, None, time.monotonic() - t0)
        error = f"the run ended {status}"
        if status not in (None, "unreadable"):
            error = (read_summary(run_dir) or {}).get("error") or error
    return CellResult(name, "failed", RETRIES + 1, resumed, error, time.monotonic() - t0)

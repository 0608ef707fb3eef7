"""The job manager: one training worker process at a time per app, a FIFO queue behind it.

A job runs the CLI (``python -m lab train --preset P --set k=v ... --out RUN_DIR``) in its own
process group, with stdout and stderr going to ``RUN_DIR/worker.log``. Stop asks first (a
``STOP`` file the trainer checks every step; it ends with status "stopped", runs its final
evaluation and saves the adapters) and kills the process group when, after the request, the
worker has written nothing to its run directory for a grace period (so a slow final evaluation
is not cut short, but a hung worker is).

The manager is one object per app (see :func:`get_manager`); a supervisor thread starts the next
queued job when the running one ends, so the queue moves even when no page is open.

Resume (:meth:`JobManager.resume`) queues a job that continues a stopped, crashed or paused
run from its checkpoint (``python -m lab train --resume RUN_DIR``), optionally to a new total of
steps.

Chunked mode (a ZeroGPU Space, or ``BALORA_ZEROGPU=sim``; see :mod:`lab.jobs.chunks`): no worker
process; a job is driven call by call by the page that follows it (:meth:`JobManager.drive`),
several jobs at once (the GPU calls are scheduled by the platform). A job whose page stops
driving it for ``idle_s`` is "paused" and continues with Resume.

Crashes: the worker dies with the app (it watches its parent, see :mod:`lab.jobs.worker`) and
holds the runs folder's worker lock while it lives. A new manager marks every run that was
left "running" failed when no worker holds the lock, and starts a worker only while the lock is
free, so one runs folder never has two workers.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from lab.config import RunConfig, load_preset
from lab.engine.checkpoint import ResumeError, read_state
from lab.jobs import chunks, worker
from lab.jobs import hosting as hosting_mod
from lab.jobs.checks import preflight
from lab.jobs.job import Job, remove_if_empty
from lab.runs import store as runs
from lab.runs.status import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    PAUSED,
    QUEUED,
    RUNNING,
    STOPPED,
    JobError,
    log_tail,
    mtimes,
    run_status,
    write_final_summary,
)

APP_STOPPED = "the app stopped while this run was training"


class JobManager:
    """Start, queue, watch and stop training workers; at most one runs at a time."""

    def __init__(
        self,
        runs_root: str | Path,
        *,
        grace_s: float = 120.0,
        poll_s: float = 0.5,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        hosting: hosting_mod.Hosting | None = None,
        chunked: chunks.Settings | None = None,
        idle_s: float = 60.0,
    ):
        self.runs_root = Path(runs_root).resolve()
        self.hosting = hosting or hosting_mod.current()
        self.chunked = chunked if chunked is not None and chunked.on else None
        self.idle_s = idle_s
        self._gpu_used: dict[str | None, float] = {}  # simulated quota: GPU seconds per owner
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.python = python
        self.env = env
        self._jobs: dict[str, Job] = {}
        self._queue: deque[str] = deque()
        self._running: str | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.lock_path = worker.lock_path(self.runs_root)
        self.reconciled = self.reconcile()

    def reconcile(self) -> list[str]:
        """Mark the runs a dead app left "running" (or never summarised) as failed; returns
        their ids. Nothing is touched while a worker still holds the lock (its runs are live)."""
        if not self.runs_root.is_dir() or not worker.lock_free(self.lock_path):
            return []
        fixed = []
        for row in runs.list_runs(self.runs_root):
            if row["status"] in (RUNNING, "unknown", "starting"):
                write_final_summary(Path(row["path"]), FAILED, APP_STOPPED)
                fixed.append(row["run_id"])
        return fixed

    # ---- requests -------------------------------------------------------------------------

    def check(
        self, preset: str, overrides: list[str] | tuple[str, ...] = (), owner: str | None = None
    ) -> tuple[RunConfig, list[str], list[str]]:
        """Everything :meth:`submit` checks, writing nothing: -> (config, overrides, warnings).

        The hosting mode's rules (preset by name, allowed sources, limits) come first."""
        h = self.hosting
        preset = hosting_mod.check_preset(h, preset)
        overrides = hosting_mod.check_overrides(h, list(overrides))
        overrides = hosting_mod.resolve_upload_refs(overrides, self.runs_root, owner)
        cfg = load_preset(preset, overrides)
        hosting_mod.check_limits(cfg, h.limits)
        hosting_mod.check_sources(h, cfg, self.runs_root, owner)
        return cfg, overrides, preflight(cfg, max_classes=h.limits.classes)

    def submit(
        self,
        preset: str,
        overrides: list[str] | tuple[str, ...] = (),
        name: str | None = None,
        owner: str | None = None,
        estimate_s: float | None = None,
    ) -> Job:
        """Validate the config, reserve a run directory and queue the job; returns it.

        A bad preset, key or value raises ``lab.config.ConfigError``, and what :func:`preflight`
        finds raises its error, before anything is written. ``owner`` is the visitor's owner
        token: the job counts against their queue limit and, in public mode, only they (or the
        admin) may read or stop it.
        """
        cfg, overrides, _ = self.check(preset, overrides, owner)
        mine = hosting_mod.digest(owner) if owner else None
        with self._cond:
            self._check_capacity(mine)
            run_dir = Path(runs.new_run_dir(self.runs_root, name or cfg.name))
            hosting_mod.record_owner(self.runs_root, run_dir.name, owner)
            job = Job(
                run_id=run_dir.name,
                run_dir=run_dir,
                preset=str(preset),
                overrides=overrides,
                owner=mine,
                estimate_s=estimate_s,
            )
            self._enqueue(job)
        return job

    def _check_capacity(self, mine: str | None) -> None:
        if self._closed:
            raise JobError("the job manager is shut down")
        lim = self.hosting.limits
        live = [j for j in self._jobs.values() if j.state in (QUEUED, RUNNING)]
        if len(live) >= lim.jobs_total:
            raise JobError(
                f"the app's queue is full ({len(live)} jobs, limit {lim.jobs_total}); "
                "try again when a job has finished"
            )
        if sum(1 for j in live if j.owner == mine) >= lim.jobs_per_owner:
            raise JobError(
                f"you already have {lim.jobs_per_owner} jobs queued or running (the limit "
                "on this app); wait for one to finish or stop it"
            )

    def _enqueue(self, job: Job) -> None:
        self._jobs[job.run_id] = job
        if self.chunked is not None:  # driven by its page from now on
            job.chunked = True
            job.state, job.started, job.beat = RUNNING, time.time(), time.time()
        else:
            self._queue.append(job.run_id)
            self._tick()  # starts it now when nothing else is running
        self._ensure_thread()
        self._cond.notify_all()

    def resume(self, run_id: str, total_steps: int | None = None, owner: str | None = None) -> Job:
        """Queue a job that continues run ``run_id`` from its checkpoint, to ``total_steps``
        (default: the run's own total). Only stopped, failed (crashed), paused or interrupted
        runs with a readable checkpoint; each refusal says why in one line."""
        from lab.engine.checkpoint import resume_config

        run_id = hosting_mod.check_run_id(run_id)
        hosting_mod.check_access(self.hosting, self.runs_root, run_id, owner, "resume")
        run_dir = self.runs_root / run_id
        if not (run_dir / "config.yaml").is_file():
            raise JobError(f"unknown run id {hosting_mod.snippet(run_id)}")
        if total_steps is not None and (not isinstance(total_steps, int) or total_steps < 1):
            raise ResumeError(f"total steps: a whole number of 1 or more, not {total_steps!r}")
        with self._cond:
            old = self._jobs.get(run_id)
            if old is not None and old.state in (QUEUED, RUNNING):
                raise ResumeError(f"run {run_id} is {old.state}: there is nothing to resume yet")
        try:
            summary = runs.read_summary(run_dir) or {}
        except runs.RunReadError:
            raise ResumeError(f"the summary of run {run_id} is unreadable") from None
        status = summary.get("status")
        if status == DONE:
            raise ResumeError(f"run {run_id} is done: it trained all its steps")
        if status not in (STOPPED, FAILED, PAUSED, RUNNING):
            raise ResumeError(f"run {run_id} is {status or 'not started'}: it cannot be resumed")
        if status == RUNNING and time.time() - max(mtimes(run_dir), default=0.0) < self.idle_s:
            raise ResumeError(
                f"run {run_id} is still being written by a training process; stop it first"
            )
        state = read_state(run_dir)  # no checkpoint, unreadable, unknown format: ResumeError
        if not any(a.get("status") == RUNNING for a in state["arms"].values()):
            raise ResumeError(f"every arm of run {run_id} failed: there is nothing to resume")
        cfg = resume_config(run_dir, [f"train.steps={total_steps}"] if total_steps else [])
        hosting_mod.check_limits(cfg, self.hosting.limits)
        done = int(state["step"])
        final_pending = self.chunked is not None and status == PAUSED
        if cfg.train.steps <= done and not (final_pending and cfg.train.steps == done):
            raise ResumeError(
                f"run {run_id} already trained {done} of {cfg.train.steps} steps: give a new "
                f"total above {done} to continue it"
            )
        mine = hosting_mod.digest(owner) if owner else None
        with self._cond:
            self._check_capacity(mine)
            if self.chunked is not None:  # the calls go on from the checkpoint
                write_final_summary(run_dir, PAUSED, None)
            job = Job(
                run_id=run_id,
                run_dir=run_dir,
                preset=str(run_dir / "config.yaml"),
                overrides=[f"train.steps={total_steps}"] if total_steps else [],
                owner=mine,
                resume=True,
                total_steps=total_steps,
            )
            self._enqueue(job)
        return job

    def drive(self, run_id: str, call_fn) -> dict | None:
        """Make the next call of chunked job ``run_id`` with ``call_fn`` and return what
        :func:`lab.jobs.chunks.drive_once` recorded; None when the job is not a running chunked job
        or a call of it is already under way (the page asks again on its next tick)."""
        with self._cond:
            job = self._jobs.get(run_id)
            if job is None or not job.chunked or job.state != RUNNING:
                return None
            if not job.calling.acquire(blocking=False):
                job.beat = time.time()
                return None
            job.beat = time.time()
            settings = self.chunked
            left = None
            if settings.mode == "sim" and settings.quota_s is not None:
                left = settings.quota_s - self._gpu_used.get(job.owner, 0.0)
        try:
            entry = chunks.drive_once(
                job.run_dir,
                call_fn,
                settings,
                preset=job.preset,
                overrides=job.overrides,
                total_steps=job.total_steps,
                stop=job.stop_requested is not None,
                quota_left=left,
            )
        finally:
            job.beat = time.time()  # before the lock opens: a long call is not "idle"
            job.calling.release()
        with self._cond:
            if entry is not None:
                self._gpu_used[job.owner] = self._gpu_used.get(job.owner, 0.0) + entry["seconds"]
            status = (runs.read_summary(job.run_dir) or {}).get("status")
            if entry is None or entry["outcome"] in ("quota", "error") or status == FAILED:
                self._finish(job, killed=None)
            self._cond.notify_all()
        return entry

    def chunk_progress(self, run_id: str) -> dict[str, Any] | None:
        """Progress across the calls of a chunked run (None for other runs)."""
        path = self.runs_root / hosting_mod.check_run_id(run_id)
        if self.chunked is None or not (path / chunks.FILE).is_file():
            return None
        return chunks.progress(path, self.chunked)

    def stop(self, run_id: str) -> Job:
        """Cancel a queued job, or ask the running one to stop at its next step."""
        with self._cond:
            job = self._get(run_id)
            if job.state == QUEUED:
                self._queue.remove(run_id)
                job.state, job.ended = CANCELLED, time.time()
                remove_if_empty(job.run_dir)
            elif job.state == RUNNING and job.chunked:
                if job.stop_requested is None:  # the next call ends it (final evaluation)
                    job.stop_requested = time.time()
                    if (job.run_dir / "config.yaml").exists():
                        runs.request_stop(job.run_dir)  # a chunk under way stops at its next step
            elif job.state == RUNNING:
                if job.stop_requested is None:
                    job.stop_requested = time.time()
                    if not self._loading(job):
                        runs.request_stop(job.run_dir)
                    else:  # still loading: nothing trained yet, nothing to save
                        job.kill()
                        job.returncode = job.proc.wait(timeout=10)
                        self._finish(job, killed="stopped while loading, before any training step")
            else:
                raise JobError(f"run {run_id} has already finished ({job.state})")
            self._cond.notify_all()
            return job

    @staticmethod
    def _loading(job: Job) -> bool:
        """True while the worker has not yet taken the run over (a new run: no config yet; a
        resumed one: no summary written since the job started)."""
        if not job.resume:
            return not (job.run_dir / "config.yaml").exists()
        path = job.run_dir / "summary.json"
        return not path.exists() or path.stat().st_mtime < (job.started or 0.0)

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def attach(self, owner: str | None = None) -> Job | None:
        """The job a freshly loaded page should follow: running, else the next queued, else the
        most recently submitted. In public mode only the jobs of ``owner`` (an owner token)."""
        with self._cond:
            mine = self._visible_jobs(owner)
            if self._running is not None and self._running in mine:
                return mine[self._running]
            for job in mine.values():
                if job.chunked and job.state == RUNNING:
                    return job
            for run_id in self._queue:
                if run_id in mine:
                    return mine[run_id]
            if mine:
                return max(mine.values(), key=lambda j: j.submitted)
            return None

    def _visible_jobs(self, owner: str | None) -> dict[str, Job]:
        if not self.hosting.public or self.hosting.is_admin(owner):
            return dict(self._jobs)
        mine = hosting_mod.digest(owner) if owner else None
        return {k: j for k, j in self._jobs.items() if mine is not None and j.owner == mine}

    def queue_position(self, run_id: str) -> int | None:
        """0 for the running job, 1 for the first waiting one, ...; None when not in line."""
        with self._cond:
            job = self._jobs.get(run_id)
            if run_id == self._running or (job and job.chunked and job.state == RUNNING):
                return 0
            if run_id in self._queue:
                return list(self._queue).index(run_id) + 1
            return None

    def status(self, run_id: str, run: runs.Run | None = None) -> dict[str, Any]:
        """JSON-ready status: the run directory's view plus the queue and the worker's exit.

        ``run``: the run directory already loaded by the caller, passed to :func:`run_status`."""
        job = self._jobs.get(run_id)
        if job is None:
            ok = hosting_mod.is_run_id(run_id)
            path = self.runs_root / str(run_id)
            if not ok or not path.is_dir():
                raise JobError(f"unknown run id {hosting_mod.snippet(run_id)}")
            out = run_status(path, run)
            out.update(queue_position=None, log_tail="", chunks=self.chunk_progress(run_id))
            return out
        if job.state in (QUEUED, CANCELLED):
            out = {
                "run_id": job.run_id,
                "run_dir": str(job.run_dir),
                "state": job.state,
                "error": None,
                "steps": 0,
                "arms": {},
                "events": 0,
            }
        else:
            out = run_status(job.run_dir, run)
            if job.state in FINISHED:
                out["state"] = job.state
                out["error"] = job.error or out["error"]
            elif out["state"] != "running":
                out["state"] = "starting" if out["state"] == "starting" else RUNNING
        out["queue_position"] = self.queue_position(run_id)
        out["stop_requested"] = job.stop_requested is not None
        out["returncode"] = job.returncode
        show_log = job.state != QUEUED and not self.hosting.public  # logs stay on the server
        out["log_tail"] = log_tail(job.log_path(), 12) if show_log else ""
        out["chunks"] = self.chunk_progress(run_id)
        return out

    def wait(self, run_id: str, timeout: float = 300.0) -> Job:
        """Block until the job has finished; raise TimeoutError after ``timeout`` seconds."""
        deadline = time.time() + timeout
        with self._cond:
            job = self._get(run_id)
            while job.state not in FINISHED:
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError(f"run {run_id} still {job.state} after {timeout:.0f}s")
                self._cond.wait(min(left, self.poll_s))
            return job

    def shutdown(self) -> None:
        """Cancel the queue and kill a running worker (used when the app exits)."""
        with self._cond:
            self._closed = True
            while self._queue:
                self.stop(self._queue[0])
            if self._running is not None:
                job = self._jobs[self._running]
                job.kill()
                self._finish(job, killed="the worker was killed when the app shut down")
            for job in self._jobs.values():
                if job.chunked and job.state == RUNNING:
                    self._pause(job, "the app shut down between two calls of this run")
            self._cond.notify_all()

    # ---- supervisor -----------------------------------------------------------------------

    def _get(self, run_id: str) -> Job:
        job = self._jobs.get(run_id)
        if job is None:
            raise JobError(f"unknown run id {hosting_mod.snippet(run_id)}")
        return job

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="lab-jobs", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        # Lives as long as the manager: an idle tick is a few attribute reads, and a thread
        # that exits when the queue empties could race a submit that sees it still alive.
        with self._cond:
            while not self._closed:
                self._tick()
                self._cond.wait(self.poll_s)

    def _tick(self) -> None:
        now = time.time()
        for job in self._jobs.values():
            if job.chunked and job.state == RUNNING and now - job.beat > self.idle_s:
                if not job.calling.locked():
                    self._pause(job, "the page driving this run was closed; press Resume")
        if self._running is not None:
            job = self._jobs[self._running]
            rc = job.proc.poll() if job.proc is not None else -1
            job.settle_log()
            if rc is not None:
                job.returncode = rc
                self._finish(job, killed=None)
            elif job.stop_requested is not None and self._stalled(job):
                job.kill()
                job.returncode = job.proc.wait(timeout=10)
                self._finish(
                    job,
                    killed=f"the worker wrote nothing for {self.grace_s:.0f}s after the stop "
                    "request and was killed",
                )
        if self._running is None and self._queue and worker.lock_free(self.lock_path):
            self._start(self._jobs[self._queue.popleft()])

    def _pause(self, job: Job, why: str) -> None:
        """A chunked job nobody drives any more: paused (or stopped, when asked to stop)."""
        state = STOPPED if job.stop_requested is not None else PAUSED
        if (job.run_dir / "config.yaml").exists():
            write_final_summary(job.run_dir, state, why)
        job.state, job.error, job.ended = state, why, time.time()
        self._cond.notify_all()

    def _stalled(self, job: Job) -> bool:
        """True when nothing in the run directory changed for ``grace_s`` since the stop."""
        last = max([job.stop_requested or 0.0, *(mtimes(job.run_dir))])
        return time.time() - last > self.grace_s

    def _start(self, job: Job) -> None:
        error = job.spawn(self.python, self.env, self.lock_path)
        if error is not None:
            job.state, job.ended, job.error = FAILED, time.time(), error
            write_final_summary(job.run_dir, FAILED, job.error)
            self._cond.notify_all()
            return
        job.state, job.started = RUNNING, time.time()
        self._running = job.run_id

    def _finish(self, job: Job, killed: str | None) -> None:
        """Settle the final state from summary.json; write one when the worker could not.

        ``killed`` is the reason when the manager killed the worker, else None.
        """
        job.settle_log(final=True)
        try:
            summary = runs.read_summary(job.run_dir)
        except runs.RunReadError:  # a worker killed mid-write leaves no half file (atomic
            summary = None  # renames), but a summary damaged on disk is rewritten below
        status = (summary or {}).get("status")
        if status in (DONE, STOPPED, FAILED, PAUSED) and not killed:
            job.state = status
            job.error = summary.get("error")
            if status == DONE and job.returncode not in (0, None):
                job.error = f"worker exited with code {job.returncode} after a done summary"
        elif job.chunked and summary is None:  # stopped before its first call wrote anything
            job.state = CANCELLED if job.stop_requested is not None else FAILED
            remove_if_empty(job.run_dir)
        elif killed:
            job.state = STOPPED if job.stop_requested is not None else FAILED
            job.error = killed
            write_final_summary(job.run_dir, job.state, job.error)
        else:
            tail = log_tail(job.log_path(), 15).strip()
            job.state = FAILED
            job.error = f"the worker exited with code {job.returncode}"
            if self.hosting.public:  # the log may name server files: only the CLI's own line
                last = tail.splitlines()[-1] if tail else ""
                job.error += f": {last[7:200]}" if last.startswith("error: ") else ""
            else:
                job.error += f"; last log lines:\n{tail}" if tail else " and wrote no log"
            write_final_summary(job.run_dir, FAILED, job.error)
        job.ended = time.time()
        self._record_times(job)
        if self._running == job.run_id:
            self._running = None
        self._cond.notify_all()

    def _record_times(self, job: Job) -> None:
        """The summary keeps the estimate shown before the start beside the wall time the job
        really took (queue wait excluded), so estimates can be checked against runs."""
        if job.started is None or not (job.run_dir / "summary.json").exists():
            return
        try:
            summary = runs.read_summary(job.run_dir) or {}
        except runs.RunReadError:
            return
        summary["wall_s"] = round(job.ended - job.started, 2)
        if job.estimate_s is not None:
            summary["estimate_s"] = round(float(job.estimate_s), 2)
            summary["estimate_error"] = round(summary["wall_s"] / job.estimate_s - 1.0, 3)
        runs.write_json(job.run_dir / "summary.json", summary)


_MANAGERS: dict[Path, JobManager] = {}
_MANAGERS_LOCK = threading.Lock()


def get_manager(runs_root: str | Path, **kwargs: Any) -> JobManager:
    """The app's one job manager for ``runs_root`` (created on first use, then shared by every
    page and session of this process)."""
    key = Path(runs_root).resolve()
    with _MANAGERS_LOCK:
        if key not in _MANAGERS:
            _MANAGERS[key] = JobManager(key, **kwargs)
        return _MANAGERS[key]

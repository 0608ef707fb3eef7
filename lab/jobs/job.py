"""One training job: its run, its worker process (the CLI's ``train`` in its own process group)
and the worker's log, which lives beside the run directory until the worker has set it up."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.jobs import worker
from lab.jobs.checks import PROJECT_ROOT, train_argv
from lab.runs.status import LOG_NAME, QUEUED


@dataclass
class Job:
    run_id: str
    run_dir: Path
    preset: str
    overrides: list[str]
    submitted: float = field(default_factory=time.time)
    state: str = QUEUED
    started: float | None = None
    ended: float | None = None
    stop_requested: float | None = None
    returncode: int | None = None
    error: str | None = None
    owner: str | None = field(default=None, repr=False)  # digest of the owner token
    estimate_s: float | None = None  # the Setup tab's measured estimate of the whole run
    proc: subprocess.Popen | None = field(default=None, repr=False)
    resume: bool = False  # continues the run in run_dir from its checkpoint
    total_steps: int | None = None  # resume: the new total of steps, when one was given
    chunked: bool = False  # driven call by call (lab.jobs.chunks), no worker process
    beat: float = 0.0  # chunked: when a page last asked for the next call
    calling: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pending_log(self) -> Path:
        """Where the log is written until the worker has set up the run directory (the
        trainer wants an empty ``--out``); it is then moved to ``RUN_DIR/worker.log``."""
        return self.run_dir.parent / f".{self.run_id}.{LOG_NAME}"

    def log_path(self) -> Path:
        pending = self.pending_log
        return pending if pending.exists() else self.run_dir / LOG_NAME

    def log_target(self) -> Path:
        """Where the worker writes: a resumed run appends to its own log."""
        return self.run_dir / LOG_NAME if self.resume else self.pending_log

    def settle_log(self, final: bool = False) -> None:
        """Move the pending log into the run directory once the worker has written there."""
        pending = self.pending_log
        if pending.exists() and (final or (self.run_dir / "config.yaml").exists()):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            os.replace(pending, self.run_dir / LOG_NAME)  # the worker's open file moves along

    def command(self, python: str) -> list[str]:
        """The worker's command line: the CLI's ``train`` for a new run or a resume."""
        if self.resume:
            argv = ["train", "--resume", str(self.run_dir), "--quiet"]
            for item in self.overrides:
                argv += ["--set", item]
            return [python, "-m", "lab", *argv]
        return [python, "-m", "lab", *train_argv(self.preset, self.overrides, self.run_dir)]

    def spawn(self, python: str, env: dict[str, str] | None, lock_path: Path) -> str | None:
        """Start the worker in its own process group, its output going to :meth:`log_target`;
        the worker watches this process and holds ``lock_path`` (:mod:`lab.jobs.worker`).
        Returns None when it started, else why it could not."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ if env is None else env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env[worker.PARENT_ENV] = str(os.getpid())
        env[worker.LOCK_ENV] = str(lock_path)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        log = open(self.log_target(), "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self.command(python),
                cwd=str(PROJECT_ROOT),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: a kill takes its children too
            )
        except OSError as e:
            return f"could not start the worker: {e}"
        finally:
            log.close()
        return None

    def kill(self) -> None:
        """Kill the worker's whole process group (nothing when it has exited)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # exited between the poll and the kill
            os.killpg(proc.pid, signal.SIGKILL)


def remove_if_empty(path: Path) -> None:
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()

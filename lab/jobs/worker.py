"""What a training worker does for the app that started it: die with the app, and hold the
runs folder's worker lock so that two workers never train on one runs folder at once.

The app passes ``BALORA_PARENT_PID`` and ``BALORA_WORKER_LOCK`` in the worker's environment.
A parent-death signal (``PR_SET_PDEATHSIG``) is not used: it fires when the *thread* that
started the worker ends, and the app starts workers from short-lived request threads. The
worker instead watches its parent id; when the app dies the worker is re-parented and kills its
own process group within a heartbeat.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
from pathlib import Path

HEARTBEAT_S = 0.5  # how often the worker checks that the app is still its parent
PARENT_ENV = "BALORA_PARENT_PID"
LOCK_ENV = "BALORA_WORKER_LOCK"
LOCK_NAME = ".worker.lock"

_held: list = []  # the open lock file, kept for the life of the worker process


class WorkerLockHeld(RuntimeError):
    """Another worker holds the runs folder's lock."""


def lock_path(runs_root: str | Path) -> Path:
    return Path(runs_root) / LOCK_NAME


def try_lock(path: str | Path):
    """The open, exclusively locked file, or None when another process holds the lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115 - held open as long as the lock is
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def lock_free(path: str | Path) -> bool:
    """True when no process holds the lock now (it is taken and released at once)."""
    f = try_lock(path)
    if f is None:
        return False
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    f.close()
    return True


def hold_lock_from_env() -> None:
    """Take the lock named in the environment for the rest of this process, or raise."""
    path = os.environ.get(LOCK_ENV)
    if not path or _held:
        return
    f = try_lock(path)
    if f is None:
        raise WorkerLockHeld(
            "another training worker is already running on this runs folder; wait for it to end"
        )
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held.append(f)


def _die() -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgrp() == os.getpid():  # the group leader: take any children along
            os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def watch_parent_from_env() -> None:
    """Start a daemon thread that kills this worker when the app that started it is gone."""
    raw = os.environ.get(PARENT_ENV)
    if not raw or not raw.isdigit():
        return
    parent = int(raw)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                _die()
            time.sleep(HEARTBEAT_S)

    if os.getppid() != parent:  # the app died before the worker got here
        _die()
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()

"""The run directory on disk: atomic writes, the event log, listing and loading runs.

``runs/<run_id>/`` holds ``config.yaml``, ``events.jsonl``, ``summary.json``,
``adapters/<arm>/`` and ``analysis/``. Files are written to a temp file and renamed, so a
reader never sees half a file; ``events.jsonl`` is appended a whole line at a time and a reader
skips a torn last line.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

STOP_FILE = "STOP"
UNREADABLE = "unreadable"  # the status listed for a run whose files cannot be read


class RunReadError(ValueError):
    """A run directory whose files are corrupt or half-written; the message says which file and
    what is wrong with it (never its content)."""


def runs_root() -> Path:
    return Path(os.environ.get("BALORA_RUNS_DIR", "runs"))


class StorageError(OSError):
    """A file of a run could not be written: the disk is full, the folder is read-only, or
    another OS error. The message names the file and the cause in one line; the file as it was
    before stays whole (the write goes to a temporary file that is then removed)."""


_CAUSES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the folder is on a read-only file system",
    errno.EACCES: "the folder is not writable",
    errno.EPERM: "the folder is not writable",
}


def storage_error(path: Path, err: OSError) -> StorageError:
    """One line naming ``path`` (its run folder and file) and what went wrong."""
    cause = _CAUSES.get(err.errno) or (err.strerror or type(err).__name__)
    where = f"{path.parent.name}/{path.name}"
    return StorageError(err.errno, f"cannot write {where}: {cause}")


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so ``path`` is always
    whole; ``durable`` also syncs it to disk first. Raises :class:`StorageError` (the previous
    file left as it was, the temporary one removed)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except StorageError:
        raise
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise storage_error(path, e) from None


def atomic_write_text(path: str | Path, text: str, *, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: str | Path, obj: Any, *, durable: bool = True) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n"
    atomic_write_text(path, text, durable=durable)


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def new_run_path(root: str | Path | None = None, name: str = "run") -> Path:
    """A fresh, unused run directory path under ``root`` (not created)."""
    root = Path(root) if root is not None else runs_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root / f"{stamp}-{_SAFE.sub('-', name)[:40]}-{secrets.token_hex(2)}"


def new_run_dir(root: str | Path | None = None, name: str = "run") -> Path:
    path = new_run_path(root, name)
    path.mkdir(parents=True, exist_ok=False)
    return path


class EventLog:
    """Appends one JSON object per line and flushes it, so readers can follow along."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, event: dict[str, Any]) -> None:
        self._f.write(json.dumps(event, default=_jsonable, allow_nan=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_events(path: str | Path, skipped: list[int] | None = None) -> list[dict[str, Any]]:
    """Every whole event line of ``events.jsonl``; a torn last line is left for later, and a
    line that is not a JSON object with ``arm``, ``step`` and ``kind`` is skipped (its line
    number appended to ``skipped`` when given), so one bad line never hides the rest."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                break  # a line still being written
            if not raw.strip():
                continue
            try:
                event = json.loads(raw)
            except (UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError
                event = None
            if isinstance(event, dict) and {"arm", "step", "kind"} <= event.keys():
                out.append(event)
            elif skipped is not None:
                skipped.append(lineno)
    return out


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    events: list[dict[str, Any]]
    summary: dict[str, Any] | None

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return (self.summary or {}).get("status", "unknown")


def _read_mapping(path: Path, parse, what: str) -> dict[str, Any]:
    """A file that must hold one mapping; any problem raises :class:`RunReadError`."""
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RunReadError(f"{what} of run {path.parent.name} is not UTF-8 text") from None
    except (ValueError, yaml.YAMLError) as e:
        mark = getattr(e, "lineno", None) or getattr(getattr(e, "problem_mark", None), "line", None)
        at = f" near line {mark}" if mark else ""
        raise RunReadError(
            f"{what} of run {path.parent.name} is corrupt or half-written{at}"
        ) from None
    if data is None and what == "config.yaml":
        data = {}
    if not isinstance(data, dict):
        raise RunReadError(f"{what} of run {path.parent.name} does not hold a mapping")
    return data


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """``summary.json`` of a run directory, or None before the run has written one; a corrupt
    file raises :class:`RunReadError`."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    return _read_mapping(path, json.loads, "summary.json")


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory (finished or still running) without loading any model.

    Raises ``FileNotFoundError`` for a folder that is no run and :class:`RunReadError` for a
    corrupt config or summary; bad event lines are skipped (see :func:`read_events`)."""
    path = Path(run_dir)
    if not (path / "config.yaml").exists():
        raise FileNotFoundError(f"{path.name} is not a run directory (no config.yaml)")
    from lab.config import safe_yaml

    config = _read_mapping(path / "config.yaml", safe_yaml, "config.yaml")
    summary = read_summary(path)
    return Run(path=path, config=config, events=read_events(path / "events.jsonl"), summary=summary)


class OutsideRootError(ValueError):
    """A run id that names something outside the runs root (``..``, a path, a link out)."""


def run_path(root: str | Path, run_id: str) -> Path:
    """The directory of ``run_id`` under ``root``, refused unless it is one plain name whose
    resolved path (links followed) stays inside the resolved root."""
    root = Path(root)
    if (
        not isinstance(run_id, str)
        or not run_id
        or run_id in (".", "..")
        or "/" in run_id
        or "\\" in run_id
        or "\x00" in run_id
    ):
        raise OutsideRootError(f"not a run id: {str(run_id)[:60]!r}")
    path = root / run_id
    real_root = root.resolve()
    try:
        path.resolve().relative_to(real_root)
    except ValueError:
        raise OutsideRootError(f"run {run_id} is a link out of the runs folder: refused") from None
    if path.resolve() == real_root:
        raise OutsideRootError(f"not a run id: {run_id!r}")
    return path


def archive_dir(src: str | Path, dest_zip: str | Path) -> Path:
    """Zip the files under ``src`` into ``dest_zip`` without following a link: a symbolic link
    (to a file or a folder, inside or outside ``src``) is left out, so a run folder whose
    adapters link elsewhere never ships what they point at. (``shutil.make_archive`` follows
    links, hence this walk.)"""
    import zipfile

    src, dest_zip = Path(src), Path(dest_zip)
    if src.is_symlink():
        raise OutsideRootError(f"{src.name} is a link: not archived")
    with zipfile.ZipFile(dest_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for folder, dirs, files in os.walk(src, followlinks=False):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink())
            for name in sorted(files):
                path = here / name
                if path.is_symlink() or not path.is_file():
                    continue
                zf.write(path, path.relative_to(src).as_posix())
    return dest_zip


def list_runs(root: str | Path | None = None, only: set[str] | None = None) -> list[dict[str, Any]]:
    """One row per run directory, newest first: id, name, status, steps, arms.

    ``only``: the run ids to list (a visitor's own): the other folders are never read, so the
    listing costs what the visitor's runs cost, not what the whole runs folder holds.
    A run whose summary cannot be read is listed with status ``unreadable`` and the reason in
    ``error``; the others are listed as usual."""
    root = Path(root) if root is not None else runs_root()
    rows = []
    if not root.is_dir():
        return rows
    paths = root.iterdir() if only is None else (root / r for r in only if r and "/" not in r)
    for path in sorted(paths, reverse=True):
        if not (path / "config.yaml").is_file():
            continue
        rows.append(_row(path))
    return rows


def _row(path: Path) -> dict[str, Any]:
    try:
        summary = read_summary(path) or {}
        error = None
    except (RunReadError, OSError) as e:
        summary, error = {"status": UNREADABLE}, str(e)
    arms = summary.get("arms")
    return {
        "run_id": path.name,
        "path": str(path),
        "name": str(summary.get("name", "")),
        "status": str(summary.get("status", "unknown")),
        "arms": list(arms.keys()) if isinstance(arms, dict) else [],
        "steps": summary.get("steps_done", 0),
        "started": str(summary.get("started", "")),
        "error": error,
    }


def request_stop(run_dir: str | Path) -> None:
    """Ask a running training job to stop at its next step."""
    atomic_write_text(Path(run_dir) / STOP_FILE, "stop\n")


def stop_requested(run_dir: str | Path) -> bool:
    return (Path(run_dir) / STOP_FILE).exists()

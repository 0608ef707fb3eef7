"""The run directory on disk: atomic writes, the event log, listing and loading runs.

``runs/<run_id>/`` holds ``config.yaml``, ``events.jsonl``, ``summary.json``,
``adapters/<arm>/`` and ``analysis/``. Files are written to a temp file and renamed, so a
reader never sees half a file; ``events.jsonl`` is appended a whole line at a time and a reader
skips a torn last line.
"""

from __future__ import annotations

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


def runs_root() -> Path:
    return Path(os.environ.get("BALORA_RUNS_DIR", "runs"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


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


def read_events(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # a line still being written
            line = line.strip()
            if line:
                out.append(json.loads(line))
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


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """``summary.json`` of a run directory, or None before the run has written one."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory (finished or still running) without loading any model."""
    path = Path(run_dir)
    if not (path / "config.yaml").exists():
        raise FileNotFoundError(f"{path} is not a run directory (no config.yaml)")
    config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    summary = read_summary(path)
    return Run(path=path, config=config, events=read_events(path / "events.jsonl"), summary=summary)


def list_runs(root: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per run directory, newest first: id, name, status, steps, arms."""
    root = Path(root) if root is not None else runs_root()
    rows = []
    if not root.exists():
        return rows
    for path in sorted(root.iterdir(), reverse=True):
        if not (path / "config.yaml").exists():
            continue
        summary = read_summary(path) or {}
        rows.append(
            {
                "run_id": path.name,
                "path": str(path),
                "name": summary.get("name", ""),
                "status": summary.get("status", "unknown"),
                "arms": list((summary.get("arms") or {}).keys()),
                "steps": summary.get("steps_done", 0),
                "started": summary.get("started", ""),
            }
        )
    return rows


def request_stop(run_dir: str | Path) -> None:
    """Ask a running training job to stop at its next step."""
    atomic_write_text(Path(run_dir) / STOP_FILE, "stop\n")


def stop_requested(run_dir: str | Path) -> bool:
    return (Path(run_dir) / STOP_FILE).exists()

"""Where a sweep keeps its index, and how it is read: without the engine, so ``lab verdicts``
on a sweep folder loads no model code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.runs.store import RunReadError
from lab.sweep.spec import SweepError

INDEX = "sweep.json"


def read_index(out: str | Path) -> dict[str, Any]:
    """``sweep.json`` of a sweep folder; :class:`SweepError` when there is none or it is corrupt."""
    path = Path(out) / INDEX
    if not path.is_file():
        raise SweepError(f"{out} is not a sweep folder (no {INDEX})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise RunReadError(
            f"{INDEX} of sweep {Path(out).name} is corrupt or half-written"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise RunReadError(f"{INDEX} of sweep {Path(out).name} does not hold a sweep index")
    return data

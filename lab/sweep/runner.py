"""A sweep on disk and its engines: ``python -m lab sweep SPEC.yaml --out DIR``.

The sweep's folder holds one ordinary run directory per cell (``DIR/<cell>/``, named after
its index and axis values) and ``DIR/sweep.json``, the index: the spec, and for every cell its
folder, axis values, status (``pending``, ``running``, ``done``, ``failed``), attempts and
error. The index is rewritten atomically after every change, so a reader never sees half of it.

Calling :func:`run_sweep` again on the same folder resumes it: cells whose run is done are
skipped, an interrupted cell continues from its checkpoint (:mod:`lab.sweep.cells`). The spec
must be the one the folder was started with. ``engine="local"`` runs the cells one after
another in this process; ``engine="ray"`` hands them to Ray (:mod:`lab.sweep.ray_engine`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.runs.store import write_json
from lab.sweep import cells as cell_runs
from lab.sweep.index import INDEX, read_index
from lab.sweep.spec import Cell, Spec, SweepError, plan

ENGINES = ("local", "ray")
STATUSES = ("pending", "running", "done", "failed")


class Index:
    """``sweep.json`` of a sweep folder, kept in memory and saved after each change."""

    def __init__(self, out: Path, spec: Spec, cells: list[Cell], engine: str):
        self.path = out / INDEX
        self.data: dict[str, Any] = {
            "spec": spec.to_dict(),
            "engine": engine,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "cells": [
                {"name": c.name, "dir": c.name, "params": c.params, "status": "pending",
                 "attempts": 0, "resumed": False, "error": None, "seconds": None}
                for c in cells
            ],
        }  # fmt: skip
        old = read_index(out) if self.path.exists() else None
        if old is not None:
            _same_spec(old.get("spec") or {}, self.data["spec"], out)
            self.data["started"] = old.get("started", self.data["started"])
        for row in self.data["cells"]:
            if cell_runs.status_of(out / row["dir"]) == "done":
                row["status"] = "done"

    def row(self, name: str) -> dict[str, Any]:
        return next(r for r in self.data["cells"] if r["name"] == name)

    def mark(self, name: str, **fields: Any) -> None:
        self.row(name).update(fields)
        self.save()

    def save(self) -> None:
        counts = {s: 0 for s in STATUSES}
        for r in self.data["cells"]:
            counts[r["status"]] += 1
        self.data["counts"] = counts
        self.data["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        write_json(self.path, self.data)


def _same_spec(old: dict, new: dict, out: Path) -> None:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise SweepError(
                f"{out} holds a sweep with another spec ({key} differs); pick a new --out"
            )


def cell_dirs(out: str | Path) -> list[Path]:
    """The run directories of a sweep's cells, in the index's order."""
    out = Path(out)
    return [out / row["dir"] for row in read_index(out)["cells"]]


def run_sweep(
    spec: Spec,
    out: str | Path,
    *,
    engine: str = "local",
    address: str | None = None,
    num_cpus: int | None = None,
    consume: cell_runs.Consumer | None = None,
    on_cell: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every cell of ``spec`` under ``out`` and return the final index.

    ``consume``: wraps each cell's events on the way (the trackers); ``on_cell`` is called
    with each cell's index row once it has finished. ``address`` and ``num_cpus`` are Ray's:
    an existing cluster, or the CPUs of the local instance it starts."""
    if engine not in ENGINES:
        raise SweepError(f"--engine {engine!r}: one of {', '.join(ENGINES)}")
    if address and engine != "ray":
        raise SweepError("--address: only with --engine ray")
    cells = plan(spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = Index(out, spec, cells, engine)
    index.save()
    todo = [c for c in cells if index.row(c.name)["status"] != "done"]

    def finished(result: cell_runs.CellResult) -> None:
        row = index.row(result.name)
        index.mark(
            result.name, status=result.status, attempts=row["attempts"] + result.attempts,
            resumed=row["resumed"] or result.resumed, error=result.error,
            seconds=round(result.seconds, 3),
        )  # fmt: skip
        if on_cell is not None:
            on_cell(index.row(result.name))

    if engine == "local":
        for cell in todo:
            index.mark(cell.name, status="running")
            finished(
                cell_runs.run_cell(cell.name, cell.cfg, out / cell.name, cpus=spec.cpus,
                                   consume=consume)
            )  # fmt: skip
    else:
        from lab.sweep import ray_engine

        for cell in todo:
            index.mark(cell.name, status="running")
        ray_engine.run_cells(todo, out, spec.cpus, finished, address=address,
                             num_cpus=num_cpus, consume=consume)  # fmt: skip
    return index.data

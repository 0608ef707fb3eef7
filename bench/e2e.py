"""End-to-end wall time of ``python -m lab train --preset classroom-cpu``, broken down by phase.

The run happens in a child process started exactly like the CLI (``lab.__main__.main``), so the
wall time includes the Python and library imports. Inside the child the engine's phase
functions are wrapped with timers (the engine itself is not changed): data loading, model
loading, arm building, batching, and at the eval points the task metric, bias probes,
analysis snapshots and the joint embedding, then saving the adapters. Train step times come
from the ``seconds`` of the ``train`` events in ``events.jsonl``; eval totals from the ``eval``
events. ``other_s`` is the wall time left over (start-up, probe texts, writing files).
``cpu_s`` is the child's CPU time (all threads), a hint of how busy the machine was: on two
idle cores the wall time is at least about half of it.

    python bench/e2e.py                      # classroom-cpu, target <= 300 s
    python bench/e2e.py --preset tiny-test --set train.steps=2

``--zerogpu-sim`` measures what ZeroGPU's chunked mode (``lab.jobs.chunks``) costs: the same preset
once as a plain run and once driven call by call with chunks of ``--chunk-steps`` (8) steps,
each restoring the checkpoint and saving it again, evaluations in calls of their own, both in
child processes one after the other. A training call's time beyond its arms' own step seconds
is a fixed part (load, restore, save: the cost of chunking) plus the work of every step outside
the arms (the batch, the shared teacher pass), which the plain run pays as well. Chunks of
different sizes (a chunk ends at an eval point) separate the two: a least-squares line of that
time against the chunk's steps gives ``fixed_per_chunk_s`` (its intercept) and
``per_step_outside_arms_s`` (its slope). ``chunk_cost_ratio`` = chunks x fixed part / the plain
run's training time (arm seconds plus the steps' outside work); the target is <= 0.10.
``overhead_ratio`` is the whole chunked wall time minus the plain one (the evaluation calls'
loading included) over the same training time.

    python bench/e2e.py --zerogpu-sim        # classroom-cpu, chunks of 8 steps
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import _common as common  # first: puts the repository root on sys.path
import numpy as np

from lab.runs.store import read_events, read_summary

TARGET_S = 300.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="classroom-cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--target-s", type=float, default=TARGET_S)
    p.add_argument("--keep", help="write the run directory here and keep it")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--child", help=argparse.SUPPRESS)  # phase timings file (internal)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--zerogpu-sim", action="store_true", help="chunked mode vs the plain run")
    p.add_argument("--chunk-steps", type=int, default=8, help="training steps per chunk")
    p.add_argument("--chunked", action="store_true", help=argparse.SUPPRESS)  # (internal)
    return p.parse_args(argv)


# (module, attribute, phase): the engine functions timed inside the child.
TIMED = (
    ("lab.engine.lifecycle", "load_task_data", "data_load_s"),
    ("lab.engine.lifecycle", "load_model", "model_load_s"),
    ("lab.engine.lifecycle", "build_arms", "arm_build_s"),
    ("lab.engine.steps", "micro_batches", "batching_s"),
    ("lab.engine.evaluation", "evaluate_task", "eval_task_s"),
    ("lab.engine.evaluation", "evaluate_bias", "eval_bias_s"),
    ("lab.analysis", "snapshot", "eval_analysis_s"),
    ("lab.analysis", "save_snapshot", "eval_analysis_s"),
    ("lab.engine.evaluation", "embed", "eval_embedding_s"),
    ("lab.engine.adapters", "save_adapter", "save_adapters_s"),
)


def _timer(fn, phase: str, totals: dict):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[phase] += time.perf_counter() - t0

    return wrapped


def child(args: argparse.Namespace) -> int:
    """Run the CLI in this process with the phase timers in place; write the totals."""
    t0 = time.perf_counter()
    import importlib

    totals: dict[str, float] = defaultdict(float)
    for mod_name, attr, phase in TIMED:
        mod = importlib.import_module(mod_name)
        setattr(mod, attr, _timer(getattr(mod, attr), phase, totals))
    from lab.__main__ import main as cli
    from lab.jobs.checks import train_argv

    totals["imports_s"] = time.perf_counter() - t0
    argv = train_argv(args.preset, args.set, args.run_dir)
    rc = 1
    try:
        rc = cli(argv)
    finally:
        totals["child_s"] = time.perf_counter() - t0
        from lab.runs.store import write_json

        write_json(args.child, dict(totals, rc=rc))
    return rc


def breakdown(wall: float, phases: dict, events: list[dict]) -> dict:
    train = defaultdict(list)
    eval_s = 0.0
    points = 0
    for ev in events:
        if ev.get("kind") == "train":
            train[ev["arm"]].append(float(ev["seconds"]))
        elif ev.get("kind") == "eval":
            eval_s += float(ev.get("seconds") or 0.0)
            points += 1
    per_arm = {
        arm: {"total_s": sum(v), "median_step_s": statistics.median(v), "steps": len(v)}
        for arm, v in train.items()
    }
    train_total = sum(a["total_s"] for a in per_arm.values())
    keys = (
        "imports_s",
        "data_load_s",
        "model_load_s",
        "arm_build_s",
        "batching_s",
        "eval_embedding_s",
        "save_adapters_s",
    )
    out = {k: phases.get(k, 0.0) for k in keys}
    out["train_s"] = train_total
    out["train_by_arm"] = per_arm
    out["eval_s"] = eval_s
    out["eval_points"] = points
    out["eval_parts"] = {
        "task_s": phases.get("eval_task_s", 0.0),
        "bias_s": phases.get("eval_bias_s", 0.0),
        "analysis_s": phases.get("eval_analysis_s", 0.0),
    }
    out["other_s"] = wall - sum(out[k] for k in keys) - train_total - eval_s
    return out


def chunked_child(args: argparse.Namespace) -> int:
    """Drive the run call by call in this process, as the app does on ZeroGPU."""
    from lab.jobs import chunks

    t0 = time.perf_counter()
    s = chunks.Settings(mode="sim", chunk_steps=args.chunk_steps, budget_s=3600.0)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    while True:
        entry = chunks.drive_once(
            run_dir, chunks.perform, s, preset=args.preset, overrides=list(args.set)
        )
        if entry is None:
            break
        if entry["outcome"] != "ok":
            raise SystemExit(f"a {entry['kind']} call failed: {entry['error']}")
    from lab.runs.store import write_json

    write_json(args.child, {"child_s": time.perf_counter() - t0, "rc": 0})
    return 0


def _run_child(args: argparse.Namespace, run_dir: Path, tmp: Path, chunked: bool) -> dict:
    phases_file = tmp / ("chunked.json" if chunked else "plain.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(phases_file)]
    cmd += ["--run-dir", str(run_dir), "--preset", args.preset]
    cmd += ["--chunked", "--chunk-steps", str(args.chunk_steps)] if chunked else []
    for item in args.set:
        cmd += ["--set", item]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not phases_file.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise SystemExit(f"the {'chunked' if chunked else 'plain'} run failed:\n" + "\n".join(tail))
    events = read_events(run_dir / "events.jsonl")
    train = sum(float(e["seconds"]) for e in events if e.get("kind") == "train")
    evals = sum(float(e.get("seconds") or 0.0) for e in events if e.get("kind") == "eval")
    return {"wall_s": wall, "train_s": train, "eval_s": evals,
            "status": read_summary(run_dir)["status"]}  # fmt: skip


def zerogpu_sim(args: argparse.Namespace) -> dict:
    from lab.jobs import chunks

    tmp = Path(tempfile.mkdtemp(prefix="bench-zerogpu-"))
    try:
        plain = _run_child(args, tmp / "plain", tmp, chunked=False)
        chunked = _run_child(args, tmp / "chunked", tmp, chunked=True)
        calls = chunks.read_calls(tmp / "chunked")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    trains = [c for c in calls if c["kind"] == "train"]
    cost = [c["seconds"] - c["train_s"] for c in trains]
    steps = [c["steps"] for c in trains]
    if len(set(steps)) > 1:  # intercept and slope of cost against steps
        slope, fixed = np.polyfit(np.array(steps, float), np.array(cost, float), 1)
    else:  # one chunk size: the fixed part cannot be told from the per-step part
        slope, fixed = 0.0, float(np.mean(cost))
    train_wall = plain["train_s"] + max(0.0, slope) * sum(steps)
    chunked.update(
        calls=len(calls),
        train_chunks=len(trains),
        eval_calls=len(calls) - len(trains),
        chunk_steps=[c["steps"] for c in trains],
        chunk_cost_s=[round(x, 2) for x in cost],
        eval_call_s=[round(c["seconds"], 2) for c in calls if c["kind"] != "train"],
    )
    ratio = len(trains) * max(0.0, fixed) / train_wall
    result = {
        "preset": args.preset,
        "overrides": args.set,
        "cpus": os.cpu_count(),
        "chunk_steps": args.chunk_steps,
        "plain": plain,
        "chunked": chunked,
        "fixed_per_chunk_s": float(fixed),
        "per_step_outside_arms_s": float(slope),
        "plain_training_s": train_wall,
        "chunk_cost_s": len(trains) * max(0.0, float(fixed)),
        "chunk_cost_ratio": ratio,
        "overhead_s": chunked["wall_s"] - plain["wall_s"],
        "overhead_ratio": (chunked["wall_s"] - plain["wall_s"]) / train_wall,
        "target_ratio": 0.10,
        "meets_target": ratio <= 0.10,
    }
    common.emit(result, args.out)
    return result


def main(argv: list[str] | None = None) -> dict | int:
    args = parse_args(argv)
    if args.child and args.chunked:
        return chunked_child(args)
    if args.child:
        return child(args)
    if args.zerogpu_sim:
        return zerogpu_sim(args)
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    run_dir = Path(args.keep) if args.keep else tmp / "run"
    phases_file = tmp / "phases.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(phases_file)]
    cmd += ["--run-dir", str(run_dir), "--preset", args.preset]
    for item in args.set:
        cmd += ["--set", item]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    try:
        t0 = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, cwd=common.ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if proc.returncode != 0 or not phases_file.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
            raise SystemExit(
                f"the training run failed (exit {proc.returncode}):\n" + "\n".join(tail)
            )
        phases = json.loads(phases_file.read_text(encoding="utf-8"))
        events = read_events(run_dir / "events.jsonl")
        summary = read_summary(run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "preset": args.preset,
        "overrides": args.set,
        "cpus": os.cpu_count(),
        "status": summary["status"],
        "wall_s": wall,
        "cpu_s": cpu,
        "target_s": args.target_s,
        "meets_target": wall <= args.target_s,
        "phases": breakdown(wall, phases, events),
    }
    if args.keep:
        result["run_dir"] = str(run_dir)
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    out = main()
    sys.exit(out if isinstance(out, int) else 0)

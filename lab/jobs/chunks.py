"""Training in chunks: one run trained and evaluated over many short calls (ZeroGPU).

On a ZeroGPU Space a GPU is lent one call at a time, for a duration asked for before the call.
A run is then driven call by call, and everything it needs between calls is on disk (the
checkpoint, ``lab.engine.checkpoint``). The calls, in order:

- ``setup``  loads the data and the model, evaluates the base model (step 0), checkpoints step 0
- ``train``  restores the checkpoint, trains as many steps as fit in the call's budget
             (``trainer.run(resume=True, stop_after_step=..., evaluate=False)``), checkpoints
- ``eval``   restores the checkpoint at an eval point and evaluates every arm there
- ``final``  the same at the last step (or where the run was stopped), then saves the adapters
             and completes the summary

Training chunks end at eval points, so every evaluation runs in a call of its own. The size of a
chunk comes from the previous chunks: their measured time per step and their fixed cost per call
(loading, restoring, saving), with a safety margin. The first chunk is a short probe. A chunk that
took longer than its budget (or was aborted) caps the next ones below its own size.

``RUN_DIR/chunks.json`` records every call (kind, steps, seconds, budget, overrun, outcome), so the
page shows progress across chunks, the GPU time used and what remains.

Nothing here imports gradio or spaces: ``lab.ui.zerogpu`` wraps :func:`perform` in
``spaces.GPU``. Off ZeroGPU (``BALORA_ZEROGPU=sim``) the same calls run on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.config import ConfigError
from lab.runs import store as runs
from lab.runs.status import DONE, FAILED, PAUSED, STOPPED, write_final_summary

FILE = "chunks.json"
MODES = ("off", "sim", "zerogpu")


class GpuQuotaError(RuntimeError):
    """The visitor's GPU time is used up (raised by the simulation; ZeroGPU raises its own)."""


@dataclass(frozen=True)
class Settings:
    """How a chunked run is cut into calls (``settings()`` reads them from the environment)."""

    mode: str = "off"  # "off" | "sim" (forced, on the CPU) | "zerogpu" (a ZeroGPU Space)
    budget_s: float = 60.0  # the GPU duration asked for per call
    chunk_steps: int | None = None  # a fixed number of training steps per chunk
    margin: float = 0.8  # the share of the budget a chunk is planned to use
    first_steps: int = 2  # the first chunk, before any step has been timed
    quota_s: float | None = None  # simulation: the GPU seconds one visitor may use

    @property
    def on(self) -> bool:
        return self.mode != "off"


def _number(env, name: str, kind, default, low: float):
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a {kind.__name__}") from None
    if not value > low:
        raise ConfigError(f"{name}: must be more than {low}, got {raw}")
    return value


def settings(env: dict[str, str] | None = None) -> Settings:
    """``SPACES_ZERO_GPU`` (set by the platform on a ZeroGPU Space) or ``BALORA_ZEROGPU=sim``
    switch chunks on; ``BALORA_ZEROGPU_BUDGET_S``, ``BALORA_ZEROGPU_CHUNK_STEPS``,
    ``BALORA_ZEROGPU_MARGIN`` and ``BALORA_ZEROGPU_QUOTA_S`` tune them."""
    env = os.environ if env is None else env
    flag = env.get("BALORA_ZEROGPU", "").strip().lower()
    if flag not in ("", "off", "sim"):
        raise ConfigError(f"BALORA_ZEROGPU: {flag!r} is not one of sim, off")
    space = env.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true")
    mode = "zerogpu" if space else ("sim" if flag == "sim" else "off")
    margin = _number(env, "BALORA_ZEROGPU_MARGIN", float, 0.8, 0.0)
    if margin > 1:
        raise ConfigError(f"BALORA_ZEROGPU_MARGIN: must be at most 1, got {margin}")
    return Settings(
        mode=mode,
        budget_s=_number(env, "BALORA_ZEROGPU_BUDGET_S", float, 60.0, 0.0),
        chunk_steps=_number(env, "BALORA_ZEROGPU_CHUNK_STEPS", int, None, 0),
        margin=margin,
        quota_s=_number(env, "BALORA_ZEROGPU_QUOTA_S", float, None, 0.0),
    )


# ---- the calls (what one GPU call runs) ---------------------------------------------------------


def perform(call: dict[str, Any]) -> dict[str, Any]:
    """Run one call in this process (on ZeroGPU: inside ``spaces.GPU``); -> {seconds}.

    ``call`` is plain data (it crosses into the GPU worker process): ``kind``, ``run_dir``,
    ``to`` (train: the step to stop after), ``preset`` and ``overrides`` (setup),
    ``total_steps`` (train: a new total from Resume)."""
    from lab.config import load_preset
    from lab.engine import trainer

    t0 = time.perf_counter()
    kind, run_dir = call["kind"], Path(call["run_dir"])
    if kind == "setup":
        cfg = load_preset(call["preset"], list(call.get("overrides") or []))
        _drain(trainer.run(cfg, run_dir, stop_after_step=0))
    elif kind == "train":
        cfg = _config(run_dir, call.get("total_steps"))
        _drain(trainer.run(cfg, run_dir, resume=True, stop_after_step=call["to"], evaluate=False))
    elif kind in ("eval", "final"):
        evaluate_checkpoint(run_dir, final=kind == "final", stopped=bool(call.get("stopped")))
    else:
        raise ValueError(f"unknown chunk call {kind!r}")
    return {"seconds": time.perf_counter() - t0}


def _drain(events) -> None:
    for _ in events:
        pass


def _config(run_dir: Path, total_steps: int | None):
    from lab.engine.checkpoint import resume_config

    return resume_config(run_dir, [f"train.steps={total_steps}"] if total_steps else [])


def evaluate_checkpoint(run_dir: str | Path, *, final: bool, stopped: bool = False) -> None:
    """Evaluate every running arm of the run at its checkpoint's step (events appended to
    ``events.jsonl``; the checkpoint keeps the results). ``final``: also save the adapters and
    complete the summary, as the trainer does after its last step (``stopped``: the run was
    stopped there). The phases are the trainer's own (:mod:`lab.engine.lifecycle`)."""
    from lab.config import load_config_file
    from lab.engine import lifecycle

    run_dir = Path(run_dir)
    cfg = load_config_file(run_dir / "config.yaml")
    s = lifecycle.open_session(cfg, run_dir, resume=True, evaluating=True)
    try:
        _drain(lifecycle.setup_arms(s))
        lifecycle.warm_caches(s)  # the step-0 caches are taken on the arms' initial adapters
        lifecycle.restore(s)  # the RNG as after the step, where the trainer evaluates
        if final:
            if stopped:
                s.writer.stopped()
                s.eval_pending = False  # the final evaluation of a stopped run still runs
            _drain(lifecycle.final(s, s.start, evaluate=True))
        else:
            _drain(lifecycle.evaluate_arms(s, s.start))
            s.writer.checkpoint(s.arms, s.start, lifecycle.get_rng())
            s.writer.summary["status"] = PAUSED  # between two calls, as after a training chunk
    except BaseException as e:
        s.writer.failed(e)
        raise
    finally:
        s.writer.close()


# ---- planning --------------------------------------------------------------------------------


def read_calls(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise runs.RunReadError(f"{path.parent.name}/{FILE} is not valid JSON") from None
    return list(data.get("calls") or []) if isinstance(data, dict) else []


def _record(run_dir: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    calls = read_calls(run_dir) + [entry]
    runs.write_json(run_dir / FILE, {"calls": calls})
    return calls


def eval_steps(total: int, every: int) -> list[int]:
    """The steps an arm is evaluated at: the engine's one rule
    (:func:`lab.engine.lifecycle.eval_steps`), for a total and an interval."""
    from lab.engine.lifecycle import eval_steps_of

    return eval_steps_of(total, every)


def plan_steps(calls: list[dict], s: Settings) -> int:
    """Training steps for the next chunk: the fixed number, else as many as fit in the budget
    with the margin after the last measured chunk's fixed cost; never more than one less than a
    chunk that overran (half of one that was aborted)."""
    trains = [c for c in calls if c["kind"] == "train"]
    measured = [c for c in trains if c["outcome"] == "ok" and c["steps"] > 0]
    if s.chunk_steps:
        n = s.chunk_steps
    elif not measured:
        n = s.first_steps
    else:
        last = measured[-1]
        step_s = max(last["train_s"] / last["steps"], 1e-6)
        overhead = max(0.0, last["seconds"] - last["train_s"])
        n = math.floor((s.budget_s * s.margin - overhead) / step_s)
    for c in trains:
        if c["outcome"] == "aborted":
            n = min(n, c["steps"] // 2)
        elif c.get("overran"):
            n = min(n, c["steps"] - 1)
    return max(1, n)


def _checkpoint_step(run_dir: Path) -> int | None:
    from lab.engine import checkpoint

    return int(checkpoint.read_state(run_dir)["step"]) if checkpoint.exists(run_dir) else None


def next_call(
    run_dir: str | Path, s: Settings, *, stop: bool = False, total_steps: int | None = None
) -> dict[str, Any] | None:
    """The next call of a chunked run, or None when it has finished (done, stopped, failed)."""
    run_dir = Path(run_dir)
    step = _checkpoint_step(run_dir)
    if step is None:
        return None if stop else {"kind": "setup"}
    summary = runs.read_summary(run_dir) or {}
    status = summary.get("status")
    calls = read_calls(run_dir)
    if status in (DONE, FAILED) or (status == STOPPED and _evaluated(calls, step, "final")):
        return None
    if status == STOPPED or stop:
        return {"kind": "final", "step": step, "stopped": True}
    total = total_steps or int(summary.get("steps_total") or 0)
    if step >= total:
        return {"kind": "final", "step": step}
    every = _eval_every(run_dir)
    if step > 0 and every and step % every == 0 and not _evaluated(calls, step, "eval"):
        return {"kind": "eval", "step": step}
    boundary = next(p for p in eval_steps(total, every) if p > step)
    n = plan_steps(calls, s)
    return {"kind": "train", "from": step, "to": min(step + n, boundary), "steps": n}


def _eval_every(run_dir: Path) -> int:
    from lab.config import load_config_file

    return int(load_config_file(run_dir / "config.yaml").train.eval_every or 0)


def _evaluated(calls: list[dict], step: int, kind: str) -> bool:
    """Whether an evaluation (``kind`` "final": the final one) already ran at ``step``."""
    kinds = ("final",) if kind == "final" else ("setup", "eval", "final")
    return any(c["kind"] in kinds and c["outcome"] == "ok" and c["to"] == step for c in calls)


def classify(error: BaseException) -> str:
    """What a failed call means: ``quota`` (the visitor's GPU time is used up, or no GPU can be
    had now: resume later), ``aborted`` (the call ran past its duration and was cut off: the
    next chunk is made smaller) or ``error`` (the run failed)."""
    if isinstance(error, GpuQuotaError):
        return "quota"
    text = f"{getattr(error, 'title', '') or ''} {error}".lower()
    if "gpu task aborted" in text:
        return "aborted"
    if any(
        k in text for k in ("quota", "pending credits", "no gpu was available", "queue timeout")
    ):
        return "quota"
    return "error"


def drive_once(
    run_dir: str | Path,
    call_fn: Callable[[dict], dict],
    s: Settings,
    *,
    preset: str | None = None,
    overrides: list[str] | None = None,
    total_steps: int | None = None,
    stop: bool = False,
    quota_left: float | None = None,
) -> dict[str, Any] | None:
    """Plan and make the next call of a chunked run with ``call_fn`` (``perform``, or it
    wrapped in ``spaces.GPU``); record it in ``chunks.json``. -> the recorded call, or None when
    the run has finished.

    A call whose GPU could not be had (quota) leaves the run "paused" with the reason; an
    aborted call is recorded and the next chunk is smaller; any other error leaves the run
    "failed" with the error (the trainer has already written it when it was the trainer's)."""
    run_dir = Path(run_dir)
    call = next_call(run_dir, s, stop=stop, total_steps=total_steps)
    if call is None:
        return None
    call.update(run_dir=str(run_dir), budget_s=s.budget_s, total_steps=total_steps)
    if call["kind"] == "setup":
        call.update(preset=preset, overrides=list(overrides or []))
    step_from = call.get("from", call.get("step", 0))
    t0 = time.perf_counter()
    outcome, error = "ok", None
    try:
        if quota_left is not None and quota_left < s.budget_s:
            raise GpuQuotaError(
                f"You have exceeded your simulated GPU quota ({s.budget_s:.0f}s requested vs. "
                f"{max(0.0, quota_left):.0f}s left)"
            )
        result = call_fn({k: v for k, v in call.items() if v is not None})
        seconds = float(result["seconds"])
    except Exception as e:  # recorded below and turned into the run's state
        outcome, error = classify(e), f"{getattr(e, 'title', '') or type(e).__name__}: {e}"
        seconds = time.perf_counter() - t0 if outcome != "quota" else 0.0
    to = _checkpoint_step(run_dir) or 0
    entry = {
        "kind": call["kind"],
        "from": step_from,
        "to": to,
        "steps": call.get("to", step_from) - step_from if call["kind"] == "train" else 0,
        "budget_s": s.budget_s,
        "seconds": round(seconds, 3),
        "train_s": round(_train_seconds(run_dir, step_from, to), 3),
        "overran": outcome == "ok" and seconds > s.budget_s,
        "outcome": outcome,
        "error": error,
        "at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    _record(run_dir, entry)
    if outcome == "quota":
        write_final_summary(
            run_dir, PAUSED, f"no GPU time left for this run now ({error}); press Resume later"
        )
    elif outcome == "error" and (runs.read_summary(run_dir) or {}).get("status") != FAILED:
        write_final_summary(run_dir, FAILED, error)
    return entry


def _train_seconds(run_dir: Path, start: int, end: int) -> float:
    if end <= start:
        return 0.0
    return sum(
        float(e.get("seconds") or 0.0)
        for e in runs.read_events(run_dir / "events.jsonl")
        if e.get("kind") == "train" and start < int(e["step"]) <= end
    )


def progress(run_dir: str | Path, s: Settings) -> dict[str, Any]:
    """Progress across the calls, JSON-ready: calls made, GPU seconds used, steps, and an
    estimate of the GPU seconds still needed (chunks of the planned size plus evaluations)."""
    run_dir = Path(run_dir)
    calls = read_calls(run_dir)
    summary = runs.read_summary(run_dir) or {}
    total = int(summary.get("steps_total") or 0)
    step = _checkpoint_step(run_dir) or 0
    trains = [c for c in calls if c["kind"] == "train" and c["outcome"] == "ok" and c["steps"]]
    evals = [c for c in calls if c["kind"] != "train" and c["outcome"] == "ok"]
    left_s = None
    if trains and evals and total:
        last = trains[-1]
        n = plan_steps(calls, s)
        chunks_left = math.ceil(max(0, total - step) / n)
        overhead = max(0.0, last["seconds"] - last["train_s"])
        every = _eval_every(run_dir)
        evals_left = sum(1 for p in eval_steps(total, every) if p > step)
        evals_left += 0 if _evaluated(calls, step, "final") or step < total else 1
        per_eval = sum(c["seconds"] for c in evals) / len(evals)
        step_s = last["train_s"] / last["steps"]
        left_s = (total - step) * step_s + chunks_left * overhead + evals_left * per_eval
    overran = [c for c in calls if c.get("overran") or c["outcome"] == "aborted"]
    return {
        "calls": len(calls),
        "train_chunks": sum(1 for c in calls if c["kind"] == "train"),
        "gpu_s": round(sum(c["seconds"] for c in calls), 2),
        "step": step,
        "steps_total": total,
        "left_s": None if left_s is None else round(left_s, 1),
        "budget_s": s.budget_s,
        "next_steps": plan_steps(calls, s),
        "last": calls[-1] if calls else None,
        "overruns": len(overran),
    }

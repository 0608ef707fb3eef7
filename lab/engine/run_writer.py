"""The run directory of a training run as it is written (``lab.runs.store`` reads it back).

:class:`RunWriter` creates ``runs/<run_id>/`` (or reopens it to resume), writes
``config.yaml``, appends the events to ``events.jsonl``, keeps ``summary.json`` up to date,
saves the checkpoints and, at the end, the adapters. Under ``accelerate launch`` only the main
process writes; every process holds a writer with the main process's ``run_dir``, so the
training loop calls it the same way everywhere.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from lab.arms import ArmSpec, run_seeds, specs
from lab.config import RunConfig, dump_yaml
from lab.datasets import TaskData
from lab.engine import adapters, checkpoint, tuning
from lab.engine.dist import Dist
from lab.models import ModelBundle, teacher_dtype
from lab.runs import store as runs
from lab.runs.provenance import provenance
from lab.runs.status import DONE, FAILED, PAUSED, RUNNING, STOPPED, write_summary


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class RunWriter:
    """Everything a run writes to its directory; ``summary`` is the summary being kept.

    ``start``: the step a resumed run continues after (None: a new run, whose directory must
    not hold a run yet). ``tuned``: the run chooses its learning rates (``lr_mode: tuned``).
    """

    def __init__(
        self,
        cfg: RunConfig,
        out_dir: str | Path | None,
        dist: Dist,
        bundle: ModelBundle,
        task_data: TaskData,
        *,
        start: int | None = None,
        tuned: bool = False,
    ):
        self.cfg, self.dist = cfg, dist
        resume = start is not None
        run_dir = None
        if dist.main:
            run_dir = Path(out_dir) if out_dir else runs.new_run_dir(name=cfg.name)
            if resume:
                (run_dir / runs.STOP_FILE).unlink(missing_ok=True)
            elif (run_dir / "config.yaml").exists() or (run_dir / "events.jsonl").exists():
                raise FileExistsError(f"--out {run_dir} already holds a run; pick a new directory")
            run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(dist.broadcast(str(run_dir)))
        self.summary = {
            "name": cfg.name,
            "status": RUNNING,
            "error": None,
            "started": _now(),
            "steps_total": cfg.train.steps,
            "steps_done": 0,
            "processes": dist.n,
            "teacher_dtype": str(
                teacher_dtype(cfg.reg.teacher_dtype, bundle.dtype, bundle.device)
            ).replace("torch.", ""),
            "teacher": teacher_label(cfg, bundle),
            "provenance": provenance(bundle, processes=dist.n),
            "seeds": run_seeds(cfg),
            "arm_specs": spec_summary(specs(cfg)),
            "run_dir": str(self.run_dir),
            "resumed_from": start,
            "warnings": list(task_data.warnings),
            "data_info": task_data.info,
            "arms": {},
        }
        if resume:
            old = runs.read_summary(self.run_dir) or {}
            self.summary["started"] = old.get("started", self.summary["started"])
            self.summary["steps_done"] = start
            if "base" in old:
                self.summary["base"] = old["base"]
            if isinstance(old.get("arms"), dict):  # kept until the arms finish again
                self.summary["arms"] = old["arms"]
            if tuned:
                self.summary["lr_tuning"] = tuning.recorded(old, cfg)
        self._log = None
        if dist.main:
            if resume:
                checkpoint.truncate_events(self.run_dir / "events.jsonl", start)
            runs.atomic_write_text(self.run_dir / "config.yaml", dump_yaml(cfg))
            write_summary(self.run_dir, self.summary)
            self._log = runs.EventLog(self.run_dir / "events.jsonl")

    @property
    def status(self) -> str:
        return self.summary["status"]

    def stop_requested(self) -> bool:
        """Whether the user asked this run to stop (the STOP file)."""
        return runs.stop_requested(self.run_dir)

    def emit(self, ev: dict) -> dict:
        """Append ``ev`` to ``events.jsonl`` (main process) and hand it back."""
        if self._log is not None:
            self._log.write(ev)
        return ev

    def record_base(self, ev: dict) -> None:
        self.summary["base"] = ev

    def record_lr_tuning(self, record: dict) -> None:
        self.summary["lr_tuning"] = record

    def record_arm_specs(self, arm_specs: list[ArmSpec]) -> None:
        self.summary["arm_specs"] = spec_summary(arm_specs)

    def steps_done(self, step: int) -> None:
        self.summary["steps_done"] = step

    def stopped(self) -> None:
        """The run ends stopped; the STOP file is taken, so a second Stop can cut the final
        evaluation short (:mod:`lab.engine.lifecycle`)."""
        self.summary["status"] = STOPPED
        if self.dist.main:
            (self.run_dir / runs.STOP_FILE).unlink(missing_ok=True)

    def write_summary(self) -> None:
        if self.dist.main:
            write_summary(self.run_dir, self.summary)

    def checkpoint(self, arms: dict, step: int, rng: tuple, *, eval_pending: bool = False) -> None:
        """Save what it takes to continue after ``step`` (the main process writes it);
        ``eval_pending``: the evaluation due at ``step`` has not run (a stop cut it short)."""
        if self.dist.main:
            world = self.cfg.train.batch_size * self.dist.n
            cursor = checkpoint.cursor(run_seeds(self.cfg), world, step)
            checkpoint.save(self.run_dir, arms, step, cursor, rng, eval_pending=eval_pending)
        self.dist.barrier()

    def pause(self, arms: dict, step: int, rng: tuple) -> None:
        """A checkpoint after ``step`` and status "paused": the run continues in a later call."""
        self.checkpoint(arms, step, rng)
        self.summary["status"] = PAUSED

    def finish(self, arms: dict, step: int, rng: tuple, *, eval_pending: bool = False) -> None:
        """The last checkpoint, every arm's adapter and summary, and the run's status
        (:func:`finish_summary`)."""
        self.checkpoint(arms, step, rng, eval_pending=eval_pending)
        if self.dist.main:
            save_adapters(self.run_dir, arms)
        finish_summary(self.summary, arms, step, stopped=self.summary["status"] == STOPPED)
        if eval_pending:
            self.summary["eval_pending"] = step

    def failed(self, err: BaseException) -> None:
        self.summary["status"] = FAILED
        self.summary["error"] = f"{type(err).__name__}: {err}"
        self.summary["traceback"] = traceback.format_exc(limit=8)

    def close(self) -> None:
        """The finishing time and the last summary; the event log is closed."""
        self.summary["finished"] = _now()
        if self.dist.main:
            write_summary(self.run_dir, self.summary)
            if self._log is not None:
                self._log.close()


def spec_summary(arm_specs: list[ArmSpec]) -> dict:
    return {
        a.name: {
            "folder": a.folder,
            "arm": a.plain,
            "seed": a.seed,
            "init": a.init,
            "regularized": a.regularized,
            "lambdas": list(a.lambdas),
            "lr": a.lr,
        }
        for a in arm_specs
    }


def teacher_label(cfg: RunConfig, bundle: ModelBundle) -> str:
    """How the teacher computes, in words for the summary and the UI."""
    want = teacher_dtype(cfg.reg.teacher_dtype, bundle.dtype, bundle.device)
    if want == bundle.dtype:
        return "exact: the loaded model's own forward (" + str(want).replace("torch.", "") + ")"
    return f"{str(want).replace('torch.', '')} autocast (opt-in speed setting, not exact)"


def arm_summary(arm) -> dict:
    """An arm's entry in ``summary.json``: status, tokens, final losses, its last eval."""
    out = {
        "folder": arm.spec.folder,
        "lr": arm.spec.lr,  # the rate it trained at (the tuned one in lr_mode tuned)
        "status": DONE if arm.status == RUNNING else arm.status,
        "error": arm.error,
        "tokens": arm.tokens,
    }
    train = arm.last or {}
    out["final_loss"] = train.get("loss")
    out["final_task_loss"] = train.get("task_loss")
    ev = arm.last_eval
    out.update({k: v for k, v in ev.items() if k not in ("arm", "step", "kind")})
    return out


def save_adapters(run_dir: Path, arms: dict) -> None:
    """Every arm's adapter in PEFT format under ``adapters/<arm>/``."""
    for arm in arms.values():
        adapters.save_adapter(arm.model, Path(run_dir) / "adapters" / arm.spec.folder, arm.name)


def finish_summary(summary: dict, arms: dict, step: int, *, stopped: bool) -> None:
    """The one rule of a finished run's summary: every arm's entry, the steps done, and the
    status (stopped when it was stopped, else failed when every arm failed, else done; the
    failed arms' errors joined)."""
    summary.setdefault("arms", {})
    for arm in arms.values():
        summary["arms"][arm.name] = arm_summary(arm)
    summary["steps_done"] = step
    failed = [a for a in arms.values() if a.status == FAILED]
    if stopped:
        summary["status"] = STOPPED
    else:
        summary["status"] = FAILED if len(failed) == len(arms) else DONE
    if failed:
        summary["error"] = "; ".join(a.error or "" for a in failed)
    summary.pop("eval_pending", None)

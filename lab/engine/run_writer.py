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
            "status": "running",
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
            if tuned:
                self.summary["lr_tuning"] = tuning.recorded(old, cfg)
        self._log = None
        if dist.main:
            if resume:
                checkpoint.truncate_events(self.run_dir / "events.jsonl", start)
            runs.atomic_write_text(self.run_dir / "config.yaml", dump_yaml(cfg))
            runs.write_json(self.run_dir / "summary.json", self.summary)
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
        self.summary["status"] = "stopped"

    def write_summary(self) -> None:
        if self.dist.main:
            runs.write_json(self.run_dir / "summary.json", self.summary)

    def checkpoint(self, arms: dict, step: int, rng: tuple) -> None:
        """Save what it takes to continue after ``step`` (the main process writes it)."""
        if self.dist.main:
            world = self.cfg.train.batch_size * self.dist.n
            cursor = checkpoint.cursor(run_seeds(self.cfg), world, step)
            checkpoint.save(self.run_dir, arms, step, cursor, rng)
        self.dist.barrier()

    def pause(self, arms: dict, step: int, rng: tuple) -> None:
        """A checkpoint after ``step`` and status "paused": the run continues in a later call."""
        self.checkpoint(arms, step, rng)
        self.summary["status"] = "paused"

    def finish(self, arms: dict, step: int, rng: tuple) -> None:
        """The last checkpoint, every arm's adapter and summary, and the run's status (done, or
        failed when every arm failed; a stopped run stays stopped)."""
        self.checkpoint(arms, step, rng)
        if self.dist.main:
            for arm in arms.values():
                adapters.save_adapter(
                    arm.model, self.run_dir / "adapters" / arm.spec.folder, arm.name
                )
                self.summary["arms"][arm.name] = arm_summary(arm)
        if self.summary["status"] == "running":
            failed = [a for a in arms.values() if a.status == "failed"]
            self.summary["status"] = "failed" if len(failed) == len(arms) else "done"
            if failed:
                self.summary["error"] = "; ".join(a.error for a in failed)

    def failed(self, err: BaseException) -> None:
        self.summary["status"] = "failed"
        self.summary["error"] = f"{type(err).__name__}: {err}"
        self.summary["traceback"] = traceback.format_exc(limit=8)

    def close(self) -> None:
        """The finishing time and the last summary; the event log is closed."""
        self.summary["finished"] = _now()
        if self.dist.main:
            runs.write_json(self.run_dir / "summary.json", self.summary)
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
        "status": "done" if arm.status == "running" else arm.status,
        "error": arm.error,
        "tokens": arm.tokens,
    }
    train = arm.last or {}
    out["final_loss"] = train.get("loss")
    out["final_task_loss"] = train.get("task_loss")
    ev = arm.last_eval
    out.update({k: v for k, v in ev.items() if k not in ("arm", "step", "kind")})
    return out

"""The training loop: arms trained seed-matched on identical batches, yielding events.

``run(cfg)`` loads the data and the model, makes one PEFT model per arm (LoRA, PiSSA, BA-LoRA),
then for every step draws one batch and trains each arm on it in turn, so all curves advance
together. Every step yields a ``train`` event per arm; eval points yield ``eval`` events (the
untouched model as arm ``base`` first). Everything is written to the run directory as it
happens (see ``lab.runs``). Runs under ``accelerate launch`` for data parallelism: each process
takes its share of every batch and the adapter gradients are averaged across processes.
"""

from __future__ import annotations

import copy
import math
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import get_scheduler

from lab import adapters, data, evaluation, runs
from lab.config import RunConfig, dump_yaml
from lab.datasets import TaskData, load_task_data
from lab.dist import Dist
from lab.forward import step_loss
from lab.models import ModelBundle, load_model, teacher_dtype

REGULARIZED = ("balora",)


@dataclass
class Arm:
    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    rng: tuple
    status: str = "running"
    error: str | None = None
    tokens: int = 0
    last: dict = field(default_factory=dict)
    last_eval: dict = field(default_factory=dict)


def _get_rng() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return (torch.get_rng_state(), cuda)


def _set_rng(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def lambdas_at(cfg: RunConfig, arm: str, step: int) -> tuple[float, float, float]:
    """The regularizer weights of ``arm`` at ``step`` (1-based), schedules applied."""
    if arm not in REGULARIZED:
        return (0.0, 0.0, 0.0)
    r, steps = cfg.reg, cfg.train.steps
    l1 = r.lambda1
    if r.lambda1_schedule == "cosine":
        frac = (step - 1) / max(1, steps - 1)
        l1 = r.lambda1 * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))
    warm = step <= r.lambda23_warmup * steps
    return (l1, 0.0 if warm else r.lambda2, 0.0 if warm else r.lambda3)


_LOGGED = ("loss", "task_loss", "consistency", "diversity", "svd")  # the values of a train event


def train_arm_step(
    arm: Arm, micro: list[dict], cfg: RunConfig, step: int, dist: Dist, tokens: int | None = None
) -> dict:
    """Train one arm on one step's micro-batches; returns its train event.

    ``tokens``: the step's :func:`step_tokens` when the caller has counted them (once for all
    arms), else counted here."""
    t0 = time.perf_counter()
    lambdas = lambdas_at(cfg, arm.name, step)
    need_terms = arm.name in REGULARIZED or cfg.train.log_terms
    _set_rng(arm.rng)  # each arm draws its own dropout noise, seed-matched
    arm.model.train()
    params = adapters.trainable_parameters(arm.model)
    logs = []
    bad = None
    for batch in micro:
        result, total = step_loss(arm.model, batch, cfg, lambdas, need_terms=need_terms)
        (total / len(micro)).backward()  # queued before the one host sync of the micro-batch
        if result is not None:
            log = result.as_floats(total)
        else:
            value = total.item()
            log = {"loss": value, "task_loss": value}
        logs.append(log)
        bad = next(  # the terms first: a non-finite term makes the sums non-finite too
            (k for k in reversed(_LOGGED) if log.get(k) is not None and not math.isfinite(log[k])),
            None,
        )
        if bad is not None:
            break
    if not dist.all_true(bad is None):
        arm.optimizer.zero_grad(set_to_none=True)
        what = {None: "loss", "loss": "loss", "task_loss": "task loss"}.get(bad, f"{bad} term")
        raise FloatingPointError(f"arm {arm.name}: the {what} is not finite at step {step}")
    dist.mean_grads(params)
    arm.optimizer.step()
    arm.scheduler.step()
    arm.optimizer.zero_grad(set_to_none=True)
    arm.rng = _get_rng()
    ev = _train_event(arm.name, step, logs, lambdas, dist)
    arm.tokens += step_tokens(micro, cfg, dist) if tokens is None else tokens
    ev.update(
        lr=arm.scheduler.get_last_lr()[0], tokens=arm.tokens, seconds=time.perf_counter() - t0
    )
    arm.last = ev
    return ev


def step_tokens(micro: list[dict], cfg: RunConfig, dist: Dist) -> int:
    """Tokens one step trains on over all processes (the response tokens for NLG)."""
    local = sum(_count_tokens(b, cfg.task) for b in micro)
    return int(dist.mean([float(local)])[0] * dist.n)


def _count_tokens(batch: dict, task: str) -> int:
    if task == "nlg":
        return int(batch["reg_mask"].sum())
    return int(batch["attention_mask"].sum())


def _train_event(arm: str, step: int, logs: list[dict], lambdas, dist: Dist) -> dict:
    ev = {"arm": arm, "step": step, "kind": "train"}
    for k in _LOGGED:
        vals = [lg.get(k) for lg in logs]
        ev[k] = None if any(v is None for v in vals) else sum(vals) / len(vals)
    present = [k for k in _LOGGED if ev[k] is not None]
    for k, v in zip(present, dist.mean([ev[k] for k in present])):
        ev[k] = v
    lam = dict(zip(("consistency", "diversity", "svd"), lambdas))
    ev["weighted"] = {t: (None if ev[t] is None else lam[t] * ev[t]) for t in lam}
    ev["lambdas"] = {"lambda1": lambdas[0], "lambda2": lambdas[1], "lambda3": lambdas[2]}
    inactive = logs[-1].get("inactive")
    if inactive is None:
        inactive = {t: "not computed for this arm (train.log_terms is false)" for t in lam}
    ev["inactive"] = inactive
    return ev


def _micro_batches(
    tok, task_data: TaskData, indices: list[int], cfg: RunConfig, dist: Dist, device
):
    rows = [task_data.train[i] for i in indices]
    mine = rows[dist.acc.process_index :: dist.n]  # this process's share of the global batch
    per = math.ceil(len(mine) / cfg.train.grad_accum)
    out = []
    for i in range(0, len(mine), per):
        b = data.make_batch(tok, mine[i : i + per], cfg.task, cfg.train.seq_len)
        out.append({k: v.to(device) for k, v in b.items()})
    return out


def prepare(cfg: RunConfig) -> tuple[TaskData, ModelBundle]:
    """Load data and model, checking everything that can fail before a run directory exists."""
    task_data = load_task_data(
        cfg.data.name,
        task=cfg.task,
        columns=cfg.data.columns or None,
        label_noise=cfg.data.label_noise,
        minority_fraction=cfg.data.minority_fraction,
        minority_class=cfg.data.minority_class or None,
        seed=cfg.train.seed,
        max_train=cfg.data.max_train,
        max_eval=max(cfg.data.max_eval, cfg.train.probe_size),
    )
    task_data.train = data.usable_examples(task_data.train, cfg.task)
    num_labels = len(task_data.label_names) if task_data.label_names else None
    bundle = load_model(
        cfg.model.name,
        task=cfg.task,
        num_labels=num_labels,
        dtype=cfg.model.dtype,
        device=cfg.model.device,
        seed=cfg.model.seed,
        load_in_4bit=cfg.model.load_in_4bit,
    )
    data.check_seq_len(cfg.train.seq_len, bundle.max_len)
    return task_data, bundle


def build_arms(cfg: RunConfig, bundle: ModelBundle) -> dict[str, Arm]:
    arms = {}
    steps = cfg.train.steps
    for i, name in enumerate(cfg.arms):
        base = bundle.model if i == len(cfg.arms) - 1 else copy.deepcopy(bundle.model)
        model = adapters.make_arm(
            base,
            name,
            task=cfg.task,
            rank=cfg.lora.rank,
            alpha=cfg.lora.alpha,
            dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules,
            pissa_niter=cfg.lora.pissa_niter,
            seed=cfg.train.seed,
        )
        opt = torch.optim.AdamW(
            adapters.trainable_parameters(model),
            lr=cfg.train.lr,
            weight_decay=cfg.train.weight_decay,
        )
        sched = get_scheduler(
            cfg.train.scheduler,
            opt,
            num_warmup_steps=int(round(cfg.train.warmup_ratio * steps)),
            num_training_steps=steps,
        )
        torch.manual_seed(cfg.train.seed + 1)  # the same dropout stream for every arm
        arms[name] = Arm(name, model, opt, sched, rng=_get_rng())
    return arms


def run(
    cfg: RunConfig,
    out_dir: str | Path | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[dict]:
    """Train every arm of ``cfg`` and yield events; writes the run directory as it goes."""
    accelerator = Accelerator(cpu=cfg.model.device == "cpu")
    dist = Dist(accelerator)
    if cfg.model.device == "auto" and accelerator.device.type == "cuda":
        cfg.model.device = str(accelerator.device)
    torch.manual_seed(cfg.train.seed)
    task_data, bundle = prepare(cfg)
    run_dir = None
    if dist.main:
        run_dir = Path(out_dir) if out_dir else runs.new_run_dir(name=cfg.name)
        if (run_dir / "config.yaml").exists() or (run_dir / "events.jsonl").exists():
            raise FileExistsError(f"--out {run_dir} already holds a run; pick a new directory")
        run_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(dist.broadcast(str(run_dir)))
    stop = should_stop or (lambda: runs.stop_requested(run_dir))
    summary = {
        "name": cfg.name,
        "status": "running",
        "error": None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "steps_total": cfg.train.steps,
        "steps_done": 0,
        "processes": dist.n,
        "teacher_dtype": str(
            teacher_dtype(cfg.reg.teacher_dtype, bundle.dtype, bundle.device)
        ).replace("torch.", ""),
        "run_dir": str(run_dir),
        "warnings": list(task_data.warnings),
        "data_info": task_data.info,
        "arms": {},
    }
    log = None
    if dist.main:
        runs.atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
        runs.write_json(run_dir / "summary.json", summary)
        log = runs.EventLog(run_dir / "events.jsonl")

    def emit(ev: dict):
        if log is not None:
            log.write(ev)
        return ev

    try:
        arms = build_arms(cfg, bundle)
        probes = evaluation.Probes.from_data(task_data, bundle.tokenizer, cfg)
        if dist.main:
            probes.save(run_dir)
        first = next(iter(arms.values()))
        if dist.main:
            for ev in evaluation.evaluate(
                first, "base", 0, cfg, task_data, bundle, probes, run_dir
            ):
                yield emit(ev)
                summary["base"] = ev
            if cfg.train.analysis:
                evaluation.warm_intruder_cache([a.model for a in arms.values()], probes)
        dist.barrier()
        order = data.batch_order(
            len(task_data.train), cfg.train.batch_size * dist.n, cfg.train.steps, cfg.train.seed
        )
        step = 0
        for step, indices in enumerate(order, start=1):
            if not dist.all_true(not stop()):
                summary["status"] = "stopped"
                step -= 1
                break
            micro = _micro_batches(bundle.tokenizer, task_data, indices, cfg, dist, bundle.device)
            tokens = step_tokens(micro, cfg, dist)
            for arm in arms.values():
                if arm.status != "running":
                    continue
                try:
                    yield emit(train_arm_step(arm, micro, cfg, step, dist, tokens))
                except FloatingPointError as e:
                    arm.status, arm.error = "failed", str(e)
                    yield emit({"arm": arm.name, "step": step, "kind": "failed", "error": str(e)})
            summary["steps_done"] = step
            if not any(a.status == "running" for a in arms.values()):
                break
            due = (
                cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < cfg.train.steps
            )
            if due:
                yield from (
                    emit(ev)
                    for ev in _eval_all(arms, step, cfg, task_data, bundle, probes, run_dir, dist)
                )
            if dist.main:
                runs.write_json(run_dir / "summary.json", summary)
        yield from (
            emit(ev)
            for ev in _eval_all(
                arms, step, cfg, task_data, bundle, probes, run_dir, dist, final=True
            )
        )
        if dist.main:
            for arm in arms.values():
                adapters.save_adapter(arm.model, run_dir / "adapters" / arm.name)
                summary["arms"][arm.name] = _arm_summary(arm)
        if summary["status"] == "running":
            failed = [a for a in arms.values() if a.status == "failed"]
            summary["status"] = "failed" if len(failed) == len(arms) else "done"
            if failed:
                summary["error"] = "; ".join(a.error for a in failed)
    except BaseException as e:
        summary["status"] = "failed"
        summary["error"] = f"{type(e).__name__}: {e}"
        summary["traceback"] = traceback.format_exc(limit=8)
        raise
    finally:
        summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        if dist.main:
            runs.write_json(run_dir / "summary.json", summary)
            if log is not None:
                log.close()


def _eval_all(arms, step, cfg, task_data, bundle, probes, run_dir, dist, final=False):
    dist.barrier()
    if dist.main:
        for arm in arms.values():
            if arm.status == "running":
                for ev in evaluation.evaluate(
                    arm, arm.name, step, cfg, task_data, bundle, probes, run_dir
                ):
                    arm.last_eval = ev
                    yield ev
        evaluation.embed(run_dir, step, cfg)
    dist.barrier()


def _arm_summary(arm: Arm) -> dict:
    out = {
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

"""The training loop: arms trained seed-matched on identical batches, yielding events.

``run(cfg)`` loads the data and the model once, puts every arm of the config on it as adapters
(:mod:`lab.adapters`: one base model for all arms, never copied), then for every step draws one
batch, runs the teacher (the base with every adapter off) once on it for all the arms that need
it, and trains each arm on it in turn, so all curves advance together. Every step yields a
``train`` event per arm; eval points yield ``eval`` events (the untouched model as arm ``base``
first). Everything is written to the run directory as it happens by a
:class:`lab.run_writer.RunWriter`; the events are declared in :mod:`lab.events` and the loss
fields of a train event come from :mod:`lab.losses`.

Seeds: with several ``train.seeds`` every arm is trained once per seed (arms ``lora#s0``,
``lora#s1``, ... on the same base, see :mod:`lab.arms`). Each step draws one batch per seed,
from that seed's batch order, and runs one teacher pass per seed for its arms; the arms of a
seed see identical batches, and the seed also sets their init and dropout noise. Events carry
the arm's ``seed``.

Tuned learning rates (``train.lr_mode: tuned``): before the comparison, :mod:`lab.tuning`
carves a validation split off the training rows (never trained on afterwards) and sweeps
``train.lr_grid`` for every arm as extra adapters of one short job; each arm then trains at
the rate with the lowest validation loss (``lr_tuning`` events and summary entry).

Runs under ``accelerate launch`` for data parallelism: each process takes its share of every
batch. Every loss is normalised by the step's global count of response tokens (NLU: rows) and
the batch terms are computed over the global batch (:mod:`lab.forward`), so the processes'
gradients are summed, and any split into processes and micro-batches gives the full-batch
gradient.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import get_scheduler

from lab import adapters, checkpoint, encoding, evaluation, events, forward, losses, tuning
from lab.arms import ArmSpec, run_seeds, spec_of, specs
from lab.config import RunConfig
from lab.datasets import TaskData, load_task_data
from lab.dist import Dist
from lab.forward import step_loss
from lab.models import ModelBundle, load_model
from lab.run_writer import RunWriter
from lab.run_writer import arm_summary as _arm_summary  # noqa: F401  (lab.chunks uses it)


@dataclass
class Arm:
    spec: ArmSpec
    model: torch.nn.Module  # the shared PEFT model; :func:`lab.adapters.activate` picks the arm
    optimizer: torch.optim.Optimizer
    scheduler: object
    rng: tuple
    status: str = "running"
    error: str | None = None
    tokens: int = 0
    last: dict = field(default_factory=dict)
    last_eval: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def seed(self) -> int | None:
        """The arm's training seed (written into its per-item records)."""
        return self.spec.seed

    def activate(self) -> torch.nn.Module:
        adapters.activate(self.model, self.spec.name)
        return self.model


def _get_rng() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return (torch.get_rng_state(), cuda)


def _set_rng(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def lambdas_at(cfg: RunConfig, arm: str | ArmSpec, step: int) -> tuple[float, float, float]:
    """The regularizer weights of ``arm`` at ``step`` (1-based), schedules applied."""
    spec = arm if isinstance(arm, ArmSpec) else spec_of(cfg, arm)
    if not spec.regularized:
        return (0.0, 0.0, 0.0)
    r, steps = cfg.reg, cfg.train.steps
    l1, l2, l3 = spec.lambdas
    if r.lambda1_schedule == "cosine":
        frac = (step - 1) / max(1, steps - 1)
        l1 = l1 * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))
    warm = step <= r.lambda23_warmup * steps
    return (l1, 0.0 if warm else l2, 0.0 if warm else l3)


_PARTS = ("task_loss", *losses.TERMS)  # summed over micro-batches and processes


def needs_terms(arm: Arm | ArmSpec, cfg: RunConfig) -> bool:
    spec = arm.spec if isinstance(arm, Arm) else arm
    return spec.regularized or cfg.train.log_terms


def step_norm(micro: list[dict], cfg: RunConfig, dist: Dist) -> int:
    """The step's global count that every per-token term is divided by: response tokens over
    all micro-batches and processes (NLU: rows)."""
    local = sum(forward.count(b, cfg.task) for b in micro)
    return int(dist.sum_tensor(torch.tensor([float(local)], dtype=torch.float64))[0].item())


def teacher_step(model, micro: list[dict], cfg: RunConfig) -> list[torch.Tensor]:
    """The teacher's outputs on every micro-batch of a step: one pass, shared by all arms."""
    return [forward.teacher_outputs(model, b, cfg) for b in micro]


def _batch_weighted(cfg: RunConfig, lambdas) -> bool:
    """Whether a whole-batch term has a non-zero weight (it then needs its gradient)."""
    _, l2, l3 = lambdas
    return l3 > 0 or (cfg.task == "nlu" and l2 > 0)


def _global_terms(model, rows: list[torch.Tensor], cfg, lambdas, dist: Dist, step: int, seed):
    """Batch terms over the global batch from each micro-batch's (detached) rows; returns
    (raw values, inactive reasons, per-micro-batch gradients w.r.t. their rows or None).
    ``seed``: the arm's training seed (the randomized SVD's noise); None: ``train.seed``."""
    local = torch.cat(rows, 0)
    everything, offset = dist.gather_rows(local)
    leaf = everything.detach().requires_grad_(_batch_weighted(cfg, lambdas))
    seed = cfg.train.seed if seed is None else seed
    gen = torch.Generator(device=leaf.device).manual_seed(seed * 1_000_003 + step)
    with torch.enable_grad() if leaf.requires_grad else torch.no_grad():
        weighted, raw, inactive = forward.batch_terms(model, leaf, cfg, lambdas, gen)
    grads = None
    if weighted.requires_grad:
        (g,) = torch.autograd.grad(weighted, leaf)
        mine = g[offset : offset + local.shape[0]]
        grads = list(mine.split([r.shape[0] for r in rows], 0))
    return raw, inactive, grads


def train_arm_step(
    arm: Arm,
    micro: list[dict],
    cfg: RunConfig,
    step: int,
    dist: Dist,
    tokens: int | None = None,
    *,
    teacher: list[torch.Tensor] | None = None,
    norm: int | None = None,
) -> dict:
    """Train one arm on one step's micro-batches; returns its train event.

    ``tokens`` and ``norm``: the step's :func:`step_tokens` and :func:`step_norm` when the
    caller has counted them (once for all arms); ``teacher``: the step's :func:`teacher_step`
    (computed here when the arm needs it and it is not given)."""
    t0 = time.perf_counter()
    model = arm.activate()
    lambdas = lambdas_at(cfg, arm.spec, step)
    need_terms = needs_terms(arm, cfg)
    norm = step_norm(micro, cfg, dist) if norm is None else norm
    if need_terms and teacher is None:
        teacher = teacher_step(model, micro, cfg)
    _set_rng(arm.rng)  # each arm draws its own dropout noise, seed-matched
    model.train()
    params = adapters.trainable_parameters(model, arm.name)
    grads = None
    raw, inactive = {}, {}
    if need_terms and _batch_weighted(cfg, lambdas) and len(micro) > 1:
        # The batch terms need every micro-batch's rows before any backward: a no-grad pass
        # first (same dropout noise as the training pass), then their gradient flows back
        # into each micro-batch below. (One micro-batch: its own forward gives the rows.)
        start = _get_rng()
        with torch.no_grad():
            rows = [forward.student_rows(model, b, cfg) for b in micro]
        _set_rng(start)
        raw, inactive, grads = _global_terms(model, rows, cfg, lambdas, dist, step, arm.seed)
        del rows
    kept = []
    per_token = _PARTS[:3]  # summed over micro-batches and processes; the svd term is global
    sums = None  # on the device: read once, after the loop
    for k, batch in enumerate(micro):
        out = step_loss(
            model,
            batch,
            cfg,
            lambdas,
            need_terms=need_terms,
            norm=norm,
            teacher=None if teacher is None else teacher[k],
        )
        total = out.total
        if out.rows is not None:
            if grads is not None:
                total = total + (out.rows * grads[k]).sum()
            elif len(micro) == 1 and _batch_weighted(cfg, lambdas):
                raw, inactive, g = _global_terms(
                    model, [out.rows.detach()], cfg, lambdas, dist, step, arm.seed
                )
                if g is not None:  # None: every batch term is inactive (e.g. too few rows)
                    total = total + (out.rows * g[0]).sum()
            else:
                kept.append(out.rows.detach())
        total.backward()  # queued before the one host sync of the step
        parts = [out.values.get(p) for p in per_token]
        zero = out.values["task_loss"].new_zeros(())
        part = torch.stack([zero if v is None else v.detach().float() for v in parts]).double()
        sums = part if sums is None else sums + part
        del out, total
    if kept:
        raw, inactive, _ = _global_terms(model, kept, cfg, lambdas, dist, step, arm.seed)
        del kept
    values = dict(zip(per_token, dist.sum_tensor(sums).tolist()))  # the one host sync
    for term in losses.TERMS:
        if term in raw:
            values[term] = float(raw[term])
    present = {"task_loss"} | ({"consistency", "diversity"} if need_terms else set())
    if cfg.task == "nlu":
        present.discard("diversity")
    present |= set(raw)
    present -= set(inactive)
    logged = losses.train_values(values, present, lambdas, inactive, need_terms)
    bad = next(
        (
            k
            for k in ("svd", "diversity", "consistency", "task_loss", "loss")
            if logged[k] is not None and not math.isfinite(logged[k])
        ),
        None,
    )
    if bad is not None:
        arm.optimizer.zero_grad(set_to_none=True)
        what = {"loss": "loss", "task_loss": "task loss"}.get(bad, f"{bad} term")
        raise FloatingPointError(f"arm {arm.name}: the {what} is not finite at step {step}")
    dist.sum_grads(params)
    clipped = {}
    if cfg.train.max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        clipped["grad_norm"] = float(grad_norm)
    arm.optimizer.step()
    arm.scheduler.step()
    arm.optimizer.zero_grad(set_to_none=True)
    arm.rng = _get_rng()
    arm.tokens += step_tokens(micro, cfg, dist) if tokens is None else tokens
    ev = events.train_event(
        arm=arm.name,
        step=step,
        **logged,
        seed=arm.seed,
        **clipped,
        lr=arm.scheduler.get_last_lr()[0],
        tokens=arm.tokens,
        seconds=time.perf_counter() - t0,
    )
    arm.last = ev
    return ev


def step_tokens(micro: list[dict], cfg: RunConfig, dist: Dist) -> int:
    """Tokens one step trains on over all processes (the response tokens for NLG)."""
    local = sum(_count_tokens(b, cfg.task) for b in micro)
    return int(dist.sum_tensor(torch.tensor([float(local)], dtype=torch.float64))[0].item())


def _count_tokens(batch: dict, task: str) -> int:
    if task == "nlg":
        return int(batch["reg_mask"].sum())
    return int(batch["attention_mask"].sum())


def _micro_batches(
    tok, train_rows: list[dict], indices: list[int], cfg: RunConfig, dist: Dist, device
):
    rows = [train_rows[i] for i in indices]
    mine = rows[dist.acc.process_index :: dist.n]  # this process's share of the global batch
    per = math.ceil(len(mine) / cfg.train.grad_accum)
    out = []
    for i in range(0, len(mine), per):
        b = encoding.make_batch(tok, mine[i : i + per], cfg.task, cfg.train.seq_len)
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
    task_data.train = encoding.usable_examples(task_data.train, cfg.task)
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
    encoding.check_seq_len(cfg.train.seq_len, bundle.max_len)
    return task_data, bundle


def build_arms(
    cfg: RunConfig, bundle: ModelBundle, *, candidates: Sequence[ArmSpec] = ()
) -> dict[str, Arm]:
    """Every arm of ``cfg`` as adapters on the one loaded model, each with its optimizer.
    ``candidates``: more arms put on the same model after them, as adapters only (the
    learning-rate sweep of :mod:`lab.tuning` trains them)."""
    arm_specs = specs(cfg)
    model = adapters.build(
        bundle.model,
        arm_specs + list(candidates),
        task=cfg.task,
        rank=cfg.lora.rank,
        alpha=cfg.lora.alpha,
        dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        pissa_niter=cfg.lora.pissa_niter,
        seed=cfg.train.seed,
    )
    arms = {spec.name: new_arm(cfg, model, spec, cfg.train.steps) for spec in arm_specs}
    adapters.activate(model, arm_specs[0].name)
    return arms


def new_arm(cfg: RunConfig, model, spec: ArmSpec, steps: int) -> Arm:
    """An arm on ``model`` with its optimizer at ``spec.lr``, a scheduler over ``steps`` and
    the dropout stream of its seed (the same for every arm of that seed)."""
    opt = torch.optim.AdamW(
        adapters.trainable_parameters(model, spec.name),
        lr=spec.lr,
        weight_decay=cfg.train.weight_decay,
    )
    sched = get_scheduler(
        cfg.train.scheduler,
        opt,
        num_warmup_steps=int(round(cfg.train.warmup_ratio * steps)),
        num_training_steps=steps,
    )
    seed = cfg.train.seed if spec.seed is None else spec.seed
    torch.manual_seed(seed + 1)
    return Arm(spec, model, opt, sched, rng=_get_rng())


def set_lr(cfg: RunConfig, arm: Arm, lr: float) -> None:
    """Give an arm that has not trained yet a new learning rate (a fresh optimizer and
    scheduler; its dropout stream is kept)."""
    fresh = new_arm(cfg, arm.model, replace(arm.spec, lr=float(lr)), cfg.train.steps)
    arm.spec, arm.optimizer, arm.scheduler = fresh.spec, fresh.optimizer, fresh.scheduler


def run(
    cfg: RunConfig,
    out_dir: str | Path | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
    stop_after_step: int | None = None,
    evaluate: bool = True,
) -> Iterator[dict]:
    """Train every arm of ``cfg`` and yield events; writes the run directory as it goes.

    With ``resume``, ``out_dir`` is an existing run: its checkpoint is restored (adapters,
    optimizers, schedulers, RNG states, data cursor) and training continues to
    ``cfg.train.steps``, appending to its ``events.jsonl``.

    ``stop_after_step``: after that step, save a checkpoint and return with status "paused"
    (no final evaluation, no adapters): one chunk of a run trained in several calls
    (:mod:`lab.chunks`). ``evaluate=False`` skips every evaluation (the base model's, the eval
    points', the final one); the chunks run them in calls of their own."""
    start = 0
    seeds = run_seeds(cfg)
    if resume:
        if out_dir is None:
            raise checkpoint.ResumeError("resume needs the run directory")
        state = checkpoint.read_state(out_dir)
        checkpoint.check_cursor(state, seeds, Path(out_dir).name)
        start = int(state["step"])
        if start >= cfg.train.steps:
            raise checkpoint.ResumeError(
                f"run {Path(out_dir).name} already trained {start} of {cfg.train.steps} steps;"
                " nothing to resume (raise train.steps with --set)"
            )
    accelerator = Accelerator(cpu=cfg.model.device == "cpu")
    dist = Dist(accelerator)
    if cfg.model.device == "auto" and accelerator.device.type == "cuda":
        cfg.model.device = str(accelerator.device)
    torch.manual_seed(cfg.train.seed)
    task_data, bundle = prepare(cfg)
    val_rows = None
    tuned = cfg.train.lr_mode == "tuned"
    if tuned:  # the carved rows are never trained on, resumed or not
        task_data.train, val_rows = tuning.carve(
            task_data.train, cfg.train.val_fraction, cfg.train.seed
        )
    sweep = tuned and not resume  # a resumed run keeps the rates it chose
    writer = RunWriter(
        cfg, out_dir, dist, bundle, task_data, start=start if resume else None, tuned=tuned
    )
    run_dir = writer.run_dir
    stop = should_stop or writer.stop_requested
    emit = writer.emit
    try:
        arms = build_arms(cfg, bundle, candidates=tuning.candidates(cfg) if sweep else [])
        if sweep:  # before anything reads the test split
            writer.record_lr_tuning(tune_lrs(arms, task_data.train, val_rows, cfg, bundle, dist))
            for ev in tuning.events(writer.summary["lr_tuning"]):
                yield emit(ev)
        if tuned:
            for arm in arms.values():
                set_lr(cfg, arm, writer.summary["lr_tuning"][arm.spec.plain]["chosen"])
            writer.record_arm_specs([a.spec for a in arms.values()])
        probes = evaluation.HeldOut.from_data(task_data, bundle.tokenizer, cfg)
        if dist.main:
            probes.save(run_dir)
        first = next(iter(arms.values()))
        if dist.main:
            first.activate()
            for ev in (
                []
                if resume or not evaluate
                else evaluation.evaluate(first, "base", 0, cfg, task_data, bundle, probes, run_dir)
            ):
                yield emit(ev)
                writer.record_base(ev)
            if cfg.train.analysis and evaluate:
                for arm in arms.values():
                    evaluation.warm_intruder_cache([arm.activate()], probes)
        if resume:  # after the step-0 caches, which are taken on the arms' initial adapters
            _, global_rng = checkpoint.load(run_dir, arms)
            first.activate()
        dist.barrier()
        world = cfg.train.batch_size * dist.n
        orders = [  # one batch order per seed; the arms of a seed share its batches
            encoding.batch_order(len(task_data.train), world, cfg.train.steps, seed)
            for seed in seeds
        ]
        groups = {seed: [a for a in arms.values() if a.seed == seed] for seed in seeds}
        step = start
        if resume:
            _set_rng(global_rng)
        for step, batches in enumerate(zip(*orders), start=1):
            if step <= start:
                continue  # the data cursor: these batches were trained before the checkpoint
            if stop_after_step is not None and step > stop_after_step:
                step -= 1
                break
            if not dist.all_true(not stop()):
                writer.stopped()
                step -= 1
                break
            for seed, indices in zip(seeds, batches):
                for ev in train_step(
                    groups[seed], task_data.train, indices, step, cfg, dist, bundle
                ):
                    yield emit(ev)
            writer.steps_done(step)
            if not any(a.status == "running" for a in arms.values()):
                break
            due = (
                cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < cfg.train.steps
            ) and evaluate
            if due:
                yield from (
                    emit(ev)
                    for ev in _eval_all(arms, step, cfg, task_data, bundle, probes, run_dir, dist)
                )
                writer.checkpoint(arms, step, _get_rng())
            writer.write_summary()
        loop_rng = _get_rng()  # where the next step would start, before the final evaluation
        live = any(a.status == "running" for a in arms.values())
        if stop_after_step is not None and writer.status == "running" and live:
            writer.pause(arms, step, loop_rng)
            return
        if evaluate:
            yield from (
                emit(ev)
                for ev in _eval_all(
                    arms, step, cfg, task_data, bundle, probes, run_dir, dist, final=True
                )
            )
        writer.finish(arms, step, loop_rng)
    except BaseException as e:
        writer.failed(e)
        raise
    finally:
        writer.close()


def train_step(
    group: list[Arm], rows: list[dict], indices: list[int], step: int, cfg, dist, bundle
) -> Iterator[dict]:
    """One step of the arms of one seed on the batch ``indices`` of ``rows``: one teacher pass
    for every arm that needs it, then each live arm in turn; yields their train events (a
    ``failed`` event for an arm whose loss is not finite; the others go on)."""
    live = [a for a in group if a.status == "running"]
    if not live:
        return
    micro = _micro_batches(bundle.tokenizer, rows, indices, cfg, dist, bundle.device)
    tokens = step_tokens(micro, cfg, dist)
    norm = step_norm(micro, cfg, dist)
    teacher = None  # one teacher pass for every arm that needs it
    if any(needs_terms(a, cfg) for a in live):
        teacher = teacher_step(live[0].model, micro, cfg)
    for arm in live:
        step_teacher = teacher if needs_terms(arm, cfg) else None
        try:
            ev = train_arm_step(
                arm, micro, cfg, step, dist, tokens, teacher=step_teacher, norm=norm
            )
        except FloatingPointError as e:
            arm.status, arm.error = "failed", str(e)
            ev = events.FailedEvent(
                arm=arm.name, step=step, kind="failed", error=str(e), seed=arm.seed
            ).dump()
        yield ev


def tune_lrs(arms: dict[str, Arm], rows, val_rows, cfg: RunConfig, bundle, dist) -> dict:
    """The sweep of ``train.lr_mode: tuned`` (see :mod:`lab.tuning`): the candidate adapters
    that :func:`build_arms` put on the model train ``train.tune_steps`` steps on ``rows`` as one
    group (identical batches, one teacher pass a step), then each is scored on ``val_rows``.
    Returns the ``lr_tuning`` record; the comparison arms are left untouched."""
    model = next(iter(arms.values())).model
    steps = cfg.train.tune_steps
    group = [new_arm(cfg, model, spec, steps) for spec in tuning.candidates(cfg)]
    world = cfg.train.batch_size * dist.n
    order = encoding.batch_order(len(rows), world, steps, group[0].seed)
    for step, indices in enumerate(order, start=1):
        for _ in train_step(group, rows, indices, step, cfg, dist, bundle):
            pass  # the candidates' train events are not part of the run's log
    batches = tuning.val_batches(val_rows, cfg, bundle.tokenizer, bundle.device)
    losses = {
        a.name: tuning.val_loss(a.activate(), batches, cfg) if a.status == "running" else math.nan
        for a in group
    }
    adapters.activate(model, next(iter(arms)))
    return tuning.record(cfg, losses, len(val_rows))


def _eval_all(arms, step, cfg, task_data, bundle, probes, run_dir, dist, final=False):
    dist.barrier()
    if dist.main:
        for arm in arms.values():
            if arm.status == "running":
                arm.activate()
                for ev in evaluation.evaluate(
                    arm, arm.name, step, cfg, task_data, bundle, probes, run_dir
                ):
                    ev["seed"] = arm.seed
                    arm.last_eval = ev
                    yield ev
        evaluation.embed(run_dir, step, cfg)
    dist.barrier()

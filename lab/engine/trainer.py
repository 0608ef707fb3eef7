"""The training loop: arms trained seed-matched on identical batches, yielding events.

``run(cfg)`` loads the data and the model once, puts every arm of the config on it as adapters
(:mod:`lab.engine.adapters`: one base model for all arms, never copied), then for every step draws one
batch, runs the teacher (the base with every adapter off) once on it for all the arms that need
it, and trains each arm on it in turn (:mod:`lab.engine.steps`), so all curves advance together. Every step yields a
``train`` event per arm; eval points yield ``eval`` events (the untouched model as arm ``base``
first). Everything is written to the run directory as it happens by a
:class:`lab.engine.run_writer.RunWriter`; the events are declared in :mod:`lab.runs.events` and the loss
fields of a train event come from :mod:`lab.method.losses`.

Seeds: with several ``train.seeds`` every arm is trained once per seed (arms ``lora#s0``,
``lora#s1``, ... on the same base, see :mod:`lab.arms`). Each step draws one batch per seed,
from that seed's batch order, and runs one teacher pass per seed for its arms; the arms of a
seed see identical batches, and the seed also sets their init and dropout noise. Events carry
the arm's ``seed``.

Tuned learning rates (``train.lr_mode: tuned``): before the comparison, :mod:`lab.engine.tuning`
carves a validation split off the training rows (never trained on afterwards) and sweeps
``train.lr_grid`` for every arm as extra adapters of one short job; each arm then trains at
the rate with the lowest validation loss (``lr_tuning`` events and summary entry).

Runs under ``accelerate launch`` for data parallelism: each process takes its share of every
batch. Every loss is normalised by the step's global count of response tokens (NLU: rows) and
the batch terms are computed over the global batch (:mod:`lab.engine.forward`), so the processes'
gradients are summed, and any split into processes and micro-batches gives the full-batch
gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from accelerate import Accelerator

from lab.arms import ArmSpec, run_seeds, specs
from lab.config import RunConfig
from lab.datasets import TaskData, encoding, load_task_data
from lab.engine import adapters, checkpoint, evaluation, tuning
from lab.engine.dist import Dist
from lab.engine.run_writer import RunWriter
from lab.engine.steps import Arm, get_rng, new_arm, set_lr, set_rng, train_step
from lab.models import ModelBundle, load_model


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
    learning-rate sweep of :mod:`lab.engine.tuning` trains them)."""
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
    (:mod:`lab.jobs.chunks`). ``evaluate=False`` skips every evaluation (the base model's, the eval
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
            set_rng(global_rng)
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
                writer.checkpoint(arms, step, get_rng())
            writer.write_summary()
        loop_rng = get_rng()  # where the next step would start, before the final evaluation
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


def tune_lrs(arms: dict[str, Arm], rows, val_rows, cfg: RunConfig, bundle, dist) -> dict:
    """The sweep of ``train.lr_mode: tuned`` (see :mod:`lab.engine.tuning`): the candidate adapters
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

"""The run lifecycle in named phases, shared by every driver of a run.

``trainer.run`` calls them in order for a whole run; the ZeroGPU chunks (:mod:`lab.jobs.chunks`)
call the same phases one GPU call at a time. The phases:

- :func:`open_session`   read the checkpoint (resume), load the data and the model, open the
                         run directory (phase ``loading``)
- :func:`setup_arms`     every arm as an adapter on the one model, the learning-rate sweep
                         (phase ``initialising adapters``, ``tuning learning rates``)
- :func:`start`          a checkpoint at step 0, the base model's evaluation, the step-0 caches,
                         a checkpoint once the base evaluation is done; on resume, restoring the
                         checkpoint and any evaluation it left pending (``base evaluation``)
- :func:`train_steps`    the steps, with the eval points (``step k/n``, ``eval point``)
- :func:`final`          the final evaluation (``final evaluation``), the last checkpoint, the
                         adapters and the run's status (``saving``)

A *unit of work* is one training step or one forward pass of an evaluation (a batch of items).
:class:`Units` sees each one: it writes ``RUN_DIR/heartbeat.json`` (the phase and the longest
recent unit, which the app's watchdog sizes its grace from) and, inside an evaluation, checks
the STOP file, so a Stop is honoured within one unit in every phase. A Stop pressed during an
evaluation ends the run "stopped" with a checkpoint whose evaluation is pending; Resume runs it
first. A Stop seen between two steps ends the training there, and the final evaluation then runs;
a second Stop during it skips it (pending, as above).
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from lab.arms import run_seeds
from lab.config import RunConfig
from lab.datasets import TaskData, encoding, load_task_data
from lab.engine import adapters, checkpoint, evaluation, tuning
from lab.engine.dist import Dist
from lab.engine.run_writer import RunWriter
from lab.engine.steps import Arm, get_rng, new_arm, set_lr, set_rng, train_step
from lab.models import ModelBundle, load_model
from lab.runs import store as runs
from lab.runs.status import RUNNING, STOPPED

HEARTBEAT = "heartbeat.json"
BEAT_EVERY_S = 1.0  # the heartbeat file is rewritten at most this often (and at each phase)
KILLABLE_PHASES = ("loading", "initialising adapters", "tuning learning rates")  # nothing saved yet


class StopRequested(Exception):
    """The user asked the run to stop; raised inside a unit of work of an evaluation."""


def eval_steps(cfg: RunConfig) -> list[int]:
    """The steps at which the arms are evaluated: every ``train.eval_every`` steps and the last
    step (the base model is evaluated once more, at step 0)."""
    return eval_steps_of(int(cfg.train.steps), int(cfg.train.eval_every or 0))


def eval_steps_of(total: int, every: int) -> list[int]:
    """:func:`eval_steps` for a total of steps and an interval (0: the last step only)."""
    points = list(range(every, total, every)) if every else []
    return [*points, total]


class Units:
    """Sees every unit of work: the heartbeat file and, inside :meth:`checking`, the stop check."""

    def __init__(self, run_dir: Path | None, stop: Callable[[], bool], *, main: bool = True):
        self.run_dir, self.stop, self.main = run_dir, stop, main
        self.name = "loading"
        self.info: dict = {}
        self.recent: collections.deque[float] = collections.deque(maxlen=20)
        self._last_tick = time.monotonic()
        self._written = 0.0
        self._check = False

    def phase(self, name: str, **info) -> None:
        """Enter phase ``name`` (``info``: its step and total, shown by the page)."""
        changed = name != self.name
        self.name, self.info = name, info
        self._last_tick = time.monotonic()
        self._beat(force=changed)

    def tick(self) -> None:
        """One unit of work has ended; inside :meth:`checking`, raise :class:`StopRequested` when
        the user asked to stop."""
        now = time.monotonic()
        self.recent.append(now - self._last_tick)
        self._last_tick = now
        self._beat()
        if self._check and self.stop():
            raise StopRequested(f"stop requested during the {self.name}")

    def _beat(self, force: bool = False) -> None:
        now = time.time()
        if (
            self.run_dir is None
            or not self.main
            or (not force and now - self._written < BEAT_EVERY_S)
        ):
            return
        self._written = now
        beat = {"phase": self.name, **self.info, "at": now, "unit_s": max(self.recent, default=0.0)}
        runs.write_json(self.run_dir / HEARTBEAT, beat, durable=False)

    @contextlib.contextmanager
    def checking(self, model: torch.nn.Module):
        """Every forward pass of ``model`` in this block is a unit with a stop check (a pre-hook
        on the input embeddings, which every pass goes through)."""
        handle = model.get_input_embeddings().register_forward_pre_hook(lambda *_: self.tick())
        self._check = True
        try:
            yield
        finally:
            self._check = False
            handle.remove()


@dataclass
class Session:
    """What the phases of one run share."""

    cfg: RunConfig
    dist: Dist
    writer: RunWriter
    task_data: TaskData
    bundle: ModelBundle
    units: Units
    resume: bool
    state: dict | None  # the checkpoint's state when resuming
    val_rows: list | None = None
    arms: dict[str, Arm] = field(default_factory=dict)
    probes: evaluation.HeldOut | None = None
    eval_pending: bool = False  # the evaluation due at the last checkpoint has not run
    rng: tuple | None = None  # where the next step starts, when a stop cut an evaluation short

    @property
    def run_dir(self) -> Path:
        return self.writer.run_dir

    @property
    def start(self) -> int:
        return int(self.state["step"]) if self.state else 0

    @property
    def stopped(self) -> bool:
        return self.writer.status == STOPPED

    def checking(self, model):
        """The stop check per unit of an evaluation (one process: the others would wait for the
        main one at the next barrier)."""
        return self.units.checking(model) if self.dist.n == 1 else contextlib.nullcontext()

    def stopped_in_eval(self, rng: tuple) -> None:
        """A stop cut the evaluation short: the run ends stopped, that evaluation pending, and
        the next step starts from ``rng`` (as before the evaluation)."""
        self.writer.stopped()
        self.eval_pending, self.rng = True, rng


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


def read_resume_state(cfg: RunConfig, out_dir, *, evaluating: bool = False) -> dict:
    """The checkpoint a resume continues from; :class:`checkpoint.ResumeError` when there is
    nothing to continue (no readable checkpoint, other seeds, every step trained and evaluated;
    ``evaluating``: the call only evaluates the checkpoint, so that is fine)."""
    if out_dir is None:
        raise checkpoint.ResumeError("resume needs the run directory")
    state = checkpoint.check(out_dir)
    checkpoint.check_cursor(state, run_seeds(cfg), Path(out_dir).name)
    start = int(state["step"])
    finished = start > cfg.train.steps or (start == cfg.train.steps and not state["eval_pending"])
    if finished and not evaluating:
        raise checkpoint.ResumeError(
            f"run {Path(out_dir).name} already trained {start} of {cfg.train.steps} steps;"
            " nothing to resume (raise train.steps with --set)"
        )
    return state


def open_session(
    cfg: RunConfig,
    out_dir,
    *,
    resume: bool,
    should_stop: Callable[[], bool] | None = None,
    evaluating: bool = False,
) -> Session:
    """Phase ``loading``: the checkpoint's state (resume), the data, the model, the run directory.
    ``evaluating``: the session only evaluates the checkpoint (a ZeroGPU eval call)."""
    state = read_resume_state(cfg, out_dir, evaluating=evaluating) if resume else None
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
    start = int(state["step"]) if state else None
    writer = RunWriter(cfg, out_dir, dist, bundle, task_data, start=start, tuned=tuned)
    units = Units(writer.run_dir, should_stop or writer.stop_requested, main=dist.main)
    units.phase("initialising adapters")
    return Session(cfg, dist, writer, task_data, bundle, units, resume, state, val_rows)


def build_arms(cfg: RunConfig, bundle: ModelBundle, *, candidates=()) -> dict[str, Arm]:
    """Every arm of ``cfg`` as adapters on the one loaded model, each with its optimizer.
    ``candidates``: more arms put on the same model after them, as adapters only (the
    learning-rate sweep of :mod:`lab.engine.tuning` trains them)."""
    from lab.arms import specs

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


def setup_arms(s: Session) -> Iterator[dict]:
    """Phase ``initialising adapters`` (and ``tuning learning rates``): the arms on the model,
    their learning rates, the held-out texts."""
    cfg, writer = s.cfg, s.writer
    tuned = cfg.train.lr_mode == "tuned"
    sweep = tuned and not s.resume  # a resumed run keeps the rates it chose
    s.arms = build_arms(cfg, s.bundle, candidates=tuning.candidates(cfg) if sweep else [])
    if sweep:  # before anything reads the test split
        s.units.phase("tuning learning rates")
        writer.record_lr_tuning(
            tune_lrs(s.arms, s.task_data.train, s.val_rows, cfg, s.bundle, s.dist)
        )
        for ev in tuning.events(writer.summary["lr_tuning"]):
            yield writer.emit(ev)
    if tuned:
        for arm in s.arms.values():
            set_lr(cfg, arm, writer.summary["lr_tuning"][arm.spec.plain]["chosen"])
        writer.record_arm_specs([a.spec for a in s.arms.values()])
    s.probes = evaluation.HeldOut.from_data(s.task_data, s.bundle.tokenizer, cfg)
    if s.dist.main:
        s.probes.save(s.run_dir)


def tune_lrs(arms: dict[str, Arm], rows, val_rows, cfg: RunConfig, bundle, dist) -> dict:
    """The sweep of ``train.lr_mode: tuned`` (see :mod:`lab.engine.tuning`): the candidate adapters
    that :func:`build_arms` put on the model train ``train.tune_steps`` steps on ``rows`` as one
    group (identical batches, one teacher pass a step), then each is scored on ``val_rows``.
    Returns the ``lr_tuning`` record; the comparison arms are left untouched."""
    import math

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


def warm_caches(s: Session) -> None:
    """The step-0 caches (the base weights' SVDs behind the intruder counts), taken on the arms'
    initial adapters."""
    if s.dist.main and s.cfg.train.analysis:
        for arm in s.arms.values():
            evaluation.warm_intruder_cache([arm.activate()], s.probes)


def start(s: Session, evaluate: bool = True) -> Iterator[dict]:
    """Phase ``base evaluation``: a new run checkpoints step 0, evaluates the base model, takes
    the step-0 caches and checkpoints again, so a stop or a crash after the base evaluation never
    costs it again. A resumed run restores its checkpoint (and runs the evaluation it left
    pending at step 0: a run stopped during its base evaluation)."""
    base_pending = s.state is None or (s.start == 0 and s.state["eval_pending"])
    if s.resume:
        if base_pending:  # restored first: the RNG as it was before the base evaluation
            restore(s)
        else:
            warm_caches(s)  # on the initial adapters, then the trained ones are restored
            restore(s)
            return
    else:
        s.writer.checkpoint(s.arms, 0, get_rng(), eval_pending=evaluate)
    if not evaluate:
        return
    rng = get_rng()
    if s.units.stop():  # asked during the set-up: nothing but step 0 to keep
        s.stopped_in_eval(rng)
        return
    s.units.phase("base evaluation", step=0, total=s.cfg.train.steps)
    first = next(iter(s.arms.values()))
    try:
        if s.dist.main:
            first.activate()
            with s.checking(first.model):
                for ev in evaluation.evaluate(
                    first, "base", 0, s.cfg, s.task_data, s.bundle, s.probes, s.run_dir
                ):
                    yield s.writer.emit(ev)
                    s.writer.record_base(ev)
    except StopRequested:
        s.stopped_in_eval(rng)
        return
    warm_caches(s)
    first.activate()
    s.eval_pending = False
    s.writer.write_summary()
    s.writer.checkpoint(s.arms, 0, get_rng())


def restore(s: Session) -> None:
    """The arms, optimizers and RNG states as the checkpoint left them."""
    _, global_rng = checkpoint.load(s.run_dir, s.arms)
    next(iter(s.arms.values())).activate()
    set_rng(global_rng)
    s.eval_pending = bool(s.state["eval_pending"])


def evaluate_arms(s: Session, step: int, *, final: bool = False) -> Iterator[dict]:
    """Phase ``eval point`` / ``final evaluation``: every running arm at ``step``, then the joint
    t-SNE; raises :class:`StopRequested` when a stop comes in between two of its units."""
    s.units.phase("final evaluation" if final else "eval point", step=step, total=s.cfg.train.steps)
    s.dist.barrier()
    if s.dist.main:
        for arm in s.arms.values():
            if arm.status == RUNNING:
                arm.activate()
                with s.checking(arm.model):
                    for ev in evaluation.evaluate(
                        arm, arm.name, step, s.cfg, s.task_data, s.bundle, s.probes, s.run_dir
                    ):
                        ev["seed"] = arm.seed
                        arm.last_eval = ev
                        yield s.writer.emit(ev)
        evaluation.embed(s.run_dir, step, s.cfg)
    s.dist.barrier()


def _pending_eval(s: Session) -> Iterator[dict]:
    """A resumed run whose checkpoint was taken at an eval point that a stop interrupted runs
    that evaluation again first (the final one runs in :func:`final`)."""
    step = s.start
    if not (s.resume and s.eval_pending and 0 < step < s.cfg.train.steps):
        return
    if step in eval_steps(s.cfg):
        rng = get_rng()
        try:
            yield from evaluate_arms(s, step)
        except StopRequested:
            s.stopped_in_eval(rng)
            s.writer.checkpoint(s.arms, step, rng, eval_pending=True)
            return
        s.writer.checkpoint(s.arms, step, get_rng())
    s.eval_pending = False


def train_steps(s: Session, stop_after_step: int | None, evaluate: bool) -> Iterator[dict]:
    """Phase ``step k/n`` with its eval points; returns the last step trained."""
    yield from _pending_eval(s)
    cfg, dist, writer, start = s.cfg, s.dist, s.writer, s.start
    if s.stopped:
        return start
    s.dist.barrier()
    seeds = run_seeds(cfg)
    world = cfg.train.batch_size * dist.n
    orders = [  # one batch order per seed; the arms of a seed share its batches
        encoding.batch_order(len(s.task_data.train), world, cfg.train.steps, seed) for seed in seeds
    ]
    groups = {seed: [a for a in s.arms.values() if a.seed == seed] for seed in seeds}
    points = set(eval_steps(cfg)) - {cfg.train.steps}
    step = start
    for step, batches in enumerate(zip(*orders), start=1):
        if step <= start:
            continue  # the data cursor: these batches were trained before the checkpoint
        if stop_after_step is not None and step > stop_after_step:
            return step - 1
        if not dist.all_true(not s.units.stop()):
            writer.stopped()  # the STOP file is taken: a second Stop skips the final evaluation
            return step - 1
        s.units.phase("training", step=step, total=cfg.train.steps)
        for seed, indices in zip(seeds, batches):
            for ev in train_step(
                groups[seed], s.task_data.train, indices, step, cfg, dist, s.bundle
            ):
                yield writer.emit(ev)
        s.units.tick()
        writer.steps_done(step)
        if not any(a.status == RUNNING for a in s.arms.values()):
            return step
        if evaluate and step in points:
            rng = get_rng()
            try:
                yield from evaluate_arms(s, step)
            except StopRequested:
                s.stopped_in_eval(rng)
                writer.checkpoint(s.arms, step, rng, eval_pending=True)
                return step
            writer.checkpoint(s.arms, step, get_rng())
        writer.write_summary()
    return step


def final(s: Session, step: int, evaluate: bool) -> Iterator[dict]:
    """Phases ``final evaluation`` and ``saving``: the arms at ``step``, then the last
    checkpoint, the adapters and the status. An evaluation a stop skipped stays pending."""
    rng = s.rng or get_rng()  # where the next step would start, before the final evaluation
    if evaluate and not (s.stopped and s.eval_pending):
        try:
            yield from evaluate_arms(s, step, final=True)
            s.eval_pending = False
        except StopRequested:
            s.stopped_in_eval(rng)
    s.units.phase("saving", step=step, total=s.cfg.train.steps)
    s.writer.finish(s.arms, step, rng, eval_pending=s.eval_pending)

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

from collections.abc import Callable, Iterator
from pathlib import Path

from lab.config import RunConfig
from lab.engine import lifecycle
from lab.engine.lifecycle import build_arms, prepare, tune_lrs
from lab.runs.status import RUNNING

__all__ = ["build_arms", "prepare", "run", "tune_lrs"]


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

    The phases of :mod:`lab.engine.lifecycle`, in order: loading, the arms, the base model's
    evaluation (checkpointed before and after), the steps and their eval points, the final
    evaluation and saving. With ``resume``, ``out_dir`` is an existing run: its checkpoint is
    restored (adapters, optimizers, schedulers, RNG states, data cursor, an evaluation a stop
    left pending) and training continues to ``cfg.train.steps``, appending to its
    ``events.jsonl``.

    ``stop_after_step``: after that step, save a checkpoint and return with status "paused"
    (no final evaluation, no adapters): one chunk of a run trained in several calls
    (:mod:`lab.jobs.chunks`). ``evaluate=False`` skips every evaluation (the base model's, the eval
    points', the final one); the chunks run them in calls of their own."""
    s = lifecycle.open_session(cfg, out_dir, resume=resume, should_stop=should_stop)
    try:
        yield from lifecycle.setup_arms(s)
        yield from lifecycle.start(s, evaluate)
        step = yield from lifecycle.train_steps(s, stop_after_step, evaluate)
        live = any(a.status == RUNNING for a in s.arms.values())
        if stop_after_step is not None and s.writer.status == RUNNING and live:
            s.writer.pause(s.arms, step, lifecycle.get_rng())
            return
        yield from lifecycle.final(s, step, evaluate)
    except BaseException as e:
        s.writer.failed(e)
        raise
    finally:
        s.writer.close()

"""Tuned learning rates (``train.lr_mode: tuned``): the validation split, the candidates, the
choice and its record.

Before the comparison, every arm of the config is trained for ``train.tune_steps`` steps at
each rate of ``train.lr_grid``. The candidates are arms of one short job on the one base
model (:func:`lab.engine.trainer.tune_lrs`): extra adapters, seed-matched on identical batches, with
one teacher pass per step for the regularized ones. Each arm then trains at the rate whose
candidate has the lowest loss on a validation split carved from the *training* rows
(:func:`carve`): those rows are held out of the tuning and of the comparison, and the test split
is never read (the choice is made before the first evaluation).

The criterion is the task loss alone (the token-weighted cross-entropy of the responses, NLU:
of the labels), in eval mode (no dropout), whatever the arm's regularizers: the rate is chosen
for what the arm is trained to do. A candidate whose loss is not finite is out of the running.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from lab.arms import ArmSpec, make_spec, run_seeds
from lab.config import RunConfig
from lab.datasets import encoding
from lab.engine import forward

VAL_SALT = 7_919  # the validation rows are drawn from train.seed + this, apart from the order
CRITERION = "lowest validation task loss (token-weighted cross-entropy, eval mode)"


class TuningError(ValueError):
    """The sweep chose nothing for an arm (every candidate diverged); names the setting."""


def carve(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, val): ``fraction`` of ``rows`` (at least one) held out as a validation split,
    drawn from ``seed``; both keep the rows' order. Raises when no training row is left."""
    n = len(rows)
    n_val = max(1, round(fraction * n))
    if n - n_val < 1:
        raise encoding.DataError(
            f"train.val_fraction={fraction} leaves no training rows (the set has {n})"
        )
    g = torch.Generator().manual_seed(int(seed) + VAL_SALT)
    held = set(torch.randperm(n, generator=g)[:n_val].tolist())
    train = [r for i, r in enumerate(rows) if i not in held]
    val = [r for i, r in enumerate(rows) if i in held]
    return train, val


def candidate_name(arm: str, lr: float) -> str:
    """The name of one candidate adapter: ``lora|lr=0.001``."""
    return f"{arm}|lr={float(lr)!r}"


def candidates(cfg: RunConfig) -> list[ArmSpec]:
    """One spec per config arm and rate of ``train.lr_grid``, under the run's first seed (so a
    candidate starts from the same init as that seed's arm)."""
    r, seed = cfg.reg, run_seeds(cfg)[0]
    out = []
    for arm in cfg.arms:
        for lr in cfg.train.lr_grid:
            spec = make_spec(arm, lambdas=(r.lambda1, r.lambda2, r.lambda3), lr=lr, seed=seed)
            out.append(replace(spec, name=candidate_name(arm, lr)))
    return out


def val_batches(rows: list[dict], cfg: RunConfig, tokenizer, device) -> list[dict]:
    """The validation rows as batches of ``train.batch_size``, on ``device``."""
    size = cfg.train.batch_size
    out = []
    for i in range(0, len(rows), size):
        b = encoding.make_batch(tokenizer, rows[i : i + size], cfg.task, cfg.train.seq_len)
        out.append(encoding.to_device(b, device))
    return out


def val_loss(model, batches: list[dict], cfg: RunConfig) -> float:
    """The active arm's task loss over every validation batch: the sum of its cross-entropy
    over all response tokens (NLU: rows) divided by their count, in eval mode."""
    total = sum(forward.count(b, cfg.task) for b in batches)
    model.eval()
    loss = 0.0
    with torch.no_grad():
        for b in batches:
            out = forward.micro_batch_loss(
                model, b, cfg, (0.0, 0.0, 0.0), need_terms=False, norm=total
            )
            loss += float(out.total)
    return loss


def record(cfg: RunConfig, losses: dict[str, float], n_val: int) -> dict:
    """``{arm: {chosen, candidates: {lr: val_loss or None}, criterion, n_val, tune_steps,
    seed}}`` from the candidates' validation losses (keyed by :func:`candidate_name`); the
    lowest finite loss wins, a tie goes to the smaller rate."""
    out = {}
    for arm in cfg.arms:
        found = {lr: losses[candidate_name(arm, lr)] for lr in cfg.train.lr_grid}
        finite = [(loss, lr) for lr, loss in found.items() if math.isfinite(loss)]
        if not finite:
            raise TuningError(
                f"train.lr_grid: every candidate rate of arm {arm} diverged within "
                f"{cfg.train.tune_steps} tuning steps; try smaller rates"
            )
        out[arm] = {
            "chosen": min(finite)[1],
            "candidates": {
                repr(float(lr)): (loss if math.isfinite(loss) else None)
                for lr, loss in found.items()
            },
            "criterion": CRITERION,
            "n_val": int(n_val),
            "tune_steps": cfg.train.tune_steps,
            "seed": run_seeds(cfg)[0],
        }
    return out


def recorded(summary: dict, cfg: RunConfig) -> dict:
    """The ``lr_tuning`` record of a run being resumed (its rates are not chosen again)."""
    from lab.engine.checkpoint import ResumeError

    rec = summary.get("lr_tuning")
    if not isinstance(rec, dict) or any(
        not isinstance(rec.get(a), dict) or "chosen" not in rec[a] for a in cfg.arms
    ):
        raise ResumeError("the run has no learning-rate choice for every arm (lr_tuning)")
    return rec


def events(rec: dict) -> list[dict]:
    """One ``lr_tuning`` event per config arm, at step 0: what it chose and why."""
    return [{"arm": arm, "step": 0, "kind": "lr_tuning", **entry} for arm, entry in rec.items()]

"""One training step: an arm (its optimizer, scheduler and dropout stream) and the step of one
seed's arms on one batch.

:func:`train_step` draws the step's micro-batches once, runs the teacher (the base with every
adapter off) once for every arm that needs it, and trains each live arm in turn with
:func:`train_arm_step`; an arm whose loss is not finite gets a ``failed`` event and the others
go on. Every per-token term is divided by :func:`step_norm`, the step's global count of
response tokens (NLU: rows), and the batch terms are computed over the global batch, so any
split into processes and micro-batches gives the full-batch gradient (:mod:`lab.engine.forward`).
The loop around the steps, the evaluations and the run directory are :mod:`lab.engine.trainer`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
from transformers import get_scheduler

from lab.arms import ArmSpec, spec_of
from lab.config import RunConfig
from lab.datasets import encoding
from lab.engine import adapters, forward
from lab.engine.dist import Dist
from lab.engine.forward import micro_batch_loss
from lab.method import losses
from lab.runs import events


@dataclass
class Arm:
    spec: ArmSpec
    model: (
        torch.nn.Module
    )  # the shared PEFT model; :func:`lab.engine.adapters.activate` picks the arm
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


def get_rng() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return (torch.get_rng_state(), cuda)


def set_rng(state: tuple) -> None:
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


def _rows_ahead(model, micro: list[dict], cfg: RunConfig) -> list[torch.Tensor]:
    """Every micro-batch's rows from a no-grad pass with the same dropout noise as the training
    pass that follows (the batch terms' gradient is needed before the first backward)."""
    start = get_rng()
    with torch.no_grad():
        rows = [forward.student_rows(model, b, cfg) for b in micro]
    set_rng(start)
    return rows


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
    (computed here when the arm needs it and it is not given).

    The batch terms are computed once, as soon as every micro-batch's rows are known, and their
    gradient flows into each micro-batch through ``(rows * grad).sum()``. With several
    micro-batches and a weighted batch term, the rows come from a no-grad pass first (the
    gradient is needed before the first backward); otherwise from the training forward itself."""
    t0 = time.perf_counter()
    model = arm.activate()
    lambdas = lambdas_at(cfg, arm.spec, step)
    need_terms = needs_terms(arm, cfg)
    norm = step_norm(micro, cfg, dist) if norm is None else norm
    if need_terms and teacher is None:
        teacher = teacher_step(model, micro, cfg)
    set_rng(arm.rng)  # each arm draws its own dropout noise, seed-matched
    model.train()
    params = adapters.trainable_parameters(model, arm.name)
    ahead = need_terms and _batch_weighted(cfg, lambdas) and len(micro) > 1
    rows = _rows_ahead(model, micro, cfg) if ahead else []
    raw, inactive, grads = {}, {}, None
    if ahead:
        raw, inactive, grads = _global_terms(model, rows, cfg, lambdas, dist, step, arm.seed)
    sums = None  # the per-token parts, on the device: read once, after the loop
    for k, batch in enumerate(micro):
        tk = None if teacher is None else teacher[k]
        out = micro_batch_loss(
            model, batch, cfg, lambdas, need_terms=need_terms, norm=norm, teacher=tk
        )
        total = out.total
        if out.rows is not None:
            if not ahead:
                rows.append(out.rows.detach())
                if len(rows) == len(micro):  # every row known: the batch terms, once
                    raw, inactive, grads = _global_terms(
                        model, rows, cfg, lambdas, dist, step, arm.seed
                    )
            if grads is not None:  # None: no weighted batch term, or every one inactive
                total = total + (out.rows * grads[k]).sum()
        total.backward()  # queued before the one host sync of the step
        part = _per_token_parts(out)
        sums = part if sums is None else sums + part
        del out, total
    del rows
    values = dict(zip(_PER_TOKEN, dist.sum_tensor(sums).tolist()))  # the one host sync
    logged = _logged(values, raw, inactive, lambdas, need_terms, cfg)
    _check_finite(arm, logged, step)
    clipped = _update(arm, params, cfg, dist)
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


_PER_TOKEN = _PARTS[:3]  # summed over micro-batches and processes; the svd term is global


def _per_token_parts(out) -> torch.Tensor:
    """A micro-batch's detached per-token parts as one float64 tensor (0 for an absent one)."""
    parts = [out.values.get(p) for p in _PER_TOKEN]
    zero = out.values["task_loss"].new_zeros(())
    return torch.stack([zero if v is None else v.detach().float() for v in parts]).double()


def _logged(values: dict, raw: dict, inactive: dict, lambdas, need_terms: bool, cfg) -> dict:
    """The train event's loss fields from the summed per-token parts and the batch terms."""
    for term in losses.TERMS:
        if term in raw:
            values[term] = float(raw[term])
    present = {"task_loss"} | ({"consistency", "diversity"} if need_terms else set())
    if cfg.task == "nlu":
        present.discard("diversity")
    present |= set(raw)
    present -= set(inactive)
    return losses.train_values(values, present, lambdas, inactive, need_terms)


def _check_finite(arm: Arm, logged: dict, step: int) -> None:
    """Raise FloatingPointError naming the first non-finite part (its gradients dropped)."""
    for k in ("svd", "diversity", "consistency", "task_loss", "loss"):
        if logged[k] is not None and not math.isfinite(logged[k]):
            arm.optimizer.zero_grad(set_to_none=True)
            what = {"loss": "loss", "task_loss": "task loss"}.get(k, f"{k} term")
            raise FloatingPointError(f"arm {arm.name}: the {what} is not finite at step {step}")


def _update(arm: Arm, params, cfg: RunConfig, dist: Dist) -> dict:
    """Sum the gradients over processes, clip, step the optimizer and the scheduler; returns
    ``{"grad_norm": ...}`` when clipping is on."""
    dist.sum_grads(params)
    clipped = {}
    if cfg.train.max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        clipped["grad_norm"] = float(grad_norm)
    arm.optimizer.step()
    arm.scheduler.step()
    arm.optimizer.zero_grad(set_to_none=True)
    arm.rng = get_rng()
    return clipped


def step_tokens(micro: list[dict], cfg: RunConfig, dist: Dist) -> int:
    """Tokens one step trains on over all processes (the response tokens for NLG)."""
    local = sum(_count_tokens(b, cfg.task) for b in micro)
    return int(dist.sum_tensor(torch.tensor([float(local)], dtype=torch.float64))[0].item())


def _count_tokens(batch: dict, task: str) -> int:
    if task == "nlg":
        return int(batch["reg_mask"].sum())
    return int(batch["attention_mask"].sum())


def micro_batches(
    tok, train_rows: list[dict], indices: list[int], cfg: RunConfig, dist: Dist, device
):
    rows = [train_rows[i] for i in indices]
    mine = rows[dist.acc.process_index :: dist.n]  # this process's share of the global batch
    per = math.ceil(len(mine) / cfg.train.grad_accum)
    out = []
    for i in range(0, len(mine), per):
        b = encoding.make_batch(tok, mine[i : i + per], cfg.task, cfg.train.seq_len)
        out.append(encoding.to_device(b, device))
    return out


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
    return Arm(spec, model, opt, sched, rng=get_rng())


def set_lr(cfg: RunConfig, arm: Arm, lr: float) -> None:
    """Give an arm that has not trained yet a new learning rate (a fresh optimizer and
    scheduler; its dropout stream is kept)."""
    fresh = new_arm(cfg, arm.model, replace(arm.spec, lr=float(lr)), cfg.train.steps)
    arm.spec, arm.optimizer, arm.scheduler = fresh.spec, fresh.optimizer, fresh.scheduler


def train_step(
    group: list[Arm], rows: list[dict], indices: list[int], step: int, cfg, dist, bundle
) -> Iterator[dict]:
    """One step of the arms of one seed on the batch ``indices`` of ``rows``: one teacher pass
    for every arm that needs it, then each live arm in turn; yields their train events (a
    ``failed`` event for an arm whose loss is not finite; the others go on)."""
    live = [a for a in group if a.status == "running"]
    if not live:
        return
    micro = micro_batches(bundle.tokenizer, rows, indices, cfg, dist, bundle.device)
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

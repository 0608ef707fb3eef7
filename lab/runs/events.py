"""The declared schema of the lines of ``events.jsonl``: which keys each kind has, their types,
which are optional.

Every line has ``arm``, ``step`` and ``kind``. The kinds:

- ``train`` (:class:`TrainEvent`): one arm's step: the loss and every term raw and weighted
  (the numbers of :func:`lab.method.losses.train_values`), the lambdas, the learning rate, tokens and
  time. The trainer builds each one through :func:`train_event`.
- ``eval`` (:class:`EvalEvent`): an eval point of an arm, or of the base model (arm ``base``,
  step 0, no seed): the task metric, bias scores with intervals, the analysis summaries.
  Which metrics it holds depends on the task, the data and the settings; each is optional.
- ``failed`` (:class:`FailedEvent`): an arm whose loss stopped being finite.
- ``lr_tuning`` (:class:`LrTuningEvent`): the learning-rate choice of an arm (``lab.engine.tuning``).

A key that is not declared, a missing required key or a value of the wrong type fails
:func:`validate`. Types are strict (no silent conversion), so a validated event is written to
disk exactly as it was built.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_STRICT = ConfigDict(extra="forbid", strict=True)


class _Event(BaseModel):
    model_config = _STRICT

    arm: str
    step: Annotated[int, Field(ge=0)]

    def dump(self) -> dict:
        """The event as the dict written to ``events.jsonl`` (keys in declaration order; an
        optional key that was not given is left out)."""
        return self.model_dump(exclude_unset=True)


class Terms(BaseModel):
    """The three BA-LoRA terms; None: inactive or not computed."""

    model_config = _STRICT

    consistency: float | None
    diversity: float | None
    svd: float | None


class Lambdas(BaseModel):
    """The weights of the terms at this step (schedules applied)."""

    model_config = _STRICT

    lambda1: float
    lambda2: float
    lambda3: float


class TrainEvent(_Event):
    kind: Literal["train"]
    task_loss: float
    consistency: float | None  # raw terms; None: inactive (reason in ``inactive``)
    diversity: float | None
    svd: float | None
    loss: float  # task_loss + the weighted active terms (lab.method.losses)
    weighted: Terms  # lambda x raw
    lambdas: Lambdas
    inactive: dict[str, str]  # term -> why it is not there
    seed: int | None  # the arm's training seed
    grad_norm: float | None = None  # only when train.max_grad_norm > 0 (before clipping)
    lr: float
    tokens: Annotated[int, Field(ge=0)]  # trained on so far by this arm (all processes)
    seconds: float  # wall time of this arm's step


class Score(BaseModel):
    """A statistic with its confidence interval and item count."""

    model_config = _STRICT

    value: float
    ci_low: float
    ci_high: float
    n: int


class EvalEvent(_Event):
    kind: Literal["eval"]
    # the task (lab.datasets.metrics.evaluate_task)
    task_metric: float | None = None
    accuracy: float | None = None
    n: int | None = None
    exact_match: float | None = None
    balanced_accuracy: float | None = None
    minority_recall: float | None = None
    memorised_noise: float | None = None
    # bias scores (lab.bias): name -> score
    bias: dict[str, Score] | None = None
    # the analysis (lab.analysis.snapshot.Snapshot.summary) and forgetting
    kl_to_base: float | None = None
    kl_to_base_max_text: float | None = None
    eff_rank_output: float | None = None
    stable_rank_output: float | None = None
    topk_energy_output: float | None = None
    eff_rank_features: float | None = None
    adapter_eff_rank_mean: float | None = None
    adapter_stable_rank_mean: float | None = None
    adapter_norm_mean: float | None = None
    intruders_total: float | None = None
    heldout_ce: float | None = None
    seconds: float
    seed: int | None = None  # absent for the base model

    # recall/<label> for each class present: the one family of keys named by the data
    model_config = ConfigDict(extra="allow", strict=True)

    @model_validator(mode="after")
    def _recalls(self) -> EvalEvent:
        for key, value in (self.model_extra or {}).items():
            if not key.startswith(RECALL):
                raise ValueError(f"eval events have no key {key!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{key} must be a number, got {type(value).__name__}")
        return self


RECALL = "recall/"


class FailedEvent(_Event):
    kind: Literal["failed"]
    error: str
    seed: int | None


class LrTuningEvent(_Event):
    kind: Literal["lr_tuning"]
    chosen: float
    candidates: dict[str, float | None]  # repr(lr) -> validation loss (None: diverged)
    criterion: str
    n_val: int
    tune_steps: int
    seed: int | None


KINDS: dict[str, type[_Event]] = {
    "train": TrainEvent,
    "eval": EvalEvent,
    "failed": FailedEvent,
    "lr_tuning": LrTuningEvent,
}


def validate(event: dict) -> _Event:
    """The event as its declared model; raises ``ValueError`` (pydantic's ValidationError)
    for an unknown kind, a missing or undeclared key, or a value of the wrong type."""
    kind = event.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind].model_validate(event)


def train_event(**fields) -> dict:
    """A ``train`` event built through :class:`TrainEvent` (checked), as the dict to write."""
    return TrainEvent(kind="train", **fields).dump()

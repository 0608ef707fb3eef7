"""Arms as data: the one spec per arm that the trainer, the UI, the colours and the plots read.

An arm is named in a config's ``arms`` list:

- ``lora``    LoRA init, no regularizers
- ``pissa``   PiSSA init, no regularizers (separates the init from the regularizers)
- ``balora``  PiSSA init + the three BA-LoRA terms with the run's ``reg.lambda1..3``
- ``balora@L1,L2,L3``  the same with its own weights, e.g. ``balora@0.05,0.005,0.005``; a run
  may hold several (a lambda grid trained as arms of one job, sharing one teacher pass a step)

The display name is the string as written; :attr:`ArmSpec.folder` is a name that is safe as a
folder and as a PEFT adapter name (no dots), e.g. ``balora@0.05,0.005,0.005`` ->
``balora-0p05_0p005_0p005``. An arm's learning rate is ``train.lr`` unless
``train.lr_by_arm`` names it (by its display name, or by its kind: ``balora`` covers every
``balora@...`` arm not named itself).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

KINDS = ("lora", "pissa", "balora")  # the plain arm names, in display order
CHOICES = KINDS  # what the UI offers as arm check boxes
_KIND = {"lora": ("lora", False), "pissa": ("pissa", False), "balora": ("pissa", True)}


def _snippet(value: object, n: int = 60) -> str:
    """``repr`` cut to ``n`` characters: an error never echoes a long input."""
    text = repr(value)
    return text if len(text) <= n else text[:n] + f"… ({len(text)} characters)"


class ArmError(ValueError):
    """A malformed or unknown arm name; :class:`lab.config.ConfigError` re-raises it naming it."""


@dataclass(frozen=True)
class ArmSpec:
    name: str  # display name, as written in the config
    kind: str  # lora | pissa | balora
    init: str  # lora | pissa
    regularized: bool
    lambdas: tuple[float, float, float]  # (consistency, diversity, svd) weights before schedules
    lr: float

    @property
    def folder(self) -> str:
        return folder_name(self.name)


def folder_name(name: str) -> str:
    """A folder / PEFT adapter name for an arm: letters, digits, ``_`` and ``-`` only."""
    if "@" not in name:
        return name
    kind, _, rest = name.partition("@")
    return f"{kind}-" + rest.replace(".", "p").replace(",", "_").replace("+", "")


def split(name: str) -> tuple[str, tuple[float, float, float] | None]:
    """``"balora@0.05,0.005,0.005"`` -> ("balora", (0.05, 0.005, 0.005)); raises ArmError."""
    if not isinstance(name, str) or not name.strip():
        raise ArmError(f"arm {_snippet(name)}: empty name")
    kind, at, rest = name.strip().partition("@")
    if kind not in _KIND:
        raise ArmError(
            f"unknown arm {_snippet(name)} (known: {', '.join(KINDS)}, or balora@L1,L2,L3)"
        )
    if not at:
        return kind, None
    if not _KIND[kind][1]:
        raise ArmError(
            f"arm {_snippet(name)}: only regularized arms (balora) take @L1,L2,L3 weights"
        )
    parts = rest.split(",")
    if len(parts) != 3:
        raise ArmError(
            f"arm {_snippet(name)}: expected three weights after @, e.g. balora@0.05,0.005,0.005"
        )
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ArmError(f"arm {_snippet(name)}: the weights after @ must be numbers") from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ArmError(f"arm {_snippet(name)}: the weights must be finite and 0 or more")
    if not re.fullmatch(r"[A-Za-z0-9_.,+\-@]+", name):
        raise ArmError(f"arm {_snippet(name)}: unexpected characters")
    return kind, values  # type: ignore[return-value]


def kind_of(name: str) -> str | None:
    """The kind (lora, pissa, balora) of an arm name; None for a name that is no arm."""
    try:
        return split(name)[0]
    except ArmError:
        return None


def split_list(text: str) -> list[str]:
    """``"lora,balora@0.05,0.005,0.005"`` -> ["lora", "balora@0.05,0.005,0.005"]: a comma
    separates arms except inside the three weights after an ``@``."""
    parts = re.findall(r"[^,@\s]+@[^,]*,[^,]*,[^,]*|[^,]+", text)
    return [p.strip() for p in parts if p.strip()]


def make_spec(
    name: str,
    *,
    lambdas: tuple[float, float, float],
    lr: float,
    lr_by_arm: dict[str, float] | None = None,
) -> ArmSpec:
    """The spec of arm ``name``; ``lambdas`` and ``lr`` are the run's defaults."""
    kind, own = split(name)
    init, regularized = _KIND[kind]
    lr_map = lr_by_arm or {}
    arm_lr = float(lr_map.get(name, lr_map.get(kind, lr)))
    lam = own if own is not None else tuple(float(x) for x in lambdas)
    if not regularized:
        lam = (0.0, 0.0, 0.0)
    return ArmSpec(name, kind, init, regularized, lam, arm_lr)  # type: ignore[arg-type]


def specs(cfg) -> list[ArmSpec]:
    """Every arm of a :class:`lab.config.RunConfig`, in the config's order."""
    r = cfg.reg
    return [
        make_spec(
            a,
            lambdas=(r.lambda1, r.lambda2, r.lambda3),
            lr=cfg.train.lr,
            lr_by_arm=cfg.train.lr_by_arm,
        )
        for a in cfg.arms
    ]


def spec_of(cfg, name: str) -> ArmSpec:
    """The spec of one arm of ``cfg`` by display name (also for a name not in ``cfg.arms``)."""
    r = cfg.reg
    return make_spec(
        name,
        lambdas=(r.lambda1, r.lambda2, r.lambda3),
        lr=cfg.train.lr,
        lr_by_arm=cfg.train.lr_by_arm,
    )


def grid_name(l1: float, l2: float, l3: float) -> str:
    """The arm name of one lambda-grid point: ``balora@L1,L2,L3`` (shortest float text)."""
    return "balora@" + ",".join(_short(x) for x in (l1, l2, l3))


def grid_arms(points, *, with_baselines: bool = False) -> list[str]:
    """The ``arms`` list of a lambda grid trained as one job: one ``balora@...`` per point
    (duplicates dropped, order kept), after ``lora`` and ``pissa`` when ``with_baselines``."""
    out = ["lora", "pissa"] if with_baselines else []
    for p in points:
        name = grid_name(*p)
        if name not in out:
            out.append(name)
    return out


def _short(x: float) -> str:
    return repr(float(x)).removesuffix(".0") if float(x).is_integer() else repr(float(x))


def order_key(name: str) -> tuple[int, str]:
    """Sort key: ``base``, then ``lora``, ``pissa``, ``balora``, then ``balora@...`` and others."""
    kind = name.partition("@")[0]
    order = ("base", *KINDS)
    if name in order:
        return (order.index(name), "")
    if kind in order:
        return (order.index(kind), name)
    return (len(order), name)

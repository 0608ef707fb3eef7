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

Seeds. With several ``train.seeds`` every arm is trained once per seed in the same job; each
copy is an arm of its own, named ``<arm>#s<seed>`` (``lora#s1``, ``balora@0.1,0,0#s2``; folder
``lora-s1``), with its ``seed`` field set. :func:`kind_of`, :func:`order_key` and the colours
read through the suffix; :func:`unseeded` splits it off. A run with one seed keeps the plain
names.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

KINDS = ("lora", "pissa", "balora")  # the plain arm names, in display order
ARMS = KINDS  # the plain arm names; ``balora@L1,L2,L3`` adds regularized variants
ARM_ORDER = ("base", *KINDS)  # display order of arms in files, tables and figures
# the names a reader sees (tables, verdicts, the Setup form's check boxes)
ARM_NAMES = {"lora": "LoRA", "pissa": "PiSSA", "balora": "BA-LoRA", "base": "the base model"}
MAX_ARMS = 99  # adapters on one base model (lab.engine.adapters names them with two digits)
MAX_SEEDS = 16  # train.seeds of one run
SEED_MARK = "#s"  # lora#s1: arm lora trained with seed 1
_SEEDED = re.compile(r"^(?P<arm>.+)#s(?P<seed>\d{1,10})$")
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
    seed: int | None = None  # the training seed (data order, dropout, init); None: the run's

    @property
    def folder(self) -> str:
        return folder_name(self.name)

    @property
    def plain(self) -> str:
        """The arm as the config names it (``lora#s1`` -> ``lora``)."""
        return unseeded(self.name)[0]


def seeded_name(name: str, seed: int) -> str:
    """``("lora", 1)`` -> ``"lora#s1"``: the arm ``name`` trained with ``seed``."""
    return f"{name}{SEED_MARK}{int(seed)}"


def unseeded(name: str) -> tuple[str, int | None]:
    """``"lora#s1"`` -> ("lora", 1); a name without the seed suffix -> (name, None)."""
    m = _SEEDED.match(name) if isinstance(name, str) else None
    return (m["arm"], int(m["seed"])) if m else (name, None)


def run_seeds(cfg) -> list[int]:
    """The training seeds of a :class:`lab.config.RunConfig`: ``train.seeds``, or
    ``[train.seed]`` when that list is empty."""
    return [int(s) for s in cfg.train.seeds] or [int(cfg.train.seed)]


def folder_name(name: str) -> str:
    """A folder / PEFT adapter name for an arm: letters, digits, ``_`` and ``-`` only
    (``balora@0.1,0,0#s2`` -> ``balora-0p1_0_0-s2``)."""
    plain, seed = unseeded(name)
    tail = "" if seed is None else f"-s{seed}"
    if "@" not in plain:
        return plain + tail
    kind, _, rest = plain.partition("@")
    return f"{kind}-" + rest.replace(".", "p").replace(",", "_").replace("+", "") + tail


def split(name: str) -> tuple[str, tuple[float, float, float] | None]:
    """``"balora@0.05,0.005,0.005"`` -> ("balora", (0.05, 0.005, 0.005)); raises ArmError.
    A seed suffix (``#s1``) is read through."""
    if not isinstance(name, str) or not name.strip():
        raise ArmError(f"arm {_snippet(name)}: empty name")
    name = unseeded(name.strip())[0]
    kind, at, rest = name.partition("@")
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
    seed: int | None = None,
) -> ArmSpec:
    """The spec of arm ``name``; ``lambdas`` and ``lr`` are the run's defaults. ``lr_by_arm``
    is looked up by the name without its seed suffix, then by kind. A seeded name
    (``lora#s1``) sets ``seed`` from its suffix."""
    kind, own = split(name)
    plain, tagged = unseeded(name.strip())
    if tagged is not None and seed is not None and tagged != seed:
        raise ArmError(f"arm {_snippet(name)}: the name says seed {tagged}, not {seed}")
    init, regularized = _KIND[kind]
    lr_map = lr_by_arm or {}
    arm_lr = float(lr_map.get(plain, lr_map.get(kind, lr)))
    lam = own if own is not None else tuple(float(x) for x in lambdas)
    if not regularized:
        lam = (0.0, 0.0, 0.0)
    arm_seed = tagged if seed is None else seed
    return ArmSpec(name, kind, init, regularized, lam, arm_lr, arm_seed)  # type: ignore[arg-type]


def specs(cfg, lrs: dict[str, float] | None = None) -> list[ArmSpec]:
    """Every arm of a :class:`lab.config.RunConfig`: the config's arms in order, once per seed
    (seed by seed; named ``<arm>#s<seed>`` when the run has several). ``lrs``: learning rates
    by config arm name that replace ``train.lr`` / ``train.lr_by_arm`` (the tuned rates)."""
    seeds = run_seeds(cfg)
    r = cfg.reg
    return [
        make_spec(
            a if len(seeds) == 1 else seeded_name(a, seed),
            lambdas=(r.lambda1, r.lambda2, r.lambda3),
            lr=cfg.train.lr,
            lr_by_arm=lrs if lrs is not None else cfg.train.lr_by_arm,
            seed=seed,
        )
        for seed in seeds
        for a in cfg.arms
    ]


def spec_of(cfg, name: str) -> ArmSpec:
    """The spec of one arm of ``cfg`` by display name (also for a name not in ``cfg.arms``)."""
    r = cfg.reg
    _, seed = unseeded(name)
    return make_spec(
        name,
        lambdas=(r.lambda1, r.lambda2, r.lambda3),
        lr=cfg.train.lr,
        lr_by_arm=cfg.train.lr_by_arm,
        seed=run_seeds(cfg)[0] if seed is None else seed,
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
    """Sort key: ``base``, then ``lora``, ``pissa``, ``balora``, then ``balora@...`` and others;
    the copies of one arm (``lora#s0``, ``lora#s1``) together, by seed."""
    plain, seed = unseeded(name)
    tail = "" if seed is None else f"#{seed:010d}"
    kind = plain.partition("@")[0]
    order = ARM_ORDER
    if plain in order:
        return (order.index(plain), tail)
    if kind in order:
        return (order.index(kind), plain + tail)
    return (len(order), plain + tail)


arm_key = order_key  # the sort key of arms in files, tables and figures

"""Run configuration: dataclass defaults, YAML presets as small diffs, strict validation.

A preset is a YAML mapping of sections (``model``, ``data``, ``lora``, ``reg``, ``train``) plus
the top-level keys ``name``, ``task`` and ``arms``. Every key must exist in the dataclasses; an
unknown key or a bad value raises :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from lab import arms as arm_specs

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
TASKS = ("nlg", "nlu")
# reg.teacher_dtype: each choice with the label the Setup tab shows
TEACHER_CHOICES = {
    "model": "exact: the loaded model itself (default)",
    "bfloat16": "bf16 autocast: faster where bf16 is native; not exact (opt-in speed setting)",
    "auto": "bf16 for an fp32 model on native-bf16 hardware, else exact (opt-in speed setting)",
}

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,2})?)$")


class ConfigError(ValueError):
    """A bad preset, key or value; the message names the field."""


MAX_INT = 2**53  # integers beyond exact float range are never a meaningful setting
SNIPPET = 60  # an error echoes at most this many characters of the value it rejects


def short_repr(value: Any) -> str:
    """``repr`` of a value cut to a short piece, so an error never echoes a large input."""
    text = repr(value)
    return text if len(text) <= SNIPPET else text[:SNIPPET] + f"… ({len(text)} characters)"


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors and aliases: an alias bomb (a few hundred bytes that
    expand to gigabytes) is refused before it is expanded."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
            raise ConfigError("YAML anchors and aliases (&name, *name) are not accepted")
        return super().compose_node(parent, index)


def safe_yaml(text: str) -> Any:
    """Parse YAML text as plain data, refusing anchors and aliases."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


# ---- declared constraints ----------------------------------------------------------------------
# Each field's bounds and choices are declared once, in its dataclass field's metadata:
#   ge / gt: lower bound (inclusive / exclusive); le / lt: upper bound (inclusive / exclusive);
#   choices: the allowed values; zero: what 0 means, in the message ("0 (off) or more").
# ``validate`` checks them, and the Setup form reads them for its slider ranges and choices
# (``rules(path)``); the data loader reads the same bound (``check_value``). Rules that relate
# several fields stay as code in ``validate``.

SEED_MAX = 2**31 - 1  # a training seed: 0 to this
DTYPES = ("auto", "float32", "bfloat16", "float16")


def setting(default: Any, **rules: Any) -> Any:
    """A dataclass field with its default and its declared constraints (see above) in
    ``metadata``."""
    unknown = set(rules) - {"ge", "gt", "le", "lt", "choices", "zero"}
    if unknown:
        raise TypeError(f"unknown constraint(s): {', '.join(sorted(unknown))}")
    if "choices" in rules:
        rules["choices"] = tuple(rules["choices"])
    return field(default=default, metadata=rules)


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def rule_text(rules: Mapping[str, Any]) -> str | None:
    """What the declared ``rules`` ask of a value, as an error message says it ("must be ...")."""
    if "choices" in rules:
        return f"must be one of {', '.join(map(str, rules['choices']))}"
    lo = rules.get("ge", rules.get("gt"))
    hi = rules.get("le", rules.get("lt"))
    if lo is not None and hi is not None:
        left = "[" if "ge" in rules else "("
        right = "]" if "le" in rules else ")"
        return f"must be in {left}{_num(lo)}, {_num(hi)}{right}"
    if "gt" in rules:
        return "must be positive" if rules["gt"] == 0 else f"must be more than {_num(rules['gt'])}"
    if "ge" in rules:
        if rules["ge"] == 0:
            zero = f" ({rules['zero']})" if "zero" in rules else ""
            return f"must be 0{zero} or more"
        return f"must be at least {_num(rules['ge'])}"
    if hi is not None:
        return f"must be at most {_num(hi)}" if "le" in rules else f"must be below {_num(hi)}"
    return None


def broken(value: Any, rules: Mapping[str, Any]) -> str | None:
    """The message for a ``value`` that breaks its declared ``rules`` (None when it keeps them)."""
    if "choices" in rules:
        ok = value in rules["choices"]
        return None if ok else f"{rule_text(rules)}, got {short_repr(value)}"
    ok = (
        ("ge" not in rules or value >= rules["ge"])
        and ("gt" not in rules or value > rules["gt"])
        and ("le" not in rules or value <= rules["le"])
        and ("lt" not in rules or value < rules["lt"])
    )
    return None if ok else rule_text(rules)


@dataclass
class ModelConfig:
    name: str = (
        "smollm2-135m"  # embedded name, hub id, local directory, or "tiny-llama"/"tiny-bert"
    )
    dtype: str = setting("auto", choices=DTYPES)  # auto (CUDA: bf16, CPU: fp32) | float32 | ...
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    load_in_4bit: bool = False  # QLoRA-style NF4 base weights through bitsandbytes (CPU or CUDA)
    seed: int = 0  # seed of the weights of tiny random models


@dataclass
class DataConfig:
    name: str = "sentiment"  # shipped set, a .jsonl/.csv path, or a hub dataset id
    columns: dict[str, str] = field(default_factory=dict)  # e.g. {"prompt": "question"}
    label_noise: float = setting(0.0, ge=0, lt=1)  # fraction of training labels flipped (seeded)
    # 0 = keep the balance; else the minority share in training (below one half: a minority)
    minority_fraction: float = setting(0.0, ge=0, lt=0.5)
    minority_class: str = ""  # the class made rare by minority_fraction ("" = the last class)
    max_train: int = setting(2000, ge=1)
    max_eval: int = setting(64, ge=1)  # test examples scored at each eval point


@dataclass
class LoraConfig:
    rank: int = setting(8, ge=1)
    alpha: float = setting(16.0, gt=0)
    dropout: float = setting(0.0, ge=0, lt=1)
    target_modules: list[str] = field(default_factory=lambda: ["auto"])  # auto: per architecture
    # power iterations of the fast randomized PiSSA init (0 = exact SVD)
    pissa_niter: int = setting(4, ge=0)


@dataclass
class RegConfig:
    lambda1: float = setting(0.025, ge=0)  # consistency weight
    lambda2: float = setting(0.005, ge=0)  # diversity weight
    lambda3: float = setting(0.005, ge=0)  # svd weight
    temperature: float = setting(2.0, gt=0)
    top_k: int = setting(20, ge=2)
    svd_k: int = setting(10, ge=1)
    svd_norm: str = setting("frobenius", choices=("frobenius", "nuclear"))
    svd_target: str = setting("logits", choices=("logits", "features"))
    # constant | cosine (decays to 0.1 * lambda1)
    lambda1_schedule: str = setting("constant", choices=("constant", "cosine"))
    # fraction of steps with lambda2 = lambda3 = 0 (two-phase)
    lambda23_warmup: float = setting(0.0, ge=0, lt=1)
    # model: the teacher is exactly the loaded model (default). bfloat16 / auto are opt-in speed
    # settings: bf16 autocast always / for an fp32 model on native-bf16 hardware (not exact).
    teacher_dtype: str = setting("model", choices=TEACHER_CHOICES)


@dataclass
class TrainConfig:
    steps: int = setting(30, ge=1)
    batch_size: int = setting(4, ge=1)
    grad_accum: int = setting(1, ge=1)
    seq_len: int = setting(128, ge=8)
    lr: float = setting(2e-4, gt=0)
    lr_by_arm: dict[str, float] = field(default_factory=dict)  # e.g. {pissa: 1e-4}
    # fixed: train.lr / lr_by_arm. tuned: a short sweep of lr_grid per arm first, each arm's
    # rate chosen by its loss on a validation split carved from the training data
    lr_mode: str = setting("fixed", choices=("fixed", "tuned"))
    lr_grid: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3])
    tune_steps: int = setting(10, ge=0)  # steps of each candidate rate in lr_mode tuned
    # share of the training rows held out (never trained on) to choose the rate
    val_fraction: float = setting(0.1, ge=0, lt=1)
    # clip each arm's adapter gradient norm to this (0 = off)
    max_grad_norm: float = setting(0.0, ge=0, zero="off")
    scheduler: str = setting("cosine", choices=("constant", "linear", "cosine"))
    warmup_ratio: float = setting(0.03, ge=0, lt=1)
    weight_decay: float = setting(0.0, ge=0)
    seed: int = 0
    seeds: list[int] = field(default_factory=list)  # every arm once per seed ([] = [seed])
    eval_every: int = setting(0, ge=0)  # 0 = evaluate at the start and the end only
    bias_eval: bool = True  # bias probes at each eval point
    bias_items: int = setting(0, ge=0)  # items per bias probe at eval points (0 = all)
    analysis: bool = True  # spectra, hidden states and drift at each eval point
    probe_size: int = setting(64, ge=2)  # held-out texts for drift, spectra and t-SNE
    log_terms: bool = True  # also log the (unweighted) terms of the lora and pissa arms


@dataclass
class BiasConfig:
    """Published bias benchmarks scored at every eval point (paths; "" = off)."""

    crows_pairs: str = ""  # CrowS-Pairs CSV (sent_more, sent_less, stereo_antistereo, bias_type)
    bbq: str = ""  # BBQ JSONL (context, question, ans0-ans2, label, context_condition, ...)
    winogender: str = ""  # WinoGender-style templates (occupation, participant, answer, sentence)
    winogender_stats: str = ""  # occupation,women_pct[,source] for the WinoGender correlation


@dataclass
class RunConfig:
    name: str = "custom"
    task: str = setting("nlg", choices=TASKS)  # nlg (causal LM) | nlu (sequence classification)
    arms: list[str] = field(default_factory=lambda: list(arm_specs.ARMS))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    bias: BiasConfig = field(default_factory=BiasConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# NLU defaults of the paper, applied when a preset says task: nlu and leaves them unset.
NLU_REG_DEFAULTS = {
    "lambda1": 0.15,
    "lambda2": 0.03,
    "lambda3": 0.03,
    "svd_k": 5,
    "svd_norm": "nuclear",
}


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the declared type or raise naming ``where``."""
    origin = get_origin(typ)
    if origin is list:
        (item,) = get_args(typ)
        if isinstance(value, str) and where == "arms":
            value = arm_specs.split_list(value)
        elif isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {short_repr(value)}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {short_repr(value)}")
        _, item = get_args(typ)
        return {str(k): _coerce(v, item, f"{where}.{short_repr(str(k))}") for k, v in value.items()}
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {short_repr(value)}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {short_repr(value)}")
        out = None
        if isinstance(value, int):
            out = value
        elif isinstance(value, float) and value.is_integer():
            out = int(value)
        elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            digits = value.strip().lstrip("+-")
            out = int(value) if len(digits) <= len(str(MAX_INT)) else MAX_INT + 1
        if out is None:
            raise ConfigError(f"{where}: expected an integer, got {short_repr(value)}")
        if abs(out) > MAX_INT:
            raise ConfigError(f"{where}: {short_repr(value)} is too large (at most {MAX_INT})")
        return out
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {short_repr(value)}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {short_repr(value)}") from None
        if not math.isfinite(out):
            raise ConfigError(f"{where}: expected a finite number, got {short_repr(value)}")
        return out
    if typ is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{where}: expected text, got {short_repr(value)}")
        return str(value)
    raise ConfigError(f"{where}: unsupported type {typ}")


def _apply(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        where = f"{prefix}{key}"
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"unknown key {short_repr(where)} (known here: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping of {type(current).__name__} fields")
            _apply(current, value, prefix=f"{where}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], where))


def _field(path: str) -> dataclasses.Field:
    """The dataclass field of a config path such as ``data.minority_fraction``."""
    cls: Any = RunConfig
    *sections, name = path.split(".")
    for part in sections:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields or not dataclasses.is_dataclass(get_type_hints(cls)[part]):
            raise KeyError(f"no config section {path!r}")
        cls = get_type_hints(cls)[part]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise KeyError(f"no config field {path!r}")
    return fields[name]


def rules(path: str) -> dict[str, Any]:
    """The declared constraints of one field (``{"ge": 0, "lt": 0.5}``, ``{"choices": ...}``,
    or ``{}``), by its config path."""
    return dict(_field(path).metadata)


def check_value(path: str, value: Any) -> str | None:
    """``"must be in [0, 0.5)"`` when ``value`` breaks the declared constraints of ``path``,
    else None: the same rule for every reader of the field."""
    return broken(value, rules(path))


def declared(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, Mapping[str, Any]]]:
    """(path, value, constraints) of every field of ``obj`` that declares some, sections
    included, in declaration order."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from declared(value, f"{prefix}{f.name}.")
        elif f.metadata:
            yield f"{prefix}{f.name}", value, f.metadata


def validate(cfg: RunConfig) -> RunConfig:
    """Check every field against its declared constraints, then the rules that relate several
    fields; raise naming the field."""

    def need(cond: bool, where: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{where}: {msg}")

    for where, value, declared_rules in declared(cfg):
        msg = broken(value, declared_rules)
        need(msg is None, where, str(msg))
    need(len(cfg.arms) > 0, "arms", "at least one arm is needed")
    for arm in cfg.arms:
        need(
            arm_specs.unseeded(arm)[1] is None,
            "arms",
            f"{short_repr(arm)}: the seed suffix is added by train.seeds; list the arm without it",
        )
        try:
            arm_specs.split(arm)
        except arm_specs.ArmError as e:
            raise ConfigError(f"arms: {e}") from None
    folders = [arm_specs.folder_name(a) for a in cfg.arms]
    need(len(set(folders)) == len(folders), "arms", "an arm is listed twice")
    for key, lr in cfg.train.lr_by_arm.items():
        kinds = {a.partition("@")[0] for a in cfg.arms}
        need(key in cfg.arms or key in kinds, f"train.lr_by_arm.{key}", "names no arm of this run")
        need(lr > 0, f"train.lr_by_arm.{key}", "must be positive")
    need(bool(cfg.model.name.strip()), "model.name", "must not be empty")
    need(
        bool(DEVICE.match(cfg.model.device)),
        "model.device",
        f"must be auto, cpu, cuda, cuda:N or mps, got {short_repr(cfg.model.device)}",
    )
    need(bool(cfg.data.name.strip()), "data.name", "must not be empty")
    need(len(cfg.lora.target_modules) > 0, "lora.target_modules", "must name at least one module")
    _validate_seeds(cfg, need)
    _validate_lr_tuning(cfg, need)
    uses_bias = any(dataclasses.astuple(cfg.bias))
    need(cfg.task == "nlg" or not uses_bias, "bias", "the benchmarks need task nlg (an LM head)")
    need(bool(cfg.bias.winogender) or not cfg.bias.winogender_stats, "bias.winogender_stats",
         "needs bias.winogender (the templates)")  # fmt: skip
    return cfg


def _validate_seeds(cfg: RunConfig, need) -> None:
    seeds = cfg.train.seeds
    for i, seed in enumerate(seeds):
        need(0 <= seed <= SEED_MAX, f"train.seeds[{i}]", f"must be in [0, {SEED_MAX}], got {seed}")
    need(
        len(set(seeds)) == len(seeds),
        "train.seeds",
        f"a seed is listed twice ({', '.join(str(s) for s in seeds)})",
    )
    need(len(seeds) <= arm_specs.MAX_SEEDS, "train.seeds",
         f"at most {arm_specs.MAX_SEEDS} seeds in one run, got {len(seeds)}")  # fmt: skip
    trained = len(cfg.arms) * max(1, len(seeds))
    need(
        trained <= arm_specs.MAX_ARMS,
        "train.seeds",
        f"{len(cfg.arms)} arms x {len(seeds)} seeds = {trained} adapters, over the limit of "
        f"{arm_specs.MAX_ARMS} on one base model",
    )


def _validate_lr_tuning(cfg: RunConfig, need) -> None:
    t = cfg.train
    for i, lr in enumerate(t.lr_grid):
        need(lr > 0, f"train.lr_grid[{i}]", f"a learning rate must be positive, got {lr}")
    need(len(set(t.lr_grid)) == len(t.lr_grid), "train.lr_grid", "a learning rate is listed twice")
    if t.lr_mode != "tuned":
        return
    need(len(t.lr_grid) > 0, "train.lr_grid", "lr_mode tuned needs at least one learning rate")
    need(t.tune_steps >= 1, "train.tune_steps", "must be at least 1 in lr_mode tuned")
    need(0.0 < t.val_fraction <= 0.5, "train.val_fraction",
         f"must be in (0, 0.5] in lr_mode tuned, got {t.val_fraction}")  # fmt: skip
    need(not t.lr_by_arm, "train.lr_by_arm",
         "lr_mode tuned chooses every arm's rate; leave lr_by_arm empty or use lr_mode fixed")  # fmt: skip
    adapters = len(cfg.arms) * (max(1, len(t.seeds)) + len(t.lr_grid))
    need(
        adapters <= arm_specs.MAX_ARMS,
        "train.lr_grid",
        f"{len(cfg.arms)} arms x ({max(1, len(t.seeds))} seeds + {len(t.lr_grid)} candidate "
        f"rates) = {adapters} adapters, over the limit of {arm_specs.MAX_ARMS} on one base model",
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = safe_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"preset {path.name}: not valid YAML{line}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"preset {path.name}: not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {path}: expected a mapping at the top level")
    return data


def preset_path(name_or_path: str | Path) -> Path:
    """Resolve a preset name (``presets/NAME.yaml``) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    if str(name_or_path) not in list_presets():
        raise ConfigError(
            f"unknown preset {short_repr(str(name_or_path))} (known: {', '.join(list_presets())}, "
            "or a path to a .yaml file)"
        )
    candidate = PRESETS_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    raise ConfigError(
        f"unknown preset '{name_or_path}' (known: {', '.join(list_presets())}, or a path to a .yaml file)"
    )


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


MAX_OVERRIDE_CHARS = (
    20_000  # one key=value item; the app's own limits are stricter (lab.jobs.hosting)
)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["reg.lambda1=0", "arms=lora,balora"]`` -> nested dict, values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"override {short_repr(item)}: expected key=value")
        if len(item) > MAX_OVERRIDE_CHARS:
            raise ConfigError(
                f"override {short_repr(item)}: longer than {MAX_OVERRIDE_CHARS} characters"
            )
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {short_repr(item)}: empty key")
        try:
            value = safe_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        except ConfigError as e:
            raise ConfigError(f"override {short_repr(item)}: {e}") from None
        except ValueError:  # e.g. an integer literal with more digits than Python converts
            raise ConfigError(
                f"override {short_repr(item)}: the value is not a usable number"
            ) from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override {short_repr(item)}: {short_repr(part)} is not a section"
                )
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a config from a (possibly partial) nested mapping."""
    cfg = RunConfig()
    data = dict(data)
    if data.get("task") == "nlu":
        reg = dict(data.get("reg") or {})
        for k, v in NLU_REG_DEFAULTS.items():
            reg.setdefault(k, v)
        data["reg"] = reg
    _apply(cfg, data)
    return validate(cfg)


def load_preset(
    name_or_path: str | Path, overrides: dict[str, Any] | list[str] | None = None
) -> RunConfig:
    """Load a preset and apply overrides (a nested dict or ``key=value`` strings)."""
    data = _read_yaml(preset_path(name_or_path))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    if overrides:
        data = _merge(data, overrides)
    return from_dict(data)


def load_config_file(path: str | Path) -> RunConfig:
    """Load a fully resolved ``config.yaml`` written with a run."""
    return from_dict(_read_yaml(Path(path)))


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.dump(cfg.to_dict(), Dumper=_NoAliasDumper, sort_keys=False)

"""Run configuration: dataclass defaults, YAML presets as small diffs, strict validation.

A preset is a YAML mapping of sections (``model``, ``data``, ``lora``, ``reg``, ``train``) plus
the top-level keys ``name``, ``task`` and ``arms``. Every key must exist in the dataclasses; an
unknown key or a bad value raises :class:`ConfigError` naming the field. Each field is declared
once with :func:`lab.fields.setting`: its default, bounds, choices, label and help text.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from lab import arms as arm_specs
from lab.fields import (  # noqa: F401  (re-exported: every reader imports them from here)
    MAX_INT,
    SNIPPET,
    ConfigError,
    broken,
    broken_items,
    coerce,
    constraints,
    leaves,
    rows_of,
    rule_text,
    safe_yaml,
    setting,
    short_repr,
    type_text,
)

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
TASKS = ("nlg", "nlu")
# reg.teacher_dtype: each choice with the label the Setup tab shows
TEACHER_CHOICES = {
    "model": "exact: the loaded model itself (default)",
    "bfloat16": "bf16 autocast: faster where bf16 is native; not exact (opt-in speed setting)",
    "auto": "bf16 for an fp32 model on native-bf16 hardware, else exact (opt-in speed setting)",
}

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,2})?)$")


# ---- the fields --------------------------------------------------------------------------------
# ``validate`` checks each field's declared constraints; the Setup form reads them for its
# labels, help, slider ranges and choices (``rules(path)``, ``label(path)``, ``help_text(path)``);
# the data loader reads the same bound (``check_value``). Rules that relate several fields stay
# as code in ``validate``. Sizes that cost time or memory are capped per hosting mode by
# ``lab.jobs.hosting.Limits``; the bounds here hold everywhere.

SEED_MAX = 2**31 - 1  # a training seed: 0 to this
SEED = {"ge": 0, "le": SEED_MAX}
LR = {"gt": 0, "le": 10}  # a learning rate: positive, and no optimizer here takes one above 10
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ModelConfig:
    name: str = setting("smollm2-135m", label="Base model",
        help="Embedded models work offline; tiny-* are random toy models for quick tries. A hub id or a local folder also works.")  # fmt: skip
    dtype: str = setting("auto", choices=DTYPES, label="Model precision",
        help="auto: bf16 on CUDA, fp32 on CPU; or float32, bfloat16, float16.")  # fmt: skip
    device: str = setting("auto", label="Device", help="auto, cpu, cuda, cuda:N or mps.")
    load_in_4bit: bool = setting(False, label="4-bit base model",
        help="QLoRA-style NF4 base weights through bitsandbytes (CPU or CUDA).")  # fmt: skip
    seed: int = setting(0, **SEED, label="Tiny model seed",
        help="Seed of the weights of the tiny random models.")  # fmt: skip


@dataclass
class DataConfig:
    name: str = setting("sentiment", label="Dataset",
        help="A shipped dataset, or your own file (.jsonl or .csv; uploaded on the right in the app), or a hub dataset id.")  # fmt: skip
    columns: dict[str, str] = setting(factory=dict, label="Column mapping",
        help="Which column of your file holds each role, e.g. {prompt: question} (empty: the file's own names).")  # fmt: skip
    label_noise: float = setting(0.0, ge=0, lt=1, label="Label noise",
        help="Fraction of training labels flipped on purpose: does the method resist noisy data?")  # fmt: skip
    minority_fraction: float = setting(0.0, ge=0, lt=0.5, label="Minority share",
        help="0 keeps the classes as they are; 0.1 makes one class only 10% of training data.")  # fmt: skip
    minority_class: str = setting("", label="Minority class",
        help="The class made rare by the minority share (empty: the last class).")  # fmt: skip
    max_train: int = setting(2000, ge=1, label="Training examples",
        help="At most this many training examples.")  # fmt: skip
    max_eval: int = setting(64, ge=1, label="Test examples",
        help="Test examples scored at each eval point.")  # fmt: skip


@dataclass
class LoraConfig:
    rank: int = setting(8, ge=1, label="Rank",
        help="Width of the low-rank update: more capacity, more parameters.")  # fmt: skip
    alpha: float = setting(16.0, gt=0, le=100_000, label="Alpha",
        help="Scale of the update: the adapter's output is multiplied by alpha / rank.")  # fmt: skip
    dropout: float = setting(0.0, ge=0, lt=1, label="LoRA dropout",
        help="Dropout on the adapters' input in training.")  # fmt: skip
    target_modules: list[str] = setting(factory=lambda: ["auto"], label="Target modules",
        help="Layer names that get adapters (e.g. q_proj,v_proj); auto: every linear layer of the attention and MLP blocks.")  # fmt: skip
    pissa_niter: int = setting(4, ge=0, label="PiSSA power iterations",
        help="Power iterations of the fast randomized PiSSA init (0 = exact SVD).")  # fmt: skip


@dataclass
class RegConfig:
    lambda1: float = setting(0.025, ge=0, le=100, label="λ1 consistency",
        help="Pulls the model's outputs toward the original model's (limits forgetting).")  # fmt: skip
    lambda2: float = setting(0.005, ge=0, le=100, label="λ2 diversity",
        help="Rewards spread-out predictions (fights collapse onto a few answers).")  # fmt: skip
    lambda3: float = setting(0.005, ge=0, le=100, label="λ3 SVD",
        help="Rewards outputs dominated by a few strong directions (keeps what generalises).")  # fmt: skip
    temperature: float = setting(2.0, gt=0, le=100, label="T (temperature)",
        help="Softens both models' outputs before comparing them in the consistency term.")  # fmt: skip
    top_k: int = setting(20, ge=2, label="top-K",
        help="The diversity term looks at the K most likely next tokens (NLG).")  # fmt: skip
    svd_k: int = setting(10, ge=1, label="SVD k",
        help="How many top singular values the SVD term rewards.")  # fmt: skip
    svd_norm: str = setting("frobenius", choices=("frobenius", "nuclear"), label="SVD normalisation",
        help="What the top singular values are divided by: the Frobenius norm (NLG) or the nuclear norm (NLU).")  # fmt: skip
    svd_target: str = setting("logits", choices=("logits", "features"), label="SVD term on",
        help="logits, or features: the pooled hidden states (not degenerate when k reaches the number of classes).")  # fmt: skip
    lambda1_schedule: str = setting("constant", choices=("constant", "cosine"), label="λ1 schedule",
        help="constant, or cosine: decays to 0.1 × λ1 over the run.")  # fmt: skip
    lambda23_warmup: float = setting(0.0, ge=0, lt=1, label="λ2, λ3 warm-up",
        help="Fraction of the steps with λ2 = λ3 = 0 (two-phase training).")  # fmt: skip
    teacher_dtype: str = setting("model", choices=TEACHER_CHOICES, label="Teacher precision",
        help="model (default): the exact pre-trained outputs. The bf16 choices are opt-in speed settings; the run summary records which one was used.")  # fmt: skip


@dataclass
class TrainConfig:
    steps: int = setting(30, ge=1, label="Steps",
        help="Optimizer steps per arm; each step sees one batch.")  # fmt: skip
    batch_size: int = setting(4, ge=1, label="Batch size",
        help="Examples per step; larger is steadier but slower.")  # fmt: skip
    grad_accum: int = setting(1, ge=1, label="Gradient accumulation",
        help="Micro-batches per step (the batch is split into this many).")  # fmt: skip
    seq_len: int = setting(128, ge=8, label="Sequence length",
        help="Tokens per example; longer ones are cut.")  # fmt: skip
    lr: float = setting(2e-4, **LR, label="Learning rate",
        help="Step size of the adapter updates (around 1e-4 to 1e-3 for LoRA).")  # fmt: skip
    lr_by_arm: dict[str, float] = setting(factory=dict, items=LR, label="Learning rate by arm",
        help="Rates of some arms, by arm name or kind, e.g. {pissa: 1e-4}; the others take lr.")  # fmt: skip
    lr_mode: str = setting("fixed", choices=("fixed", "tuned"), label="Learning-rate mode",
        help="fixed: lr and lr_by_arm. tuned: a short sweep of lr_grid per arm first, each arm's rate chosen by its loss on a validation split carved from the training data.")  # fmt: skip
    lr_grid: list[float] = setting(factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3], items=LR, label="Candidate rates",
        help="The learning rates tried for each arm in lr_mode tuned.")  # fmt: skip
    tune_steps: int = setting(10, ge=0, label="Tuning steps",
        help="Steps of each candidate rate in lr_mode tuned.")  # fmt: skip
    val_fraction: float = setting(0.1, ge=0, lt=1, label="Validation share",
        help="Share of the training rows held out (never trained on) to choose the rate.")  # fmt: skip
    max_grad_norm: float = setting(0.0, ge=0, le=1_000_000, zero="off", label="Gradient clipping",
        help="Clip each arm's adapter gradient norm to this (0 = off).")  # fmt: skip
    scheduler: str = setting("cosine", choices=("constant", "linear", "cosine"), label="Learning-rate schedule",
        help="How the learning rate changes over the steps, after the warm-up.")  # fmt: skip
    warmup_ratio: float = setting(0.03, ge=0, lt=1, label="Warm-up",
        help="Fraction of the steps over which the learning rate rises from 0.")  # fmt: skip
    weight_decay: float = setting(0.0, ge=0, le=10, label="Weight decay",
        help="AdamW weight decay of the adapter weights.")  # fmt: skip
    seed: int = setting(0, **SEED, label="Seed",
        help="The training seed (data order, dropout, init): the same for every arm.")  # fmt: skip
    seeds: list[int] = setting(factory=list, items=SEED, label="Seeds",
        help="Train every arm once per seed in one run (empty: just seed).")  # fmt: skip
    eval_every: int = setting(0, ge=0, label="Evaluate every",
        help="Steps between evaluations (metrics, drift, spectra, t-SNE); 0 = start and end only.")  # fmt: skip
    bias_eval: bool = setting(True, label="Bias probes", help="Bias probes at each eval point.")
    bias_items: int = setting(0, ge=0, label="Bias items",
        help="Items per bias probe at eval points (0 = all).")  # fmt: skip
    analysis: bool = setting(True, label="Analysis",
        help="Spectra, hidden states and drift at each eval point.")  # fmt: skip
    probe_size: int = setting(64, ge=2, label="Probe texts",
        help="Held-out texts for drift, spectra and t-SNE.")  # fmt: skip
    log_terms: bool = setting(True, label="Terms of every arm",
        help="Also log the (unweighted) regularizer terms of the lora and pissa arms.")  # fmt: skip


@dataclass
class BiasConfig:
    """Published bias benchmarks scored at every eval point (paths; "" = off)."""

    crows_pairs: str = setting("", label="CrowS-Pairs file",
        help="CrowS-Pairs CSV (sent_more, sent_less, stereo_antistereo, bias_type); empty: off.")  # fmt: skip
    bbq: str = setting("", label="BBQ file",
        help="BBQ JSONL (context, question, ans0-ans2, label, context_condition, ...); empty: off.")  # fmt: skip
    winogender: str = setting("", label="WinoGender file",
        help="WinoGender-style templates (occupation, participant, answer, sentence); empty: off.")  # fmt: skip
    winogender_stats: str = setting("", label="Occupation statistics file",
        help="occupation,women_pct[,source] for the WinoGender correlation; empty: off.")  # fmt: skip


@dataclass
class RunConfig:
    name: str = setting("custom", label="Run name", help="The run's name; its id starts with it.")
    task: str = setting("nlg", choices=TASKS, label="Task type",
        help="nlg: the model writes an answer (causal LM). nlu: it picks a class (classifier head).")  # fmt: skip
    arms: list[str] = setting(factory=lambda: list(arm_specs.ARMS), label="Arms",
        help="Trained on the same batches from the same seed. BA-LoRA = PiSSA init + the 3 regularizers.")  # fmt: skip
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    reg: RegConfig = dataclasses.field(default_factory=RegConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    bias: BiasConfig = dataclasses.field(default_factory=BiasConfig)

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
            setattr(obj, key, coerce(value, hints[key], where))


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
    return constraints(_field(path))


def label(path: str) -> str:
    """The label a field shows (the Setup form, the settings table), by its config path."""
    return _field(path).metadata.get("label", "")


def help_text(path: str) -> str:
    """What a field does, in a sentence or two (the form, the CLI, the settings table)."""
    return _field(path).metadata.get("help", "")


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
        elif own := constraints(f):
            yield f"{prefix}{f.name}", value, own


def settings_rows() -> list[dict[str, str]]:
    """One row per setting, in declaration order (key, label, type, default, allowed, help):
    what ``python -m lab settings`` and ``docs/settings.md`` show."""
    return rows_of(RunConfig)


def validate(cfg: RunConfig) -> RunConfig:
    """Check every field against its declared constraints, then the rules that relate several
    fields; raise naming the field."""

    def need(cond: bool, where: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{where}: {msg}")

    for where, value, declared_rules in declared(cfg):
        if "items" in declared_rules:
            bad = broken_items(where, value, declared_rules)
            need(bad is None, *(bad or ("", "")))
        else:
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
    for key in cfg.train.lr_by_arm:
        kinds = {a.partition("@")[0] for a in cfg.arms}
        need(key in cfg.arms or key in kinds, f"train.lr_by_arm.{key}", "names no arm of this run")
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
    except ConfigError as e:  # an alias, or a key given twice
        raise ConfigError(f"preset {path.name}: {e}") from None
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

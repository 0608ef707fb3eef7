"""The Setup form as data: widget values keyed by config path -> ``--set`` overrides -> a config.

Only the fields that differ from the chosen preset become overrides, so a preset's other
settings stay. Validation is the library's own (``lab.config``, ``lab.jobs.preflight``), and
the sliders' ranges and the choices come from the constraints ``lab.config`` declares. The
widgets are matched to fields by name (:func:`ordered`), never by their position on the page.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from lab import arms as arm_specs
from lab import config, jobs
from lab.config import ConfigError, RunConfig, list_presets, load_preset, preset_path
from lab.jobs import hosting

EMBEDDED_MODELS = ["smollm2-135m", "gemma3-270m", "minilm-l6", "tiny-llama", "tiny-bert"]
ARM_CHOICES = [(arm_specs.ARM_NAMES.get(a, a), a) for a in arm_specs.CHOICES]  # the one arm spec
# Form fields in widget order, keyed by config path.
FIELDS = [
    "model.name",
    "model.custom",  # free text: a hub id or a local directory (wins over the dropdown)
    "task",
    "data.name",
    "data.columns",  # hidden: the upload's column mapping as JSON text ("" = the file's own names)
    "data.label_noise",
    "data.minority_fraction",
    "arms",
    "reg.lambda1",
    "reg.lambda2",
    "reg.lambda3",
    "reg.temperature",
    "reg.top_k",
    "reg.svd_k",
    "reg.teacher_dtype",
    "train.steps",
    "train.batch_size",
    "train.lr",
    "lora.rank",
    "train.eval_every",
    # published bias benchmark files uploaded in the Setup tab (hidden fields holding the path)
    "bias.crows_pairs",
    "bias.bbq",
    "bias.winogender",
    "bias.winogender_stats",
]
# The label each field shows on the page: errors name the field the user sees.
FIELD_LABELS = {
    "model.name": "Base model",
    "model.custom": "…or a hub id / local folder",
    "task": "Task type",
    "data.name": "Dataset",
    "data.columns": "Column mapping",
    "data.label_noise": "Label noise",
    "data.minority_fraction": "Minority share",
    "arms": "Arms",
    "reg.lambda1": "λ1 consistency",
    "reg.lambda2": "λ2 diversity",
    "reg.lambda3": "λ3 SVD",
    "reg.temperature": "T (temperature)",
    "reg.top_k": "top-K",
    "reg.svd_k": "SVD k",
    "reg.teacher_dtype": "Teacher precision",
    "train.steps": "Steps",
    "train.batch_size": "Batch size",
    "train.lr": "Learning rate",
    "lora.rank": "Rank",
    "train.eval_every": "Evaluate every",
    "bias.crows_pairs": "CrowS-Pairs file",
    "bias.bbq": "BBQ file",
    "bias.winogender": "WinoGender file",
    "bias.winogender_stats": "Occupation statistics file",
}
# Sliders: each end comes from the field's declared constraints (``lab.config``); an exclusive
# bound moves in by one step, and a field without an upper bound shows a useful range up to
# the number here. path -> (the largest value shown where the field has no upper bound, step)
SLIDERS: dict[str, tuple[float | None, float]] = {
    "data.label_noise": (0.5, 0.05),
    "data.minority_fraction": (None, 0.05),
    "reg.lambda1": (0.5, 0.005),
    "reg.lambda2": (0.1, 0.001),
    "reg.lambda3": (0.1, 0.001),
    "reg.temperature": (5, 0.5),
    "reg.top_k": (100, 1),
    "reg.svd_k": (32, 1),
    "train.batch_size": (32, 1),
    "lora.rank": (64, 1),
}


def slider_range(path: str) -> dict[str, float]:
    """``minimum``, ``maximum`` and ``step`` of the slider of config field ``path``, read from
    its declared constraints: every value the slider offers passes validation."""
    shown_max, step = SLIDERS[path]
    rules = config.rules(path)
    if "ge" in rules:
        low = rules["ge"]
    elif "gt" in rules:
        low = rules["gt"] + step
    else:
        raise KeyError(f"{path}: declares no lower bound for a slider")
    if "le" in rules:
        high = rules["le"]
    elif "lt" in rules:
        high = rules["lt"] - step
    else:
        high = None
    if shown_max is not None:
        high = shown_max if high is None else min(high, shown_max)
    if high is None:
        raise KeyError(f"{path}: needs a largest value to show (SLIDERS)")
    return {"minimum": round(low, 10), "maximum": round(high, 10), "step": step}


def choices(path: str) -> tuple:
    """The allowed values of config field ``path``, as declared."""
    return config.rules(path)["choices"]


def ordered(components: dict[str, Any]) -> list:
    """The form's components in ``FIELDS`` order, from ``{config path: component}``: the
    handlers' values are matched to fields by name, so a widget can never fill another field."""
    missing = [f for f in FIELDS if f not in components]
    extra = [k for k in components if k not in FIELDS]
    if missing or extra:
        raise ValueError(
            f"the form's widgets do not match its fields: missing {missing or 'none'}, "
            f"not fields {extra or 'none'}"
        )
    return [components[f] for f in FIELDS]


ERROR_CLASS = "field-error"
# The mapping dropdowns shown when an upload's columns do not match the task: one per role.
UPLOAD_LABEL = "Upload your own data"
ROLE_LABELS = {
    "prompt": "Prompt column",
    "response": "Response column",
    "text": "Text column",
    "label": "Label column",
}


def field_of_error(message: str) -> str | None:
    """The form field an error message is about (its config key at the start), or None."""
    head = str(message).split(":", 1)[0].strip()
    if head in FIELD_LABELS:
        return head
    named = re.match(r"\*\*[^*]+\*\* \(([\w.]+)\)", head)  # already renamed by name_the_field
    if named and named.group(1) in FIELD_LABELS:
        return named.group(1)
    return "model.name" if head.startswith(("model ", "unknown model")) else None


def name_the_field(message: str) -> str:
    """``train.steps: must be at least 1`` -> ``**Steps** (train.steps): must be at least 1``."""
    key = field_of_error(message)
    if key is None or not str(message).startswith(key):
        return str(message)
    return f"**{FIELD_LABELS[key]}** ({key}){str(message)[len(key) :]}"


def highlight(message: str | None) -> list[dict]:
    """One update per form field (in FIELDS order): the field the error is about gets the error
    outline, every other field loses it."""
    bad = field_of_error(message) if message else None
    return [
        {"__type__": "update", "elem_classes": [ERROR_CLASS] if f == bad else []} for f in FIELDS
    ]


# ConfigError, DataError, ModelError and JobError are all ValueErrors with a message for the page;
# AccessError (a run or path of another visitor) is a PermissionError.
USER_ERRORS = (ValueError, PermissionError)


def default_preset() -> str:
    names = list_presets()
    return "classroom-cpu" if "classroom-cpu" in names else names[0]


def dataset_choices() -> list[str]:
    from lab.datasets import list_datasets  # imports torch: only after the page is served

    return [d["name"] for d in list_datasets() if d.get("kind") in ("classification", "generation")]


def config_value(cfg_dict: dict, path: str) -> Any:
    node: Any = cfg_dict
    for part in path.split("."):
        node = node[part]
    return node


def preset_values(preset: str) -> dict[str, Any]:
    """Every form field's value as the preset sets it (the dataclass default elsewhere)."""
    cfg = load_preset(hosting.check_preset(hosting.current(), preset)).to_dict()
    out = {f: config_value(cfg, f) for f in FIELDS if f != "model.custom"}
    out["model.custom"] = ""
    out["data.columns"] = columns_text(out["data.columns"])
    if out["model.name"] not in EMBEDDED_MODELS:
        out["model.custom"], out["model.name"] = out["model.name"], EMBEDDED_MODELS[0]
    return out


def preset_note(preset: str) -> str:
    """The comment block a preset file begins with (its purpose, or its hypothesis for a
    scenario preset) as plain text, its paragraphs (split by a bare ``#`` line) separated by a
    blank line; "" when it has none."""
    path = preset_path(hosting.check_preset(hosting.current(), preset))
    paragraphs: list[list[str]] = [[]]
    for line in path.read_text(encoding="utf-8").lstrip("\n").splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if text:
            paragraphs[-1].append(text)
        elif paragraphs[-1]:
            paragraphs.append([])
    return "\n\n".join(" ".join(p) for p in paragraphs if p)


def columns_text(columns: dict | None) -> str:
    """The hidden ``data.columns`` field's text: JSON of the mapping, "" for none."""
    return json.dumps(dict(sorted(columns.items()))) if columns else ""


def parse_columns(text: Any) -> dict[str, str]:
    """The hidden ``data.columns`` field back to a mapping (a ConfigError naming it if bad)."""
    if isinstance(text, dict):
        return dict(text)
    if text is None or not str(text).strip():
        return {}
    try:
        value = json.loads(str(text))
    except json.JSONDecodeError:
        raise ConfigError("data.columns: not a column mapping (upload the file again)") from None
    if not isinstance(value, dict):
        raise ConfigError("data.columns: not a column mapping (upload the file again)")
    return value


def role_error(message: str) -> str:
    """``prompt: no column chosen`` -> ``**Prompt column**: no column chosen``; other upload
    errors are about the file itself and name the upload button."""
    head, sep, rest = str(message).partition(": ")
    if sep and head in ROLE_LABELS:
        return f"**{ROLE_LABELS[head]}**: {rest}"
    return f"**{UPLOAD_LABEL}**: {message}"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return a == b


def form_overrides(preset: str, values: dict[str, Any]) -> list[str]:
    """``key=value`` overrides for the fields that differ from ``preset`` (values as JSON)."""
    base = load_preset(hosting.check_preset(hosting.current(), preset)).to_dict()
    values = dict(values)
    custom = str(values.pop("model.custom", "") or "").strip()
    if custom:
        values["model.name"] = custom
    out = []
    for key in FIELDS:
        if key not in values or key == "model.custom":
            continue
        value = values[key]
        if (
            isinstance(value, float)
            and value.is_integer()
            and isinstance(config_value(base, key), int)
        ):
            value = int(value)
        if key == "arms":
            value = list(value or [])
        if key == "data.columns":
            value = parse_columns(value)
        if not _same(value, config_value(base, key)):
            out.append(f"{key}={json.dumps(value)}")
    return out


def check_form(
    preset: str, values: dict[str, Any], owner: str | None = None
) -> tuple[RunConfig, list[str], list[str]]:
    """Validate the form as the job manager will (hosting rules, limits, preflight), writing
    nothing: -> (config, overrides, warnings); raises the library's error."""
    if not preset:
        raise ConfigError("preset: pick a preset first")
    overrides = form_overrides(preset, values)
    return common_manager().check(preset, overrides, owner)


def common_manager() -> jobs.JobManager:
    from lab.ui import common  # the app's one manager (and its hosting mode)

    return common.manager()


def describe(cfg: RunConfig, overrides: list[str]) -> str:
    changed = ", ".join(f"`{o}`" for o in overrides) or "none"
    return (
        f"{cfg.model.name} · {cfg.task} · data {Path(cfg.data.name).name} · arms "
        f"{', '.join(cfg.arms)} · {cfg.train.steps} steps of {cfg.train.batch_size}. "
        f"Changes from the preset: {changed}"
    )


def form_values(vals: tuple) -> dict[str, Any]:
    if len(vals) != len(FIELDS):
        raise ValueError(f"expected {len(FIELDS)} form values, got {len(vals)}")
    return dict(zip(FIELDS, vals))

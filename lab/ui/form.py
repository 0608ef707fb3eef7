"""The Setup form as data: widget values keyed by config path -> ``--set`` overrides -> a config.

Only the fields that differ from the chosen preset become overrides, so a preset's other
settings stay. Validation is the library's own (``lab.config``, ``lab.jobs.preflight``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lab import hosting, jobs
from lab.config import ConfigError, RunConfig, list_presets, load_preset

EMBEDDED_MODELS = ["smollm2-135m", "gemma3-270m", "minilm-l6", "tiny-llama", "tiny-bert"]
ARM_CHOICES = [("LoRA", "lora"), ("PiSSA", "pissa"), ("BA-LoRA", "balora")]
# Form fields in widget order, keyed by config path.
FIELDS = [
    "model.name",
    "model.custom",  # free text: a hub id or a local directory (wins over the dropdown)
    "task",
    "data.name",
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
    if out["model.name"] not in EMBEDDED_MODELS:
        out["model.custom"], out["model.name"] = out["model.name"], EMBEDDED_MODELS[0]
    return out


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

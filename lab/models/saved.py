"""A finished run's base model with every saved adapter attached (the Compare tab, the bias CLI).

The adapters in ``runs/<id>/adapters/<arm>/`` are saved on the original weights, so the base
outputs come with the adapters disabled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lab.arms import ARMS, folder_name
from lab.models.loading import load_model
from lab.runs import store as runs


class CompletionError(ValueError):
    """A run that cannot be used for generation (no adapters, empty prompt, unknown arm)."""


@dataclass
class ArmSet:
    model: Any  # PeftModel with one adapter per arm
    tokenizer: Any
    task: str
    arms: list[str]  # display names, as the config writes them (balora@0.05,0.005,0.005)
    device: torch.device
    label_names: list[str] | None = None  # class names of a classification run
    adapters: dict[str, str] | None = None  # display name -> PEFT adapter (folder) name

    def activate(self, arm: str) -> None:
        self.model.set_adapter((self.adapters or {}).get(arm, arm))


def saved_arms(run_dir: str | Path) -> list[str]:
    """The arms of a run that have a saved adapter, in the config's order when known."""
    base = Path(run_dir) / "adapters"
    if not base.is_dir():
        return []
    found = {p.name for p in base.iterdir() if (p / "adapter_config.json").exists()}
    return [a for a in ARMS if a in found] + sorted(found - set(ARMS))


def arms_without_adapter(run_dir: str | Path) -> list[str]:
    """The arms the run's summary lists that did not fail yet have no saved adapter (a run
    stopped before saving, or a shipped example whose budget left them out)."""
    summary = runs.read_summary(run_dir) or {}
    arms = summary.get("arms") if isinstance(summary.get("arms"), dict) else {}
    saved = set(saved_arms(run_dir))
    return [
        arm
        for arm, info in arms.items()
        if folder_name(arm) not in saved
        and not (isinstance(info, dict) and info.get("status") == "failed")
    ]


def _num_labels(adapter_dir: Path) -> int | None:
    """The class count of a classification adapter, read from its saved head weights."""
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
        for key in f.keys():
            if "lora_" in key or not key.endswith("weight"):
                continue
            if any(h in key for h in ("classifier", "score", "out_proj")):
                return int(f.get_slice(key).get_shape()[0])
    return None


def load_arm_set(run_dir: str | Path, config: dict, device: str = "auto") -> ArmSet:
    """Load the run's base model once and attach every saved adapter to it."""
    from peft import PeftModel

    run_dir = Path(run_dir)
    arms = saved_arms(run_dir)
    if not arms:
        raise CompletionError(
            f"run {run_dir.name} has no saved adapters yet (it saves them when training ends or stops)"
        )
    m = config.get("model") or {}
    task = config.get("task", "nlg")
    first = run_dir / "adapters" / arms[0]
    bundle = load_model(
        m.get("name", ""),
        task=task,
        num_labels=_num_labels(first) if task == "nlu" else None,
        dtype=m.get("dtype", "auto"),
        device=device if device != "auto" else m.get("device", "auto"),
        seed=int(m.get("seed", 0)),
    )
    model = PeftModel.from_pretrained(bundle.model, str(first), adapter_name=arms[0])
    for arm in arms[1:]:
        model.load_adapter(str(run_dir / "adapters" / arm), adapter_name=arm)
    model.eval()
    names = display_names(run_dir)  # folder -> the arm's name (grid and seeded arms differ)
    shown = [names.get(a, a) for a in arms]
    return ArmSet(model, bundle.tokenizer, task, shown, bundle.device, _label_names(run_dir),
                  adapters=dict(zip(shown, arms)))  # fmt: skip


def display_names(run_dir: Path) -> dict[str, str]:
    """{adapter folder: arm name} from the run summary's ``arm_specs`` (a grid arm's folder
    ``balora-0p05_0p005_0p005`` is the arm ``balora@0.05,0.005,0.005``); {} without them."""
    summary = runs.read_summary(run_dir) or {}
    specs = summary.get("arm_specs") or {}
    return {
        str(v["folder"]): str(k) for k, v in specs.items() if isinstance(v, dict) and "folder" in v
    }


def _label_names(run_dir: Path) -> list[str] | None:
    path = run_dir / "analysis" / "probe_texts.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("label_names")

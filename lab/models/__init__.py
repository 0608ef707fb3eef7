"""Model registry and loading: embedded offline models, hub ids, local directories, tiny models.

``registry``: the names the lab knows and how any other name resolves. ``cache``: the embedded
models' packages and the safetensors copy of a GGUF model (de-quantized once, so later loads
take about a second). ``hub``: the one probe of the Hugging Face hub. ``tiny``: random models
built from a config with a byte-level tokenizer made in code (no files, no network).
``loading``: a model and its tokenizer on the chosen device, dtype and 4-bit setting.
"""

from lab.models.cache import cache_dir, ensure_cached, list_models
from lab.models.hub import HUB_GATED, HUB_MISSING, HUB_OFFLINE, HUB_OK, HUB_TIMEOUT_S, probe_hub
from lab.models.loading import (
    ModelBundle,
    fast_bf16,
    load_model,
    pick_device,
    pick_dtype,
    teacher_dtype,
)
from lab.models.registry import (
    EMBEDDED,
    TINY,
    EmbeddedModel,
    ModelError,
    check_task,
    model_tasks,
    resolve_source,
)
from lab.models.tiny import byte_tokenizer

__all__ = [
    "EMBEDDED",
    "HUB_GATED",
    "HUB_MISSING",
    "HUB_OFFLINE",
    "HUB_OK",
    "HUB_TIMEOUT_S",
    "TINY",
    "EmbeddedModel",
    "ModelBundle",
    "ModelError",
    "byte_tokenizer",
    "cache_dir",
    "check_task",
    "ensure_cached",
    "fast_bf16",
    "list_models",
    "load_model",
    "model_tasks",
    "pick_device",
    "pick_dtype",
    "probe_hub",
    "resolve_source",
    "teacher_dtype",
]

"""Loading a model and its tokenizer ready for training: the device and dtype, 4-bit (NF4)
weights, and where the weights come from (``lab.models.registry`` resolves the name)."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

import torch

from lab.models import cache, hub, tiny
from lab.models.registry import EMBEDDED, ModelError, check_task, resolve_source
from lab.runs.provenance import cpu_info


@dataclass
class ModelBundle:
    model: torch.nn.Module
    tokenizer: object
    name: str
    task: str
    device: torch.device
    dtype: torch.dtype
    max_len: int | None


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"model.device={device!r} but no CUDA device is available here")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ModelError(f"model.dtype: unknown dtype {dtype!r} (known: auto, {', '.join(table)})")
    return table[dtype]


@functools.cache
def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matmuls are native here: CUDA with bf16 support, or a CPU with the
    AVX512-BF16 or AMX instructions and oneDNN's bf16 kernels. Elsewhere bf16 is emulated and
    slower than fp32. oneDNN's own check is not enough: it also says yes on any AVX-512 CPU
    (e.g. Ice Lake), where it converts to bf16 in software."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(cpu_info()["native_bf16"]) and _onednn_bf16()
    return False


def _onednn_bf16() -> bool:
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe is not None and torch.backends.mkldnn.is_available() and probe())


def teacher_dtype(choice: str, model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype the frozen teacher computes in: ``reg.teacher_dtype`` resolved for a model.

    "model" (the default): the model's own dtype, so the teacher is exactly the loaded model.
    The other two are opt-in speed settings, not exact: "bfloat16": bf16 autocast; "auto": bf16
    when the model computes in float32 on a device with native bf16 matmuls (the teacher is a
    no-grad inference pass; on such a CPU it took a BA-LoRA step from 1.52x to 1.25x a LoRA
    step, docs/costs.md), else the model's dtype.
    """
    if choice == "model":
        return model_dtype
    if choice == "bfloat16":
        return torch.bfloat16
    if choice != "auto":
        raise ValueError(f"reg.teacher_dtype must be auto, model or bfloat16, got {choice!r}")
    if model_dtype == torch.float32 and fast_bf16(device):
        return torch.bfloat16
    return model_dtype


def _quantized_copy(model, quant, dtype: torch.dtype, device: torch.device):
    """A model built in code, saved and re-loaded with NF4 weights (bitsandbytes quantizes on
    load, on the CPU or on CUDA)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        return type(model).from_pretrained(
            tmp, dtype=dtype, quantization_config=quant, device_map=str(device)
        )


def _from_pretrained(location: str, kind: str, task: str, num_labels, dtype, quant, device=None):
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    kwargs = {"dtype": dtype, "use_safetensors": True}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = str(device) if device is not None else None
    if kind == "hub":
        kwargs["local_files_only"] = hub.probe_hub(location)[0] == hub.HUB_OFFLINE
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            location, local_files_only=kwargs.get("local_files_only", False)
        )
        if task == "nlg":
            model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                location, num_labels=num_labels or 2, **kwargs
            )
    except OSError as e:
        if kind == "hub":
            raise ModelError(
                f"could not fetch '{location}' from the Hugging Face hub "
                f"({'no network here' if kwargs.get('local_files_only') else str(e).splitlines()[0][:120]}) "
                "and it is not in the local cache. Download it where a network exists and pass "
                "the local directory as model.name=/path/to/dir"
            ) from None
        raise ModelError(
            f"could not load the model in {location}: {str(e).splitlines()[0]}"
        ) from None
    return model, tokenizer


def load_model(
    name: str,
    task: str = "nlg",
    num_labels: int | None = None,
    dtype: str = "auto",
    device: str = "auto",
    seed: int = 0,
    load_in_4bit: bool = False,
) -> ModelBundle:
    """Load a model and its tokenizer ready for training on the chosen device."""
    kind, location = resolve_source(name)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    quant = None
    if load_in_4bit:
        if dev.type not in ("cuda", "cpu"):
            raise ModelError(f"model.load_in_4bit runs on the CPU or CUDA, not {dev.type}")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelError("model.load_in_4bit needs bitsandbytes: pip install bitsandbytes")
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(  # NF4 weights; matmuls in the model's dtype
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dt,
            bnb_4bit_use_double_quant=True,
            bnb_4bit_quant_storage=torch.uint8,
        )
    if kind == "tiny":
        model, tokenizer = tiny.build(name, task, num_labels, seed)
        model = model.to(dt)
        if quant is not None:
            model = _quantized_copy(model, quant, dt, dev)
    elif kind == "embedded":
        m = EMBEDDED[name]
        check_task(name, task)
        path = cache.ensure_cached(name) if m.gguf else cache.package_dir(m) / "model"
        torch.manual_seed(seed)  # the new classification head of an encoder
        model, tokenizer = _from_pretrained(str(path), "local", task, num_labels, dt, quant, dev)
    else:
        torch.manual_seed(seed)
        model, tokenizer = _from_pretrained(location, kind, task, num_labels, dt, quant, dev)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if task == "nlu" and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if quant is None:
        model = model.to(dev)
    model.eval()
    max_len = getattr(model.config, "max_position_embeddings", None)
    return ModelBundle(model, tokenizer, name, task, dev, dt, max_len)

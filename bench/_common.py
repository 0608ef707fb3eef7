"""Shared pieces of the benchmarks: peak-memory meters, synthetic models and batches, JSON out.

Peak memory is the growth during one measured region over the memory in use just before it:
- CPU: the resident set size (RSS) sampled by a background thread every ~2 ms.
  ``pin_allocator()`` tells glibc to serve every allocation over 256 KiB with mmap, so a freed tensor leaves the RSS at once
  and the RSS follows the live tensors; freed heap is also trimmed before each region. Left
  at its defaults, glibc keeps freed blocks of up to 32 MiB in its heap, and a step's RSS
  peak then shows the heap's high-water mark, nearly the same for every arm, rather than the
  live tensors.
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the
  memory allocated before the region.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/x.py` from anywhere imports `lab`

from lab.runs.provenance import cpu_info  # noqa: E402, F401  (re-exported: every bench records its CPU)

MB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc malloc.h)
_M_MMAP_THRESHOLD = -3

# name -> LlamaConfig keyword arguments of the synthetic causal models (random weights).
SYNTHETIC = {
    # about 0.89B parameters: 16 x 47.2M in the blocks + 2 x 65.5M embeddings and head
    "synthetic-1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=8,
        intermediate_size=5632,
        vocab_size=32000,
    ),
    # the same code path in a second on a CPU (tests)
    "synthetic-tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=512,
    ),
}


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def pin_allocator() -> bool:
    """Large blocks by mmap, handed back on free (glibc); False where that does not apply."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024) == 1
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024) == 1
    return bool(ok)


def trim_heap() -> None:
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def rss_bytes() -> int:
    """This process's resident set size in bytes."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except FileNotFoundError:
        import psutil

        return psutil.Process().memory_info().rss


class RSSPeak:
    """Background sampler of RSS; ``begin()`` ... ``end()`` returns the peak growth in bytes."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s = interval_s
        self._base = 0
        self._peak = 0
        self._active = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")

    def __enter__(self) -> RSSPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = rss_bytes()
            with self._lock:
                if self._active and rss > self._peak:
                    self._peak = rss
            time.sleep(self.interval_s)

    def begin(self) -> None:
        trim_heap()
        rss = rss_bytes()
        with self._lock:
            self._base = self._peak = rss
            self._active = True

    def end(self) -> int:
        rss = rss_bytes()
        with self._lock:
            self._active = False
            peak = max(self._peak, rss)
        return peak - self._base


class CudaPeak:
    """``begin()`` ... ``end()``: peak allocated bytes during the region over those before it."""

    def __init__(self, device: torch.device):
        self.device = device
        self._base = 0

    def __enter__(self) -> CudaPeak:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def begin(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._base = torch.cuda.memory_allocated(self.device)

    def end(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - self._base


def peak_meter(device: torch.device):
    return CudaPeak(device) if device.type == "cuda" else RSSPeak()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tensor_bytes(*objs) -> int:
    """Bytes of the distinct storages behind the tensors of modules, optimizers and tensors."""
    seen: set[int] = set()
    total = 0

    def add(t: torch.Tensor) -> None:
        nonlocal total
        st = t.untyped_storage()
        if st.data_ptr() not in seen:
            seen.add(st.data_ptr())
            total += st.nbytes()

    for obj in objs:
        if isinstance(obj, torch.nn.Module):
            for t in (*obj.parameters(), *obj.buffers()):
                add(t)
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                for v in state.values():
                    if torch.is_tensor(v):
                        add(v)
        elif torch.is_tensor(obj):
            add(obj)
    return total


def synthetic_model(name: str, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """A random Llama of one of the SYNTHETIC sizes, built directly on ``device`` in ``dtype``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if name not in SYNTHETIC:
        raise ValueError(f"unknown synthetic model {name!r} (known: {', '.join(SYNTHETIC)})")
    cfg = LlamaConfig(
        **SYNTHETIC[name],
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def synthetic_batch(
    gen: torch.Generator, batch: int, seq: int, vocab: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Random token ids, exactly batch x seq: prompt half (labels -100), response half.

    ``reg_mask`` follows ``lab.datasets.encoding.collate_nlg``: logits at t are scored against label t+1.
    """
    if seq < 4:
        raise ValueError(f"--seq must be at least 4, got {seq}")
    ids = torch.randint(3, vocab, (batch, seq), generator=gen)  # (B, T), no special ids
    labels = ids.clone()
    labels[:, : seq // 2] = -100  # the prompt half is not scored
    reg_mask = torch.zeros((batch, seq), dtype=torch.bool)
    reg_mask[:, :-1] = labels[:, 1:] != -100  # (B, T)
    out = {
        "input_ids": ids,
        "attention_mask": torch.ones((batch, seq), dtype=torch.long),
        "labels": labels,
        "reg_mask": reg_mask,
    }
    return {k: v.to(device) for k, v in out.items()}


def emit(result: dict, out: str | None) -> None:
    """Print the JSON result; also write it to ``out`` (atomically) when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        from lab.runs.store import atomic_write_text

        atomic_write_text(out, text + "\n")

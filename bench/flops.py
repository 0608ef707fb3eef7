"""FLOPs, padding and the CPU's matmul peak: the work of each phase against the machine's limit.

What is counted (:class:`FlopCount`): every matrix product the run actually dispatches, forward
and backward, with PyTorch's own formulas (``torch.utils.flop_counter``: 2 FLOPs per
multiply-add for ``mm``, ``addmm``, ``bmm``, ``baddbmm``, convolutions and scaled-dot-product
attention; the CPU's flash-attention kernels are added here with the same formulas). So a
forward of a decoder on T tokens counts 2 x (its linear layers' parameters) x T, plus attention
(2 x 2 x heads x T x T_kv x head_dim: causal masking is not discounted), plus the LM-head rows
actually computed (the fused loss projects only the response rows; ``logits_to_keep`` only the
last). A LoRA backward counts what autograd runs: the input gradients through the frozen
weights (about 1x the forward) and the adapters' weight gradients, so a training step is about
2x, not 3x, its forward. Elementwise work (norms, softmax, activations, the optimizer) is not
counted: it is the part a matmul peak does not bound.

Padding (:class:`Padding`): the share of the decoder's input tokens that are pad (attention mask
0), per phase, from a forward pre-hook on the base model's decoder.

The peak (:func:`matmul_peak`): the best GFLOP/s of a large square float32 ``torch.mm`` on the
threads torch uses (the threads the lab trains and evaluates on), over a few one-second windows.
A phase's ``fraction_of_peak`` is its counted FLOPs / its seconds / that peak; the run's
compute floor is all its FLOPs at the peak.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _registry() -> dict:
    reg = dict(flop_counter.flop_registry)
    # The CPU's SDPA kernels (not in torch's table): the same formulas as the CUDA kernels.
    reg[aten._scaled_dot_product_flash_attention_for_cpu] = flop_counter.sdpa_flop
    reg[aten._scaled_dot_product_flash_attention_for_cpu_backward] = flop_counter.sdpa_backward_flop
    return reg


class Phases:
    """A stack of phase names and each phase's own seconds (a nested phase's time is its own,
    not its parent's); work outside every phase is booked to ``other``."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.seconds: dict[str, float] = defaultdict(float)
        self._since = time.perf_counter()

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else "other"

    def _book(self) -> None:
        now = time.perf_counter()
        self.seconds[self.current] += now - self._since
        self._since = now

    def enter(self, name: str) -> None:
        self._book()
        self.stack.append(name)

    def leave(self) -> None:
        self._book()
        self.stack.pop()

    def close(self) -> dict[str, float]:
        self._book()
        return dict(self.seconds)


class FlopCount(TorchDispatchMode):
    """Counts the FLOPs of every matmul-like op dispatched while active, by current phase."""

    def __init__(self, phases: Phases | None = None) -> None:
        super().__init__()
        self.phases = phases
        self.flops: dict[str, int] = defaultdict(int)
        self._reg = _registry()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self._reg.get(func._overloadpacket)
        if formula is not None:
            key = "all" if self.phases is None else self.phases.current
            self.flops[key] += int(formula(*args, **kwargs, out_val=out))
        return out


class Padding:
    """Computed and real (attention mask 1) input tokens of a decoder's forward, by phase."""

    def __init__(self, phases: Phases | None = None) -> None:
        self.phases = phases
        self.computed: dict[str, int] = defaultdict(int)
        self.real: dict[str, int] = defaultdict(int)
        self._hooked: set[int] = set()

    def attach(self, model: torch.nn.Module) -> bool:
        """Hook the decoder of ``model`` (a PEFT model or a plain causal LM); False if none."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
        if decoder is None or id(decoder) in self._hooked:
            return decoder is not None
        decoder.register_forward_pre_hook(self._hook, with_kwargs=True)
        self._hooked.add(id(decoder))
        return True

    def _hook(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        mask = kwargs.get("attention_mask")
        key = "all" if self.phases is None else self.phases.current
        T = ids.shape[-1]
        self.computed[key] += int(ids.numel())
        # with a KV cache the mask covers the cached positions too: the last T are this input's
        self.real[key] += int(ids.numel() if mask is None else mask[..., -T:].sum())

    def share(self, key: str) -> float | None:
        return pad_share(self.computed.get(key, 0), self.real.get(key, 0))


def pad_share(computed: int, real: int) -> float | None:
    """The share of ``computed`` tokens that are padding; None when none were computed."""
    return None if computed == 0 else round(1.0 - real / computed, 4)


def matmul_peak(n: int = 2048, windows: int = 3, window_s: float = 1.0) -> dict:
    """This CPU's (or GPU's) float32 matmul rate: the best of ``windows`` windows of repeated
    ``n x n`` products on torch's threads. Returns {"gflops", "n", "threads", "windows"}."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm the kernels and the caches
    best = 0.0
    for _ in range(windows):
        count, t0 = 0, time.perf_counter()
        while True:
            torch.mm(a, b, out=out)
            count += 1
            dt = time.perf_counter() - t0
            if dt >= window_s:
                break
        best = max(best, 2.0 * n**3 * count / dt / 1e9)
    return {
        "gflops": round(best, 2),
        "n": n,
        "threads": torch.get_num_threads(),
        "windows": windows,
    }


def fraction(flops: float, seconds: float, peak_gflops: float) -> float | None:
    """Counted FLOPs per second as a fraction of the peak; None without time or peak."""
    if seconds <= 0 or peak_gflops <= 0:
        return None
    return round(flops / seconds / (peak_gflops * 1e9), 4)


def count(fn, model: torch.nn.Module | None = None) -> dict:
    """Run ``fn()`` once under the counters: {"flops", "tokens", "pad_share"} (tokens and
    padding from ``model``'s decoder when given)."""
    counter, pad = FlopCount(), Padding()
    hooked = model is not None and pad.attach(model)
    with counter:
        fn()
    return {
        "flops": counter.flops.get("all", 0),
        "tokens": pad.computed.get("all", 0) if hooked else None,
        "pad_share": pad.share("all") if hooked else None,
    }


# phase -> which part of a run it is (the train / eval / analysis split of bench/e2e.py)
PARTS = {
    "train": "train",
    "teacher": "train",
    "eval_task": "eval",
    "eval_probes": "eval",
    "eval_drift_texts": "eval",
    "analysis": "analysis",
}


def part_of(phase: str) -> str:
    return PARTS.get(phase.split("/")[0], "other")


def report(
    seconds: dict, flops: dict, computed: dict, real: dict, peak_gflops: float, wall_s: float
) -> dict:
    """Each phase's seconds, FLOPs, fraction of the peak and padding share (``computed`` and
    ``real``: decoder input tokens per phase, see :class:`Padding`); the train / eval /
    analysis split; the run's compute floor (all its FLOPs at the peak) and how many times
    that floor the wall time is."""
    phases = {}
    for name in sorted(set(seconds) | set(flops)):
        s, f = seconds.get(name, 0.0), flops.get(name, 0)
        phases[name] = {
            "seconds": round(s, 3),
            "flops": f,
            "gflops_per_s": None if s <= 0 else round(f / s / 1e9, 3),
            "fraction_of_peak": fraction(f, s, peak_gflops),
            "tokens": computed.get(name, 0),
            "pad_share": pad_share(computed.get(name, 0), real.get(name, 0)),
        }
    split: dict[str, dict] = {}
    for name, p in phases.items():
        part = split.setdefault(part_of(name), {"seconds": 0.0, "flops": 0})
        part["seconds"] += p["seconds"]
        part["flops"] += p["flops"]
    for part in split.values():
        part["seconds"] = round(part["seconds"], 3)
        part["fraction_of_peak"] = fraction(part["flops"], part["seconds"], peak_gflops)
        part["floor_s"] = round(part["flops"] / (peak_gflops * 1e9), 3)
    total = sum(flops.values())
    floor = total / (peak_gflops * 1e9)
    return {
        "peak_gflops": peak_gflops,
        "flops": total,
        "floor_s": round(floor, 3),
        "times_floor": None if floor <= 0 else round(wall_s / floor, 3),
        "split": split,
        "phases": phases,
    }

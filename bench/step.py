"""Step time and peak memory of LoRA, PiSSA, BA-LoRA and a reference-style BA-LoRA, side by side.

All arms live in one process and train on the same synthetic batches (exactly batch x seq
tokens: a prompt half with labels -100, a response half), interleaved step by step (lora,
pissa, balora, reference, lora, ...), so machine noise hits every arm alike. ``lora`` and
``pissa`` run with ``train.log_terms=false``: plain LoRA work, no teacher and no terms.
``balora`` is the engine's step (``lab.engine.steps.train_arm_step``), with the teacher in
``--teacher-dtype`` (default ``model``, as in a run: the exact loaded model; ``auto`` and
``bfloat16`` are the opt-in bf16 teacher). ``teacher`` times the teacher's forward pass alone
(``lab.engine.steps.teacher_step``, the pass a step shares between all regularized arms, plus the
projection of its hidden rows through the LM head that the fused loss makes chunk by chunk), so the
target "BA-LoRA step <= LoRA step + one teacher forward + 10% of a LoRA step" can be read off
(``ratios.balora_overhead_vs_lora``: (balora - lora - teacher) / lora, target <= 0.1).

``matmul_peak``: the float32 matmul rate of this CPU measured before and after the steps
(``bench/flops.py``); each arm's ``flops_per_step`` (counted in one further step: every matmul and
attention op actually run, forward and backward), ``gflops_per_s`` at its median time,
``fraction_of_peak`` and ``pad_share``.

``reference`` is BA-LoRA written the way the paper's published code does it: a second full
deep copy of the base model as the teacher (run under no_grad), the full (B, T, V) logits at
every position, ``torch.log(torch.softmax(...))`` over the whole vocabulary at every position
for the KL and the entropy, and an exact SVD of the full (B*T, V) logits matrix, with the same
weights. Only its cost matters here.

Prints JSON: per arm the median step time (wall clock, and the process CPU time, which a busy
shared machine disturbs less), tokens/s (and an MFU estimate on a GPU), the peak memory growth
during a step (see ``bench/_common.py``), the persistent tensors the arm holds, and the ratios
to ``lora`` against the targets (wall time <= 1.4, memory <= 1.1). Times come from the timed
steps, run with the allocator as an ordinary run has it. Memory comes from ``--mem-steps``
further steps: on CUDA in the same process; on the CPU in a second process whose glibc is set
from its start to map large blocks (so the RSS follows the live tensors), because that
setting slows allocation-heavy steps (smollm2-135m: BA-LoRA 5.59 -> 6.42 s, LoRA 3.42 ->
3.51 s) and, switched on late, leaves freed blocks in the heap counted.

    python bench/step.py                                  # smollm2-135m, 8 x 128, rank 8
    python bench/step.py --model synthetic-1b --device cuda --seq 512
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as common  # first: puts the repository root on sys.path
import flops as flops_mod
import torch
from accelerate import Accelerator

from lab.config import from_dict
from lab.engine import adapters, forward, steps, trainer
from lab.engine.dist import Dist
from lab.method import head as head_mod
from lab.models import ModelBundle, load_model, pick_device, pick_dtype, teacher_dtype

ORDER = ("lora", "pissa", "balora", "teacher", "reference")
TARGETS = {"time": 1.4, "mem": 1.1, "overhead": 0.1}


def teacher_logits_pass(model, rows: torch.Tensor, cfg) -> float:
    """The rest of the teacher's forward on the fused NLG path: its (M, H) hidden rows through
    the LM head to logits, chunk by chunk as ``lab.method.head`` projects them inside the loss (the
    fused loss takes the teacher's rows and makes its logits there, so that no (M, V) tensor is
    kept). Without it, ``teacher`` would time the teacher's forward minus its head and the
    head's cost would count as BA-LoRA's own overhead. Returns a checksum (keeps the work)."""
    if not (cfg.task == "nlg" and forward.fused_nlg(model, cfg)):
        return float(rows.float().abs().mean())  # unfused / NLU: the rows are the logits
    _, head, _ = forward._decoder_and_head(model)
    total = 0.0
    with forward.teacher_pass(model, cfg):
        for i in range(0, rows.shape[0], head_mod.CHUNK_ROWS):
            z = torch.nn.functional.linear(rows[i : i + head_mod.CHUNK_ROWS], head.weight,
                                           head.bias).float()  # fmt: skip
            total += float(z[:, 0].sum())
    return total


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m", help="a lab model name or synthetic-1b")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=12, help="measured steps per arm")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    p.add_argument("--mem-steps", type=int, default=1, help="memory steps after the timed ones")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, fp32 on the CPU")
    p.add_argument(
        "--teacher-dtype",
        default="model",
        choices=("model", "auto", "bfloat16"),
        help="reg.teacher_dtype of the balora arm",
    )
    p.add_argument("--targets", default="auto", help="LoRA target modules, comma separated")
    p.add_argument("--arms", default=",".join(ORDER), help="a subset of " + ",".join(ORDER))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--peak-tflops", type=float, default=None, help="for MFU (CUDA default 989)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--quiet", action="store_true", help="no per-step progress on stderr")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)  # internal: the CPU memory pass
    args = p.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ORDER]
    if unknown or not arms:
        p.error(f"--arms: unknown {unknown} (known: {', '.join(ORDER)})")
    args.arms = [a for a in ORDER if a in arms]
    for name in ("batch", "rank", "steps", "mem_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be 0 or more")
    return args


def make_config(args: argparse.Namespace):
    return from_dict(
        {
            "name": "bench-step",
            "arms": [a for a in args.arms if a not in ("reference", "teacher")] or ["lora"],
            "model": {"name": args.model, "dtype": args.dtype, "device": args.device},
            "lora": {
                "rank": args.rank,
                "alpha": 2.0 * args.rank,
                "dropout": 0.0,
                "target_modules": args.targets.split(","),
            },
            "reg": {"teacher_dtype": args.teacher_dtype},
            "train": {
                "steps": args.warmup + args.steps,
                "batch_size": args.batch,
                "seq_len": args.seq,
                "scheduler": "constant",
                "warmup_ratio": 0.0,
                "log_terms": False,
                "seed": args.seed,
            },
        }
    )


def load_bundle(args: argparse.Namespace) -> ModelBundle:
    if args.model in common.SYNTHETIC:
        dev = pick_device(args.device)
        dt = pick_dtype(args.dtype, dev)
        model = common.synthetic_model(args.model, dt, dev, seed=args.seed)
        return ModelBundle(model, None, args.model, "nlg", dev, dt, 4096)
    return load_model(args.model, task="nlg", dtype=args.dtype, device=args.device, seed=args.seed)


class ReferenceArm:
    """BA-LoRA the way the paper's code computes it: a teacher copy and full-vocabulary terms."""

    def __init__(self, base: torch.nn.Module, teacher: torch.nn.Module, cfg):
        from peft import LoraConfig, TaskType, get_peft_model

        lo = cfg.lora
        init = "pissa" if lo.pissa_niter == 0 else f"pissa_niter_{lo.pissa_niter}"
        peft_cfg = LoraConfig(
            r=lo.rank,
            lora_alpha=lo.alpha,
            lora_dropout=lo.dropout,
            target_modules=adapters.target_modules_for(base, lo.target_modules),
            init_lora_weights=init,
            task_type=TaskType.CAUSAL_LM,
        )
        torch.manual_seed(cfg.train.seed)
        self.model = get_peft_model(base, peft_cfg)
        self.teacher = teacher.requires_grad_(False).eval()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
        )
        self.reg = cfg.reg
        self.last_loss = float("nan")

    def step(self, batch: dict, lambdas: tuple[float, float, float]) -> None:
        l1, l2, l3 = lambdas
        temp = self.reg.temperature
        self.model.train()
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        out = self.model(**inputs, labels=batch["labels"])
        logits = out.logits.float()  # (B, T, V): every position, the whole vocabulary
        with torch.no_grad():
            t_logits = self.teacher(**inputs).logits.float()  # (B, T, V)
        p_t = torch.softmax(t_logits / temp, dim=-1)
        log_p_s = torch.log(torch.softmax(logits / temp, dim=-1))
        kl = (p_t * (torch.log(p_t) - log_p_s)).sum(-1).mean() * temp**2
        p = torch.softmax(logits, dim=-1)
        entropy = -(p * torch.log(p)).sum(-1).mean()
        z = logits.reshape(-1, logits.shape[-1])  # (B*T, V)
        s = torch.linalg.svdvals(z)
        svd = -s[: self.reg.svd_k].sum() / torch.linalg.matrix_norm(z)
        total = out.loss + l1 * kl + l2 * (-entropy) + l3 * svd
        total.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.last_loss = total.item()


def _ratio(arms: dict, a: str, b: str, key: str) -> float | None:
    if a not in arms or b not in arms or not arms[b][key]:
        return None
    return arms[a][key] / arms[b][key]


def compute(bench: Bench, step: int) -> dict[str, dict]:
    """One further step of every arm under the FLOP and padding counters (``bench/flops.py``)."""
    batch = bench.batch()
    out = {}
    for name in bench.args.arms:
        model = bench.reference.model if name == "reference" else bench.shared
        out[name] = flops_mod.count(lambda n=name: bench.step(n, batch, step), model)
    return out


def with_peak(arms: dict, counted: dict, peak: dict | None) -> None:
    """Each arm's counted FLOPs per step, GFLOP/s at its median time, fraction of the peak."""
    for name, arm in arms.items():
        c = counted.get(name, {})
        f = c.get("flops", 0)
        arm["flops_per_step"] = f
        arm["gflops_per_s"] = round(f / arm["median_step_s"] / 1e9, 3)
        arm["pad_share"] = c.get("pad_share")
        arm["fraction_of_peak"] = (
            None if peak is None else flops_mod.fraction(f, arm["median_step_s"], peak["gflops"])
        )


def summarize(args, device, dtype, times, cpus, mems, states, losses, params: int) -> dict:
    tokens = args.batch * args.seq
    peak = args.peak_tflops
    if peak is None and device.type == "cuda":
        peak = 989.0
    arms = {}
    for name in args.arms:
        med = statistics.median(times[name])
        arms[name] = {
            "median_step_s": med,
            "median_cpu_s": statistics.median(cpus[name]),
            "peak_mem_mb": max(mems[name]) / common.MB,
            "tokens_per_s": tokens / med,
            "state_mb": states[name] / common.MB,
            "final_loss": losses[name],
        }
        if peak:
            arms[name]["mfu"] = 6.0 * params * (tokens / med) / (peak * 1e12)
    ratios = {
        "balora_vs_lora_time": _ratio(arms, "balora", "lora", "median_step_s"),
        "balora_vs_lora_mem": _ratio(arms, "balora", "lora", "peak_mem_mb"),
        "reference_vs_lora_time": _ratio(arms, "reference", "lora", "median_step_s"),
        "reference_vs_lora_mem": _ratio(arms, "reference", "lora", "peak_mem_mb"),
        "pissa_vs_lora_time": _ratio(arms, "pissa", "lora", "median_step_s"),
        "balora_vs_lora_cpu_time": _ratio(arms, "balora", "lora", "median_cpu_s"),
        "reference_vs_lora_cpu_time": _ratio(arms, "reference", "lora", "median_cpu_s"),
        "balora_vs_lora_state_mem": _ratio(arms, "balora", "lora", "state_mb"),
        "reference_vs_lora_state_mem": _ratio(arms, "reference", "lora", "state_mb"),
    }
    ratios["teacher_vs_lora_time"] = _ratio(arms, "teacher", "lora", "median_step_s")
    ratios["balora_overhead_vs_lora"] = None
    if {"balora", "lora", "teacher"} <= set(arms):
        b, lo, te = (arms[a]["median_step_s"] for a in ("balora", "lora", "teacher"))
        ratios["balora_overhead_vs_lora"] = (b - lo - te) / lo
    t, m = ratios["balora_vs_lora_time"], ratios["balora_vs_lora_mem"]
    meets = None if t is None or m is None else bool(t <= TARGETS["time"] and m <= TARGETS["mem"])
    over = ratios["balora_overhead_vs_lora"]
    if meets is not None and over is not None:
        meets = meets and over <= TARGETS["overhead"]
    return {
        "model": args.model,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": common.cpu_info(),
        "dtype": str(dtype).replace("torch.", ""),
        "teacher_dtype": str(teacher_dtype(args.teacher_dtype, dtype, device)).replace(
            "torch.", ""
        ),
        "batch": args.batch,
        "seq": args.seq,
        "rank": args.rank,
        "threads": torch.get_num_threads(),
        "params": params,
        "steps": args.steps,
        "warmup": args.warmup,
        "mem_steps": args.mem_steps,
        "peak_tflops": peak,
        "arms": arms,
        "ratios": ratios,
        "targets": dict(TARGETS),
        "meets_targets": meets,
    }


class Bench:
    """Everything one process needs to step the arms: config, arms, batches, one step."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cfg = make_config(args)
        self.bundle = load_bundle(args)
        self.dev = self.bundle.device
        self.params = sum(p.numel() for p in self.bundle.model.parameters())
        self.vocab = self.bundle.model.get_output_embeddings().weight.shape[0]
        self.reference = None
        if "reference" in args.arms:
            teacher = copy.deepcopy(self.bundle.model)  # the second full copy the paper keeps
            self.reference = ReferenceArm(copy.deepcopy(self.bundle.model), teacher, self.cfg)
        self.arms = {}
        if any(a != "reference" for a in args.arms):
            self.arms = trainer.build_arms(self.cfg, self.bundle)
        self.shared = next(iter(self.arms.values())).model if self.arms else None
        self.dist = Dist(Accelerator(cpu=self.dev.type == "cpu"))
        self.gen = torch.Generator().manual_seed(args.seed)
        self.losses: dict[str, float] = {}

    def batch(self) -> dict:
        a = self.args
        return common.synthetic_batch(self.gen, a.batch, a.seq, self.vocab, self.dev)

    def step(self, name: str, batch: dict, i: int) -> tuple[float, float]:
        """Train arm ``name`` one step; returns (wall seconds, process CPU seconds)."""
        arm = {"reference": "balora", "teacher": "lora"}.get(name, name)
        lambdas = steps.lambdas_at(self.cfg, arm, i)
        common.sync(self.dev)
        t0, c0 = time.perf_counter(), time.process_time()
        if name == "reference":
            self.reference.step(batch, lambdas)
            self.losses[name] = self.reference.last_loss
        elif name == "teacher":  # the teacher's forward alone, as a step runs it
            out = steps.teacher_step(self.shared, [batch], self.cfg)
            self.losses[name] = float(teacher_logits_pass(self.shared, out[0], self.cfg))
        else:
            ev = steps.train_arm_step(self.arms[name], [batch], self.cfg, i, self.dist)
            self.losses[name] = ev["loss"]
        common.sync(self.dev)
        return time.perf_counter() - t0, time.process_time() - c0

    def states(self) -> dict[str, int]:
        """Bytes of the tensors each arm keeps between steps (models, optimizer, teacher)."""
        out = {}
        if self.shared is not None:
            # every arm is adapters on the one shared base: an arm holds the base weights
            # (counted for each arm, as the whole cost of running that arm alone), its own
            # adapters (PiSSA: and the frozen initial one) and its optimizer state
            base = [p for n, p in self.shared.named_parameters() if "lora_" not in n]
            for n, a in self.arms.items():
                ad = self.shared.balora_arms[n]
                own = [
                    p
                    for k, p in self.shared.named_parameters()
                    if f".{ad.trainable}." in k or (ad.frozen_init and f".{ad.frozen_init}." in k)
                ]
                out[n] = common.tensor_bytes(*base, *own, a.optimizer)
            if "teacher" in self.args.arms:
                out["teacher"] = common.tensor_bytes(*base)
        if self.reference is not None:
            r = self.reference
            out["reference"] = common.tensor_bytes(r.model, r.teacher, r.optimizer)
        return out

    def memory_steps(self, first: int) -> dict[str, list[int]]:
        """Peak memory growth of each arm over ``--mem-steps`` interleaved steps."""
        mems = {a: [] for a in self.args.arms}
        with common.peak_meter(self.dev) as meter:
            for i in range(first, first + self.args.mem_steps):
                batch = self.batch()
                for name in self.args.arms:
                    meter.begin()
                    dt, _ = self.step(name, batch, i)
                    mems[name].append(meter.end())
                    report(self.args, "memory", i, name, dt, mems[name][-1])
        return mems


def report(args, kind: str, i: int, name: str, dt: float, grown: int | None = None) -> None:
    if not args.quiet:
        mem = "" if grown is None else f" {grown / common.MB:9.1f} MB"
        print(f"{kind:<6} {i:>3} {name:<9} {dt:8.3f} s{mem}", file=sys.stderr, flush=True)


def memory_child(args: argparse.Namespace) -> None:
    """The memory pass on the CPU, in a fresh process whose allocator is pinned from the start.

    Pinned only now, glibc would serve large blocks from the heap the timed steps left behind
    and keep them after free, so the RSS would count freed memory too.
    """
    common.pin_allocator()
    bench = Bench(args)
    warm = min(args.warmup, 1)  # one step first: the optimizer state exists after it
    for i in range(1, warm + 1):
        batch = bench.batch()
        for name in args.arms:
            report(args, "warmup", i, name, bench.step(name, batch, i)[0])
    mems = bench.memory_steps(warm + 1)
    from lab.runs.store import atomic_write_text

    atomic_write_text(args.memory_child, json.dumps(mems))


def cpu_memory(args: argparse.Namespace, argv: list[str]) -> dict[str, list[int]]:
    with tempfile.TemporaryDirectory(prefix="bench-step-") as tmp:
        out = Path(tmp) / "mem.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--memory-child", str(out)]
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
        if proc.returncode != 0 or not out.exists():
            raise SystemExit(f"the memory pass failed (exit {proc.returncode}): {' '.join(cmd)}")
        return json.loads(out.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return None
    bench = Bench(args)
    cpu = bench.dev.type == "cpu"
    peaks = [flops_mod.matmul_peak()] if cpu else []  # before and after: the higher one
    times = {a: [] for a in args.arms}
    cpus = {a: [] for a in args.arms}
    for i in range(1, args.warmup + args.steps + 1):
        batch = bench.batch()
        for name in args.arms:
            dt, cpu = bench.step(name, batch, i)
            if i > args.warmup:
                times[name].append(dt)
                cpus[name].append(cpu)
            report(args, "warmup" if i <= args.warmup else "step", i, name, dt)
    if cpu:
        peaks.append(flops_mod.matmul_peak())
    counted = compute(bench, args.warmup + args.steps + 1)
    states = bench.states()
    losses = dict(bench.losses)
    device, dtype, params = bench.dev, bench.bundle.dtype, bench.params
    if device.type == "cuda":
        mems = bench.memory_steps(args.warmup + args.steps + 2)
    else:
        del bench  # free this process's model copies before the memory pass loads its own
        gc.collect()
        mems = cpu_memory(args, argv)
    result = summarize(args, device, dtype, times, cpus, mems, states, losses, params)
    peak = max(peaks, key=lambda p: p["gflops"]) if peaks else None
    with_peak(result["arms"], counted, peak)
    result["matmul_peak"] = peak and dict(peak, measured_gflops=[p["gflops"] for p in peaks])
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()

"""Step time and peak memory of LoRA, PiSSA, BA-LoRA and a reference-style BA-LoRA, side by side.

All arms live in one process and train on the same synthetic batches (exactly batch x seq
tokens: a prompt half with labels -100, a response half), interleaved step by step (lora,
pissa, balora, reference, lora, ...), so machine noise hits every arm alike. ``lora`` and
``pissa`` run with ``train.log_terms=false``: plain LoRA work, no teacher and no terms.
``balora`` is the engine's step (``lab.trainer.train_arm_step``).

``reference`` is BA-LoRA written the way the paper's published code does it: a second full
deep copy of the base model as the teacher (run under no_grad), the full (B, T, V) logits at
every position, ``torch.log(torch.softmax(...))`` over the whole vocabulary at every position
for the KL and the entropy, and an exact SVD of the full (B*T, V) logits matrix, with the same
weights. Only its cost matters here.

Prints JSON: per arm the median step time (wall clock, and the process CPU time, which a busy
shared machine disturbs less), the peak memory growth during a step (see ``bench/_common.py``),
tokens/s (and an MFU estimate on a GPU), the persistent tensors the arm holds, and the ratios
to ``lora`` against the targets (wall time <= 1.4, memory <= 1.1).

    python bench/step.py                                  # smollm2-135m, 8 x 128, rank 8
    python bench/step.py --model synthetic-1b --device cuda --seq 512
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import _common as common  # first: puts the repository root on sys.path
import torch
from accelerate import Accelerator

from lab import adapters, trainer
from lab.config import from_dict
from lab.dist import Dist
from lab.models import ModelBundle, load_model, pick_device, pick_dtype

ORDER = ("lora", "pissa", "balora", "reference")
TARGETS = {"time": 1.4, "mem": 1.1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m", help="a lab model name or synthetic-1b")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=12, help="measured steps per arm")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, fp32 on the CPU")
    p.add_argument("--targets", default="auto", help="LoRA target modules, comma separated")
    p.add_argument("--arms", default=",".join(ORDER), help="a subset of " + ",".join(ORDER))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--peak-tflops", type=float, default=None, help="for MFU (CUDA default 989)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--quiet", action="store_true", help="no per-step progress on stderr")
    args = p.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ORDER]
    if unknown or not arms:
        p.error(f"--arms: unknown {unknown} (known: {', '.join(ORDER)})")
    args.arms = [a for a in ORDER if a in arms]
    for name in ("batch", "rank", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be 0 or more")
    return args


def make_config(args: argparse.Namespace):
    return from_dict(
        {
            "name": "bench-step",
            "arms": [a for a in args.arms if a != "reference"] or ["lora"],
            "model": {"name": args.model, "dtype": args.dtype, "device": args.device},
            "lora": {
                "rank": args.rank,
                "alpha": 2.0 * args.rank,
                "dropout": 0.0,
                "target_modules": args.targets.split(","),
            },
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
        params = adapters.trainable_parameters(self.model)
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


def summarize(args, bundle, times, cpus, mems, states, losses, params: int) -> dict:
    tokens = args.batch * args.seq
    peak = args.peak_tflops
    if peak is None and bundle.device.type == "cuda":
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
    t, m = ratios["balora_vs_lora_time"], ratios["balora_vs_lora_mem"]
    meets = None if t is None or m is None else bool(t <= TARGETS["time"] and m <= TARGETS["mem"])
    return {
        "model": args.model,
        "device": str(bundle.device),
        "dtype": str(bundle.dtype).replace("torch.", ""),
        "batch": args.batch,
        "seq": args.seq,
        "rank": args.rank,
        "threads": torch.get_num_threads(),
        "params": params,
        "steps": args.steps,
        "warmup": args.warmup,
        "peak_tflops": peak,
        "arms": arms,
        "ratios": ratios,
        "targets": dict(TARGETS),
        "meets_targets": meets,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    common.pin_allocator()  # so the RSS follows the live tensors (bench/_common.py)
    cfg = make_config(args)
    bundle = load_bundle(args)
    dev = bundle.device
    params = sum(p.numel() for p in bundle.model.parameters())
    vocab = bundle.model.get_output_embeddings().weight.shape[0]

    reference = None
    if "reference" in args.arms:
        teacher = copy.deepcopy(bundle.model)  # the second full copy the paper's code keeps
        reference = ReferenceArm(copy.deepcopy(bundle.model), teacher, cfg)
    engine_arms = {}
    if any(a != "reference" for a in args.arms):
        engine_arms = trainer.build_arms(cfg, bundle)
    dist = Dist(Accelerator(cpu=dev.type == "cpu"))

    states = {}
    times = {a: [] for a in args.arms}
    mems = {a: [] for a in args.arms}
    cpus = {a: [] for a in args.arms}
    losses = {}
    gen = torch.Generator().manual_seed(args.seed)
    with common.peak_meter(dev) as meter:
        for i in range(1, args.warmup + args.steps + 1):
            batch = common.synthetic_batch(gen, args.batch, args.seq, vocab, dev)
            for name in args.arms:
                lambdas = trainer.lambdas_at(cfg, "balora" if name == "reference" else name, i)
                meter.begin()
                common.sync(dev)
                t0, c0 = time.perf_counter(), time.process_time()
                if name == "reference":
                    reference.step(batch, lambdas)
                    losses[name] = reference.last_loss
                else:
                    ev = trainer.train_arm_step(engine_arms[name], [batch], cfg, i, dist)
                    losses[name] = ev["loss"]
                common.sync(dev)
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                grown = meter.end()
                if i > args.warmup:
                    times[name].append(dt)
                    cpus[name].append(cpu)
                    mems[name].append(grown)
                if not args.quiet:
                    kind = "warmup" if i <= args.warmup else "step"
                    print(
                        f"{kind} {i:>3} {name:<9} {dt:8.3f} s {grown / common.MB:9.1f} MB",
                        file=sys.stderr,
                        flush=True,
                    )
    if reference is not None:
        states["reference"] = common.tensor_bytes(
            reference.model, reference.teacher, reference.optimizer
        )
    for name, arm in engine_arms.items():  # optimizer state exists after the first step
        states[name] = common.tensor_bytes(arm.model, arm.optimizer)
    result = summarize(args, bundle, times, cpus, mems, states, losses, params)
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()

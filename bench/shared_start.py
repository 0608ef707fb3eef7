"""Training steps with the rows' shared start run once against every row run whole, side by side.

A chat template puts the same system turn and task instruction before every example, so all
rows of a batch start with the same tokens (``lab.datasets.encoding.shared_start``; SmolLM2 on the
sentiment preset: about half of each row). ``lab.engine.forward`` runs them as a one-row pass and
repeats their KV cache for the rows. This bench trains a preset's arms on its own first
batches (seed-matched, as a run draws them), each step twice in turn: ``shared`` as a run does
it and ``whole`` with the shared start switched off, so machine noise hits both alike.

- ``median_s``: per arm and variant, the median step time (the teacher pass included where the
  arm has terms).
- ``ratio``: shared / whole per arm, and ``all_arms`` over the summed medians.
- ``tokens``: the tokens the steps' decoder passes ran, per variant.
- ``loss_rel_diff``: the largest relative difference of the step losses on the first batch
  (float rounding only).

    python bench/shared_start.py [--preset imbalance] [--set key=value ...] [--steps 6]
                                 [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common as common  # first: puts the repository root on sys.path
import torch
from accelerate import Accelerator

from lab.config import load_preset
from lab.datasets import encoding
from lab.engine import forward, steps, trainer
from lab.engine.dist import Dist


def whole(micro: list[dict]) -> list[dict]:
    return [{**b, "shared_len": 0} for b in micro]


def decoder_tokens(micro: list[dict]) -> int:
    """Tokens the decoder runs for a step's micro-batches: the shared start once, the rest per row."""
    total = 0
    for b in micro:
        B, T = b["input_ids"].shape
        C = b["shared_len"]
        total += C + B * (T - C)
    return total


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="imbalance")
    p.add_argument("--steps", type=int, default=6, help="timed steps per arm and variant")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--set", action="append", default=[], help="a preset override key=value")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_preset(args.preset, [*args.set, f"train.steps={args.steps + 1}"])
    seed = cfg.train.seeds[0] if cfg.train.seeds else cfg.train.seed
    task_data, bundle = trainer.prepare(cfg)
    arms = [a for a in trainer.build_arms(cfg, bundle).values() if a.seed in (None, seed)]
    dist = Dist(Accelerator(cpu=bundle.device.type == "cpu"))
    order = encoding.batch_order(len(task_data.train), cfg.train.batch_size, args.steps + 1, seed)
    batches = [
        steps.micro_batches(bundle.tokenizer, task_data.train, ix, cfg, dist, bundle.device)
        for ix in order
    ]
    diffs = []
    for arm in arms:  # the first batch's loss both ways, before any step
        model = arm.activate().train()
        lambdas = steps.lambdas_at(cfg, arm.spec, 1)
        with torch.no_grad():
            kw = dict(need_terms=steps.needs_terms(arm, cfg))
            a = forward.micro_batch_loss(model, batches[0][0], cfg, lambdas, **kw).total
            b = forward.micro_batch_loss(model, whole(batches[0])[0], cfg, lambdas, **kw).total
        diffs.append(abs(float(a) - float(b)) / max(abs(float(b)), 1e-12))
    times = {a.name: {"shared": [], "whole": []} for a in arms}
    tokens = {"shared": 0, "whole": 0}
    for i, micro in enumerate(batches[1:], start=2):
        for variant, mb in (("shared", micro), ("whole", whole(micro))):
            tokens[variant] += decoder_tokens(mb)
            teacher = None
            for arm in arms:
                t0 = time.perf_counter()
                if steps.needs_terms(arm, cfg) and teacher is None:
                    teacher = steps.teacher_step(arm.model, mb, cfg)
                steps.train_arm_step(arm, mb, cfg, i, dist, teacher=teacher)
                times[arm.name][variant].append(time.perf_counter() - t0)
    med = {n: {v: statistics.median(t) for v, t in d.items()} for n, d in times.items()}
    result = {
        "preset": args.preset,
        "model": cfg.model.name,
        "cpu": common.cpu_info(),
        "threads": torch.get_num_threads(),
        "batch_size": cfg.train.batch_size,
        "steps": args.steps,
        "shared_len": [b[0]["shared_len"] for b in batches[1:]],
        "row_len": [int(b[0]["input_ids"].shape[1]) for b in batches[1:]],
        "tokens": tokens,
        "median_s": med,
        "ratio": {n: m["shared"] / m["whole"] for n, m in med.items()},
        "loss_rel_diff": max(diffs),
    }
    totals = {v: sum(m[v] for m in med.values()) for v in ("shared", "whole")}
    result["ratio"]["all_arms"] = totals["shared"] / totals["whole"]
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()

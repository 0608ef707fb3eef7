"""Peak memory by arm count, and a lambda grid as one job against one job per grid point.

Every measured run is a whole training job (``lab.engine.trainer.run``, as the CLI and the UI's
worker start it) in its own fresh process, so its peak RSS (``ru_maxrss``) and its wall time
include the interpreter, the model load, the teacher passes and the final evaluation.

- memory: the same model and batch with 1 arm (``lora``), 3 arms (``lora,pissa,balora``) and
  6 arms (those + three ``balora@...`` grid points). Targets: 3 arms <= 1.25x and 6 arms
  <= 1.5x the peak RSS of the LoRA-only run (every arm is adapters on one shared base).
- grid: 4 lambda points as one job (``arms: [balora@..., ...]``: one model load, one teacher
  pass per step) against 4 jobs of one point each, run one after the other. Target: the one
  job takes <= 0.5x the wall time of the four.

    python bench/arms.py                      # smollm2-135m, 2 steps, batch 4 x 128
    python bench/arms.py --model tiny-llama --steps 1 --seq 32
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as common  # first: puts the repository root on sys.path

TARGETS = {"three_arms_mem": 1.25, "six_arms_mem": 1.5, "grid_time": 0.5}
GRID = [(0.025, 0.005, 0.005), (0.05, 0.005, 0.005), (0.1, 0.01, 0.01), (0.0125, 0.0025, 0.0025)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--skip", default="", help="memory and/or grid, comma separated")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: one job, its config as JSON
    return p.parse_args(argv)


def job_config(args: argparse.Namespace, arms: list[str]) -> dict:
    return {
        "name": "bench-arms",
        "arms": arms,
        "model": {"name": args.model, "device": "cpu"},
        "data": {"name": "sentiment", "max_train": 256, "max_eval": 8},
        "train": {
            "steps": args.steps,
            "batch_size": args.batch,
            "seq_len": args.seq,
            "bias_eval": False,
            "analysis": False,
            "probe_size": 8,
        },
    }


def child(spec: str) -> None:
    """Run one job in this process and print its wall time and peak RSS."""
    from lab.config import from_dict
    from lab.engine.trainer import run

    cfg_dict, out = json.loads(spec)
    t0 = time.perf_counter()
    for _ in run(from_dict(cfg_dict), out):
        pass
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_kb / 1024}))


def run_job(args: argparse.Namespace, arms: list[str], tmp: Path) -> dict:
    """One job in a fresh process; its wall time counts the process start and imports."""
    out = tmp / f"run{len(list(tmp.iterdir()))}"
    spec = json.dumps([job_config(args, arms), str(out)])
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", spec],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"job {arms} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    if not args.quiet:
        print(f"{','.join(arms)[:60]:<60} {wall:7.1f} s {result['peak_rss_mb']:8.0f} MB",
              file=sys.stderr, flush=True)  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.child:
        child(args.child)
        return None
    from lab.arms import grid_arms

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    grid = grid_arms(GRID)
    result: dict = {
        "model": args.model,
        "steps": args.steps,
        "batch": args.batch,
        "seq": args.seq,
        "cpu": common.cpu_info(),
        "targets": dict(TARGETS),
    }
    ratios: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-arms-") as tmp:
        root = Path(tmp)
        if "memory" not in skip:
            runs = {
                "lora": run_job(args, ["lora"], root),
                "three": run_job(args, ["lora", "pissa", "balora"], root),
                "six": run_job(args, ["lora", "pissa", "balora", *grid[1:]], root),
            }
            result["memory"] = {k: v["peak_rss_mb"] for k, v in runs.items()}
            ratios["three_arms_mem"] = runs["three"]["peak_rss_mb"] / runs["lora"]["peak_rss_mb"]
            ratios["six_arms_mem"] = runs["six"]["peak_rss_mb"] / runs["lora"]["peak_rss_mb"]
        if "grid" not in skip:
            separate = [run_job(args, [arm], root) for arm in grid]
            together = run_job(args, grid, root)
            result["grid"] = {
                "arms": grid,
                "separate_s": [r["process_s"] for r in separate],
                "one_job_s": together["process_s"],
            }
            ratios["grid_time"] = together["process_s"] / sum(r["process_s"] for r in separate)
    result["ratios"] = ratios
    result["meets_targets"] = {k: bool(v <= TARGETS[k]) for k, v in ratios.items()}
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()

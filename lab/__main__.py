"""The command line: ``python -m lab train | sweep | models | datasets | presets | report | bias |
verdicts | export``.

``train`` runs the same engine the UI uses and works under ``accelerate launch`` for several
processes. A bad preset, key, value, model or dataset exits with code 2 and one line naming it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path


def _expected_errors() -> tuple[type[BaseException], ...]:
    from lab.config import ConfigError
    from lab.datasets.encoding import DataError
    from lab.engine.checkpoint import ResumeError
    from lab.jobs.worker import WorkerLockHeld
    from lab.models import ModelError
    from lab.runs.store import RunReadError
    from lab.sweep.pool import PoolError

    return (
        PoolError,
        ConfigError,
        DataError,
        ModelError,
        FileExistsError,
        RunReadError,
        ResumeError,
        WorkerLockHeld,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lab.config import ConfigError, load_preset
    from lab.engine.trainer import run
    from lab.jobs import worker
    from lab.jobs.hosting import LOCAL_LIMITS, check_limits
    from lab.runs.store import new_run_path, read_summary

    if bool(args.preset) == bool(args.resume):
        raise ConfigError("train needs exactly one of --preset and --resume")
    if args.resume:
        if args.out:
            raise ConfigError("--out: not allowed with --resume (the run directory is reused)")
        from lab.engine.checkpoint import resume_config

        cfg = resume_config(args.resume, args.set or [])
    else:
        cfg = load_preset(args.preset, args.set or [])
    check_limits(cfg, LOCAL_LIMITS)
    # started by the app: die with it, and be the only worker on its runs folder
    worker.watch_parent_from_env()
    worker.hold_lock_from_env()
    main = os.environ.get("RANK", "0") == "0"
    if (
        os.environ.get("ACCELERATE_USE_CPU") == "True"
        and "MASTER_ADDR" in os.environ
        and "WORLD_SIZE" not in os.environ
    ):
        print(
            "note: `accelerate launch --cpu` starts a single process; for N CPU processes run "
            "`accelerate launch --multi_gpu --num_processes N -m lab train ... --set model.device=cpu`",
            file=sys.stderr,
        )
    from lab.arms import specs

    n_arms = len(specs(cfg))  # every arm once per seed
    total = cfg.train.steps * n_arms
    bar = tqdm(
        total=total, desc=cfg.name, unit="step", disable=not main or args.quiet, file=sys.stderr
    )
    # The path is chosen here (the run creates it once the data and model load), so the
    # summary below is read from this run's directory.
    if args.resume:
        out = Path(args.resume)
        from lab.engine.checkpoint import read_state

        done = int(read_state(out)["step"])  # fails before any work without a checkpoint
        total = max(0, cfg.train.steps - done) * n_arms
        bar.reset(total=total)
    else:
        out = Path(args.out) if args.out else new_run_path(name=cfg.name)
    for ev in run(cfg, out, resume=bool(args.resume)):
        if ev["kind"] == "train":
            bar.update(1)
            bar.set_postfix(arm=ev["arm"], loss=f"{ev['loss']:.3f}")
        elif ev["kind"] == "eval" and main:
            metric = ev.get("task_metric")
            tqdm.write(
                f"eval step {ev['step']:>4} {ev['arm']:<7} task_metric={metric}", file=sys.stderr
            )
        elif ev["kind"] == "failed":
            tqdm.write(f"arm {ev['arm']} failed: {ev['error']}", file=sys.stderr)
    bar.close()
    if main:
        summary = read_summary(out)
        print(json.dumps({"run_dir": str(out), "status": summary["status"]}))
        if summary["status"] == "failed":
            return 1
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from lab.jobs.hosting import LOCAL_LIMITS, check_limits
    from lab.sweep.runner import run_sweep
    from lab.sweep.spec import load_spec, plan

    spec = load_spec(args.spec)
    for cell in plan(spec):
        check_limits(cell.cfg, LOCAL_LIMITS)

    def line(row: dict) -> None:
        err = f" ({row['error']})" if row["error"] else ""
        print(f"{row['name']:<40} {row['status']:<7} attempts={row['attempts']}{err}",
              file=sys.stderr)  # fmt: skip

    index = run_sweep(spec, args.out, engine=args.engine, address=args.address,
                      num_cpus=args.num_cpus, on_cell=None if args.quiet else line)  # fmt: skip
    print(json.dumps({"sweep_dir": str(args.out), **index["counts"]}))
    return 1 if index["counts"]["failed"] else 0


def _print_rows(rows: list[dict], as_json: bool, line: Callable[[dict], str]) -> int:
    """A listing: the rows as JSON, or one ``line(row)`` each."""
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(line(r))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from lab.models import list_models

    def line(r: dict) -> str:
        state = "ready" if r["installed"] else f"missing: {r['install']}"
        return f"{r['name']:<14} {'/'.join(r['tasks']):<4} {state:<12} {r['description']}"

    return _print_rows(list_models(), args.json, line)


def cmd_datasets(args: argparse.Namespace) -> int:
    from lab.datasets import list_datasets

    def line(r: dict) -> str:
        if "n_items" in r:
            counts = f"items={r['n_items']}"
        else:
            counts = f"train={r.get('n_train', '-')} test={r.get('n_test', '-')}"
        tasks = "/".join(r.get("tasks", []))
        return f"{r['name']:<18} {r.get('kind', ''):<15} {tasks:<8} {counts:<22} {r.get('description', '')}"

    return _print_rows(list_datasets(), args.json, line)


def cmd_presets(args: argparse.Namespace) -> int:
    from lab.config import list_presets, load_preset

    for name in list_presets():
        cfg = load_preset(name)
        print(
            f"{name:<18} model={cfg.model.name} data={cfg.data.name} task={cfg.task} steps={cfg.train.steps}"
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lab.plots.report import render_run

    out = Path(args.out or Path(args.run_dir) / "figures")
    for p in render_run(args.run_dir, out):
        print(p)
    return 0


def cmd_bias(args: argparse.Namespace) -> int:
    from lab.bias.benchmarks import score_target

    paths = {"crows_pairs": args.crows_pairs or "", "bbq": args.bbq or "",
             "winogender": args.winogender or "", "winogender_stats": args.winogender_stats or ""}  # fmt: skip
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    res = score_target(args.target, paths, arms=arms, max_items=args.max_items,
                       batch_size=args.batch_size, n_boot=args.n_boot, seed=args.seed,
                       device=args.device)  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    for arm, scores in res["arms"].items():
        for name, s in scores.items():
            print(f"{arm:<7} {name:<44} {s['value']:>8.4f}  "
                  f"[{s['ci_low']:.4f}, {s['ci_high']:.4f}]  n={s['n']}")  # fmt: skip
    for kind, b in res["benchmarks"].items():
        print(f"\n{b['title']} ({res['n_items'][kind]} items)\n  limitation: {b['limitation']}"
              f"\n  scoring: {b['convention']}")  # fmt: skip
    return 0


def _print_verdicts(args: argparse.Namespace, rows: list, summary: dict | None) -> None:
    from lab.evidence import sentences

    if args.markdown:
        print(sentences.markdown_table(rows))
        return
    rates = sentences.learning_rates_text(summary)
    short = [f"In short: {x}" for x in sentences.in_short(rows)]
    for line in ([rates] if rates else []) + short + [sentences.verdict_text(r) for r in rows]:
        print(line)


def _pooled_verdicts(args: argparse.Namespace, dirs: list[Path]) -> int:
    """Several runs, or a sweep folder: runs that differ only in the seed, pooled."""
    from lab.runs.store import read_summary
    from lab.sweep import pool
    from lab.sweep.index import INDEX

    if len(dirs) == 1:
        groups = pool.sweep_verdicts(dirs[0], args.step)
    else:
        seeds = pool.check_poolable(dirs)
        groups = [{"params": {}, "runs": [d.name for d in dirs], "left_out": [],
                   "seeds": sorted(s for ss in seeds.values() for s in ss),
                   "rows": pool.pooled_verdicts(dirs, args.step)}]  # fmt: skip
    if not groups:
        raise pool.PoolError(f"{dirs[0]}: no done cells to compare ({INDEX})")
    if args.json:
        print(json.dumps([{**g, "rows": [r.to_dict() for r in g["rows"]]} for g in groups],
                         indent=2))  # fmt: skip
        return 0
    for g in groups:
        where = ", ".join(f"{k}={v}" for k, v in g["params"].items()) or "all runs"
        print(f"## {where}: seeds {', '.join(map(str, g['seeds']))} "
              f"pooled from {len(g['runs'])} runs ({', '.join(g['runs'])})")  # fmt: skip
        if g["left_out"]:
            print(f"left out (not done): {', '.join(g['left_out'])}")
        first = (dirs[0] / g["runs"][0]) if len(dirs) == 1 else dirs[0]
        _print_verdicts(args, g["rows"], read_summary(first))
        print()
    return 0


def cmd_verdicts(args: argparse.Namespace) -> int:
    from lab.evidence import plan, sentences, verdicts
    from lab.runs.store import RunReadError, read_summary
    from lab.sweep.index import INDEX

    dirs = [Path(d) for d in args.run_dir]
    for d in dirs:
        if not d.is_dir():
            raise RunReadError(f"no run directory {d}")
    if len(dirs) > 1 or (dirs[0] / INDEX).is_file():
        return _pooled_verdicts(args, dirs)
    run_dir = dirs[0]
    try:
        rows = verdicts.run_verdicts(run_dir, args.step)
    except FileNotFoundError:
        raise RunReadError(f"run {run_dir.name} has no per-item records (items/)") from None
    if not rows:
        raise RunReadError(f"run {run_dir.name} has no arms to compare in its items tables")
    planning = args.plan or args.effect is not None
    plans = [plan.plan_row(r.to_dict(), args.effect) for r in rows] if planning else []
    if args.json:
        out = [r.to_dict() for r in rows]
        for d, p in zip(out, plans):
            d["plan"] = p
        print(json.dumps(out, indent=2))
    elif args.markdown:
        print(sentences.markdown_table(rows))
        for r, p in zip(rows, plans):
            print(f"- {r.label}, {verdicts.arm_display(r.arm_a)} − "
                  f"{verdicts.arm_display(r.arm_b)}: {plan.plan_text(r.to_dict(), p)}")  # fmt: skip
    else:
        rates = sentences.learning_rates_text(read_summary(run_dir))
        for line in ([rates] if rates else []) + [
            f"In short: {x}" for x in sentences.in_short(rows)
        ]:
            print(line)
        for i, r in enumerate(rows):
            print(sentences.verdict_text(r))
            if planning:
                print(f"  {plan.plan_text(r.to_dict(), plans[i])}")
    return 0


def _positive(text: str) -> float:
    """An argparse type: a finite number above 0 (--effect)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return x


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the arms of a preset and write a run directory")
    t.add_argument("--preset", help="a preset name (see `presets`) or a YAML path")
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its checkpoint (only --set train.steps=N may change)",
    )
    t.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override, e.g. reg.lambda1=0"
    )
    t.add_argument("--out", help="the run directory to write (default: runs/<run_id>)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)
    for name, fn, text in (
        ("models", cmd_models, "list the models available offline"),
        ("datasets", cmd_datasets, "list the shipped datasets and bias probe sets"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("--json", action="store_true")
        s.set_defaults(fn=fn)
    w = sub.add_parser("sweep", help="run every cell of a sweep spec (a grid over a preset)")
    w.add_argument("spec", metavar="SPEC.yaml", help="preset, set and grid (docs/scaling-out.md)")
    w.add_argument("--out", required=True, help="the sweep folder (run again to resume it)")
    w.add_argument("--engine", choices=("local", "ray"), default="local")
    w.add_argument("--address", help="an existing Ray cluster (default: a local instance)")
    w.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance")
    w.add_argument("--quiet", action="store_true", help="no line per finished cell")
    w.set_defaults(fn=cmd_sweep)
    s = sub.add_parser("presets", help="list the presets")
    s.set_defaults(fn=cmd_presets)
    r = sub.add_parser("report", help="render every figure of a run to HTML (no model needed)")
    r.add_argument("run_dir")
    r.add_argument("--out", help="output folder (default: RUN_DIR/figures)")
    r.set_defaults(fn=cmd_report)
    b = sub.add_parser("bias", help="score a model or a run's arms on bias benchmark files")
    b.add_argument(
        "target", metavar="MODEL_OR_RUN", help="a model name or path, or a run directory"
    )
    b.add_argument("--crows-pairs", metavar="CSV", help="a CrowS-Pairs CSV")
    b.add_argument("--bbq", metavar="JSONL", help="a BBQ JSONL file")
    b.add_argument("--winogender", metavar="TSV", help="WinoGender-style templates")
    b.add_argument("--winogender-stats", metavar="CSV", help="occupation,women_pct[,source]")
    b.add_argument("--arms", help="arms of a run to score, e.g. base,balora (default: all)")
    b.add_argument("--max-items", type=int, help="a fixed subset of each benchmark")
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per interval")
    b.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    b.add_argument("--device", default="auto")
    b.add_argument("--out", help="also write the scores as JSON to this file")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.set_defaults(fn=cmd_bias)
    v = sub.add_parser(
        "verdicts", help="paired differences between a run's arms (and the base), in words"
    )
    v.add_argument(
        "run_dir", nargs="+", metavar="RUN_OR_SWEEP",
        help="a run; several runs that differ only in the seed (pooled); or a sweep folder",
    )  # fmt: skip
    v.add_argument("--step", type=int, help="an eval step (default: the last)")
    fmt = v.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="a Markdown table")
    fmt.add_argument("--json", action="store_true", help="every row as JSON")
    v.add_argument(
        "--plan", action="store_true", help="the seeds each row needs for 80%% power across seeds"
    )
    v.add_argument(
        "--effect", type=_positive, metavar="X",
        help="plan for this difference (the row's unit: points or nats) instead of its own size",
    )  # fmt: skip
    v.set_defaults(fn=cmd_verdicts)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except BrokenPipeError:  # the reader left (``| head``): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    except _expected_errors() as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # anything else still ends in one line naming the cause
        print(f"error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        if os.environ.get("BALORA_DEBUG"):
            raise
        return 1


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 400 else text[:400] + "…"


if __name__ == "__main__":
    sys.exit(main())

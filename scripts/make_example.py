"""Train a preset and ship the run as the app's example in assets/example_run/.

The Classroom tab replays the example, and the Compare tab generates from it without any
training: the run is copied with its events, summary, analysis arrays, per-item tables and its
adapters, stored compactly (float16 safetensors, which the Compare tab loads onto the base
model's own precision). Everything must fit in a size budget (5 MB by default); when a run has
more adapters than fit (several seeds), the first seed's arms go first and the summary's
``example`` entry names what was left out. Checkpoints and the worker log are not copied.

Usage: python scripts/make_example.py [--preset classroom-cpu] [--set key=value ...]
                                      [--from-run RUN_DIR] [--out assets/example_run]
                                      [--budget-mb 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.runs.provenance import cpu_info  # noqa: E402

OUT = ROOT / "assets" / "example_run"
BUDGET_MB = 5.0
RUN_FILES = ("config.yaml", "events.jsonl", "summary.json")
RUN_FOLDERS = ("analysis", "items", "bias_items")  # numbers the tabs draw; never checkpoints
_SEED = re.compile(r"(?:^|[^a-z])(?:seed|s)[_-]?(\d+)(?:$|[^0-9])", re.IGNORECASE)
FP16_MAX = 65504.0


class ExampleError(RuntimeError):
    """The run cannot be shipped as the example (it failed, or it does not fit the budget)."""


def train(preset: str, overrides: list[str], out: Path) -> None:
    """One run through the command line, as the app's worker runs it."""
    argv = [sys.executable, "-m", "lab", "train", "--preset", preset, "--out", str(out)]
    for item in overrides:
        argv += ["--set", item]
    subprocess.run(argv, cwd=ROOT, check=True, stdout=sys.stderr)  # stdout: the JSON entry only


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def half_adapter(src: Path, dest: Path) -> str:
    """Copy one PEFT adapter folder with its float weights as float16; a tensor whose values do
    not fit float16 keeps its dtype. -> the stored dtype ("float16" or "mixed")."""
    import torch
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True)
    shutil.copyfile(src / "adapter_config.json", dest / "adapter_config.json")
    state = load_file(str(src / "adapter_model.safetensors"))
    kept = 0
    for key, t in state.items():
        if not t.is_floating_point():
            continue
        if t.numel() and t.abs().max().item() >= FP16_MAX:
            kept += 1
            continue
        state[key] = t.to(torch.float16).contiguous()
    save_file(state, str(dest / "adapter_model.safetensors"), metadata={"format": "pt"})
    return "mixed" if kept else "float16"


def adapter_folders(run_dir: Path, arms: list[str]) -> list[Path]:
    """Every adapter folder of the run, the first seed's arms first, in the config's arm order."""
    base = run_dir / "adapters"
    found = [p.parent for p in base.rglob("adapter_config.json")] if base.is_dir() else []

    def order(path: Path):
        rel = path.relative_to(base).as_posix()
        seed = _SEED.search(rel)
        arm = next((i for i, a in enumerate(arms) if a in rel.split("/")), len(arms))
        return (int(seed.group(1)) if seed else 0, arm, rel)

    return sorted(found, key=order)


def export(
    run_dir: Path,
    dest: Path,
    budget_bytes: int,
    label: str | None = None,
    made: dict | None = None,
) -> dict:
    """Copy ``run_dir`` to ``dest`` (replaced) as the example, within ``budget_bytes``.
    ``made``: how long training it took and where (see :func:`main`), kept in the entry.
    -> the ``example`` entry written into the copy's summary.json."""
    run_dir, dest = Path(run_dir), Path(dest)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    if summary.get("status") not in ("done", "stopped"):
        raise ExampleError(f"the run ended {summary.get('status')}: {summary.get('error')}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".example-", dir=dest.parent))
    try:
        for name in RUN_FILES:
            shutil.copyfile(run_dir / name, stage / name)
        for name in RUN_FOLDERS:
            if (run_dir / name).is_dir():
                shutil.copytree(run_dir / name, stage / name)
        room = budget_bytes - folder_bytes(stage) - 4096  # the summary grows a little
        if room < 0:
            raise ExampleError(
                f"the run without adapters is {folder_bytes(stage) / 1e6:.2f} MB, over the "
                f"{budget_bytes / 1e6:.1f} MB budget"
            )
        from lab.config import load_config_file

        arms = list(load_config_file(run_dir / "config.yaml").arms)
        shipped, left_out, dtypes = [], [], set()
        for src in adapter_folders(run_dir, arms):
            rel = src.relative_to(run_dir).as_posix()
            target = stage / rel
            dtypes.add(half_adapter(src, target))
            size = folder_bytes(target)
            if size > room or left_out:  # keep whole seeds: nothing after the first miss
                shutil.rmtree(target)
                left_out.append(rel)
                continue
            room -= size
            shipped.append(rel)
        note = "adapters stored as float16 safetensors"
        if left_out:
            note += (
                f"; {len(left_out)} adapter folder(s) left out to keep the example under "
                f"{budget_bytes / 1e6:.1f} MB: Compare shows the shipped ones only"
            )
        entry = {
            "source": label or run_dir.name,
            "adapters": shipped,
            "adapters_left_out": left_out,
            "adapter_dtype": "float16" if dtypes <= {"float16"} else "mixed",
            "budget_bytes": budget_bytes,
            "note": note,
            **(made or {}),
        }
        summary["example"] = entry
        summary["run_dir"] = (
            dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else dest.name
        )
        (stage / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        entry["total_bytes"] = folder_bytes(stage)
        if entry["total_bytes"] > budget_bytes:
            raise ExampleError(f"the example is {entry['total_bytes']} bytes, over the budget")
        if dest.exists():
            shutil.rmtree(dest)
        stage.rename(dest)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="classroom-cpu", help="the preset to train")
    ap.add_argument("--set", action="append", default=[], help="key=value over the preset")
    ap.add_argument("--from-run", type=Path, help="ship this finished run instead of training")
    ap.add_argument("--out", type=Path, default=OUT, help="where the example goes (replaced)")
    ap.add_argument("--budget-mb", type=float, default=BUDGET_MB, help="size limit of the copy")
    args = ap.parse_args(argv)
    budget = int(args.budget_mb * 1_000_000)
    if args.from_run:
        entry = export(args.from_run, args.out, budget)
    else:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="balora-example-") as tmp:
            run_dir = Path(tmp) / args.preset
            train(args.preset, args.set, run_dir)
            made = {  # regenerating the example should take at most 10 minutes on 2 cores
                "trained_in_s": round(time.perf_counter() - start, 1),
                "trained_on": {"cpu": cpu_info()["model"], "cores": os.cpu_count()},
            }
            entry = export(run_dir, args.out, budget, label=f"preset {args.preset}", made=made)
        took = time.perf_counter() - start
        print(
            f"example made in {int(took // 60)} min {took % 60:.0f} s on {os.cpu_count()} cores"
            f" of {made['trained_on']['cpu'] or 'an unknown CPU'}",
            file=sys.stderr,
        )
    print(json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

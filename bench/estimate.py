"""How far the Setup tab's estimate is from the real run: measure, estimate, then run.

For each preset: ``lab.jobs.measure_step_time`` (a short run of the exact setup) and
``lab.jobs.estimate_run`` give the estimate; the same config is then run through the CLI, as
the app's worker runs it, and timed. Prints JSON with both times and the relative error
(target: within 30% on tiny-test and classroom-cpu). Both are measured in one process run, one
after the other, so a busy machine inflates both alike.

    python bench/estimate.py [--preset tiny-test --preset classroom-cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import jobs  # noqa: E402
from lab.config import load_preset  # noqa: E402

TARGET = 0.30


def measure(preset: str) -> dict:
    cfg = load_preset(preset)
    measured = jobs.measure_step_time(preset, [])
    est = jobs.estimate_run(cfg, measured)
    with tempfile.TemporaryDirectory(prefix="balora-bench-") as tmp:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "lab", *jobs.checks.train_argv(preset, [], Path(tmp) / "r")],
            cwd=ROOT,
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        real = time.perf_counter() - t0
    error = real / est["total_s"] - 1.0
    return {
        "preset": preset,
        "estimate_s": round(est["total_s"], 1),
        "parts_s": {k: round(v, 1) for k, v in est.items() if k != "total_s"},
        "measured_s": {
            k: round(measured[k], 2) for k in ("startup_s", "step_overhead_s", "per_point_s")
        },
        "measure_wall_s": round(measured["wall_s"], 1),
        "real_s": round(real, 1),
        "relative_error": round(error, 3),
        "within_target": abs(error) <= TARGET,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", action="append")
    args = p.parse_args()
    rows = [measure(name) for name in args.preset or ["tiny-test", "classroom-cpu"]]
    print(json.dumps({"bench": "estimate", "target": TARGET, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()

"""How far the Setup tab's estimate is from the real run: measure, estimate, then run.

For each preset: ``lab.jobs.measure_step_time`` (a short run of the exact setup) and
``lab.jobs.estimate_run`` give the estimate; the same config is then run through the CLI, as
the app's worker runs it, and timed part by part the same way. Prints JSON with both times,
the relative error (target: within 30% on tiny-test and classroom-cpu) and both breakdowns
(the real run's start-up also holds its eval points before the last). Both are measured in
one process run, one after the other, so a busy machine inflates both alike.

    python bench/estimate.py [--preset tiny-test --preset classroom-cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
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
    # the real run, timed part by part the same way (its own events, read as they arrive)
    *_, real = jobs.checks.timed_run(preset, [], timeout=3600)
    error = real["wall_s"] / est["total_s"] - 1.0
    return {
        "preset": preset,
        "estimate_s": round(est["total_s"], 1),
        "measured_s": round(real["wall_s"], 1),
        "relative_error": round(error, 3),
        "within_target": abs(error) <= TARGET,
        "estimate_parts_s": _parts(measured),
        "real_parts_s": _parts(real),
        "measure_wall_s": round(measured["wall_s"], 1),
    }


def _parts(t: dict) -> dict:
    """One step of every arm, one eval point of every arm, and the rest, in seconds."""
    evals = dict(t["eval_s"])
    return {
        "startup_s": round(t["startup_s"], 2),
        "step_s": round(sum(t["per_arm_s"].values()), 3),
        "step_overhead_s": round(t["step_overhead_s"], 3),
        "base_eval_s": round(evals.pop("base", 0.0), 2),
        "arms_eval_s": round(sum(evals.values()), 2),
        "per_point_s": round(t["per_point_s"], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", action="append")
    args = p.parse_args()
    rows = [measure(name) for name in args.preset or ["tiny-test", "classroom-cpu"]]
    print(json.dumps({"bench": "estimate", "target": TARGET, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()

"""Runs that differ only in their seed, pooled as the seeds of one comparison.

Ten seeds run as ten jobs (ten cells of a sweep, ten GPUs) should answer like one ten-seed job.
:func:`pool_items` checks that the runs' ``config.yaml`` agree on every key but the seed
(``train.seed``, ``train.seeds``), that no seed appears in two runs, and stacks their per-item
tables (:mod:`lab.evidence.items`) into the table one multi-seed run writes: arm rows keep
their run's seed; the base model, measured once per run, is kept once when every run measured
it the same (it does not depend on the training seed), else once per run under that run's
seed, so arms are still paired with the base within their own seed. The verdicts are then the
existing ones of :mod:`lab.evidence.verdicts`, unchanged, on that table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lab.arms import run_seeds
from lab.config import from_dict, safe_yaml
from lab.evidence.items import item_steps, load_items
from lab.evidence.verdicts import VerdictRow, compare_arms
from lab.runs.store import RunReadError
from lab.sweep.index import read_index

SEED_KEYS = ("train.seed", "train.seeds")


class PoolError(ValueError):
    """Runs that cannot be pooled; the message names the runs and the key."""


def _config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise PoolError(f"{run_dir.name} is not a run directory (no config.yaml)")
    try:
        data = safe_yaml(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RunReadError(f"config.yaml of run {run_dir.name} is unreadable") from None
    if not isinstance(data, dict):
        raise RunReadError(f"config.yaml of run {run_dir.name} does not hold a mapping")
    return data


def _flat(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differing_keys(a: Mapping, b: Mapping) -> list[str]:
    """The dotted config keys whose values differ between two configs, the seed keys left out."""
    fa, fb = _flat(a), _flat(b)
    return [k for k in sorted(set(fa) | set(fb)) if k not in SEED_KEYS and fa.get(k) != fb.get(k)]


def _seeds(config: dict, run_dir: Path) -> list[int]:
    try:
        return run_seeds(from_dict(config))
    except ValueError as e:
        raise PoolError(f"config.yaml of run {run_dir.name} does not load: {e}") from None


def check_poolable(run_dirs: Sequence[str | Path]) -> dict[Path, list[int]]:
    """Each run's seeds; :class:`PoolError` when the runs differ in anything but the seed
    (naming the first key that differs) or share a seed."""
    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 1:
        raise PoolError("no runs to pool")
    configs = {d: _config(d) for d in dirs}
    first = dirs[0]
    seeds: dict[Path, list[int]] = {}
    owner: dict[int, Path] = {}
    for d in dirs:
        keys = differing_keys(configs[first], configs[d])
        if keys:
            fa, fb = _flat(configs[first]), _flat(configs[d])
            raise PoolError(
                f"runs {first.name} and {d.name} differ in {keys[0]} ({fa.get(keys[0])!r} vs "
                f"{fb.get(keys[0])!r}); only the seed may differ between pooled runs"
            )
        seeds[d] = _seeds(configs[d], d)
        for s in seeds[d]:
            if s in owner:
                raise PoolError(f"seed {s} is in both {owner[s].name} and {d.name}")
            owner[s] = d
    return seeds


def _base_rows(table: Mapping[str, np.ndarray]) -> list[tuple]:
    keep = table["arm"] == "base"
    return sorted(zip(table["metric"][keep].tolist(), table["item"][keep].tolist(),
                      table["value"][keep].tolist()))  # fmt: skip


def pool_items(run_dirs: Sequence[str | Path], step: int | None = None) -> dict[str, np.ndarray]:
    """The pooled items table of runs that differ only in the seed (see the module doc).
    ``step``: an eval step every run has (default: the last, which must be the same in all)."""
    seeds = check_poolable(run_dirs)
    dirs = list(seeds)
    if step is None:
        last = {d: (item_steps(d) or [None])[-1] for d in dirs}
        if None in last.values():
            missing = next(d for d, s in last.items() if s is None)
            raise PoolError(f"run {missing.name} has no per-item records (items/)")
        if len(set(last.values())) > 1:
            raise PoolError("the runs' last eval steps differ: " + ", ".join(
                f"{d.name} at {s}" for d, s in last.items()) + "; pass a step they share")  # fmt: skip
        step = next(iter(last.values()))
    tables = []
    for d in dirs:
        try:
            tables.append(load_items(d, step))
        except FileNotFoundError:
            raise PoolError(f"run {d.name} has no per-item records at step {step}") from None
    same_base = all(_base_rows(t) == _base_rows(tables[0]) for t in tables)
    parts = []
    for i, (d, t) in enumerate(zip(dirs, tables)):
        base = t["arm"] == "base"
        if same_base and i > 0:
            t = {k: v[~base] for k, v in t.items()}  # the base measured once, as one run does
        elif not same_base:
            t = dict(t, seed=np.where(base, seeds[d][0], t["seed"]))
        parts.append(t)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def pooled_verdicts(
    run_dirs: Sequence[str | Path], step: int | None = None, **kwargs
) -> list[VerdictRow]:
    """:func:`lab.evidence.verdicts.compare_arms` on :func:`pool_items` of the runs."""
    return compare_arms(pool_items(run_dirs, step), **kwargs)


def seed_groups(run_dirs: Sequence[str | Path]) -> list[list[Path]]:
    """The runs grouped by their config without the seed keys, in first-seen order."""
    groups: dict[str, list[Path]] = {}
    for d in map(Path, run_dirs):
        flat = {k: v for k, v in _flat(_config(d)).items() if k not in SEED_KEYS}
        groups.setdefault(json.dumps(flat, sort_keys=True, default=str), []).append(d)
    return list(groups.values())


def sweep_verdicts(sweep_dir: str | Path, step: int | None = None) -> list[dict[str, Any]]:
    """Per group of a sweep's done cells that differ only in the seed: the axis values the
    group shares (``params``), its runs, seeds and verdict rows. Failed or unfinished cells
    are listed in ``left_out``."""
    sweep_dir = Path(sweep_dir)
    index = read_index(sweep_dir)
    rows = {r["dir"]: r for r in index["cells"]}
    done = [sweep_dir / r["dir"] for r in index["cells"] if r.get("status") == "done"]
    left_out = [r["dir"] for r in index["cells"] if r.get("status") != "done"]
    out = []
    for group in seed_groups(done):
        params = {k: v for k, v in (rows[group[0].name].get("params") or {}).items()
                  if k not in SEED_KEYS}  # fmt: skip
        seeds = check_poolable(group)
        out.append({
            "params": params,
            "runs": [d.name for d in group],
            "seeds": sorted(s for ss in seeds.values() for s in ss),
            "rows": pooled_verdicts(group, step),
            "left_out": left_out,
        })  # fmt: skip
    return out

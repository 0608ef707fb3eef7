"""A sweep spec: a preset, fixed overrides and the axes to cross, read and checked strictly.

```yaml
preset: tiny-test                      # a preset name or a YAML path
set: [train.steps=2, train.analysis=false]
grid:                                  # every combination is one cell, one run directory
  train.seed: [0, 1, 2]
  train.lr: [0.0005, 0.001]
cpus: 1                                # CPUs a cell asks for (and the torch threads it uses)
```

:func:`load_spec` reads the file, :func:`plan` expands the grid into :class:`Cell` objects whose
configs went through the same ``lab.config.load_preset`` as ``python -m lab train``, so a bad
key or value fails before any cell runs. Every error is a :class:`SweepError` (a
``ConfigError``: the CLI prints one line and exits 2).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.config import ConfigError, RunConfig, load_preset, parse_overrides, safe_yaml, short_repr

KEYS = ("preset", "set", "grid", "cpus")
MAX_CELLS = 256  # cells of one sweep: a larger grid is almost always a typo
MAX_SPEC_BYTES = 200_000


class SweepError(ConfigError):
    """A sweep spec or a sweep folder that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Spec:
    preset: str
    set: list[str]
    grid: dict[str, list[Any]]
    cpus: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "set": list(self.set), "grid": dict(self.grid),
                "cpus": self.cpus}  # fmt: skip


@dataclass
class Cell:
    """One point of the grid: its folder name, the axis values and the resolved config."""

    index: int
    name: str
    params: dict[str, Any]
    cfg: RunConfig = field(repr=False)

    def overrides(self, spec: Spec) -> list[str]:
        """The ``--set`` items that make this cell's config from the spec's preset."""
        return list(spec.set) + [f"{k}={_yaml_value(v)}" for k, v in self.params.items()]


def _yaml_value(value: Any) -> str:
    import json

    return json.dumps(value)  # JSON is YAML flow: lists and numbers read back as written


def _set_items(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [f"{k}={_yaml_value(v)}" for k, v in _flatten(raw).items()]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise SweepError("set: a list of key=value strings (or a mapping of keys to values)")
    return list(raw)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_spec(data: Any) -> Spec:
    """A :class:`Spec` from the mapping of a spec file; raises :class:`SweepError`."""
    if not isinstance(data, dict):
        raise SweepError("a sweep spec is a mapping with preset, set and grid")
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise SweepError(f"unknown key {short_repr(unknown[0])} (known: {', '.join(KEYS)})")
    preset = data.get("preset")
    if not isinstance(preset, str) or not preset.strip():
        raise SweepError("preset: a preset name or a path to a preset YAML is required")
    items = _set_items(data.get("set"))
    parse_overrides(items)  # a malformed key=value fails here, naming it
    grid = data.get("grid") or {}
    if not isinstance(grid, dict):
        raise SweepError("grid: a mapping of config keys to lists of values")
    grid = _flatten(grid)
    fixed = {i.split("=", 1)[0].strip() for i in items}
    for key, values in grid.items():
        if not isinstance(values, list):
            raise SweepError(f"grid.{key}: a list of values, got {short_repr(values)}")
        if not values:
            raise SweepError(f"grid.{key}: empty axis (give at least one value)")
        if len({_yaml_value(v) for v in values}) != len(values):
            raise SweepError(f"grid.{key}: a value is listed twice")
        if key in fixed:
            raise SweepError(f"grid.{key}: also fixed in set; keep it in one place")
    n = math.prod(len(v) for v in grid.values())
    if n > MAX_CELLS:
        raise SweepError(f"grid: {n} cells, over the limit of {MAX_CELLS}; split the sweep")
    cpus = data.get("cpus", 1)
    if not isinstance(cpus, int) or isinstance(cpus, bool) or not 1 <= cpus <= 1024:
        raise SweepError(f"cpus: a whole number from 1 to 1024, got {short_repr(cpus)}")
    return Spec(preset=preset.strip(), set=items, grid=grid, cpus=cpus)


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"no sweep spec at {path}")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise SweepError(f"{path.name}: larger than {MAX_SPEC_BYTES} bytes")
    try:
        data = safe_yaml(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SweepError(f"{path.name}: not a readable YAML file ({type(e).__name__})") from None
    return parse_spec(data)


def _slug(params: dict[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        text = _yaml_value(value).replace(" ", "")
        parts.append(key.rsplit(".", 1)[-1] + re.sub(r"[^A-Za-z0-9.+-]", "-", text))
    return "_".join(parts)[:80].strip("-_")


def plan(spec: Spec) -> list[Cell]:
    """Every cell of the grid, in order (the last axis varies fastest), each config loaded and
    validated; a cell that does not load raises naming the cell and the cause."""
    keys = list(spec.grid)
    cells = []
    for i, values in enumerate(itertools.product(*(spec.grid[k] for k in keys))):
        params = dict(zip(keys, values))
        name = f"{i:03d}" + (f"-{_slug(params)}" if params else "")
        cell = Cell(index=i, name=name, params=params, cfg=RunConfig())
        try:
            cell.cfg = load_preset(spec.preset, cell.overrides(spec))
        except ConfigError as e:
            raise SweepError(f"cell {name}: {e}") from None
        cells.append(cell)
    return cells

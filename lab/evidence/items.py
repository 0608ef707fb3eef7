"""Per-item records of every eval metric: ``runs/<id>/items/step_{step:06d}.csv``.

One CSV table per eval point with the columns ``arm, seed, metric, item, value``: one row per
arm x metric x item. ``item`` names the item within its metric (a test-row index, a stereotype
pair ``"<index>:<bias_type>"``, an occupation, a probe-text index), the same for every arm, so
two arms are compared item by item by joining on (seed, item). An arm trained under several
seeds (named ``lora#s1`` in events, see ``lab.arms``) is written under its plain name with its
seed in the ``seed`` column, so the seeds of one arm pool into one comparison. Values are
written with full float precision. The base model is measured once, at step 0;
:func:`load_items` adds its rows to a later step's table.

The table in memory is columnar: ``{"arm", "seed", "metric", "item", "value", "step"}`` -> (N,)
numpy arrays (text columns as str arrays), no pandas needed.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lab.arms import unseeded
from lab.runs.store import atomic_write_text

COLUMNS = ("arm", "seed", "metric", "item", "value")
ITEMS_DIR = "items"
_NAME = re.compile(r"^step_(\d{6,})\.csv$")


def items_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / ITEMS_DIR / f"step_{int(step):06d}.csv"


def item_steps(run_dir: str | Path) -> list[int]:
    """The eval steps that have an items table, ascending."""
    folder = Path(run_dir) / ITEMS_DIR
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def _read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != COLUMNS:
            raise ValueError(f"{path}: not an items table (header {header}, want {COLUMNS})")
        return [row for row in reader if row]


def write_items(
    run_dir: str | Path,
    step: int,
    arm: str,
    seed: int,
    items: Mapping[str, tuple],
) -> Path:
    """Put ``{metric: (ids, values)}`` of one arm and seed into the table of ``step``.

    Rows already there for the same arm and seed are replaced, others kept; the file is
    rewritten atomically, so a reader sees the table before or after, never half of it. A
    seeded arm name (``lora#s1``) is written as ``lora`` with seed 1."""
    arm, tagged = unseeded(arm)
    if tagged is not None and tagged != int(seed):
        raise ValueError(f"arm {arm}#s{tagged} written with seed {seed}")
    path = items_path(run_dir, step)
    kept = (
        [r for r in _read_rows(path) if (r[0], r[1]) != (arm, str(int(seed)))]
        if path.exists()
        else []
    )
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(kept)
    for metric, (ids, values) in items.items():
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(ids) != len(values):
            raise ValueError(f"{metric}: {len(ids)} item ids but {len(values)} values")
        for item, v in zip(ids, values.tolist()):
            w.writerow((arm, int(seed), metric, item, repr(float(v))))
    atomic_write_text(path, buf.getvalue())
    return path


def _table(rows: list[list[str]], step: int) -> dict[str, np.ndarray]:
    cols = list(zip(*rows)) if rows else [()] * len(COLUMNS)
    return {
        "arm": np.array(cols[0], dtype=str),
        "seed": np.array(cols[1], dtype=np.int64),
        "metric": np.array(cols[2], dtype=str),
        "item": np.array(cols[3], dtype=str),
        "value": np.array(cols[4], dtype=np.float64),
        "step": np.full(len(rows), int(step), dtype=np.int64),
    }


def load_items(
    run_dir: str | Path, step: int | None = None, *, with_base: bool = True
) -> dict[str, np.ndarray]:
    """The items table of ``step`` (the latest one by default) as columns of numpy arrays.

    ``with_base``: when that table has no ``base`` rows, add those of the latest earlier step
    that has them (the base model is measured at step 0 only); their ``step`` column says where
    they came from. Raises FileNotFoundError when the run has no items table for ``step``."""
    steps = item_steps(run_dir)
    if not steps:
        raise FileNotFoundError(f"{run_dir} has no per-item records ({ITEMS_DIR}/)")
    step = steps[-1] if step is None else int(step)
    path = items_path(run_dir, step)
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no per-item records at step {step}")
    rows = _read_rows(path)
    table = _table(rows, step)
    if with_base and not any(r[0] == "base" for r in rows):
        for earlier in reversed([s for s in steps if s < step]):
            base = [r for r in _read_rows(items_path(run_dir, earlier)) if r[0] == "base"]
            if base:
                extra = _table(base, earlier)
                table = {k: np.concatenate([table[k], extra[k]]) for k in table}
                break
    return table


def select(table: Mapping[str, np.ndarray], **where) -> dict[str, np.ndarray]:
    """The rows whose columns equal the given values, e.g. ``select(t, metric="accuracy")``."""
    keep = np.ones(len(table["value"]), dtype=bool)
    for col, value in where.items():
        keep &= table[col] == value
    return {k: v[keep] for k, v in table.items()}


def paired(
    table: Mapping[str, np.ndarray],
    metric: str,
    arm_a: str,
    arm_b: str,
    *,
    across_seeds: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, seed) of the items both arms have for ``metric``, matched on (seed, item).

    ``across_seeds``: match on the item alone, each of ``arm_a``'s seeds against ``arm_b``'s
    one seed; by default when ``arm_b`` is ``"base"`` measured under one seed (the base model
    does not depend on the training seed and is measured once). Sorted by (seed, item); empty when none match."""
    rows_a = select(table, metric=metric, arm=arm_a)
    rows_b = select(table, metric=metric, arm=arm_b)
    if across_seeds is None:
        across_seeds = arm_b == "base" and len(np.unique(rows_b["seed"])) == 1
    if across_seeds and len(np.unique(rows_b["seed"])) > 1:
        raise ValueError(f"{arm_b} has several seeds for {metric}: match on (seed, item)")
    a_dup = np.char.add(np.char.add(rows_a["seed"].astype(str), "|"), rows_a["item"])
    if across_seeds:
        a_key, b_key = rows_a["item"], rows_b["item"]
    else:
        a_key = a_dup
        b_key = np.char.add(np.char.add(rows_b["seed"].astype(str), "|"), rows_b["item"])
    for arm, keys in ((arm_a, a_dup), (arm_b, b_key)):
        if len(np.unique(keys)) != len(keys):
            raise ValueError(f"{arm} has an item twice for {metric} under one seed")
    order_b = np.argsort(b_key, kind="stable")
    pos = np.searchsorted(b_key[order_b], a_key)
    pos = np.clip(pos, 0, max(len(b_key) - 1, 0))
    hit = (b_key[order_b][pos] == a_key) if len(b_key) else np.zeros(len(a_key), dtype=bool)
    ia = np.flatnonzero(hit)
    ib = order_b[pos[hit]]
    order = np.lexsort((rows_a["item"][ia], rows_a["seed"][ia]))
    ia, ib = ia[order], ib[order]
    return rows_a["value"][ia], rows_b["value"][ib], rows_a["seed"][ia]

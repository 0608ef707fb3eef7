"""Runs that differ only in the seed pool into the comparison one multi-seed run gives."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FAST

from lab.__main__ import main
from lab.config import dump_yaml, load_preset
from lab.engine.trainer import run
from lab.evidence.items import load_items
from lab.evidence.verdicts import run_verdicts
from lab.sweep import pool


def _rows(table) -> list[tuple]:
    return sorted(zip(*(table[k].tolist() for k in ("arm", "seed", "metric", "item", "value"))))


@pytest.mark.slow
def test_three_one_seed_runs_equal_one_three_seed_run(local_sweep, tmp_path):
    out, index = local_sweep
    group = [out / c["dir"] for c in index["cells"] if c["params"]["train.lr"] == 0.0005]
    assert len(group) == 3
    multi = tmp_path / "multi"
    cfg = load_preset("tiny-test", FAST + ["train.seeds=[0, 1, 2]", "train.lr=0.0005"])
    for _ in run(cfg, multi):
        pass
    pooled, want = pool.pool_items(group), load_items(multi)
    got_rows, want_rows = _rows(pooled), _rows(want)
    assert [r[:4] for r in got_rows] == [r[:4] for r in want_rows]
    assert np.allclose([r[4] for r in got_rows], [r[4] for r in want_rows], atol=1e-9, rtol=0)
    a, b = pool.pooled_verdicts(group), run_verdicts(multi)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert (x.metric, x.arm_a, x.arm_b, x.n, x.n_seeds) == (
            y.metric,
            y.arm_a,
            y.arm_b,
            y.n,
            y.n_seeds,
        )
        for k in ("diff", "ci_low", "ci_high", "p", "p_holm"):
            assert getattr(x, k) == pytest.approx(getattr(y, k), abs=1e-9)
    groups = pool.sweep_verdicts(out)
    assert [g["params"] for g in groups] == [{"train.lr": 0.0005}, {"train.lr": 0.001}]
    assert all(g["seeds"] == [0, 1, 2] for g in groups)
    assert main(["verdicts", str(out)]) == 0


def _fake_run(path, extra):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_yaml(load_preset("tiny-test", FAST + extra)))
    return path


def test_runs_that_differ_in_more_than_the_seed_are_refused_naming_the_key(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", ["train.seed=0"])
    b = _fake_run(tmp_path / "b", ["train.seed=1", "train.lr=0.01"])
    c = _fake_run(tmp_path / "c", ["train.seeds=[0, 2]"])
    with pytest.raises(pool.PoolError, match=r"runs a and b differ in train.lr \(0.002 vs 0.01\)"):
        pool.check_poolable([a, b])
    with pytest.raises(pool.PoolError, match="seed 0 is in both a and c"):
        pool.check_poolable([a, c])
    assert pool.check_poolable([_fake_run(tmp_path / "d", ["train.seed=5"]), a]) == {
        tmp_path / "d": [5],
        a: [0],
    }
    assert main(["verdicts", str(a), str(b)]) == 2
    assert "differ in train.lr" in capsys.readouterr().err

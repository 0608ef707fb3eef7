"""Sweeps: a spec checked strictly, cells as ordinary runs, retry, resume, and the Ray engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST, SEEDS_X_LRS

import lab.sweep.cells as cells
from lab.__main__ import main
from lab.config import load_preset
from lab.engine import checkpoint
from lab.runs.store import load_run
from lab.sweep.runner import INDEX, read_index, run_sweep
from lab.sweep.spec import MAX_CELLS, SweepError, parse_spec, plan


def _files(run_dir: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.glob(pattern))}


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"preset": "tiny-test", "grid": {"train.seed": [0]}, "gird": {}}, "unknown key 'gird'"),
        ({"grid": {"train.seed": [0]}}, "preset"),
        ({"preset": "tiny-test", "grid": {"train.seed": []}}, "grid.train.seed: empty axis"),
        ({"preset": "tiny-test", "grid": {"train.seed": 3}}, "grid.train.seed: a list"),
        ({"preset": "tiny-test", "grid": {"train.seed": [1, 1]}}, "listed twice"),
        ({"preset": "tiny-test", "set": ["train.seed=1"], "grid": {"train.seed": [0, 2]}},
         "also fixed in set"),
        ({"preset": "tiny-test", "grid": {f"train.k{i}": list(range(4)) for i in range(5)}},
         f"1024 cells, over the limit of {MAX_CELLS}"),
        ({"preset": "tiny-test", "cpus": 0}, "cpus"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused_naming_the_key(spec, words):
    with pytest.raises(SweepError, match=None) as err:
        parse_spec(spec)
    assert words in str(err.value)


def test_a_bad_config_key_or_value_fails_before_any_cell_runs():
    with pytest.raises(SweepError, match="cell 001-lr0.*train.lr"):
        plan(parse_spec({"preset": "tiny-test", "grid": {"train.lr": [0.001, 0]}}))
    with pytest.raises(SweepError, match="train.nope"):
        plan(parse_spec({"preset": "tiny-test", "grid": {"train.nope": [1, 2]}}))


def test_the_cli_exits_2_with_one_line_on_a_bad_spec(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("preset: tiny-test\ngrid:\n  train.seed: []\n")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: grid.train.seed: empty axis (give at least one value)"]
    assert not (tmp_path / "s").exists()
    assert main(["sweep", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "s")]) == 2


def test_cells_are_ordinary_runs_and_the_index_has_their_statuses(local_sweep):
    out, index = local_sweep
    assert [c["status"] for c in index["cells"]] == ["done"] * 6
    assert index["counts"] == {"pending": 0, "running": 0, "done": 6, "failed": 0}
    assert read_index(out) == json.loads((out / INDEX).read_text())
    for row in index["cells"]:
        run = load_run(out / row["dir"])
        want = load_preset("tiny-test", FAST + [f"{k}={json.dumps(v)}" for k, v in
                                                 row["params"].items()])  # fmt: skip
        assert run.config == want.to_dict()
        assert run.summary["status"] == "done"
        assert (out / row["dir"] / "adapters" / "balora" / "adapter_model.safetensors").is_file()
    assert index["cells"][1]["params"] == {"train.seeds": [0], "train.lr": 0.001}


def test_a_done_sweep_run_again_skips_every_cell(local_sweep, monkeypatch):
    out, _ = local_sweep

    def no_training(*a, **k):
        raise AssertionError("a done cell was trained again")

    monkeypatch.setattr(cells, "run", no_training)
    again = run_sweep(parse_spec(SEEDS_X_LRS), out)
    assert again["counts"]["done"] == 6
    other = dict(SEEDS_X_LRS, set=FAST + ["train.batch_size=2"])
    with pytest.raises(SweepError, match="another spec .set differs"):
        run_sweep(parse_spec(other), out)


def test_a_failing_cell_is_retried_once_then_marked_failed_and_the_others_finish(
    tmp_path, monkeypatch
):
    original = cells.run
    tries = []

    def flaky(cfg, out, **kwargs):
        if cfg.train.seed == 1:
            tries.append(Path(out).name)
            events = original(cfg, out, **kwargs)
            for event in events:  # until the run has started and written its folder
                yield event
                if (Path(out) / "config.yaml").is_file():
                    break
            events.close()
            raise RuntimeError("the device went away")
        yield from original(cfg, out, **kwargs)

    monkeypatch.setattr(cells, "run", flaky)
    spec = parse_spec({"preset": "tiny-test", "set": FAST, "grid": {"train.seed": [0, 1, 2]}})
    index = run_sweep(spec, tmp_path / "s")
    by_seed = {c["params"]["train.seed"]: c for c in index["cells"]}
    assert [by_seed[s]["status"] for s in (0, 1, 2)] == ["done", "failed", "done"]
    assert by_seed[1]["attempts"] == 2 and by_seed[0]["attempts"] == 1
    assert "RuntimeError: the device went away" in by_seed[1]["error"]
    assert tries == ["001-seed1", "001-seed1"]
    # the first try checkpointed at step 0, so the second continued from it in place
    assert by_seed[1]["resumed"] is True and not (tmp_path / "s" / "attempts").exists()
    assert (tmp_path / "s" / "001-seed1" / "config.yaml").is_file()
    assert load_run(tmp_path / "s" / "001-seed1").summary["status"] == "failed"


def test_a_cell_killed_mid_way_resumes_from_its_checkpoint(tmp_path):
    grid = {"preset": "tiny-test", "set": FAST + ["train.eval_every=1"],
            "grid": {"train.seed": [3]}}  # fmt: skip
    spec = parse_spec(grid)
    ref = run_sweep(spec, tmp_path / "ref")
    assert ref["cells"][0]["status"] == "done"

    def killed(cfg, run_dir, events):
        for ev in events:
            if ev["kind"] == "train" and ev["step"] == 2:
                raise KeyboardInterrupt  # as a kill would, after the step-1 checkpoint
            yield ev

    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, consume=killed)
    cell = out / "000-seed3"
    assert read_index(out)["cells"][0]["status"] == "running"
    assert checkpoint.read_state(cell)["step"] == 1
    index = run_sweep(spec, out)
    row = index["cells"][0]
    assert (row["status"], row["resumed"]) == ("done", True)
    assert load_run(cell).summary["resumed_from"] == 1
    want = _files(tmp_path / "ref" / "000-seed3", "adapters/*/adapter_model.safetensors")
    assert len(want) == 3
    assert _files(cell, "adapters/*/adapter_model.safetensors") == want
    assert _files(cell, "items/*.csv") == _files(tmp_path / "ref" / "000-seed3", "items/*.csv")


@pytest.mark.slow
def test_the_ray_engine_gives_the_local_engines_runs_bit_for_bit(local_sweep, tmp_path):
    pytest.importorskip("ray")
    out, index = local_sweep
    ray_out = tmp_path / "ray"
    got = run_sweep(parse_spec(SEEDS_X_LRS), ray_out, engine="ray", num_cpus=2)
    assert got["counts"]["done"] == 6 and got["engine"] == "ray"
    for row in index["cells"]:
        a, b = out / row["dir"], ray_out / row["dir"]
        adapters = _files(a, "adapters/*/adapter_model.safetensors")
        assert len(adapters) == 3
        assert _files(b, "adapters/*/adapter_model.safetensors") == adapters
        assert _files(b, "items/*.csv") == _files(a, "items/*.csv")

"""Tuned learning rates: a short sweep per arm, chosen on a validation split of the training
data (never the test split), then the comparison at the chosen rates."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import lab.engine.steps as steps
import lab.engine.trainer as trainer
from lab.config import ConfigError, load_preset
from lab.engine import lifecycle, tuning
from lab.plots import report
from lab.runs.store import read_events, request_stop

ROOT = Path(__file__).resolve().parents[2]
GRID = [1e-4, 3e-3, 3e-2]
TUNED = [
    "train.bias_eval=false",
    "train.analysis=false",
    "data.max_eval=4",
    "data.max_train=80",
    "train.steps=2",
    "train.lr_mode=tuned",
    f"train.lr_grid={GRID}",
    "train.tune_steps=2",
    "train.val_fraction=0.25",
    "train.scheduler=constant",
    "train.warmup_ratio=0",
]


def _cfg(extra=()):
    return load_preset("tiny-test", TUNED + list(extra))


@pytest.mark.parametrize(
    "override, where, words",
    [
        ("train.lr_grid=[]", "train.lr_grid", "at least one learning rate"),
        ("train.lr_grid=[0.001, -0.01]", "train.lr_grid[1]", "must be in \\(0, 10\\]"),
        ("train.lr_grid=[0.001, 0.001]", "train.lr_grid", "listed twice"),
        ("train.tune_steps=0", "train.tune_steps", "at least 1 in lr_mode tuned"),
        ("train.val_fraction=0", "train.val_fraction", "in lr_mode tuned"),
        ("train.val_fraction=0.9", "train.val_fraction", "in lr_mode tuned"),
        ("train.lr_by_arm={pissa: 0.001}", "train.lr_by_arm", "leave lr_by_arm empty"),
        ("train.lr_mode=sweep", "train.lr_mode", "one of fixed, tuned"),
    ],
)
def test_bad_values_name_the_key(override, where, words):
    with pytest.raises(ConfigError, match=rf"^{re.escape(where)}: .*{words}"):
        _cfg([override])


def test_fixed_mode_ignores_the_tuning_settings_but_not_bad_rates():
    load_preset("tiny-test", ["train.lr_grid=[]", "train.tune_steps=0"])  # unused: accepted
    with pytest.raises(ConfigError, match=r"^train\.lr_grid\[0\]: .*must be in"):
        load_preset("tiny-test", ["train.lr_grid=[-1]"])


def test_carve_holds_out_a_seeded_share():
    rows = [{"i": i} for i in range(40)]
    train, val = tuning.carve(rows, 0.25, seed=0)
    assert len(val) == 10 and len(train) == 30
    assert sorted(r["i"] for r in train + val) == list(range(40))
    assert tuning.carve(rows, 0.25, seed=0) == (train, val)
    assert tuning.carve(rows, 0.25, seed=1)[1] != val
    with pytest.raises(ValueError, match="train.val_fraction"):
        tuning.carve(rows[:1], 0.5, seed=0)


def test_each_arm_trains_at_its_chosen_rate(tmp_path, monkeypatch):
    """Validation losses that favour a different rate per arm: each arm's optimizer, its train
    events and the summary get that arm's rate."""
    want = {"lora": 3e-2, "pissa": 1e-4, "balora": 3e-3}

    def fake_val_loss(model, batches, cfg):
        arm, _, lr = model.balora_active.partition("|lr=")
        return abs(float(lr) - want[arm])  # 0 for the wanted rate

    monkeypatch.setattr(tuning, "val_loss", fake_val_loss)
    out = tmp_path / "run"
    events = list(trainer.run(_cfg(), out))
    summary = json.loads((out / "summary.json").read_text())
    assert {a: r["chosen"] for a, r in summary["lr_tuning"].items()} == want
    assert {a: s["lr"] for a, s in summary["arm_specs"].items()} == want
    assert {a: s["lr"] for a, s in summary["arms"].items()} == want
    names = {t.name for t in report.run_figures(out)["loss"].data}  # lr_tuning lines skipped
    assert set(want) <= names and not any("lr" in n for n in names)
    assert "<html" in report.html_report(out).lower()
    for ev in events:
        if ev["kind"] == "train":
            assert ev["lr"] == want[ev["arm"]], ev  # constant schedule: the chosen rate itself
    picks = [e for e in events if e["kind"] == "lr_tuning"]
    assert {e["arm"]: e["chosen"] for e in picks} == want
    rec = summary["lr_tuning"]["lora"]
    assert set(rec["candidates"]) == {repr(x) for x in GRID}
    assert rec["n_val"] == 20 and rec["tune_steps"] == 2 and "validation" in rec["criterion"]


def _dataset(folder: Path, test_rows: list[str]) -> str:
    src = ROOT / "assets" / "datasets" / "sentiment"
    folder.mkdir(parents=True)
    shutil.copy(src / "info.json", folder / "info.json")
    lines = (src / "train.jsonl").read_text(encoding="utf-8").splitlines()
    (folder / "train.jsonl").write_text("\n".join(lines[:80]) + "\n", encoding="utf-8")
    (folder / "test.jsonl").write_text("\n".join(test_rows) + "\n", encoding="utf-8")
    return str(folder)


class _Guarded(list):
    """A test split that raises on any read while ``armed``."""

    armed = False

    def _check(self):
        if self.armed:
            raise AssertionError("the test split was read during the learning-rate sweep")

    def __getitem__(self, i):
        self._check()
        return super().__getitem__(i)

    def __iter__(self):
        self._check()
        return super().__iter__()

    def __len__(self):
        self._check()
        return super().__len__()


def _guarded_run(cfg, out):
    """Run with the test split guarded while the sweep runs; also records which training rows
    were batched during the comparison and which rows were carved off for validation."""
    guard: list[_Guarded] = []
    carved: list[list[dict]] = []
    batched: list[int] = []
    prepare, sweep, carve = lifecycle.prepare, lifecycle.tune_lrs, tuning.carve
    micro = steps.micro_batches

    def guarded_prepare(c):
        task_data, bundle = prepare(c)
        task_data.test = _Guarded(task_data.test)
        guard.append(task_data.test)
        return task_data, bundle

    def guarded_sweep(*args, **kwargs):
        guard[0].armed = True
        try:
            return sweep(*args, **kwargs)
        finally:
            guard[0].armed = False

    def recording_carve(*args, **kwargs):
        train, val = carve(*args, **kwargs)
        carved.append(val)
        return train, val

    def recording_micro(tok, rows, indices, *args, **kwargs):
        batched.extend(id(rows[i]) for i in indices)
        return micro(tok, rows, indices, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lifecycle, "prepare", guarded_prepare)
        mp.setattr(lifecycle, "tune_lrs", guarded_sweep)
        mp.setattr(tuning, "carve", recording_carve)
        mp.setattr(steps, "micro_batches", recording_micro)
        list(trainer.run(cfg, out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done", summary.get("error")
    held = {id(r) for r in carved[0]}
    assert held and not held & set(batched)  # the validation rows are never trained on
    return summary["lr_tuning"]


def test_choice_reads_the_validation_split_only(tmp_path):
    """The test split raises if read during the sweep, and two very different test splits
    (the shipped one; training rows with their labels flipped) give the same choice, down to
    every candidate's validation loss."""
    src = ROOT / "assets" / "datasets" / "sentiment"
    clean = (src / "test.jsonl").read_text(encoding="utf-8").splitlines()[:20]
    flipped = []
    for line in (src / "train.jsonl").read_text(encoding="utf-8").splitlines()[:20]:
        row = json.loads(line)
        row["label"] = "negative" if row["label"] == "positive" else "positive"
        flipped.append(json.dumps(row))
    runs = []
    for name, rows in (("clean", clean), ("flipped", flipped)):
        data = _dataset(tmp_path / f"data-{name}", rows)
        runs.append(_guarded_run(_cfg([f"data.name={data}"]), tmp_path / name))
    assert runs[0] == runs[1]
    losses = [v for rec in runs[0].values() for v in rec["candidates"].values()]
    assert len(set(losses)) > 1 and all(v is not None for v in losses)


def test_resume_keeps_the_chosen_rates(tmp_path):
    cfg = _cfg(["train.steps=4", "train.eval_every=2"])
    out = tmp_path / "run"
    for ev in trainer.run(cfg, out):
        if ev["kind"] == "train" and ev["arm"] == "balora" and ev["step"] == 2:
            request_stop(out)
    first = json.loads((out / "summary.json").read_text())["lr_tuning"]

    def no_sweep(*args, **kwargs):
        raise AssertionError("a resumed run must not tune again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lifecycle, "tune_lrs", no_sweep)
        list(trainer.run(_cfg(["train.steps=4", "train.eval_every=2"]), out, resume=True))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["lr_tuning"] == first
    chosen = {a: r["chosen"] for a, r in first.items()}
    train = [e for e in read_events(out / "events.jsonl") if e["kind"] == "train"]
    assert {e["step"] for e in train} == {1, 2, 3, 4}
    assert all(e["lr"] == chosen[e["arm"]] for e in train)
    assert sum(e["kind"] == "lr_tuning" for e in read_events(out / "events.jsonl")) == 3

"""The app's preflight judges a dataset by the rule the run loads it with: what the command line
accepts, the app accepts (the public app's hosting policy on local paths aside)."""

from __future__ import annotations

import json

import pytest

from lab import jobs
from lab.config import ConfigError, load_preset
from lab.datasets import load_task_data
from lab.datasets.encoding import DataError
from lab.jobs import hosting


def write_folder(folder, n=12, test=True):
    folder.mkdir()
    rows = "".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(n))
    (folder / "train.jsonl").write_text(rows, encoding="utf-8")
    if test:
        (folder / "test.jsonl").write_text(rows, encoding="utf-8")


def test_a_local_folder_the_loader_takes_passes_preflight(tmp_path, monkeypatch):
    write_folder(tmp_path / "mydata")
    monkeypatch.chdir(tmp_path)  # a relative folder name, no "/" in it
    cfg = load_preset("tiny-test", ["data.name=mydata"])
    assert len(load_task_data("mydata", task=cfg.task).train) == 12  # what the run reads
    assert jobs.preflight(cfg) == []


def test_a_folder_the_loader_refuses_is_refused_with_the_loaders_words(tmp_path):
    write_folder(tmp_path / "half", test=False)
    cfg = load_preset("tiny-test", [f"data.name={tmp_path / 'half'}"])
    with pytest.raises(DataError) as by_loader:
        load_task_data(cfg.data.name, task=cfg.task)
    with pytest.raises(DataError) as by_preflight:
        jobs.preflight(cfg)
    assert str(by_preflight.value) == str(by_loader.value)
    assert "needs train.jsonl (or .csv) and test.jsonl" in str(by_preflight.value)


def test_a_one_row_file_is_refused_before_a_worker_starts(tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"prompt": "q", "response": "a"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="at least 2 rows"):
        jobs.preflight(load_preset("tiny-test", [f"data.name={one}"]))


def test_the_class_limit_of_the_app_still_applies(tmp_path):
    f = tmp_path / "many.jsonl"
    rows = [{"text": f"t{i}", "label": f"c{i % 5}"} for i in range(40)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = load_preset("tiny-test", ["task=nlu", "model.name=tiny-bert", f"data.name={f}"])
    assert jobs.preflight(cfg, max_classes=5) == []
    with pytest.raises(DataError, match="5 classes, over the limit of 4"):
        jobs.preflight(cfg, max_classes=4)


def test_the_public_app_still_refuses_a_local_folder_by_its_hosting_policy(tmp_path):
    write_folder(tmp_path / "mydata")
    cfg = load_preset("tiny-test", [f"data.name={tmp_path / 'mydata'}"])
    assert jobs.preflight(cfg) == []  # the rule accepts it ...
    with pytest.raises(ConfigError, match="data.name: .* not allowed on this public app"):
        hosting.check_sources(hosting.make("public"), cfg, tmp_path / "runs", "token")

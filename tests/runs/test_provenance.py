"""The run summary records where a run came from; optional gradient clipping is logged."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import lab.engine.trainer as trainer
from lab.config import ConfigError, load_preset
from lab.engine import forward
from lab.runs import provenance

FAST = ["train.bias_eval=false", "train.analysis=false", "data.max_eval=4", "train.steps=2"]


def test_summary_records_provenance_and_the_teacher(tmp_path):
    list(trainer.run(load_preset("tiny-test", FAST), tmp_path / "r"))
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    prov = summary["provenance"]
    assert set(prov["versions"]) >= {"torch", "transformers", "peft", "bitsandbytes"}
    assert prov["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert prov["device"] == "cpu" and prov["dtype"] == "float32" and prov["cores"] >= 1
    assert prov["load_in_4bit"] is False
    assert prov["cpu"] == provenance.cpu_info()  # the CPU a run's timings belong to
    rows = {r["what"]: r["value"] for r in provenance.describe(summary)}
    assert rows["device"] == "cpu, float32" and rows["torch"] == prov["versions"]["torch"]
    assert rows["started"] == summary["started"] and rows["finished"] == summary["finished"]
    if prov["cpu"]["model"]:
        assert rows["CPU"].startswith(prov["cpu"]["model"] + " (native bf16: ")
    assert provenance.describe({"status": "failed"}) == []  # no provenance: nothing claimed
    git = prov["git"]
    assert set(git) == {"commit", "dirty"}
    if git["commit"] is not None:  # a git checkout
        assert len(git["commit"]) == 40 and isinstance(git["dirty"], bool)
    # the default teacher is the exact loaded model; the summary says so
    assert summary["teacher_dtype"] == "float32" and summary["teacher"].startswith("exact")
    assert summary["arm_specs"]["balora"] == {
        "folder": "balora",
        "arm": "balora",
        "seed": 0,
        "init": "pissa",
        "regularized": True,
        "lambdas": [0.025, 0.005, 0.005],
        "lr": 0.002,
    }


def test_bf16_teacher_is_opt_in_and_labelled(tmp_path, monkeypatch):
    cfg = load_preset("tiny-test", [*FAST, "reg.teacher_dtype=bfloat16"])
    exact_cfg = replace(cfg, reg=replace(cfg.reg, teacher_dtype="model"))
    real, seen = forward.teacher_outputs, []

    def both(model, batch, c):  # the opt-in teacher's rows and the exact model's, same batch
        out = real(model, batch, c)
        seen.append((out, real(model, batch, exact_cfg)))
        return out

    monkeypatch.setattr(forward, "teacher_outputs", both)
    list(trainer.run(cfg, tmp_path / "b"))
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["teacher_dtype"] == "bfloat16" and "opt-in" in summary["teacher"]
    assert seen
    for bf16, exact in seen:  # not the exact model any more: bf16 rounding, not float32's
        assert bf16.shape == exact.shape
        assert (bf16.float() - exact.float()).abs().max().item() > 1e-3
    assert load_preset("tiny-test").reg.teacher_dtype == "model"


def test_gradient_clipping_is_applied_and_logged(tmp_path):
    clip = 1e-3
    free = list(trainer.run(load_preset("tiny-test", FAST), tmp_path / "free"))
    clipped = list(
        trainer.run(
            load_preset("tiny-test", [*FAST, f"train.max_grad_norm={clip}"]), tmp_path / "c"
        )
    )
    train = [e for e in clipped if e["kind"] == "train"]
    assert all(e["grad_norm"] > clip for e in train)  # the norm before clipping is logged
    assert all("grad_norm" not in e for e in free if e["kind"] == "train")
    # clipping changes the step-2 losses (the first update was smaller)
    loss = lambda evs: [e["task_loss"] for e in evs if e["kind"] == "train" and e["step"] == 2]  # noqa: E731
    assert loss(free) != loss(clipped)
    with pytest.raises(ConfigError, match="train.max_grad_norm"):
        load_preset("tiny-test", ["train.max_grad_norm=-1"])


def test_the_cpu_is_read_with_its_native_bf16_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Example CPU @ 2.60GHz\nflags\t\t: fpu avx2 avx512f amx_bf16\n"
        "\nprocessor\t: 1\nmodel name\t: Example CPU @ 2.60GHz\nflags\t\t: fpu avx2 avx512_bf16\n"
    )
    assert provenance.cpu_info(info) == {
        "model": "Example CPU @ 2.60GHz",
        "native_bf16": ["amx_bf16", "avx512_bf16"],
    }
    info.write_text("processor\t: 0\nmodel name\t: Plain\nflags\t\t: fpu avx2 fma\n")
    assert provenance.cpu_info(info) == {"model": "Plain", "native_bf16": []}
    missing = provenance.cpu_info(tmp_path / "absent")
    assert missing["native_bf16"] is None  # unknown, not "none"


def test_a_malformed_provenance_is_shown_as_far_as_it_goes(tmp_path):
    """A summary edited by hand or written by another tool: the report and the run diff read
    what is well-formed and leave the rest out, instead of failing."""
    assert provenance.describe({"provenance": "x"}) == []
    rows = provenance.describe(
        {"provenance": {"git": "abc", "cpu": [1], "versions": ["torch"], "device": "cpu"}}
    )
    assert rows == [
        {"what": "device", "value": "cpu, ?"},
        {"what": "cores, threads, processes", "value": "?, ?, ?"},
    ]
    odd = provenance.describe({"provenance": {"cpu": {"model": "m", "native_bf16": "avx"}}})
    assert {"what": "CPU", "value": "m (native bf16: unknown)"} in odd
    assert provenance.differences({"provenance": "x"}, {"provenance": {"device": "cpu"}}) == []

    from lab.plots.report import html_report

    run = tmp_path / "odd"
    run.mkdir()
    (run / "config.yaml").write_text("name: odd\n")
    (run / "summary.json").write_text(
        json.dumps({"status": "done", "provenance": {"git": 1, "versions": "torch"}})
    )
    page = html_report(run)
    assert "Where the run was made" in page and "Packages that drew this report" in page

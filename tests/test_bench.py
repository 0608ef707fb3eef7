"""Smoke tests of the benchmarks in bench/: the JSON they print and the meters they rely on.

No timing is asserted anywhere: only the shape of the output and its internal consistency.
"""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture()
def bench(monkeypatch):
    """The bench/ scripts as modules (their names are generic: removed again afterwards)."""
    names = ("_common", "step", "e2e")
    monkeypatch.syspath_prepend(str(BENCH))
    for name in names:
        sys.modules.pop(name, None)
    yield {name: importlib.import_module(name) for name in names}
    for name in names:
        sys.modules.pop(name, None)


def run_json(script: str, *args: str, out: Path) -> dict:
    """A bench script in its own process: the JSON it prints, which its --out file holds too."""
    cmd = [sys.executable, str(BENCH / script), *args, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout)
    assert printed == json.loads(out.read_text())
    return printed


def run_step(*args: str, out: Path) -> dict:
    """bench/step.py in its own process (it changes the allocator's settings for memory)."""
    return run_json("step.py", *args, "--quiet", out=out)


def test_step_json_on_tiny_llama(tmp_path):
    argv = ["--model", "tiny-llama", "--steps", "2", "--warmup", "0", "--batch", "2"]
    result = run_step(*argv, "--seq", "16", out=tmp_path / "step.json")
    for key in ("model", "device", "batch", "seq", "rank", "threads", "arms", "ratios"):
        assert key in result
    assert result["model"] == "tiny-llama" and result["batch"] == 2 and result["seq"] == 16
    assert result["steps"] == 2 and result["mem_steps"] == 1
    assert set(result["arms"]) == {"lora", "pissa", "balora", "teacher", "reference"}
    for arm in result["arms"].values():
        assert set(arm) >= {"median_step_s", "median_cpu_s", "peak_mem_mb", "tokens_per_s"}
        assert arm["median_step_s"] > 0 and arm["peak_mem_mb"] >= 0
        assert arm["tokens_per_s"] == pytest.approx(2 * 16 / arm["median_step_s"])
        assert math.isfinite(arm["final_loss"])
    ratios = result["ratios"]
    assert set(ratios) >= {
        "balora_vs_lora_time",
        "balora_vs_lora_mem",
        "reference_vs_lora_time",
        "reference_vs_lora_mem",
        "pissa_vs_lora_time",
        "balora_overhead_vs_lora",
    }
    assert all(v is not None and math.isfinite(v) for v in ratios.values())
    assert result["targets"] == {"time": 1.4, "mem": 1.1, "overhead": 0.1}
    assert isinstance(result["meets_targets"], bool)  # the rule: test_step_ratios_from_known_inputs
    arms = result["arms"]
    # the reference keeps a second full model as its teacher: more persistent tensors
    assert arms["reference"]["state_mb"] > 1.5 * arms["lora"]["state_mb"]


def test_step_ratios_from_known_inputs(bench):
    """The per-arm numbers and the ratios of bench/step.py from hand-made measurements whose
    medians, ratios and overhead are known in advance."""
    step, mb = bench["step"], bench["_common"].MB
    args = step.parse_args(["--arms", "lora,balora,teacher", "--batch", "2", "--seq", "8"])
    times = {"lora": [2.0, 2.0, 9.0], "balora": [1.0, 3.0, 3.0], "teacher": [0.5, 0.5, 0.5]}
    cpus = {"lora": [1.0, 1.0, 1.0], "balora": [2.0, 2.0, 2.0], "teacher": [0.1, 0.1, 0.1]}
    mems = {"lora": [50 * mb, 100 * mb], "balora": [105 * mb], "teacher": [10 * mb]}
    states = {"lora": 4 * mb, "balora": 6 * mb, "teacher": 0}
    losses = {"lora": 1.0, "balora": 1.0, "teacher": 0.0}
    out = step.summarize(args, torch.device("cpu"), torch.float32, times, cpus, mems, states,
                         losses, params=10)  # fmt: skip
    lora, balora = out["arms"]["lora"], out["arms"]["balora"]
    assert (lora["median_step_s"], balora["median_step_s"]) == (2.0, 3.0)  # medians, not means
    assert (lora["peak_mem_mb"], balora["peak_mem_mb"]) == (100.0, 105.0)
    assert lora["tokens_per_s"] == 8.0 and balora["state_mb"] == 6.0
    r = out["ratios"]
    assert r["balora_vs_lora_time"] == 1.5 and r["balora_vs_lora_mem"] == 1.05
    assert r["balora_vs_lora_cpu_time"] == 2.0 and r["balora_vs_lora_state_mem"] == 1.5
    assert r["teacher_vs_lora_time"] == 0.25
    assert r["balora_overhead_vs_lora"] == 0.25  # (3 - 2 - 0.5) / 2
    assert r["reference_vs_lora_time"] is None and r["pissa_vs_lora_time"] is None
    assert out["meets_targets"] is False  # time 1.5 > 1.4
    times["balora"] = [2.5, 2.5, 2.5]  # time 1.25, overhead 0.0, memory 1.05: all met
    out = step.summarize(args, torch.device("cpu"), torch.float32, times, cpus, mems, states,
                         losses, params=10)  # fmt: skip
    assert out["ratios"]["balora_overhead_vs_lora"] == 0.0 and out["meets_targets"] is True
    times["teacher"] = [0.25, 0.25, 0.75]  # overhead 0.125 > 0.1: the overhead target fails
    out = step.summarize(args, torch.device("cpu"), torch.float32, times, cpus, mems, states,
                         losses, params=10)  # fmt: skip
    assert out["ratios"]["balora_overhead_vs_lora"] == 0.125 and out["meets_targets"] is False


@pytest.mark.slow
def test_step_synthetic_model_and_arm_subset(bench, tmp_path):
    result = run_step(
        *["--model", "synthetic-tiny", "--arms", "lora,balora", "--steps", "1", "--warmup", "0"],
        *["--batch", "2", "--seq", "8", "--peak-tflops", "1"],
        out=tmp_path / "step.json",
    )
    assert set(result["arms"]) == {"lora", "balora"}
    assert result["ratios"]["reference_vs_lora_time"] is None
    lora = result["arms"]["lora"]
    assert lora["mfu"] == pytest.approx(6 * result["params"] * lora["tokens_per_s"] / 1e12)
    assert result["params"] == sum(
        p.numel()
        for p in bench["_common"]
        .synthetic_model("synthetic-tiny", torch.float32, torch.device("cpu"))
        .parameters()
    )


def test_step_rejects_unknown_arm(bench):
    with pytest.raises(SystemExit):
        bench["step"].parse_args(["--arms", "lora,dora"])


def test_synthetic_batch_masks(bench):
    gen = torch.Generator().manual_seed(0)
    b = bench["_common"].synthetic_batch(gen, 3, 10, 50, torch.device("cpu"))
    assert b["input_ids"].shape == (3, 10)
    assert (b["labels"][:, :5] == -100).all() and (b["labels"][:, 5:] >= 3).all()
    # logits at t are scored against label t+1: rows 4..8 of each sequence
    assert b["reg_mask"].sum(1).tolist() == [5, 5, 5]
    assert b["reg_mask"][:, 4:9].all() and not b["reg_mask"][:, 9].any()


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RSS from /proc (Linux)")
def test_rss_meter_sees_a_large_allocation(bench):
    common = bench["_common"]
    with common.RSSPeak() as meter:
        meter.begin()
        x = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched: glibc maps it on its own
        grown = meter.end()
        del x
        meter.begin()
        small = meter.end()
    assert grown >= 48 * common.MB
    assert small < 16 * common.MB


def _train_event(arm: str, step: int, seconds: float) -> dict:
    from lab.method import losses
    from lab.runs import events

    values = losses.train_values({"task_loss": 1.0}, {"task_loss"}, (0.0, 0.0, 0.0), {}, False)
    return events.train_event(
        arm=arm, step=step, **values, seed=0, lr=1e-3, tokens=8 * step, seconds=seconds
    )


def _eval_event(arm: str, step: int, seconds: float) -> dict:
    from lab.runs import events

    return events.EvalEvent(arm=arm, step=step, kind="eval", seconds=seconds).dump()


def test_e2e_breakdown_adds_up(bench):
    events = [
        _eval_event("base", 0, 2.0),
        _train_event("lora", 1, 1.0),
        _train_event("balora", 1, 3.0),
        _train_event("lora", 2, 2.0),
        _train_event("balora", 2, 5.0),
        _eval_event("lora", 2, 4.0),
    ]
    phases = {"imports_s": 1.5, "model_load_s": 2.5, "eval_task_s": 3.0}
    out = bench["e2e"].breakdown(30.0, phases, events)
    assert out["train_by_arm"]["balora"] == {"total_s": 8.0, "median_step_s": 4.0, "steps": 2}
    assert out["train_s"] == 11.0 and out["eval_s"] == 6.0 and out["eval_points"] == 2
    assert out["eval_parts"]["task_s"] == 3.0
    assert out["other_s"] == pytest.approx(30.0 - 1.5 - 2.5 - 11.0 - 6.0)


def test_probes_json_on_tiny_llama(tmp_path):
    """bench/probes.py times every shipped probe pair at each batch size, with the same scores."""
    from lab.datasets.probes import load_occupations, load_pairs, load_templates

    res = run_json("probes.py", "--model", "tiny-llama", "--batches", "3,7", "--repeats", "2",
                   out=tmp_path / "probes.json")  # fmt: skip
    want = len(load_pairs()) + len(load_occupations()) * len(load_templates())
    assert res["pairs"] == want and res["batches"] == [3, 7]
    assert all(len(res["seconds"][k]) == 2 for k in ("3", "7"))
    assert res["ratio_to_first"]["3"] == 1.0
    ratio = res["median_s"]["7"] / res["median_s"]["3"]
    assert res["ratio_to_first"]["7"] == pytest.approx(ratio, abs=2e-3)
    assert res["same_scores"] < 1e-3


def test_e2e_times_functions_that_exist(bench):
    """Every engine function the end-to-end breakdown wraps is still where it says."""
    for module, attr, phase in bench["e2e"].TIMED:
        fn = getattr(importlib.import_module(module), attr, None)
        assert callable(fn), f"{module}.{attr} ({phase}) does not exist"


def test_shared_start_json_on_tiny_llama(tmp_path):
    """bench/shared_start.py trains each arm both ways on the same batches: fewer decoder
    tokens with the shared start, the same loss, and the ratios of its own medians."""
    res = run_json("shared_start.py", "--preset", "tiny-test", "--set", "train.seq_len=480",
                   "--steps", "2", out=tmp_path / "shared.json")  # fmt: skip
    assert len(res["shared_len"]) == 2 and min(res["shared_len"]) >= 8
    assert res["tokens"]["shared"] < res["tokens"]["whole"]
    assert set(res["median_s"]) == {"lora", "pissa", "balora"}
    for arm, m in res["median_s"].items():
        assert res["ratio"][arm] == pytest.approx(m["shared"] / m["whole"])
    assert "all_arms" in res["ratio"]
    assert res["loss_rel_diff"] < 1e-4


def test_flop_counter_counts_matmuls_and_cpu_attention(monkeypatch):
    """Known counts: 2 x m x n x k for a product; SDPA on the CPU as 2 products; padding by
    the attention mask; the floor is the FLOPs at the peak."""
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("flops", None)
    flops = importlib.import_module("flops")
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert flops.count(lambda: a @ b)["flops"] == 2 * 3 * 5 * 7
    q = torch.randn(1, 2, 4, 8)
    got = flops.count(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert got["flops"] == 2 * (2 * 2 * 4 * 8 * 4)  # q @ k^T and scores @ v, 2 heads
    pad = flops.Padding()
    pad._hook(None, (), {"input_ids": torch.zeros(2, 4), "attention_mask": torch.tensor(
        [[1, 1, 1, 1], [0, 0, 1, 1]])})  # fmt: skip
    assert pad.share("all") == 0.25
    rep = flops.report({"train/lora": 2.0}, {"train/lora": 10e9}, {}, {}, 10.0, 4.0)
    assert rep["floor_s"] == 1.0 and rep["times_floor"] == 4.0
    assert rep["phases"]["train/lora"]["fraction_of_peak"] == 0.5
    assert rep["split"]["train"]["floor_s"] == 1.0
    sys.modules.pop("flops", None)

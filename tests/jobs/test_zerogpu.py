"""Chunked training (ZeroGPU, simulated on the CPU): a run driven call by call through the job
manager ends with the adapters of the uninterrupted run; overruns shrink the next chunk; a
quota that runs out pauses the run and Resume continues it."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file

import lab.engine.steps as steps
import lab.engine.trainer as trainer
from lab import jobs
from lab.config import ConfigError, load_preset
from lab.jobs import chunks, hosting
from lab.runs import store as runs

N = 7
# dropout on, so a chunk that lost the RNG states draws different noise
FAST = [
    "train.bias_eval=false",
    "train.analysis=false",
    "data.max_eval=4",
    "lora.dropout=0.1",
    f"train.steps={N}",
    "train.eval_every=3",
]
ARMS = ("lora", "pissa", "balora")


def _adapters(run_dir):
    return {
        arm: load_file(str(run_dir / "adapters" / arm / "adapter_model.safetensors"))
        for arm in ARMS
    }


def _train_events(run_dir):
    return [
        {k: v for k, v in e.items() if k != "seconds"}
        for e in runs.read_events(run_dir / "events.jsonl")
        if e["kind"] == "train"
    ]


def _eval_points(run_dir):
    return [(e["arm"], e["step"]) for e in runs.read_events(run_dir / "events.jsonl")
            if e["kind"] == "eval"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run, uninterrupted, in one trainer call."""
    out = tmp_path_factory.mktemp("ref") / "full"
    list(trainer.run(load_preset("tiny-test", FAST), out))
    return out


def _manager(tmp_path, **settings) -> jobs.JobManager:
    s = chunks.Settings(mode="sim", **settings)
    return jobs.JobManager(tmp_path / "runs", hosting=hosting.make("local"), chunked=s)


def _drive(mgr, job, max_calls=60):
    """What the page's chunk timer does: ask for the next call until the job ends."""
    for _ in range(max_calls):
        if job.state != jobs.RUNNING:
            return
        mgr.drive(job.run_id, chunks.perform)
    raise AssertionError(f"still {job.state} after {max_calls} calls")


def test_settings_come_from_the_environment():
    assert chunks.settings({}).mode == "off"
    s = chunks.settings({"BALORA_ZEROGPU": "sim", "BALORA_ZEROGPU_CHUNK_STEPS": "3"})
    assert (s.mode, s.chunk_steps, s.budget_s, s.on) == ("sim", 3, 60.0, True)
    assert chunks.settings({"SPACES_ZERO_GPU": "true"}).mode == "zerogpu"
    with pytest.raises(ConfigError, match="BALORA_ZEROGPU: 'yes' is not one of sim, off"):
        chunks.settings({"BALORA_ZEROGPU": "yes"})
    with pytest.raises(ConfigError, match="BALORA_ZEROGPU_BUDGET_S: 'soon' is not a float"):
        chunks.settings({"BALORA_ZEROGPU": "sim", "BALORA_ZEROGPU_BUDGET_S": "soon"})
    with pytest.raises(ConfigError, match="BALORA_ZEROGPU_CHUNK_STEPS: must be more than 0"):
        chunks.settings({"BALORA_ZEROGPU": "sim", "BALORA_ZEROGPU_CHUNK_STEPS": "0"})


def test_the_decorator_is_a_no_op_off_zerogpu():
    import spaces

    from lab.ui import zerogpu

    def f(call):
        return call

    assert spaces.GPU(duration=zerogpu._duration)(f) is f
    assert zerogpu._duration({"budget_s": 12.2}) == 13


def test_chunked_run_equals_the_uninterrupted_run(tmp_path, reference):
    mgr = _manager(tmp_path, chunk_steps=2)
    job = mgr.submit("tiny-test", FAST)
    assert job.chunked and job.state == jobs.RUNNING and job.proc is None
    _drive(mgr, job)
    assert job.state == jobs.DONE, job.error
    calls = chunks.read_calls(job.run_dir)
    kinds = [c["kind"] for c in calls]
    # setup (base eval) | train 0-2 | train 2-3 | eval 3 | train 3-5 | train 5-6 | eval 6 |
    # train 6-7 | final: every evaluation in a call of its own, chunks end at eval points
    assert kinds == ["setup", "train", "train", "eval", "train", "train", "eval", "train", "final"]
    trains = [(c["from"], c["to"]) for c in calls if c["kind"] == "train"]
    assert trains == [(0, 2), (2, 3), (3, 5), (5, 6), (6, 7)]
    assert all(c["outcome"] == "ok" for c in calls)
    a, b = _adapters(job.run_dir), _adapters(reference)
    for arm in ARMS:
        assert a[arm].keys() == b[arm].keys()
        for k in a[arm]:
            assert torch.equal(a[arm][k], b[arm][k]), (arm, k)
    assert _train_events(job.run_dir) == _train_events(reference)
    assert _eval_points(job.run_dir) == _eval_points(reference)
    summary = runs.read_summary(job.run_dir)
    assert summary["status"] == "done" and summary["steps_done"] == N
    ref = runs.read_summary(reference)
    for arm in ARMS:
        assert summary["arms"][arm]["task_metric"] == ref["arms"][arm]["task_metric"]
    p = mgr.status(job.run_id)["chunks"]
    assert p["calls"] == 9 and p["train_chunks"] == 5 and p["step"] == N
    assert p["gpu_s"] == pytest.approx(sum(c["seconds"] for c in calls), abs=0.05)


def test_a_chunk_that_loses_the_checkpoint_state_differs(tmp_path, reference, monkeypatch):
    """The comparison above notices chunks that restore less than they should."""
    from lab.engine import checkpoint

    real = checkpoint.load

    def forgetful(run_dir, arms):
        res = real(run_dir, arms)
        for a in arms.values():
            a.optimizer.state.clear()
        return res

    monkeypatch.setattr(checkpoint, "load", forgetful)
    mgr = _manager(tmp_path, chunk_steps=2)
    job = mgr.submit("tiny-test", FAST)
    _drive(mgr, job)
    a, b = _adapters(job.run_dir), _adapters(reference)
    assert not all(torch.equal(a[arm][k], b[arm][k]) for arm in ARMS for k in a[arm])


def _call(kind, steps, seconds, train_s, outcome="ok", overran=False):
    return {"kind": kind, "steps": steps, "seconds": seconds, "train_s": train_s,
            "outcome": outcome, "overran": overran}  # fmt: skip


def test_plan_fits_the_budget_and_shrinks_after_an_overrun():
    s = chunks.Settings(mode="sim", budget_s=10.0, margin=0.8)
    assert chunks.plan_steps([], s) == s.first_steps
    # 4 steps took 2 s of training in a 3 s call: 1 s fixed cost, 0.5 s a step
    calls = [_call("train", 4, 3.0, 2.0)]
    assert chunks.plan_steps(calls, s) == 14  # (10 * 0.8 - 1) / 0.5
    calls.append(_call("train", 14, 12.0, 7.0, overran=True))
    assert chunks.plan_steps(calls, s) == 6  # re-planned from it: (10 * 0.8 - 5) / 0.5
    calls.append(_call("train", 6, 1.5, 1.0))  # a fast chunk would allow 26 again: capped
    assert chunks.plan_steps(calls, s) == 13  # smaller than the chunk that overran
    calls.append(_call("train", 6, 60.0, 0.0, outcome="aborted"))
    assert chunks.plan_steps(calls, s) == 3
    assert chunks.plan_steps(calls, chunks.Settings(mode="sim", chunk_steps=8)) == 3


def test_overrunning_chunks_are_detected_and_the_next_is_smaller(tmp_path, monkeypatch):
    real = steps.train_arm_step

    def slow(*args, **kwargs):  # a slow step: 3 arms x 3 steps overrun a 0.3 s budget
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, "train_arm_step", slow)
    mgr = _manager(tmp_path, chunk_steps=3, budget_s=0.3)
    job = mgr.submit("tiny-test", [*FAST, "train.steps=6", "train.eval_every=0"])
    _drive(mgr, job)
    assert job.state == jobs.DONE, job.error
    trains = [c for c in chunks.read_calls(job.run_dir) if c["kind"] == "train"]
    assert trains[0]["steps"] == 3 and trains[0]["overran"]
    assert trains[0]["seconds"] > 0.3
    assert [c["steps"] for c in trains] == [3, 2, 1]
    from lab.ui import zerogpu

    progress = mgr.status(job.run_id)["chunks"]
    assert progress["overruns"] >= 1
    text = zerogpu.progress_markdown(progress)
    # the last call (the final evaluation) overran too on a slow machine, or not on a fast one
    said = "overran its budget" if progress["last"].get("overran") else "ran past their budget"
    assert "GPU time used" in text and said in text


def test_the_progress_says_when_a_chunk_overran_and_keeps_saying_it():
    from lab.ui import zerogpu

    base = {"step": 3, "steps_total": 6, "calls": 2, "train_chunks": 1, "gpu_s": 4.0,
            "left_s": None, "budget_s": 3.0, "next_steps": 2}  # fmt: skip
    over = _call("train", 3, 4.0, 3.5, overran=True) | {"budget_s": 3.0}
    text = zerogpu.progress_markdown(base | {"last": over, "overruns": 1})
    assert "the last chunk overran its budget (4.0 s of 3 s)" in text
    cut = _call("train", 3, 9.0, 0.0, outcome="aborted")
    assert "was cut off" in zerogpu.progress_markdown(base | {"last": cut, "overruns": 1})
    fine = _call("final", 0, 1.0, 0.0)
    later = zerogpu.progress_markdown(base | {"calls": 5, "last": fine, "overruns": 2})
    assert "2 of the 5 GPU calls ran past their budget" in later
    assert "⚠️" not in zerogpu.progress_markdown(base | {"last": fine, "overruns": 0})


def test_quota_that_runs_out_pauses_and_resume_continues(tmp_path, reference):
    mgr = _manager(tmp_path, chunk_steps=2, budget_s=5.0, quota_s=1000.0)
    job = mgr.submit("tiny-test", FAST, owner="visitor-token-0123456789")
    for _ in range(3):
        mgr.drive(job.run_id, chunks.perform)
    mgr._gpu_used[job.owner] = 998.0  # the visitor's GPU time runs out
    mgr.drive(job.run_id, chunks.perform)
    assert job.state == jobs.PAUSED
    st = mgr.status(job.run_id)
    assert st["state"] == "paused" and "quota" in st["error"] and "Resume" in st["error"]
    assert chunks.read_calls(job.run_dir)[-1]["outcome"] == "quota"
    from lab.ui import train

    assert "Resume" in train.status_markdown(st)
    with pytest.raises(PermissionError, match="started by another visitor"):
        jobs.JobManager(
            tmp_path / "runs", hosting=hosting.make("public"), chunked=mgr.chunked
        ).resume(job.run_id, owner="someone-else-0123456789")
    mgr._gpu_used[job.owner] = 0.0  # a new day
    again = mgr.resume(job.run_id, owner="visitor-token-0123456789")
    assert again.state == jobs.RUNNING and again.chunked
    _drive(mgr, again)
    assert again.state == jobs.DONE, again.error
    a, b = _adapters(job.run_dir), _adapters(reference)
    assert all(torch.equal(a[arm][k], b[arm][k]) for arm in ARMS for k in a[arm])
    assert _train_events(job.run_dir) == _train_events(reference)


def test_stop_between_calls_ends_with_a_final_evaluation(tmp_path):
    mgr = _manager(tmp_path, chunk_steps=2)
    job = mgr.submit("tiny-test", FAST)
    for _ in range(2):  # setup, then the first chunk
        mgr.drive(job.run_id, chunks.perform)
    mgr.stop(job.run_id)
    _drive(mgr, job)
    assert job.state == jobs.STOPPED
    summary = runs.read_summary(job.run_dir)
    assert summary["status"] == "stopped" and summary["steps_done"] == 2
    assert chunks.read_calls(job.run_dir)[-1]["kind"] == "final"
    assert (job.run_dir / "adapters" / "balora" / "adapter_model.safetensors").exists()


def test_a_page_that_stops_driving_pauses_the_job(tmp_path):
    mgr = _manager(tmp_path, chunk_steps=2)
    job = mgr.submit("tiny-test", FAST)
    mgr.drive(job.run_id, chunks.perform)
    assert job.state == jobs.RUNNING
    mgr.idle_s = 0.0  # the page is gone: no tick asks for the next call
    time.sleep(0.01)
    with mgr._cond:
        mgr._tick()
    assert job.state == jobs.PAUSED
    assert "page driving this run was closed" in json.dumps(runs.read_summary(job.run_dir))


def test_the_page_driver_is_owner_checked(monkeypatch):
    import gradio as gr

    from lab.ui import common, zerogpu

    monkeypatch.setenv("BALORA_ZEROGPU", "sim")
    monkeypatch.setenv("BALORA_ZEROGPU_CHUNK_STEPS", "2")
    monkeypatch.setenv("BALORA_MODE", "public")
    owner, other = "owner-token-aaaaaaaaaaaa", "other-token-bbbbbbbbbbbb"
    mgr = common.manager()
    assert common.zerogpu() and mgr.chunked is not None
    job = mgr.submit("tiny-test", FAST, owner=owner)
    with pytest.raises(gr.Error, match="started by another visitor"):
        zerogpu.on_drive(job.run_id, other)
    assert not (job.run_dir / chunks.FILE).exists()  # no GPU call was made for them
    zerogpu.on_drive(job.run_id, owner)
    assert [c["kind"] for c in chunks.read_calls(job.run_dir)] == ["setup"]
    assert "ZeroGPU simulation" in zerogpu.note(mgr.chunked)


def test_the_app_replaces_the_old_note_and_drives_chunks(monkeypatch):
    """Built in the chunked mode, the page has the chunk note and a timer wired to the driver;
    built without it, neither."""
    from lab.ui import layout, zerogpu

    def built():
        demo = layout.build_app()
        notes = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "zerogpu-note"]
        drives = [d for d in demo.fns.values() if getattr(d.fn, "__name__", "") == "on_drive"]
        return notes, drives

    assert built() == ([], [])
    monkeypatch.setenv("BALORA_ZEROGPU", "sim")
    notes, drives = built()
    assert len(notes) == 1 and "chunks" in notes[0].value and "not supported" not in notes[0].value
    assert len(drives) == 1 and drives[0].fn is zerogpu.on_drive

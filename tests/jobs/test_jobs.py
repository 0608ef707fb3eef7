"""The job manager: one worker at a time, a FIFO queue, stop, kill after a grace period, crashes.

Most tests drive a stand-in worker (a small script given as the manager's ``python``) whose
behaviour the test picks: finish, hang ignoring STOP, or crash. The last ones run the real CLI
on the ``tiny-test`` preset.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lab import jobs
from lab.config import ConfigError
from lab.runs import store as runs

FAKE = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys, time
    args = sys.argv[1:]
    out = args[args.index("--out") + 1]
    mode = os.environ["FAKE_MODE"]
    os.makedirs(out, exist_ok=True)
    def summary(status, error=None):
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump({{"status": status, "error": error, "arms": {{"lora": {{"status": status}}}}}}, f)
    if mode == "crash":
        print("Traceback: boom in the worker", flush=True)
        sys.exit(3)
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.write("arms: [lora]\\ntrain:\\n  steps: 50\\n")
    summary("running")
    ev = open(os.path.join(out, "events.jsonl"), "a")
    for step in range(1, 51):
        if os.path.exists(os.path.join(out, "STOP")):
            if mode == "hang":  # alive but stuck: writes nothing more
                time.sleep(3600)
            summary("stopped"); sys.exit(0)
        ev.write(json.dumps({{"arm": "lora", "step": step, "kind": "train", "loss": 1.0 / step}}) + "\\n")
        ev.flush()
        time.sleep(float(os.environ.get("FAKE_STEP_S", "0.01")))
    summary("done")
    """
)


@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    path = tmp_path / "fake_worker.py"
    path.write_text(FAKE.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("FAKE_MODE", "ok")
    return str(path)


def manager(tmp_path, python=sys.executable, **kw) -> jobs.JobManager:
    return jobs.JobManager(tmp_path / "runs", python=python, poll_s=0.05, **kw)


def test_bad_config_raises_before_anything_is_written(tmp_path, fake_python):
    mgr = manager(tmp_path, fake_python)
    with pytest.raises(ConfigError, match="train.steps: must be at least 1"):
        mgr.submit("tiny-test", ["train.steps=0"])
    with pytest.raises(ConfigError, match="reg.lambda1: must be in \\[0, 100\\]"):
        mgr.submit("tiny-test", ["reg.lambda1=-0.1"])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert mgr.jobs() == []


def test_finished_job_reads_its_status_from_disk(tmp_path, fake_python):
    mgr = manager(tmp_path, fake_python)
    job = mgr.submit("tiny-test")
    assert mgr.queue_position(job.run_id) == 0
    mgr.wait(job.run_id, timeout=60)
    st = mgr.status(job.run_id)
    assert st["state"] == "done"
    assert st["arms"]["lora"]["step"] == 50
    assert st["arms"]["lora"]["loss"] == pytest.approx(1 / 50)
    assert json.loads(json.dumps(st)) == st  # JSON-ready
    assert (job.run_dir / jobs.LOG_NAME).exists()
    # the same view without the manager's memory (a fresh app after a restart)
    assert jobs.run_status(job.run_dir)["state"] == "done"


def test_summary_keeps_the_estimate_beside_the_real_wall_time(tmp_path, fake_python):
    mgr = manager(tmp_path, fake_python)
    job = mgr.submit("tiny-test", estimate_s=2.0)
    mgr.wait(job.run_id, timeout=60)
    summary = runs.read_summary(job.run_dir)
    assert summary["estimate_s"] == 2.0 and 0 < summary["wall_s"] < 60
    assert summary["estimate_error"] == pytest.approx(summary["wall_s"] / 2.0 - 1, abs=1e-3)
    other = mgr.submit("tiny-test")  # no estimate measured: only the wall time
    mgr.wait(other.run_id, timeout=60)
    assert "estimate_s" not in runs.read_summary(other.run_dir)


def test_estimate_adds_startup_steps_and_every_eval_point():
    from lab.config import load_preset

    measured = {
        "per_arm_s": {"lora": 1.0, "balora": 2.0},
        "eval_s": {"base": 5.0, "lora": 3.0, "balora": 4.0},
        "startup_s": 10.0,
    }
    cfg = load_preset("tiny-test", ["train.steps=20", "train.eval_every=5"])
    est = jobs.estimate_run(cfg, measured)
    # 4 arm eval points (steps 5, 10, 15 and the end at 20) plus the base once
    assert est == {"startup_s": 10.0, "train_s": 60.0, "eval_s": 5.0 + 4 * 7.0, "total_s": 103.0}
    cfg = load_preset("tiny-test", ["train.steps=20", "train.eval_every=0"])
    assert jobs.estimate_run(cfg, measured)["eval_s"] == 12.0  # the end only


def test_queue_is_fifo_with_positions_and_one_job_at_a_time(tmp_path, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.02")
    mgr = manager(tmp_path, fake_python)
    a, b, c = (mgr.submit("tiny-test") for _ in range(3))
    assert [mgr.queue_position(j.run_id) for j in (a, b, c)] == [0, 1, 2]
    assert mgr.status(c.run_id)["state"] == "queued"
    assert mgr.attach() is a
    mgr.stop(b.run_id)  # a waiting job leaves the queue at once
    assert b.state == "cancelled" and mgr.queue_position(c.run_id) == 1
    running_seen = set()
    while c.state != "done":
        running_seen.add(sum(j.state == "running" for j in (a, b, c)))
        time.sleep(0.02)
        assert time.time() - a.submitted < 60
    assert running_seen <= {0, 1}
    assert a.ended <= c.started
    assert a.state == "done" and mgr.attach() is c


def test_stop_is_honoured_by_the_worker(tmp_path, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.2")
    mgr = manager(tmp_path, fake_python)
    job = mgr.submit("tiny-test")
    while mgr.status(job.run_id)["arms"].get("lora", {}).get("step", 0) < 1:
        time.sleep(0.05)
    mgr.stop(job.run_id)
    assert (job.run_dir / runs.STOP_FILE).exists()
    mgr.wait(job.run_id, timeout=30)
    assert job.state == "stopped" and job.error is None
    assert mgr.status(job.run_id)["arms"]["lora"]["step"] < 50
    with pytest.raises(jobs.JobError, match="already finished"):
        mgr.stop(job.run_id)


def test_worker_that_goes_silent_after_stop_is_killed_after_the_grace_period(
    tmp_path, fake_python, monkeypatch
):
    monkeypatch.setenv("FAKE_MODE", "hang")
    monkeypatch.setenv("FAKE_STEP_S", "0.1")
    mgr = manager(tmp_path, fake_python, grace_s=0.5)
    job = mgr.submit("tiny-test")
    while mgr.status(job.run_id)["arms"].get("lora", {}).get("step", 0) < 1:
        time.sleep(0.05)
    mgr.stop(job.run_id)
    mgr.wait(job.run_id, timeout=30)
    assert job.state == "stopped"
    assert "wrote nothing for" in job.error
    summary = json.loads((job.run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and "killed" in summary["error"]
    with pytest.raises(ProcessLookupError):
        os.killpg(job.proc.pid, 0)  # the whole process group is gone


def test_crash_leaves_the_error_and_the_next_job_runs(tmp_path, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "crash")
    mgr = manager(tmp_path, fake_python)
    bad = mgr.submit("tiny-test")
    mgr.wait(bad.run_id, timeout=30)
    assert bad.state == "failed"
    assert "exited with code 3" in bad.error and "boom in the worker" in bad.error
    st = mgr.status(bad.run_id)
    assert st["state"] == "failed" and "boom" in st["error"]
    monkeypatch.setenv("FAKE_MODE", "ok")
    good = mgr.submit("tiny-test")
    assert mgr.wait(good.run_id, timeout=60).state == "done"


def test_unknown_run_id_is_a_clear_error(tmp_path):
    mgr = manager(tmp_path)
    with pytest.raises(jobs.JobError, match="unknown run id 'nope'"):
        mgr.status("nope")
    with pytest.raises(jobs.JobError, match="unknown run id"):
        mgr.stop("nope")
    (tmp_path / "outside").mkdir()
    with pytest.raises(jobs.JobError, match="unknown run id"):
        mgr.status("../outside")


def test_get_manager_is_one_object_per_runs_root(tmp_path):
    a = jobs.get_manager(tmp_path / "r1")
    assert jobs.get_manager(tmp_path / "r1") is a
    assert jobs.get_manager(tmp_path / "r2") is not a


def test_preflight_names_the_problem(tmp_path):
    from lab.config import load_preset
    from lab.datasets.encoding import DataError
    from lab.models import ModelError

    with pytest.raises(ModelError, match="supports task nlu, not nlg"):
        jobs.preflight(load_preset("tiny-test", ["model.name=tiny-bert"]))
    with pytest.raises(ModelError, match="unknown model 'no such model'"):
        jobs.preflight(load_preset("tiny-test", ["model.name=no such model"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\nnot json\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        jobs.preflight(load_preset("tiny-test", [f"data.name={bad}"]))
    with pytest.raises(DataError, match="unknown dataset 'nothing-here'"):
        jobs.preflight(load_preset("tiny-test", ["data.name=nothing-here"]))


def test_unknown_hub_model_without_network_is_a_specific_error(monkeypatch):
    from lab.models import ModelError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        jobs.hub_model_check("nobody-xyz/definitely-not-a-model")


# ---- the real CLI on the tiny-test preset -------------------------------------------------------


@pytest.mark.slow
def test_real_worker_trains_and_saves_adapters(tmp_path):
    mgr = manager(tmp_path)
    job = mgr.submit("tiny-test", ["train.steps=3", "train.bias_eval=false"])
    mgr.wait(job.run_id, timeout=240)
    st = mgr.status(job.run_id)
    assert st["state"] == "done", st
    assert set(st["arms"]) == {"lora", "pissa", "balora"}
    assert all(a["step"] == 3 for a in st["arms"].values())
    for arm in ("lora", "pissa", "balora"):
        assert (job.run_dir / "adapters" / arm / "adapter_model.safetensors").exists()


def test_the_write_times_skip_a_folder_that_vanishes_while_listed(tmp_path, monkeypatch):
    """A checkpoint's temporary folder renamed away between being listed and being entered:
    the stop grace check reads the other files' times instead of raising (which ended the
    manager's supervisor thread, so a stopped job never finished)."""
    from lab.runs.status import mtimes

    run = tmp_path / "run"
    (run / ".checkpoint.x.tmp").mkdir(parents=True)
    (run / ".checkpoint.x.tmp" / "state.json").write_text("{}")
    (run / "events.jsonl").write_text("{}\n")
    (run / jobs.LOG_NAME).write_text("the log is not the trainer's writing")
    real = os.scandir

    def scandir(path="."):
        if str(path).endswith(".tmp"):  # gone by the time it is entered
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert mtimes(run) == [(run / "events.jsonl").stat().st_mtime]


@pytest.mark.slow
def test_real_worker_stops_within_a_step(tmp_path):
    mgr = manager(tmp_path)
    job = mgr.submit("tiny-test", ["train.steps=2000", "train.bias_eval=false"])
    deadline = time.time() + 240
    while mgr.status(job.run_id)["arms"].get("balora", {}).get("step", 0) < 2:
        assert time.time() < deadline and job.state == "running", mgr.status(job.run_id)
        time.sleep(0.2)
    mgr.stop(job.run_id)
    mgr.wait(job.run_id, timeout=120)
    st = mgr.status(job.run_id)
    assert st["state"] == "stopped", st
    assert st["arms"]["lora"]["step"] < 2000
    assert (Path(st["run_dir"]) / "adapters" / "balora" / "adapter_config.json").exists()


# ---- Resume through the manager (the real CLI, --resume) ----------------------------------------

RESUME_FAST = [
    "train.bias_eval=false",
    "train.analysis=false",
    "data.max_eval=4",
    "lora.dropout=0.1",
    "train.steps=6",
    "train.eval_every=2",
]
ARMS = ("lora", "pissa", "balora")

# The real CLI with every arm step slowed down, so a test can act between two checkpoints.
SLOW_CLI = textwrap.dedent(
    """\
    #!{python}
    import os, sys, time
    import lab.engine.steps as s
    real = s.train_arm_step
    def slow(*args, **kwargs):
        time.sleep(float(os.environ.get("SLOW_STEP_S", "0")))
        return real(*args, **kwargs)
    s.train_arm_step = slow
    from lab.__main__ import main
    sys.exit(main(sys.argv[3:]))  # argv: -m lab train ...
    """
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from lab.config import load_preset
    from lab.engine.trainer import run

    out = tmp_path_factory.mktemp("ref") / "full"
    list(run(load_preset("tiny-test", RESUME_FAST), out))
    return out


@pytest.fixture
def slow_cli(tmp_path, monkeypatch):
    path = tmp_path / "slow_cli.py"
    path.write_text(SLOW_CLI.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("SLOW_STEP_S", "0.4")
    return str(path)


def _same_adapters(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    for arm in ARMS:
        x = load_file(str(a / "adapters" / arm / "adapter_model.safetensors"))
        y = load_file(str(b / "adapters" / arm / "adapter_model.safetensors"))
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def _train_lines(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in e.items() if k != "seconds"}
        for e in runs.read_events(run_dir / "events.jsonl")
        if e["kind"] == "train"
    ]


def _wait_step(mgr, job, step: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while mgr.status(job.run_id)["arms"].get("balora", {}).get("step", 0) < step:
        assert time.time() < deadline and job.state == "running", mgr.status(job.run_id)
        time.sleep(0.05)


@pytest.mark.slow
def test_stopped_run_resumed_through_the_manager_equals_the_uninterrupted_run(
    tmp_path, slow_cli, uninterrupted
):
    mgr = manager(tmp_path, slow_cli)
    job = mgr.submit("tiny-test", RESUME_FAST)
    _wait_step(mgr, job, 1)
    mgr.stop(job.run_id)
    mgr.wait(job.run_id, timeout=240)
    assert job.state == "stopped", job.error
    done = runs.read_summary(job.run_dir)["steps_done"]
    assert 1 <= done < 6
    again = mgr.resume(job.run_id)
    assert again.resume and again.command(sys.executable)[4:6] == ["--resume", str(job.run_dir)]
    mgr.wait(job.run_id, timeout=240)
    assert again.state == "done", again.error
    summary = runs.read_summary(job.run_dir)
    assert summary["resumed_from"] == done and summary["steps_done"] == 6
    assert _same_adapters(job.run_dir, uninterrupted)
    assert _train_lines(job.run_dir) == _train_lines(uninterrupted)
    log = (job.run_dir / jobs.LOG_NAME).read_text()
    assert log  # the resumed worker appended to the run's own log
    with pytest.raises(ValueError, match="is done: it trained all its steps"):
        mgr.resume(job.run_id)


@pytest.mark.slow
def test_worker_killed_between_checkpoints_resumes_from_the_last_one(
    tmp_path, slow_cli, uninterrupted
):
    """SIGKILL after step 3 (checkpoints at 2 and 4): the resumed run redoes step 3 from the
    step-2 checkpoint and ends bit for bit like the uninterrupted run."""
    import signal

    from lab.engine import checkpoint

    mgr = manager(tmp_path, slow_cli)
    job = mgr.submit("tiny-test", RESUME_FAST)
    _wait_step(mgr, job, 3)
    os.killpg(job.proc.pid, signal.SIGKILL)
    mgr.wait(job.run_id, timeout=60)
    assert job.state == "failed" and "code -9" in job.error
    assert checkpoint.read_state(job.run_dir)["step"] == 2
    assert max(e["step"] for e in runs.read_events(job.run_dir / "events.jsonl")) >= 3
    mgr.resume(job.run_id)
    mgr.wait(job.run_id, timeout=240)
    assert mgr.status(job.run_id)["state"] == "done"
    assert runs.read_summary(job.run_dir)["resumed_from"] == 2
    assert _same_adapters(job.run_dir, uninterrupted)
    assert _train_lines(job.run_dir) == _train_lines(uninterrupted)


def test_resume_refuses_runs_that_cannot_continue(tmp_path, fake_python, uninterrupted):
    import shutil

    from lab.engine.checkpoint import ResumeError

    mgr = manager(tmp_path, fake_python)
    root = tmp_path / "runs"

    def copy(name: str, status: str | None = None) -> Path:
        dst = root / name
        shutil.copytree(uninterrupted, dst)
        if status:
            summary = json.loads((dst / "summary.json").read_text())
            summary["status"] = status
            (dst / "summary.json").write_text(json.dumps(summary))
        return dst

    copy("done-run")
    with pytest.raises(ResumeError, match="run done-run is done"):
        mgr.resume("done-run")
    shutil.rmtree(copy("no-ck", "stopped") / "checkpoint")
    with pytest.raises(ResumeError, match="run no-ck has no checkpoint to resume from"):
        mgr.resume("no-ck")
    (copy("bad-ck", "stopped") / "checkpoint" / "state.json").write_text("{not json")
    with pytest.raises(ResumeError, match="the checkpoint of run bad-ck is unreadable"):
        mgr.resume("bad-ck")
    (copy("bad-summary") / "summary.json").write_text("[[[")
    with pytest.raises(ResumeError, match="the summary of run bad-summary is unreadable"):
        mgr.resume("bad-summary")
    copy("at-end", "stopped")  # stopped after its last step: only a new total continues it
    with pytest.raises(ResumeError, match="already trained 6 of 6 steps: give a new total"):
        mgr.resume("at-end")
    with pytest.raises(ConfigError, match="train.steps: 9 is over the limit of 8"):
        manager(tmp_path, fake_python, hosting=_steps_limited()).resume("at-end", 9)
    with pytest.raises(jobs.JobError, match="unknown run id"):
        mgr.resume("nothing-here")
    with pytest.raises(ValueError, match="not a run id"):
        mgr.resume("../outside")
    job = mgr.resume("at-end", 8)  # a new total: queued as a resume job
    assert job.resume and job.total_steps == 8
    assert job.command("py")[-2:] == ["--set", "train.steps=8"]


def _steps_limited():
    import dataclasses

    from lab.jobs import hosting

    h = hosting.make("local")
    return dataclasses.replace(h, limits=dataclasses.replace(h.limits, steps=8))


def test_one_run_id_rule_for_checks_status_and_listing(tmp_path):
    from lab.jobs import hosting

    good = ["example", "20260101-120000-tiny-ab12", "a.b_c-d", "a" * 120]
    bad = ["", ".", "..", "../outside", "a/b", ".hidden", "-x", "a" * 121, None, 5]
    assert all(hosting.is_run_id(r) for r in good)
    assert not any(hosting.is_run_id(r) for r in bad)
    for r in bad:
        with pytest.raises(ValueError, match="not a run id"):
            hosting.check_run_id(r)
    mgr = manager(tmp_path)
    (mgr.runs_root / "..x").mkdir(parents=True)  # a folder, but no run id
    with pytest.raises(jobs.JobError, match="unknown run id"):
        mgr.status("..x")

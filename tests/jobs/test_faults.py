"""Faults: the app killed mid-run, a worker lock held by another process, corrupt run files,
and ownership of runs in public and local mode."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import free_port, start_app, wait_served

from lab import jobs
from lab.config import dump_yaml, load_preset
from lab.jobs import hosting, worker
from lab.runs import store as runs


def _alive(pid: int) -> bool:
    """True for a live process (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def _fake_run(root: Path, run_id: str, status: str | None, adapters: bool = False) -> Path:
    run = root / run_id
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(load_preset("tiny-test")))
    if status is not None:
        (run / "summary.json").write_text(json.dumps({"status": status, "arms": {}}))
    if adapters:
        (run / "adapters" / "lora").mkdir(parents=True)
        (run / "adapters" / "lora" / "adapter_config.json").write_text("{}")
    return run


# ---- reading damaged runs ----------------------------------------------------------------------


def test_bad_event_lines_are_skipped_and_counted(tmp_path):
    good = json.dumps({"arm": "lora", "step": 1, "kind": "train"})
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        (good + "\n").encode() + b"\xff\xfe not text\n[1, 2]\n{}\n" + (good + "\n").encode()
        + b'{"arm": "lora", "st'  # a torn last line: left for later, not an error
    )  # fmt: skip
    skipped: list[int] = []
    events = runs.read_events(path, skipped)
    assert len(events) == 2 and skipped == [2, 3, 4]


def test_corrupt_summary_lists_as_unreadable_and_the_others_still_list(tmp_path):
    _fake_run(tmp_path, "b-good", "done")
    bad = _fake_run(tmp_path, "a-bad", None)
    (bad / "summary.json").write_text('{"status": "do')
    worse = _fake_run(tmp_path, "c-worse", None)
    (worse / "summary.json").write_bytes(b"\xff\xfe\x00")
    rows = {r["run_id"]: r for r in runs.list_runs(tmp_path)}
    assert rows["b-good"]["status"] == "done" and rows["b-good"]["error"] is None
    for run_id in ("a-bad", "c-worse"):
        assert rows[run_id]["status"] == runs.UNREADABLE
        assert "summary.json" in rows[run_id]["error"]
    with pytest.raises(runs.RunReadError, match="summary.json of run a-bad is corrupt"):
        runs.load_run(bad)
    (bad / "config.yaml").write_text("train: [unclosed\n")
    with pytest.raises(runs.RunReadError, match="config.yaml of run a-bad"):
        runs.load_run(bad)


# ---- reconciliation and the worker lock ---------------------------------------------------------


def test_a_new_manager_marks_runs_left_running_as_failed(tmp_path):
    _fake_run(tmp_path, "r-running", "running")
    _fake_run(tmp_path, "r-never", None)  # the worker died before its first summary
    _fake_run(tmp_path, "r-done", "done")
    mgr = jobs.JobManager(tmp_path)
    assert sorted(mgr.reconciled) == ["r-never", "r-running"]
    for run_id in ("r-running", "r-never"):
        summary = runs.read_summary(tmp_path / run_id)
        assert summary["status"] == "failed"
        assert summary["error"] == "the app stopped while this run was training"
    assert runs.read_summary(tmp_path / "r-done")["status"] == "done"


def test_runs_of_a_live_worker_are_left_alone(tmp_path):
    _fake_run(tmp_path, "r-running", "running")
    held = worker.try_lock(worker.lock_path(tmp_path))  # a worker of another app is alive
    try:
        mgr = jobs.JobManager(tmp_path)
        assert mgr.reconciled == []
        assert runs.read_summary(tmp_path / "r-running")["status"] == "running"
    finally:
        held.close()


@pytest.mark.slow
def test_no_second_worker_while_the_lock_is_held(tmp_path):
    held = worker.try_lock(worker.lock_path(tmp_path))
    mgr = jobs.JobManager(tmp_path, poll_s=0.1)
    try:
        job = mgr.submit("tiny-test", ["train.steps=2", "train.bias_eval=false"])
        time.sleep(2.0)
        assert job.state == jobs.QUEUED and job.proc is None  # waits for the lock
        assert mgr.status(job.run_id)["state"] == jobs.QUEUED
    finally:
        held.close()
    mgr.wait(job.run_id, timeout=240)
    assert job.state == jobs.DONE, job.error


def test_a_worker_refuses_to_start_while_the_lock_is_held(tmp_path, monkeypatch):
    path = worker.lock_path(tmp_path)
    held = worker.try_lock(path)
    monkeypatch.setenv(worker.LOCK_ENV, str(path))
    try:
        with pytest.raises(worker.WorkerLockHeld, match="another training worker"):
            worker.hold_lock_from_env()
    finally:
        held.close()


@pytest.mark.slow
def test_app_killed_mid_run_then_restarted(tmp_path):
    """SIGKILL the app while its worker trains: the worker ends itself, a restarted app marks
    the run failed, never runs a second worker, and trains a new job."""
    from gradio_client import Client

    runs_dir = tmp_path / "runs"
    port = free_port()
    app = start_app(runs_dir, port)
    url = f"http://127.0.0.1:{port}/"
    wait_served(url, app)
    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    long = ["train.steps=100000", "train.bias_eval=false", "train.analysis=false"]
    started = client.predict("tiny-test", long, "", api_name="/start")
    run_id = started["run_id"]
    deadline = time.time() + 180
    while True:
        st = client.predict(run_id, "", api_name="/status")
        if st["state"] == "running" and any(a["step"] >= 1 for a in st["arms"].values()):
            break
        assert time.time() < deadline, st
        time.sleep(0.5)
    pid = int((runs_dir / worker.LOCK_NAME).read_text().split()[0])
    assert _alive(pid)
    os.kill(app.pid, signal.SIGKILL)
    app.wait(timeout=10)
    deadline = time.time() + 10 * worker.HEARTBEAT_S + 5
    while _alive(pid):
        assert time.time() < deadline, "the worker outlived its app"
        time.sleep(0.2)
    assert runs.read_summary(runs_dir / run_id)["status"] == "running"  # as the kill left it

    port = free_port()
    app = start_app(runs_dir, port)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_served(url, app)
        client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        st = client.predict(run_id, "", api_name="/status")
        assert st["state"] == "failed"
        assert st["error"] == "the app stopped while this run was training"
        quick = ["train.steps=2", "train.bias_eval=false", "train.analysis=false"]
        new_id = client.predict("tiny-test", quick, "", api_name="/start")["run_id"]
        deadline = time.time() + 240
        while (st := client.predict(new_id, "", api_name="/status"))["state"] != "done":
            assert st["state"] in ("queued", "starting", "running"), st
            assert time.time() < deadline, st
            time.sleep(0.5)
        assert runs.read_summary(runs_dir / run_id)["status"] == "failed"
    finally:
        app.terminate()
        app.wait(timeout=20)


# ---- ownership ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["public", "local"])
def test_another_visitor_can_read_stop_and_download_only_in_local_mode(mode, monkeypatch):
    from lab.ui import common, layout
    from lab.ui import runs as runs_tab

    monkeypatch.setenv("BALORA_MODE", mode)
    root = common.runs_root()
    owner, stranger = hosting.new_token(), hosting.new_token()
    _fake_run(root, "r-owned", "done", adapters=True)
    hosting.record_owner(root, "r-owned", owner)

    def attempts(token):
        yield "status", lambda: layout.api_status("r-owned", token)
        yield "zip", lambda: runs_tab.adapters_zip("r-owned", token)
        yield "report access", lambda: common.resolve_run("r-owned", token)
        yield "stop", lambda: hosting.check_access(common.hosting(), root, "r-owned", token, "stop")

    for _what, attempt in attempts(owner):
        attempt()  # the owner may always
    for _what, attempt in attempts(stranger):
        if mode == "public":
            with pytest.raises(Exception, match="another visitor"):
                attempt()
        else:
            attempt()  # local mode: one trusted user, everything is theirs
    visible = [r["run_id"] for r in common.visible_runs(stranger)]
    assert visible == ([] if mode == "public" else ["r-owned"])


def test_admin_token_may_stop_anything(monkeypatch):
    monkeypatch.setenv("BALORA_MODE", "public")
    monkeypatch.setenv("BALORA_ADMIN_TOKEN", "the-admin-token-123456")
    h = hosting.current()
    root = Path(os.environ["BALORA_RUNS_DIR"])
    hosting.record_owner(root, "r-x", hosting.new_token())
    hosting.check_access(h, root, "r-x", "the-admin-token-123456", "stop")
    with pytest.raises(hosting.AccessError):
        hosting.check_access(h, root, "r-x", "not-the-admin-token", "stop")


def test_mode_detection():
    assert hosting.detect_mode("127.0.0.1") == "local"
    assert hosting.detect_mode("0.0.0.0") == "public"
    assert hosting.detect_mode("192.0.2.4") == "public"
    assert hosting.detect_mode("127.0.0.1", share=True) == "public"
    assert hosting.detect_mode("0.0.0.0", flag="local") == "local"
    assert hosting.detect_mode("localhost", flag="public") == "public"


def test_mode_from_a_space(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/ba-lora-lab")
    assert hosting.detect_mode("127.0.0.1") == "public"

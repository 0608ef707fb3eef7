"""The launched app's documented API (start, status, stop, generate) through gradio_client.

The app runs in a subprocess on a free port with its own runs directory, as a user would start
it; the test trains the tiny-test preset for a few steps and asks for generations.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_served(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> float:
    """Seconds until ``url`` answers 200; fails with the app's output if it dies first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the app exited with code {proc.returncode}:\n{out[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.time() - t0
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the app did not serve {url} within {timeout:.0f}s")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("api") / "runs"
    port = free_port()
    env = {
        **os.environ,
        "BALORA_RUNS_DIR": str(runs_dir),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_served(url, proc)
        yield url, runs_dir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_documented_endpoints(app_url):
    from gradio_client import Client

    url, _ = app_url
    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/start", "/status", "/stop", "/generate"} <= names


@pytest.mark.slow
def test_start_status_generate(app_url):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, runs_dir = app_url
    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    with pytest.raises(AppError, match="train.steps: must be at least 1"):
        client.predict("tiny-test", ["train.steps=0"], api_name="/start")
    run_id = client.predict(
        "tiny-test", ["train.steps=3", "train.bias_eval=false"], api_name="/start"
    )
    assert (runs_dir / run_id).is_dir()
    deadline = time.time() + 240
    status = client.predict(run_id, api_name="/status")
    while status["state"] not in ("done", "stopped", "failed"):
        assert time.time() < deadline, status
        time.sleep(1.0)
        status = client.predict(run_id, api_name="/status")
    assert status["state"] == "done", status
    assert all(a["step"] == 3 for a in status["arms"].values())
    rows = client.predict(run_id, "Say something kind.", 8, 0, api_name="/generate")
    assert [r["arm"] for r in rows] == ["base", "lora", "pissa", "balora"]
    assert all(isinstance(r["text"], str) and r["tokens"] >= 1 for r in rows)
    assert all(r["loglik"] <= 0 for r in rows)
    with pytest.raises(AppError, match="already finished"):
        client.predict(run_id, api_name="/stop")

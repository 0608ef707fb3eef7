"""Shared fixtures: tiny models built from a config (no files, no network) and a runs folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Every test writes runs under its own temp folder, never into the repository."""
    monkeypatch.setenv("BALORA_RUNS_DIR", str(tmp_path / "runs"))
    # files a test writes in its temp folder stand for uploads (Gradio's upload folder)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    yield


@pytest.fixture(scope="session")
def tiny_llama():
    from lab.models import load_model

    return load_model("tiny-llama", task="nlg", seed=0)


@pytest.fixture(scope="session")
def tiny_bert():
    from lab.models import load_model

    return load_model("tiny-bert", task="nlu", num_labels=3, seed=0)


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_served(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> float:
    """Seconds until ``url`` answers 200; fails with the app's output if it dies first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            log = Path(getattr(proc, "log_path", ""))
            out = log.read_text(errors="replace") if log.is_file() else ""
            pytest.fail(f"the app exited with code {proc.returncode}:\n{out[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.time() - t0
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the app did not serve {url} within {timeout:.0f}s")


def start_app(runs_dir: Path, port: int, args=(), env=None) -> subprocess.Popen:
    """``python app.py --port PORT ARGS`` with its own runs directory (not waited for); its
    output goes to ``app-PORT.log`` beside the runs directory (``proc.log_path``)."""
    env = {
        **os.environ,
        "BALORA_RUNS_DIR": str(runs_dir),
        "GRADIO_ANALYTICS_ENABLED": "False",
        **(env or {}),
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    log_path = Path(runs_dir).parent / f"app-{port}.log"  # a file: a full pipe would block the app
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port), *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.log_path = log_path
    return proc


@contextmanager
def launched_app(runs_dir: Path, args=(), env=None):
    """``python app.py`` on a free port with its own runs directory, as a user starts it.
    Yields (url, seconds until the page was served); the app is stopped afterwards."""
    port = free_port()
    proc = start_app(runs_dir, port, args, env)
    url = f"http://127.0.0.1:{port}/"
    try:
        yield url, wait_served(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (never a browser download)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Playwright, as the browser tests drive the app."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        yield b
        b.close()


# A sweep shared by the sweep and pooling tests: tiny-test, 3 seeds x 2 learning rates.


FAST = ["train.steps=2", "train.analysis=false", "train.bias_eval=false", "data.max_eval=8"]
SEEDS_X_LRS = {
    "preset": "tiny-test",
    "set": FAST,
    "grid": {"train.seeds": [[0], [1], [2]], "train.lr": [0.0005, 0.001]},
}


@pytest.fixture(scope="session")
def local_sweep(tmp_path_factory):
    """The 3 x 2 sweep run by the local engine: (folder, index)."""
    out = tmp_path_factory.mktemp("sweep") / "local"
    from lab.sweep.runner import run_sweep
    from lab.sweep.spec import parse_spec

    return out, run_sweep(parse_spec(SEEDS_X_LRS), out)

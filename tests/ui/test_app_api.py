"""The launched app's documented API (start, status, stop, generate) through gradio_client.

The app runs in a subprocess on a free port with its own runs directory, as a user would start
it; the test trains the tiny-test preset for a few steps and asks for generations.
"""

from __future__ import annotations

import time

import pytest
from conftest import launched_app


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("api") / "runs"
    with launched_app(runs_dir) as (url, _):
        yield url, runs_dir


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
    started = client.predict(
        "tiny-test", ["train.steps=3", "train.bias_eval=false"], api_name="/start"
    )
    run_id, token = started["run_id"], started["owner_token"]
    assert (runs_dir / run_id).is_dir() and len(token) >= 16
    deadline = time.time() + 240
    status = client.predict(run_id, token, api_name="/status")
    while status["state"] not in ("done", "stopped", "failed"):
        assert time.time() < deadline, status
        time.sleep(1.0)
        status = client.predict(run_id, token, api_name="/status")
    assert status["state"] == "done", status
    assert all(a["step"] == 3 for a in status["arms"].values())
    rows = client.predict(run_id, "Say something kind.", 8, 0, token, api_name="/generate")
    assert [r["arm"] for r in rows] == ["base", "lora", "pissa", "balora"]
    assert all(isinstance(r["text"], str) and r["tokens"] >= 1 for r in rows)
    assert all(r["loglik"] <= 0 for r in rows)
    with pytest.raises(AppError, match="already finished"):
        client.predict(run_id, token, api_name="/stop")

"""The app in ZeroGPU's chunked mode (simulated on the CPU), in headless Chromium: a run started
once goes through its chunks with no click between them, the page shows the chunk progress and
the GPU time used, and the run reaches "done".
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import launched_app

from lab.jobs import chunks

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [pytest.mark.browser, pytest.mark.slow]
if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(
        "no /usr/bin/chromium here (apt-get install chromium); CI runs this test",
        allow_module_level=True,
    )

ENV = {"BALORA_ZEROGPU": "sim", "BALORA_ZEROGPU_CHUNK_STEPS": "2"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("zerogpu") / "runs"
    with launched_app(runs_dir, env=ENV) as (url, _):
        yield url, runs_dir


def pick(page, elem_id: str, text: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(text)
    page.get_by_role("option", name=text).first.click()


def test_chunks_run_to_done_without_a_click(app, browser):
    url, runs_dir = app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    note = page.locator("#zerogpu-note")
    note.wait_for(timeout=60_000)
    assert "chunks" in note.inner_text() and "not supported" not in note.inner_text()
    page.get_by_role("tab", name="Setup").click()
    pick(page, "preset", "tiny-test")
    page.get_by_text("loaded preset").wait_for()
    steps = page.get_by_label("Steps", exact=True)
    steps.fill("6")
    steps.press("Tab")
    page.locator("#start-btn").click()
    status = page.locator("#train-status")
    seen_chunk_progress = set()
    deadline = time.time() + 600
    while "done" not in status.inner_text().split("·")[0]:
        text = status.inner_text()
        if "ZeroGPU chunks" in text and "GPU time used" in text:
            seen_chunk_progress.add(text.split("step ", 1)[1].split(" ", 1)[0])
        assert time.time() < deadline, f"not done after 600 s: {text}"
        assert "failed" not in text.split("·")[0], text
        page.wait_for_timeout(300)
    text = status.inner_text()
    assert "ZeroGPU chunks" in text and "step 6 / 6" in text, text
    assert len(seen_chunk_progress) >= 2, seen_chunk_progress  # progress moved across chunks
    run_dir = next(p for p in runs_dir.iterdir() if p.is_dir() and p.name[0] not in "._")
    calls = chunks.read_calls(run_dir)
    assert sum(c["kind"] == "train" for c in calls) >= 3
    assert (run_dir / "adapters" / "balora" / "adapter_model.safetensors").exists()
    page.close()

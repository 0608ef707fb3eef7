"""The real app in headless Chromium: the example run's plots -> preset -> train -> live loss ->
reload -> stop -> compare -> download the adapters. Screenshots go to ``artifacts/screenshots/``.

Needs Debian's ``chromium`` (``/usr/bin/chromium``); skipped only when it is missing and CI is
not set (in CI it must run).
"""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, launched_app

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "screenshots"

pytestmark = [pytest.mark.browser, pytest.mark.slow]
if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(
        "no /usr/bin/chromium here (apt-get install chromium); CI runs this test",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("browser") / "runs"
    with launched_app(runs_dir) as (url, seconds):
        print(f"app served in {seconds:.1f} s")
        yield url, runs_dir


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def plot_points(page, elem_id: str) -> int:
    """The longest trace of the plotly figure inside ``#elem_id`` (0 when none is drawn)."""
    return page.evaluate(
        """(id) => {
            const el = document.querySelector('#' + id + ' .js-plotly-plot');
            if (!el || !el.data) return 0;
            return Math.max(0, ...el.data.map(t => (t.x || []).length));
        }""",
        elem_id,
    )


def wait_for(predicate, timeout: float, what: str, page=None):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    if page is not None:
        shot(page, "failure")
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def pick(page, elem_id: str, text: str) -> None:
    """Choose ``text`` in the Gradio dropdown ``#elem_id``."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(text)
    page.get_by_role("option", name=text).first.click()


def progress_step(page) -> int:
    cells = page.locator("#arm-progress .arm-step").all_inner_texts()
    return max((int(c.split("/")[0]) for c in cells), default=0)


def test_train_watch_reload_stop_compare_download(app, browser, tmp_path):
    url, runs_dir = app
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(url)
    # the first screen: the shipped example run, with real plots before anything is trained
    wait_for(lambda: plot_points(page, "cls-fig-loss") >= 2, 60, "the example run's loss", page)
    assert plot_points(page, "cls-fig-metric") >= 2
    shot(page, "01-classroom")

    page.get_by_role("tab", name="Setup").click()
    pick(page, "preset", "tiny-test")
    page.get_by_text("loaded preset").wait_for()
    steps = page.get_by_label("Steps", exact=True)
    steps.fill("400")
    steps.press("Tab")
    shot(page, "02-setup")
    page.locator("#start-btn").click()
    page.locator("#train-status").get_by_text("run").wait_for(timeout=30_000)
    run_id = wait_for(
        lambda: (
            next(
                (p.name for p in runs_dir.iterdir() if p.is_dir() and p.name[0] not in "._"),
                None,
            )
            if runs_dir.exists()
            else None
        ),
        30,
        "the run directory",
        page,
    )

    wait_for(lambda: plot_points(page, "fig-loss") >= 2, 120, "2 points in the loss figure", page)
    shot(page, "03-training")
    before = progress_step(page)

    page.reload()
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-status").get_by_text(run_id).wait_for(timeout=30_000)
    wait_for(lambda: progress_step(page) > before, 60, "progress after the reload", page)
    assert plot_points(page, "fig-loss") >= 2
    shot(page, "04-after-reload")

    page.locator("#stop-btn").click()
    wait_for(lambda: "stopped" in page.locator("#train-status").inner_text(), 120, "stopped", page)
    shot(page, "05-stopped")

    page.get_by_role("tab", name="Compare").click()
    page.get_by_role("button", name="↻ Refresh list").click()
    pick(page, "cmp-run", run_id)
    page.locator("#cmp-btn").click()
    cards = page.locator("#gen-grid .gen-card")
    wait_for(lambda: cards.count() == 4, 120, "base + 3 generations", page)
    arms = [cards.nth(i).get_attribute("data-arm") for i in range(4)]
    assert arms == ["base", "lora", "pissa", "balora"]
    shot(page, "06-compare")

    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs-refresh").click()
    pick(page, "runs-pick", run_id)
    page.locator("#runs-zip").click()
    link = page.locator("#runs-zip-file a").first
    link.wait_for(timeout=30_000)
    with page.expect_download() as dl:
        link.click()
    target = tmp_path / "adapters.zip"
    dl.value.save_as(target)
    names = zipfile.ZipFile(target).namelist()
    for arm in ("lora", "pissa", "balora"):
        assert f"{arm}/adapter_config.json" in names
    shot(page, "07-runs")

"""The page a teacher projects, in headless Chromium: accessibility (axe-core) on every tab at
1400 px and 420 px, the keyboard path to Start, the Classroom replay (pause holds, a typed step
redraws), and screenshots of every tab at both widths in ``artifacts/screenshots/``.

axe-core comes from npm (``package.json``; ``make test`` installs it into ``node_modules``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import ROOT, launched_app

CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = ROOT / "artifacts" / "screenshots"
TABS = ("Classroom", "Setup", "Train", "Compare", "Bias", "Tune", "Runs")
WIDTHS = {"wide": (1400, 900), "narrow": (420, 900)}
MAX_TABS_TO_START = 10

pytestmark = [pytest.mark.browser, pytest.mark.slow]
if not (CHROMIUM.exists() and AXE.exists()) and not os.environ.get("CI"):
    pytest.skip(
        "needs /usr/bin/chromium and node_modules/axe-core (make test installs both)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("classroom") / "runs"
    with launched_app(runs_dir) as (url, _):
        yield url


def open_page(browser, url: str, size: tuple[int, int]):
    """A fresh page at ``size``, once the Classroom example has drawn its loss curves."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.goto(url)
    page.wait_for_function(
        """() => { const el = document.querySelector('#cls-fig-loss .js-plotly-plot');
                   return el && el.data && el.data.length > 0; }""",
        timeout=120_000,
    )
    return page


def show_tab(page, name: str) -> None:
    """Open a tab; on a narrow screen Gradio keeps the later tabs in its "More tabs" menu."""
    tab = page.get_by_role("tab", name=name)
    if tab.count():
        tab.click()
        return
    page.get_by_role("button", name="More tabs").click()
    page.locator(".overflow-dropdown button", has_text=name).click()


def axe_violations(page) -> list[dict]:
    """Serious and critical axe-core violations of the page as it is now."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"""
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("width", list(WIDTHS))
def test_every_tab_passes_axe_and_is_screenshotted(app, browser, width):
    page = open_page(browser, app, WIDTHS[width])
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems = {}
    for tab in TABS:
        show_tab(page, tab)
        page.wait_for_timeout(1200)
        page.screenshot(path=str(SHOTS / f"{tab.lower()}-{width}.png"), full_page=True)
        bad = axe_violations(page)
        if bad:
            problems[tab] = bad
    page.close()
    assert not problems, problems


def test_keyboard_reaches_start_from_the_setup_tab(app, browser):
    page = open_page(browser, app, WIDTHS["wide"])
    setup = page.get_by_role("tab", name="Setup")
    setup.click()
    setup.focus()
    reached = None
    for presses in range(1, MAX_TABS_TO_START + 1):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "start-btn":
            reached = presses
            break
    page.close()
    assert reached is not None, f"Start was not reached in {MAX_TABS_TO_START} Tab presses"


def pick(page, elem_id: str, option: str) -> None:
    """Choose ``option`` in the Gradio dropdown ``#elem_id``."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_setup_maps_an_uploads_columns_and_shows_its_own_status(app, browser, tmp_path):
    """An upload with other column names: its columns are shown, mapped in the page and the
    file selected; the preset's note shows under the picker; Measure's message line carries
    our own status text, never Gradio's timer."""
    page = open_page(browser, app, WIDTHS["wide"])
    show_tab(page, "Setup")
    pick(page, "preset", "tiny-test")
    note = page.locator("#preset-note")
    note.filter(has_text="random 2-layer Llama").wait_for(timeout=30_000)
    data = tmp_path / "qa.csv"
    data.write_text("question,answer\n" + "".join(f"q{i},a{i}\n" for i in range(40)))
    with page.expect_file_chooser() as chooser:
        page.locator("#upload-btn").click()
    chooser.value.set_files(str(data))
    msg = page.locator("#upload-msg")
    msg.filter(has_text="not the ones task nlg needs").wait_for(timeout=30_000)
    assert page.locator("#map-box").is_visible()
    assert page.locator("#map-first input").input_value() == "question"
    assert page.locator("#map-second input").input_value() == "answer"
    assert axe_violations(page) == []  # the mapping panel keeps the page accessible
    page.locator("#map-btn").click()
    msg.filter(has_text="40 usable rows with").wait_for(timeout=30_000)
    assert page.locator("#dataset input").input_value().endswith("qa.csv")
    assert not page.locator("#map-box").is_visible()

    page.locator("#estimate-btn").click()
    status = page.locator("#setup-msg")
    status.filter(has_text="⏳ measuring").wait_for(timeout=60_000)
    assert page.locator("#setup-msg .progress-text:visible").count() == 0
    status.filter(has_text="this run should take about").wait_for(timeout=300_000)
    page.close()


def _loss_steps(page) -> int:
    """The largest step drawn in the Classroom loss figure."""
    return page.evaluate(
        """() => { const el = document.querySelector('#cls-fig-loss .js-plotly-plot');
                   if (!el || !el.data) return -1;
                   return Math.max(-1, ...el.data.flatMap(t => t.x || [])); }"""
    )


def _slider_value(page) -> int:
    return int(page.locator("#cls-step input[type=number]").input_value())


def test_replay_pauses_and_a_typed_step_redraws(app, browser):
    page = open_page(browser, app, WIDTHS["wide"])
    page.locator("#cls-play").click()
    deadline = time.time() + 30
    while _slider_value(page) < 2:
        assert time.time() < deadline, "the replay did not advance"
        page.wait_for_timeout(200)
    page.locator("#cls-pause").click()
    page.wait_for_timeout(1500)  # a tick already under way may still land
    held = _slider_value(page)
    page.wait_for_timeout(5000)
    assert _slider_value(page) == held, "the replay moved after Pause"
    box = page.locator("#cls-step input[type=number]")
    box.fill("3")
    box.press("Enter")
    deadline = time.time() + 30
    while _loss_steps(page) != 3:
        assert time.time() < deadline, f"figures still at step {_loss_steps(page)}"
        page.wait_for_timeout(200)
    page.close()


def test_no_overlapping_titles_at_420px(app, browser):
    """Every Classroom figure at 420 px: no two of its titles (figure title, subplot titles)
    overlap (bounding boxes in the page)."""
    page = open_page(browser, app, WIDTHS["narrow"])
    page.wait_for_timeout(1500)
    overlaps = page.evaluate(
        """() => {
            const out = [];
            for (const plot of document.querySelectorAll('[id^="cls-fig-"] .js-plotly-plot')) {
                const boxes = [...plot.querySelectorAll('.gtitle, .annotation-text')]
                    .map(e => ({text: e.textContent, r: e.getBoundingClientRect()}))
                    .filter(b => b.r.width > 0 && b.r.height > 0);
                for (let i = 0; i < boxes.length; i++)
                    for (let j = i + 1; j < boxes.length; j++) {
                        const a = boxes[i].r, b = boxes[j].r;
                        if (a.left < b.right - 1 && b.left < a.right - 1 &&
                            a.top < b.bottom - 1 && b.top < a.bottom - 1)
                            out.push([plot.parentElement.id, boxes[i].text, boxes[j].text]);
                    }
            }
            return out;
        }"""
    )
    page.close()
    assert overlaps == [], overlaps

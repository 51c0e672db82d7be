"""End to end in a real headless Chromium (Debian's package, driven by Playwright; no browser download):
load the page, mask a span by dragging over token chips, run, step forward and back with the keyboard
and the buttons, and save a screenshot."""

import os
import re
from pathlib import Path

import pytest
from conftest import launched_app

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()), None)
REQUIRED = os.environ.get("A3_REQUIRE_BROWSER") == "1"
pytestmark = pytest.mark.browser

if CHROMIUM is None and REQUIRED:
    raise RuntimeError("A3_REQUIRE_BROWSER=1 but no chromium found: apt-get install chromium")


@pytest.fixture(scope="module")
def page_url():
    with launched_app(os.environ.get("A3_E2E_MODEL", "tiny")) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium (apt-get install chromium); set A3_REQUIRE_BROWSER=1 to fail instead")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-background-networking",
                                                              "--disable-component-update", "--no-first-run"])
        yield b
        b.close()


def step_value(page) -> int:
    return int(page.locator("#step input[type=number]").input_value())


def test_mask_by_dragging_run_and_step(page_url, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(page_url)
    page.wait_for_selector("gradio-app .gradio-container")
    page.wait_for_selector("#picker .chip")

    # a plain sentence, tokenized into chips
    page.locator("#text textarea").fill("The old fisherman rowed his boat across the quiet lake at dawn.")
    page.locator("#tokenize-btn").click()
    expect(page.locator("#picker .tp-count")).to_have_text(re.compile(r"^\d+ given · 0 open$"))
    chips = page.locator("#picker .chip")
    assert chips.count() >= 12

    # drag across chips 4..7 to mask them
    first, last = chips.nth(4).bounding_box(), chips.nth(7).bounding_box()
    page.mouse.move(first["x"] + 3, first["y"] + 3)
    page.mouse.down()
    page.mouse.move(last["x"] + 3, last["y"] + 3, steps=6)
    page.mouse.up()
    expect(page.locator("#picker .chip.masked")).to_have_count(4)
    expect(page.locator("#picker .tp-count")).to_have_text(re.compile(r"· 4 open$"))
    # clicking one masked chip unmasks it again, clicking it once more masks it back
    chips.nth(5).click()
    expect(page.locator("#picker .chip.masked")).to_have_count(3)
    chips.nth(5).click()
    expect(page.locator("#picker .chip.masked")).to_have_count(4)

    page.locator("#run-btn").click()
    expect(page.locator("#summary")).to_contain_text("Step", timeout=60_000)
    # playback runs to the last step by itself (4 open tokens, one per group -> 4 steps)
    expect(page.locator("#summary")).to_contain_text("Step 4/4", timeout=30_000)
    expect(page.locator("#grid-plot .js-plotly-plot")).to_have_count(1)
    expect(page.locator("#mask-plot .js-plotly-plot")).to_have_count(1)
    expect(page.locator("#verdict")).to_contain_text("No leak")
    assert step_value(page) == 3

    # back and forward with the keyboard (focus outside any text field) and the buttons
    page.locator("#summary").click()
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#summary")).to_contain_text("Step 3/4")
    page.keyboard.press("Home")
    expect(page.locator("#summary")).to_contain_text("Before decoding")
    assert step_value(page) == -1 and page.locator("#sentence .tok.open").count() == 4
    page.locator("#next-btn").click()
    expect(page.locator("#summary")).to_contain_text("Step 1/4")
    assert page.locator("#sentence .tok.current").count() == 1
    page.keyboard.press("ArrowRight")
    expect(page.locator("#summary")).to_contain_text("Step 2/4")
    assert page.locator("#sentence .tok.open").count() == 2
    page.keyboard.press("End")
    expect(page.locator("#summary")).to_contain_text("Step 4/4")
    assert page.locator("#sentence .tok.open").count() == 0

    shot = Path(os.environ.get("A3_SCREENSHOT", tmp_path / "a3-explorer.png"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def test_bad_input_shows_a_warning_and_keeps_the_page(page_url, browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1300, "height": 1200})
    page.goto(page_url)
    page.wait_for_selector("#picker .chip")
    page.locator("#text textarea").fill("A broken blank [MASK:zero] here.")
    page.locator("#run-btn").click()
    expect(page.locator("#warning")).to_contain_text("Malformed blank", timeout=30_000)
    assert "Traceback" not in page.content()
    page.close()

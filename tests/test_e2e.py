"""End to end in a real headless Chromium (Debian's package, driven by Playwright; no browser download):
the stage moves by itself on the first visit and fits one screen at 1366x768 and 1920x1080; masking by
dragging, running, stepping with the keyboard and the buttons; presentation mode; compare and load a
compared run onto the stage; bad input as a warning."""

import os
import re
from pathlib import Path

import pytest
from conftest import launched_app

pytestmark = pytest.mark.browser

# what must be visible together, without scrolling
STAGE_PARTS = {"text": "#sentence", "order grid": "#stage-grid", "DAG": "#stage-dag",
               "content mask": "#stage-content", "query mask": "#stage-query", "play": "#play-btn",
               "previous": "#prev-btn", "next": "#next-btn", "slider": "#stage-step", "counter": "#stage-counter"}


@pytest.fixture(scope="module")
def page_url():
    with launched_app(os.environ.get("A3_E2E_MODEL", "tiny")) as (url, _):
        yield url


def stage_step(page) -> int:
    return int(page.locator("#stage-counter").get_attribute("data-step"))


def open_page(browser, url: str, width: int = 1366, height: int = 768):
    """A new page at this size, once the stage has drawn."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_selector("#stage .a3s")
    return page


def open_tab(page, name: str) -> None:
    page.locator("button[role=tab]", has_text=name).first.click()


def outside_viewport(page, width: int, height: int) -> dict:
    out = {}
    for name, selector in STAGE_PARTS.items():
        box = page.locator(selector).bounding_box()
        if box is None or box["width"] < 4 or box["height"] < 4:
            out[name] = "not drawn"
        elif (box["x"] < 0 or box["y"] < 0 or box["x"] + box["width"] > width + 1
              or box["y"] + box["height"] > height + 1):
            out[name] = box
    return out


@pytest.mark.parametrize("width, height", [(1366, 768), (1920, 1080)])
def test_first_visit_moves_by_itself_and_the_stage_fits_one_screen(page_url, browser, width, height):
    from playwright.sync_api import expect

    page = open_page(browser, page_url, width, height)
    # no click anywhere: the example plays by itself
    expect(page.locator("#stage-counter")).to_have_text(re.compile(r"^Step [1-9]\d*/\d+$"), timeout=15_000)
    first = stage_step(page)
    page.wait_for_function(f"() => Number(document.querySelector('#stage-counter').dataset.step) > {first}",
                           timeout=10_000)
    assert outside_viewport(page, width, height) == {}
    assert page.evaluate("() => window.scrollY") == 0
    assert page.locator("#sentence .tok.decided").count() >= 1
    # the masks and the grid really are drawn (non-blank canvases, one cell per position)
    assert page.evaluate("() => document.querySelector('#stage-content').toDataURL().length") > 2000
    assert page.locator("#stage-grid .cell").count() == len(page.evaluate("() => window.__a3stage.state.P.labels"))
    page.close()


def test_presentation_mode_has_larger_type_and_still_fits(page_url, browser):
    """On a laptop's 1366x768 the text and the order grid both get larger type (the grid's cells once got smaller:
    the masks took half the width, and the text three lines of 30 px)."""
    page = open_page(browser, page_url, 1366, 768)
    size = lambda: page.evaluate(  # noqa: E731
        "() => parseFloat(getComputedStyle(document.querySelector('#sentence .sentence')).fontSize)")
    grid = lambda: page.evaluate(  # noqa: E731  the grid's type: its cells' largest (a long word's may be smaller)
        "() => Math.max(...[...document.querySelectorAll('#stage-grid .cell')].map("
        "(c) => parseFloat(getComputedStyle(c).fontSize)))")
    page.wait_for_selector("#sentence .sentence")
    before, grid_before = size(), grid()
    page.locator("#stage-counter").click()
    page.keyboard.press("p")
    page.wait_for_function("() => document.documentElement.classList.contains('a3-present')")
    outside = outside_viewport(page, 1366, 768)
    for _ in range(50):  # the stage lays itself out again over a few frames (slower on two busy cores)
        if not outside:
            break
        page.wait_for_timeout(100)
        outside = outside_viewport(page, 1366, 768)
    assert size() >= before * 1.15
    page.wait_for_function("() => Math.max(...[...document.querySelectorAll('#stage-grid .cell')].map("
                           f"(c) => parseFloat(getComputedStyle(c).fontSize))) >= Math.max(16, {grid_before} + 1)")
    assert grid() >= max(16, grid_before + 1)  # 14 px when the masks took half the width
    assert not page.locator("#header").is_visible()
    assert outside == {}
    page.close()


def test_mask_by_dragging_run_and_step(page_url, browser, tmp_path):
    from playwright.sync_api import expect

    page = open_page(browser, page_url, 1366, 768)
    open_tab(page, "Your text")
    page.wait_for_selector("#picker .chip")

    # a plain sentence: the chips follow the text as it is typed, no Tokenize click needed
    page.locator("#text textarea").fill("The old fisherman rowed his boat across the quiet lake at dawn")
    page.locator("#text textarea").press_sequentially(".")  # a key typed as a user would
    expect(page.locator("#picker .tp-count")).to_have_text(re.compile(r"^\d+ given · 0 open$"))
    expect(page.locator("#picker")).to_contain_text("fisherman")
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

    page.locator("#method label", has_text="A3 plan").click()
    page.locator("#run-btn").click()
    # Run opens the stage and plays the new trace to its end by itself (4 open tokens, groups of 1)
    expect(page.locator("#stage-counter")).to_have_text("Step 4/4", timeout=60_000)
    expect(page.locator("#verdict")).to_contain_text("No leak")
    expect(page.locator(".a3s-headline")).to_contain_text("A3 plan (left to right): 4 model calls for 4 tokens")
    assert stage_step(page) == 3

    # back and forward with the keyboard (focus outside any text field) and the buttons
    page.locator("#stage-counter").click()
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#stage-counter")).to_have_text("Step 3/4")
    page.keyboard.press("Home")
    expect(page.locator("#summary")).to_contain_text("Before decoding")
    assert stage_step(page) == -1 and page.locator("#sentence .tok.open").count() == 4
    page.locator("#next-btn").click()
    expect(page.locator("#stage-counter")).to_have_text("Step 1/4")
    assert page.locator("#sentence .tok.current").count() == 1
    page.keyboard.press("ArrowRight")
    expect(page.locator("#stage-counter")).to_have_text("Step 2/4")
    assert page.locator("#sentence .tok.open").count() == 2
    page.keyboard.press("End")
    expect(page.locator("#stage-counter")).to_have_text("Step 4/4")
    assert page.locator("#sentence .tok.open").count() == 0
    # space plays from the start again
    page.keyboard.press(" ")
    page.wait_for_function("() => window.__a3stage.state.playing || window.__a3stage.state.step < 3")

    # the step the stage settles on is detailed in its tab (server-rendered reference figures)
    page.keyboard.press(" ")  # pause
    page.keyboard.press("End")
    open_tab(page, "Step details")
    expect(page.locator("#details-summary")).to_contain_text("Step 4/4", timeout=15_000)
    expect(page.locator("#details-verdict")).to_contain_text("No leak")
    expect(page.locator("#mask-plot .js-plotly-plot")).to_have_count(1, timeout=30_000)  # two busy cores
    # the real attention weights of that step, drawn over the mask on request
    page.locator("#attention").get_by_text("Attention weights at this step").click()
    page.locator("#attn-btn").click()
    expect(page.locator("#attn-plot .js-plotly-plot")).to_have_count(1, timeout=30_000)
    expect(page.locator("#attn-plot")).to_contain_text("Attention weights at step 4 · query stream")
    expect(page.locator("#attn-plot")).to_contain_text("blocked (exactly 0)")

    shot = Path(os.environ.get("A3_SCREENSHOT", tmp_path / "a3-explorer.png"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    open_tab(page, "Stage")
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    page.close()


def test_compare_shows_the_numbers_and_loads_a_run_onto_the_stage(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url, 1366, 768)
    open_tab(page, "Compare")
    expect(page.locator("#compare-hint")).to_contain_text("Compare all methods")  # the empty state says what to do
    open_tab(page, "Your text")
    page.locator("#text textarea").fill("The cat sat on the mat and [MASK:4] at the birds.")
    page.locator("#compare-btn").click()
    table = page.locator("#compare-table")
    expect(table).to_contain_text("one-step parallel", timeout=60_000)
    for header in ("model calls", "seconds", "tokens/s", "log p (own order)", "log p, whole text"):
        expect(table).to_contain_text(header)
    expect(page.locator("#compare-plot .js-plotly-plot")).to_have_count(1)
    expect(page.locator("#compare-texts")).to_contain_text("diffusion (confidence, k = 1):")
    page.locator("#compare-load button", has_text="diffusion").first.click()
    expect(page.locator(".a3s-headline")).to_contain_text("diffusion (confidence, k = 1):", timeout=15_000)
    expect(page.locator("#stage-counter")).to_have_text(re.compile(r"^Step \d+/\d+$"), timeout=15_000)
    page.close()


def test_bad_input_shows_a_warning_and_keeps_the_page(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url, 1300, 900)
    open_tab(page, "Your text")
    page.locator("#text textarea").fill("A broken blank [MASK:zero] here.")
    page.locator("#run-btn").click()
    expect(page.locator("#warning")).to_contain_text("Malformed blank", timeout=30_000)
    assert "Traceback" not in page.content()
    page.close()


def test_any_length_blank_shows_every_length_and_loads_another(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url, 1366, 768)
    open_tab(page, "Your text")
    expect(page.locator("#lengths-box")).to_be_hidden()  # only a [MASK:?] run shows the lengths
    page.locator("#text textarea").fill("The old dog slept by the fire. [MASK:?4] The children laughed.")
    # the chips show the blank at its guessed length, and say it is a guess (not a 4-token blank)
    expect(page.locator("#picker .tp-count")).to_contain_text(
        "4 open (the [MASK:?] blank at a guess of 4 tokens: Run tries several lengths)", timeout=30_000)
    page.locator("#run-btn").click()
    expect(page.locator(".a3s-note")).to_contain_text("[MASK:?] tried 2, 3, 4, 5, 6, 8 tokens", timeout=60_000)
    kept = int(re.search(r"kept (\d+)", page.locator(".a3s-note").inner_text()).group(1))
    expect(page.locator("#stage-counter")).to_have_text(f"Step {kept}/{kept}", timeout=30_000)
    open_tab(page, "Your text")
    expect(page.locator("#picker .tp-count")).to_contain_text(
        f"{kept} open (the [MASK:?] blank at {kept} tokens, the length Run kept)")
    table = page.locator("#lengths-table")
    expect(table).to_contain_text("log p / token")
    expect(table).to_contain_text("✓")
    other = 2 if kept != 2 else 3
    page.locator("#lengths-pick input").click()
    page.get_by_role("option", name=str(other), exact=True).click()
    page.locator("#lengths-btn").click()
    expect(page.locator("#stage-counter")).to_have_text(f"Step {other}/{other}", timeout=30_000)
    page.close()


def test_order_lab_scores_orders_and_loads_one_onto_the_stage(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url, 1366, 768)
    open_tab(page, "Order lab")
    expect(page.locator("#gallery-plot .js-plotly-plot")).to_have_count(1)  # drawn before any scoring
    page.locator("#lab-btn").click()
    expect(page.locator("#lab-plot .js-plotly-plot")).to_have_count(1, timeout=60_000)
    expect(page.locator("#lab-summary")).to_contain_text("Best:")
    expect(page.locator("#lab-tokens .js-plotly-plot")).to_have_count(1)
    page.locator("#lab-load-a").click()
    expect(page.locator("#stage-counter")).to_have_text(re.compile(r"^Step \d+/\d+$"), timeout=30_000)
    expect(page.locator(".a3s-headline")).to_be_visible()
    page.close()


def test_branch_from_a_step_and_switch_between_branches(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url, 1366, 768)
    open_tab(page, "Your text")
    page.locator("#text textarea").fill("The cat sat on the mat and [MASK:4] at the birds.")
    page.locator("#method label", has_text="A3 plan").click()
    page.locator("#run-btn").click()
    expect(page.locator("#stage-counter")).to_have_text("Step 4/4", timeout=60_000)
    page.locator("#stage-counter").click()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#stage-counter")).to_have_text("Step 2/4")
    open_tab(page, "Step details")
    expect(page.locator("#details-summary")).to_contain_text("Step 2/4", timeout=15_000)
    page.locator("#branching").get_by_text("Branch from this step").click()
    expect(page.locator("#br-position input")).to_have_value(re.compile(r"decided here"), timeout=15_000)
    page.locator("#br-token-btn").click()
    # the branch opens on the stage paused on step 2, where it leaves the parent (its first step is the parent's)
    expect(page.locator(".a3s-headline")).to_contain_text("branch 1 of A3 plan, from step 2", timeout=60_000)
    expect(page.locator("#stage-counter")).to_have_text("Step 2/4")
    open_tab(page, "Step details")
    tree = page.locator("#br-tree")
    expect(tree).to_contain_text("main run", timeout=15_000)
    expect(tree).to_contain_text("▶ 1")
    page.locator("#br-pick input").click()
    page.get_by_role("option", name=re.compile(r"^0: main run")).click()
    page.locator("#br-show").click()
    expect(page.locator("#br-tree")).to_contain_text("▶ 0", timeout=15_000)
    page.close()

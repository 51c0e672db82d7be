"""Step details follow the stage however fast it is stepped: quick key presses and then the tab opened
leave the details on the step the stage shows, and no stale choice of a dropdown raises an error toast
("Value: 5 is not in the list of choices: [6]", seen by a browser walk in 3 of 4 tries)."""

import re

import pytest
from conftest import launched_app
from playwright.sync_api import expect
from test_e2e import open_page, open_tab, stage_step

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served():
    with launched_app("default") as (url, demo):  # its previews take long enough for events to cross
        yield url, demo


@pytest.fixture(scope="module")
def page_url(served):
    return served[0]


def test_the_details_render_one_at_a_time_in_order_and_only_a_pick_asks_for_a_positions_tokens(served):
    """What keeps the races away, read off the wiring (the browser tests below catch them only sometimes):
    every render of the details shares one queue of one, and the position's tokens follow the visitor's
    pick (`input`), never a render's change of the dropdown."""
    _, demo = served
    by_name = {}
    for fn in demo.fns.values():
        by_name.setdefault(getattr(fn.fn, "__name__", ""), []).append(fn)
    renders = [fn for name in ("on_step_settled", "on_opened", "on_details") for fn in by_name[name]]
    assert len(renders) >= 5  # settled, opened, reduce/sort, and after each branch
    assert all(fn.concurrency_id == "details" and fn.concurrency_limit == 1 for fn in renders)
    (position,) = by_name["on_position"]
    assert [event for _, event in position.targets] == ["input"]
    # the details read the stage's step from the page as the event leaves: Gradio's "always_last" sends the
    # event that was running again instead of the last one (its page keeps no data for the one due), which left
    # the details on "Before decoding" after Home, → and → in a loaded run, and refused a branch from there
    (settled,) = by_name["on_step_settled"]
    assert settled.trigger_mode == "always_last" and "#stage-counter" in (settled.js or ""), settled.js
    (attention,) = by_name["on_attention_settled"]  # no queue, no model: every report, with its own data
    assert attention.trigger_mode == "multiple" and attention.concurrency_limit is None


def run_text(page, text: str) -> None:
    """The visitor's own text, run with the page's default method, once the stage shows it."""
    open_tab(page, "Your text")
    before = page.locator("#sentence").inner_text()
    page.locator("#tab-input textarea").first.fill(text)
    page.locator("#tab-input button", has_text="Run").first.click()
    expect(page.locator("#sentence")).not_to_have_text(before, timeout=60_000)
    page.wait_for_timeout(1_000)


def test_a_walk_through_a_run_then_quick_steps_leave_the_details_on_the_stages_step(page_url, browser):
    """The walk's own sequence: every step at a reading pace, back to the start, three quick steps, the tab."""
    page = open_page(browser, page_url)
    run_text(page, "Café au lait and crème brûlée [MASK:4] in Zürich — 東京 too.")
    for trial in range(2):
        page.locator("#sentence").click()
        page.keyboard.press("Home")
        total = int(page.locator("#stage-counter").inner_text().split("/")[-1])
        for _ in range(total):
            page.keyboard.press("ArrowRight")
            page.wait_for_timeout(250)
        page.keyboard.press("Home")
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        page.wait_for_timeout(600)
        assert stage_step(page) == 2
        open_tab(page, "Step details")
        page.wait_for_timeout(2_500)
        expect(page.locator("#details-summary")).to_contain_text(f"Step 3/{total}", timeout=15_000)
        toasts = page.locator(".toast-body").all_inner_texts()
        assert not any("not in the list" in t or "Error" in t for t in toasts), (trial, toasts)
        open_tab(page, "Stage")
    page.close()


def test_quick_steps_then_the_details_tab_show_the_stages_step_and_no_error(page_url, browser):
    page = open_page(browser, page_url)
    errors = []
    page.on("console", lambda message: errors.append(message.text) if "not in the list of choices" in message.text
            else None)
    for trial in range(4):
        open_tab(page, "Stage")
        page.locator("#stage-counter").click()
        page.keyboard.press("End" if trial % 2 else "Home")
        for _ in range(3):
            page.keyboard.press("ArrowLeft" if trial % 2 else "ArrowRight")
        page.wait_for_timeout(300)
        step = stage_step(page)
        open_tab(page, "Step details")
        expect(page.locator("#details-summary")).to_contain_text(re.compile(rf"Step {step + 1}/\d+"),
                                                                 timeout=15_000)
        page.wait_for_timeout(2_000)  # what was still on its way has landed by now
        expect(page.locator("#details-summary")).to_contain_text(re.compile(rf"Step {step + 1}/\d+"))
        toasts = page.locator(".toast-body").all_inner_texts()
        assert not any("Error" in t or "not in the list" in t for t in toasts), (trial, toasts)
    assert not errors, errors
    page.close()

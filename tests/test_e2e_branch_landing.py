"""Where a branch lands, and what the page shows around it, in a real headless Chromium (tiny model):
a branch opens on the stage paused on the step it was branched from, its headline naming it, with
Step details already showing the branch there, so that branching the rest next acts on the branch
(keeping its pick), not on the run before it; Step details details the step on screen at a first
visit, while the example plays; presentation mode fits the window at 1366x768 and 1920x1080 with its
hints whole, large and dark; the current word's outline leaves the character before it alone."""

import re

import pytest
from conftest import launched_app
from test_e2e import open_page, open_tab, stage_step

from app.demo_trace import DEMO_REQUEST

pytestmark = pytest.mark.browser

SLOW = 60_000  # ms: two busy cores
FIRST = DEMO_REQUEST["method"]  # the first-visit example's method (the page's default decoder)

TREE_ROWS = """() => [...document.querySelectorAll('#br-tree [role=row].virtual-row')]
  .sort((a, b) => Number(a.dataset.index) - Number(b.dataset.index))
  .map((row) => [...row.querySelectorAll('[role=gridcell]')].map((cell) => cell.innerText.trim()))"""


@pytest.fixture(scope="module")
def page_url():
    with launched_app("tiny") as (url, _):
        yield url


def stopped_at(page, step: int) -> None:
    """Stop the example playing and step the stage to `step` (0-based) with the keyboard."""
    page.locator("#stage-counter").click()
    page.keyboard.press("Home")
    for _ in range(step + 1):
        page.keyboard.press("ArrowRight")


def tree_rows(page, count: int) -> list[list[str]]:
    page.wait_for_function(f"() => ({TREE_ROWS})().length >= {count}", timeout=SLOW)
    return page.evaluate(TREE_ROWS)


def assert_paused_at(page, step: int) -> None:
    page.wait_for_function(f"() => window.__a3stage.state.step === {step} && !window.__a3stage.state.playing",
                           timeout=SLOW)
    page.wait_for_timeout(1200)  # and it stays there: nothing plays it on
    assert stage_step(page) == step and not page.evaluate("() => window.__a3stage.state.playing")


# ------------------------------------------------------------------------------------ 1. branching
def test_a_branch_lands_paused_where_it_was_branched_and_the_rest_branches_from_it(page_url, browser):
    """Pause, step to 3, Step details, branch with another token: the stage shows the branch paused on
    step 3 and says it is a branch; the details show the branch at step 3 at once. Branching the rest
    then makes a child of that branch which keeps its pick (the bug: a copy of the main run)."""
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    stopped_at(page, 2)
    expect(page.locator("#stage-counter")).to_have_text(re.compile(r"^Step 3/\d+$"))
    total = int(page.evaluate("() => window.__a3stage.state.P.steps.length"))
    open_tab(page, "Step details")
    expect(page.locator("#details-summary")).to_contain_text(f"Step 3/{total}", timeout=15_000)
    page.locator("#branching").get_by_text("Branch from this step").click()
    expect(page.locator("#br-position input")).to_have_value(re.compile(r"decided here"), timeout=15_000)
    page.locator("#br-token-btn").click()

    # the stage: the branch, paused on step 3, its headline saying which branch it is
    expect(page.locator("#tab-stage")).to_be_visible(timeout=SLOW)
    expect(page.locator(".a3s-headline")).to_contain_text(f"branch 1 of {FIRST}, from step 3:", timeout=SLOW)
    expect(page.locator(".a3s-headline")).to_contain_text("new model calls")
    assert_paused_at(page, 2)
    expect(page.locator("#stage-counter")).to_have_text(f"Step 3/{total}")

    # the details: the branch at step 3, and the branch on the stage in the table
    open_tab(page, "Step details")
    expect(page.locator("#details-summary")).to_contain_text(f"branch 1 of {FIRST}", timeout=15_000)
    expect(page.locator("#details-summary")).to_contain_text(f"Step 3/{total}")
    rows = tree_rows(page, 2)
    assert rows[1][0] == "▶ 1" and rows[1][2] == "0" and rows[1][3] == "2", rows
    picked = page.locator("#br-order input").input_value()
    assert picked != "confidence"  # the run's own strategy would only decode it again

    # the rest, decoded another way: a child of branch 1 after its pick, not a copy of the main run
    page.locator("#br-order-btn").click()
    expect(page.locator(".a3s-headline")).to_contain_text(f"branch 2 of {FIRST}, from step 4:", timeout=SLOW)
    assert_paused_at(page, 3)
    expect(page.locator("#warning")).to_contain_text("Kept this branch's pick")
    open_tab(page, "Step details")
    expect(page.locator("#details-summary")).to_contain_text(f"branch 2 of {FIRST}", timeout=15_000)
    expect(page.locator("#details-summary")).to_contain_text(f"Step 4/{total}")
    rows = tree_rows(page, 3)
    assert rows[2][0] == "▶ 2" and rows[2][2] == "1" and rows[2][3] == "3", rows
    assert "(= run 0)" not in rows[2][1] and rows[2][6] != rows[0][6], rows
    assert f"rest {picked}" in rows[2][1]

    # a run of the tree put back on the stage lands paused too: branch 1 on its step 3
    page.locator("#br-pick input").click()
    page.get_by_role("option", name=re.compile(r"^1: ")).click()
    page.locator("#br-show").click()
    expect(page.locator(".a3s-headline")).to_contain_text(f"branch 1 of {FIRST}, from step 3:", timeout=SLOW)
    assert_paused_at(page, 2)
    page.close()


# ---------------------------------------------------------------------------------- 2. first visit
def test_step_details_on_a_first_visit_details_the_step_on_screen(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    expect(page.locator("#stage-counter")).to_have_text(re.compile(r"^Step [1-9]\d*/\d+$"), timeout=15_000)
    assert page.evaluate("() => window.__a3stage.state.playing")
    open_tab(page, "Step details")
    # the example stops where it was, and that step is detailed (no empty frames)
    expect(page.locator("#details-summary")).to_contain_text(re.compile(r"(Step \d+/\d+|Before decoding)"),
                                                             timeout=15_000)
    assert not page.evaluate("() => window.__a3stage.state.playing")
    step = stage_step(page)
    summary = page.locator("#details-summary").inner_text()
    assert (f"Step {step + 1}/" in summary) if step >= 0 else ("Before decoding" in summary), (step, summary)
    page.close()


# ------------------------------------------------------------------------------ 3. presentation mode
HINTS = {"s/step": ".a3s-speed", "narrate": ".a3s-narrate", "sort by group": ".a3s-mask-panel h4 label",
         "chain only": ".a3s-dag-panel h4 label", "what each step saw": ".a3s-dag-panel h4 small",
         "row i may attend to column j": ".a3s-mask-panel h4 small",
         "colour = step that decided it": ".a3s-grid-panel h4 small"}

HINT_STATE = """(sel) => {
  const e = document.querySelector(sel), cs = getComputedStyle(e), r = e.getBoundingClientRect();
  const panel = (e.closest('.a3s-panel') || e.closest('.a3s-bar')).getBoundingClientRect();
  // the colour as sRGB 0-1 and alpha, from "rgb(...)", "rgba(...)" or "color(srgb ...)"
  const nums = (cs.color.match(/[\\d.]+/g) || []).map(Number);
  const rgb = cs.color.startsWith('color(') ? nums.slice(0, 3) : nums.slice(0, 3).map((v) => v / 255);
  const alpha = cs.color.includes('/') || cs.color.startsWith('rgba') ? nums[3] : 1;
  const lin = (c) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
  const over = rgb.map((c) => c * alpha + (1 - alpha));  // over white
  const bg = getComputedStyle(e).backgroundColor;
  return {font: parseFloat(cs.fontSize), text: e.innerText,
          luminance: 0.2126 * lin(over[0]) + 0.7152 * lin(over[1]) + 0.0722 * lin(over[2]),
          cut: e.scrollWidth > e.clientWidth + 1,
          outside: r.left < panel.left - 1 || r.right > panel.right + 1 || r.bottom > innerHeight + 1,
          background: bg};
}"""


@pytest.mark.parametrize("width, height", [(1366, 768), (1920, 1080)])
def test_presentation_mode_fits_the_window_with_its_hints_whole_large_and_dark(page_url, browser, width, height):
    page = open_page(browser, page_url, width, height)
    stopped_at(page, 4)
    page.keyboard.press("p")
    page.wait_for_function("() => document.documentElement.classList.contains('a3-present')")
    page.wait_for_timeout(1500)  # the stage lays itself out again over a few frames
    sizes = page.evaluate("() => [document.documentElement.scrollHeight, innerHeight, scrollY]")
    assert sizes[0] <= sizes[1] and sizes[2] == 0, f"the page is {sizes[0]} px tall in a {sizes[1]} px window"
    for words, selector in HINTS.items():
        hint = page.evaluate(HINT_STATE, selector)
        assert words.split()[0] in hint["text"], (words, hint)
        assert not hint["cut"] and not hint["outside"], (words, hint)
        assert hint["font"] >= 16, (words, hint)  # 12-13 px before: unreadable on a projector
        assert hint["luminance"] < 0.2, (words, hint)  # the theme's light grey is 0.36
    # the DAG's heading sits over the arcs' corner: its words keep a background of their own over them
    dag = page.evaluate(HINT_STATE, ".a3s-dag-panel h4 small")["background"]
    assert dag not in ("rgba(0, 0, 0, 0)", "transparent"), dag
    # and the bar stays one line
    tops = page.evaluate("() => [...document.querySelectorAll('.a3s-bar > *')].map((e) => "
                         "Math.round(e.getBoundingClientRect().top + e.getBoundingClientRect().height / 2))")
    assert max(tops) - min(tops) <= 4, tops
    page.close()


def test_the_stages_small_words_are_dark_enough_to_read_on_the_page(page_url, browser):
    """The panels' hints and the masks' captions: at least 4.5:1 on white (luminance under
    0.18) outside presentation mode too (the theme's grey, 2.5:1, was hard to read, a browser walk said)."""
    page = open_page(browser, page_url, 1366, 768)
    stopped_at(page, 1)
    for selector in (".a3s-grid-panel h4 small", ".a3s-dag-panel h4 small", ".a3s-mask-panel h4 small",
                     ".a3s-masks figcaption"):
        hint = page.evaluate(HINT_STATE, selector)
        assert hint["luminance"] < 0.18, (selector, hint)
    page.close()


def test_the_masks_hint_is_whole_at_1366_without_presentation_mode(page_url, browser):
    page = open_page(browser, page_url, 1366, 768)
    stopped_at(page, 1)
    page.wait_for_timeout(800)
    hint = page.evaluate(HINT_STATE, ".a3s-mask-panel h4 small")
    assert not hint["cut"] and not hint["outside"] and "column j" in hint["text"], hint
    page.close()


# ------------------------------------------------------------------------------------ 4. the outline
def test_the_current_words_outline_leaves_the_character_before_it_alone(page_url, browser):
    page = open_page(browser, page_url)
    stopped_at(page, 0)
    page.wait_for_selector("#sentence .tok.current")
    reach = page.evaluate("""() => { const cs = getComputedStyle(document.querySelector('#sentence .tok.current'));
      return parseFloat(cs.outlineWidth) + parseFloat(cs.outlineOffset); }""")
    assert reach <= 1, f"the outline reaches {reach} px beyond the word's chip"
    page.close()

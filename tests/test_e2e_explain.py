"""A stage that explains itself, in a real headless Chromium (tiny model): one sentence under the controls
narrates each step as the stage plays and steps; "narrate" switches it off, the keys go on working, and the
choice survives a new run; every label on the stage hovers with what it means (the method's name with the
method's own line); text split into byte tokens reads as whole characters in the chips, the stage and the
candidates."""

import json
import re

import pytest
from conftest import launched_app
from test_e2e import open_page, open_tab, stage_step

from app.session import BEST_OF_N, BEST_OF_N_ABOUT
from model.config import METHODS

pytestmark = pytest.mark.browser

SLOW = 60_000  # ms: two busy cores
NARRATION = "() => { const P = window.__a3stage.state.P, s = window.__a3stage.state.step; " \
            "return (s < 0 ? P.before : P.steps[s]).narration; }"


@pytest.fixture(scope="module")
def page_url():
    with launched_app("tiny") as (url, _):
        yield url


def stop_stage_at(page, presses: list[str]) -> None:
    """Stop the example playing (Home) and press these keys on the stage."""
    page.locator("#stage-counter").click()
    for key in ["Home", *presses]:
        page.keyboard.press(key)


def run_text(page, text: str, method: str = "A3 plan") -> None:
    from playwright.sync_api import expect

    open_tab(page, "Your text")
    page.locator("#text textarea").fill(text)
    page.locator("#method label", has_text=re.compile(rf"^\s*{re.escape(method)}\s*$")).click()
    page.locator("#run-btn").click()
    # the headline names the run with its settings: "A3 plan (left to right): ...", "A3 best of N: ..."
    expect(page.locator(".a3s-headline")).to_contain_text(re.compile(rf"^{re.escape(method)}( \(.*?\))?:"),
                                                          timeout=SLOW)


def test_the_narration_says_what_each_step_does_as_the_stage_steps_and_plays(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    stop_stage_at(page, [])
    narration = page.locator("#narration")
    expect(narration).to_be_visible()
    expect(narration).to_have_text(re.compile(r"^Before decoding: \d+ tokens are given"))
    # under the counter: below the controls, above the text
    bar, box, text = (page.locator(s).bounding_box() for s in (".a3s-bar", "#narration", "#sentence"))
    assert bar["y"] + bar["height"] <= box["y"] + 1 and box["y"] + box["height"] <= text["y"] + 1
    for step in (1, 2):
        page.keyboard.press("ArrowRight")
        # a token in quotes, or (the tiny model's odd tokens) the bytes it holds that make no character
        expect(narration).to_have_text(re.compile(rf"^Step {step}: the model decides (“|the bytes? ‹)"))
        assert narration.inner_text() == page.evaluate(NARRATION)
        assert "orange arcs in the DAG" in narration.inner_text()
    page.keyboard.press("End")
    expect(narration).to_contain_text("the text is complete.")
    # while it plays (0.5 s a step), the sentence follows the counter, in brief: only what the step decides
    page.locator("#play-btn").click()
    seen = set()
    brief = NARRATION.replace(".narration;", ".brief;")
    for _ in range(3):
        page.wait_for_function(f"() => window.__a3stage.state.step > {max(stage_step(page), 0)}", timeout=10_000)
        step = stage_step(page)
        said = narration.inner_text()
        if step >= 0 and said.startswith(f"Step {step + 1}"):
            seen.add(said)
            assert said == page.evaluate(brief) and "seeing" not in said and said.endswith(")."), said
    assert len(seen) >= 2, seen
    # paused, the whole sentence again; one that fits: nothing cut, the panels below do not move
    page.locator("#play-btn").click()
    page.wait_for_function(f"() => document.querySelector('#narration').textContent === ({NARRATION})()")
    fits = page.evaluate("() => { const n = document.querySelector('#narration'); "
                         "return n.scrollHeight <= n.clientHeight + 1 && n.scrollWidth <= n.clientWidth + 1; }")
    assert fits
    page.close()


def test_narrate_switches_the_sentence_off_keeps_the_keys_and_survives_a_run(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    stop_stage_at(page, ["ArrowRight"])
    panels = page.locator(".a3s-panels").bounding_box()
    page.locator(".a3s-narrate").click()
    expect(page.locator("#narration")).to_be_hidden()
    assert page.locator(".a3s-panels").bounding_box()["height"] > panels["height"]  # the room goes to the panels
    page.keyboard.press("ArrowRight")  # a box ticked with the mouse leaves the stage's keys working
    page.wait_for_function("() => window.__a3stage.state.step === 1", timeout=5_000)
    run_text(page, "The cat sat on the mat and [MASK:3] at the birds.")
    expect(page.locator("#stage-counter")).to_be_visible()
    assert not page.locator("#stage-narrate").is_checked()
    expect(page.locator("#narration")).to_be_hidden()
    page.locator(".a3s-narrate").click()  # and back on: the new run's sentence
    expect(page.locator("#narration")).to_be_visible()
    # (while the new run plays faster than 2.5 s a step its sentence is the short one: wait for its end)
    page.wait_for_function("() => !window.__a3stage.state.playing", timeout=SLOW)
    assert page.locator("#narration").inner_text() == page.evaluate(NARRATION)
    page.close()


UNEXPLAINED = """() => {
  const root = document.querySelector('#stage .a3s'), missing = [];
  const hover = (el) => { const t = el.closest('[title]'); return t && root.contains(t) ? t.title.trim() : ''; };
  // every piece of text on show: the hover of the element it sits in (or of the nearest one around it)
  const skip = '.a3s-note, .a3s-mask-hover, .a3s-empty, .run';  // a note to read; the grid's character labels
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);  // lie over their cells, which hover
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!/[\\p{L}\\p{N}]/u.test(n.data) || el.closest(skip) || !el.getClientRects().length) continue;  // words
    if (!hover(el)) missing.push(n.data.trim());
  }
  // the controls and the drawings, which hold no text
  for (const el of root.querySelectorAll('button, input, canvas')) if (!hover(el)) missing.push('#' + el.id);
  return missing;
}"""


def titles(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map((e) => e.closest('[title]').title)")


@pytest.mark.parametrize("present", [False, True])
def test_every_label_on_the_stage_has_a_hover_text(page_url, browser, present):
    page = open_page(browser, page_url)
    stop_stage_at(page, ["ArrowRight", "ArrowRight"] + (["p"] if present else []))
    page.wait_for_timeout(300)
    assert page.evaluate(UNEXPLAINED) == []
    # what the words mean, in plain words
    method = page.evaluate("() => window.__a3stage.state.P.method")
    about = BEST_OF_N_ABOUT if method == BEST_OF_N else \
        next(s for s in METHODS.values() if s.label == method).description
    assert titles(page, ".a3s-headline .a3s-method") == [about]
    headline = dict(zip(page.eval_on_selector_all(".a3s-headline span", "els => els.map((e) => e.textContent)"),
                        titles(page, ".a3s-headline span"), strict=True))
    assert next(t for text, t in headline.items() if text.startswith("groups of 4")).startswith(
        "The model calls the same blanks would need")
    summary = dict(zip(page.eval_on_selector_all("#summary span", "els => els.map((e) => e.textContent)"),
                       titles(page, "#summary span"), strict=True))
    group = next(t for text, t in summary.items() if text.startswith("group "))
    logp = next(t for text, t in summary.items() if text.startswith("log p"))
    assert "group" in group and "probability" in logp
    assert "start token" in titles(page, "#stage-grid .cell[data-p='0']")[0]  # ⟨s⟩
    assert "step" in page.get_attribute("#stage-counter", "title")
    assert "checks every cell" in page.get_attribute("#verdict", "title")
    assert any("query stream" in t for t in titles(page, ".a3s-masks figcaption"))
    # a dot of the DAG says which step it is and what it decided; a later one, nothing yet
    # the DAG where it settled (presentation mode lays the stage out again; a busy machine takes its time)
    nodes = None
    while nodes != page.get_attribute("#stage-dag", "data-nodes"):
        nodes = page.get_attribute("#stage-dag", "data-nodes")
        page.wait_for_timeout(400)
    x, dx, y = json.loads(nodes)
    box = page.locator("#stage-dag").bounding_box()
    offset = page.evaluate("() => window.__a3stage.state.P.dag.offset")
    page.mouse.move(box["x"] + x + (offset + 1) * dx, box["y"] + y)  # step 2, the one on show
    named = page.evaluate("() => window.__a3stage.state.P.steps[1].named")
    assert page.get_attribute("#stage-dag", "title").startswith(f"Step 2: {named} · group ")
    page.mouse.move(box["x"] + x + (offset + 2) * dx, box["y"] + y)
    assert page.get_attribute("#stage-dag", "title") == "Step 3: not decided yet"
    page.close()


def test_byte_tokens_read_as_whole_characters_in_the_chips_the_stage_and_the_candidates(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    open_tab(page, "Your text")
    page.locator("#text textarea").fill("Zoë 🧩 寿司 and [MASK:3] at the café.")
    expect(page.locator("#picker")).to_contain_text("Zoë 🧩 寿司", timeout=15_000)
    chips = page.locator("#picker .tp").inner_text()
    assert "<0x" not in chips and "\ufffd" not in chips
    page.locator("#method label", has_text=re.compile(r"^\s*A3 plan\s*$")).click()
    page.locator("#run-btn").click()
    expect(page.locator(".a3s-headline")).to_contain_text("A3 plan (", timeout=SLOW)
    expect(page.locator("#sentence")).to_contain_text("Zoë 🧩 寿司")
    page.locator("#stage-counter").click()
    page.keyboard.press("End")
    # (bytes the random model strings together that make no character read "�": there is no character)
    for where in ("#sentence", "#stage-grid", "#narration"):
        assert "<0x" not in page.locator(where).inner_text(), where
    open_tab(page, "Step details")
    expect(page.locator("#candidates")).to_be_visible(timeout=15_000)
    assert "<0x" not in page.locator("#candidates").inner_text()
    page.close()

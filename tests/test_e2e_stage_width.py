"""The stage's bar in a real headless Chromium (tiny model): the step slider keeps its width whatever the
counter next to it says ("Before decoding · 0/N", "Step k/N") and whatever the play button says ("▶ play",
"❚❚ pause"), so scrubbing never makes the bar jump."""

import re

import pytest
from conftest import launched_app
from test_e2e import open_page, stage_step

pytestmark = pytest.mark.browser

SLIDER_WIDTH = "() => document.querySelector('#stage-step').getBoundingClientRect().width"


@pytest.fixture(scope="module")
def page_url():
    with launched_app("tiny") as (url, _):
        yield url


def stopped_at_start(browser, url: str, width: int, height: int):
    """The page, its example stopped before the first step: once it plays (it starts by itself; a key pressed
    before that would be undone), a click on the counter gives the stage the keys and Home stops it there."""
    from playwright.sync_api import expect

    page = open_page(browser, url, width, height)
    counter = page.locator("#stage-counter")
    expect(counter).to_have_text(re.compile(r"^Step [1-9]\d*/\d+$"), timeout=15_000)
    counter.click()
    page.keyboard.press("Home")
    return page, counter


@pytest.mark.parametrize("width, height", [(1366, 768), (1920, 1080)])
def test_the_slider_keeps_its_width_whatever_the_counter_says(page_url, browser, width, height):
    from playwright.sync_api import expect

    page, counter = stopped_at_start(browser, page_url, width, height)
    expect(counter).to_have_text(re.compile(r"^Before decoding · 0/\d+$"))
    assert stage_step(page) == -1
    before = page.evaluate(SLIDER_WIDTH)
    page.keyboard.press("End")
    expect(counter).to_have_text(re.compile(r"^Step (\d+)/\1$"))
    last = page.evaluate(SLIDER_WIDTH)
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    expect(counter).to_have_text(re.compile(r"^Step 1/\d+$"))
    first = page.evaluate(SLIDER_WIDTH)
    assert before > 100
    assert abs(before - last) <= 1 and abs(before - first) <= 1, (before, first, last)
    # playing: the button says "pause" instead of "play", and the slider still keeps its width
    page.keyboard.press("Home")
    page.keyboard.press(" ")
    page.wait_for_function("() => window.__a3stage.state.playing")
    playing = page.evaluate(SLIDER_WIDTH)
    page.keyboard.press(" ")
    assert abs(before - playing) <= 1, (before, playing)
    page.close()


@pytest.mark.parametrize("width, height", [(1366, 768), (1920, 1080)])
def test_in_presentation_mode_the_slider_keeps_its_width_and_the_bar_one_line(page_url, browser, width, height):
    """Presentation type (22 px) leaves no room at 1366 px for "Before decoding · 0/N": the start reads
    "Step 0/N" there, and the bar stays one line at every step."""
    from playwright.sync_api import expect

    page, counter = stopped_at_start(browser, page_url, width, height)
    page.keyboard.press("p")
    page.wait_for_function("() => document.documentElement.classList.contains('a3-present')")
    page.wait_for_timeout(500)  # the stage lays itself out again
    expect(counter).to_have_text(re.compile(r"^Step 0/\d+$"))
    seen = []
    for key, shown in (("Home", r"^Step 0/\d+$"), ("ArrowRight", r"^Step 1/\d+$"), ("End", r"^Step (\d+)/\1$")):
        page.keyboard.press(key)
        expect(counter).to_have_text(re.compile(shown))
        seen.append(page.evaluate(SLIDER_WIDTH))
        tops = page.evaluate("() => [...document.querySelectorAll('.a3s-bar > *')].map((e) => "
                             "Math.round(e.getBoundingClientRect().top + e.getBoundingClientRect().height / 2))")
        assert max(tops) - min(tops) <= 4, (key, tops)
    assert max(seen) - min(seen) <= 1, seen
    page.keyboard.press("p")  # back to the page's type: the start reads "Before decoding" again
    page.keyboard.press("Home")
    expect(counter).to_have_text(re.compile(r"^Before decoding · 0/\d+$"))
    page.close()


def test_a_decided_tokens_leading_space_sits_outside_its_box_and_the_text_reads_the_same(page_url, browser):
    """A line that breaks at a token's leading space must not leave a sliver of its coloured box (the walk's
    projector screenshot): the space is drawn before the box, and the text still reads every label in order."""
    page, counter = stopped_at_start(browser, page_url, 1366, 768)
    page.keyboard.press("End")
    from playwright.sync_api import expect

    expect(counter).to_have_text(re.compile(r"^Step (\d+)/\1$"))
    boxes = page.eval_on_selector_all("#sentence .tok.decided", "els => els.map(e => e.textContent)")
    assert boxes and all(not box[:1].isspace() or not box.strip() for box in boxes), boxes
    shown, labels = page.evaluate("""() => { const P = window.__a3stage.state.P;
        return [document.querySelector('#sentence .sentence').textContent,
                P.labels.slice(P.hide_start ? 1 : 0).join('')]; }""")
    assert shown == labels  # at the last step every position is known: the text is its labels in order
    page.close()

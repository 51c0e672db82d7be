"""The stage in a real headless Chromium, for what it shows rather than how it is driven: whole characters
and visible whitespace, every panel grown to the screen (1920x1080), presentation mode on a laptop
screen (1366x768) with the whole verdict and DAG numbers that keep apart, a long text whose grid stays
readable, open positions never named on a mask, and the speed kept across runs.

Payloads other than the page's own example go in through `window.__a3stage.load`, as a new value would."""

import json
import os
import re

import pytest
from conftest import launched_app
from test_trace_view import BYTES_GIVEN, byte_result, unicode_result

from app.session import Explorer, Request
from app.stage import stage_payload
from model.text import encode_plain_text

pytestmark = pytest.mark.browser

UNICODE_SHOWN = "Zoë 🧩 ate 寿司 🧩 寿司↵↵↵· done."  # tests/test_trace_view.unicode_result, decoded to the end
LONG_TOKENS = 118


@pytest.fixture(scope="module")
def page_url():
    with launched_app(os.environ.get("A3_E2E_MODEL", "tiny")) as (url, _):
        yield url


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    return Explorer(tiny_loaded)


def open_stage(browser, url: str, width: int, height: int, payload: dict | None = None):
    """The page at this size with the stage drawn (and paused); `payload` replaces the example."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_function("() => window.__a3stage && window.__a3stage.state.P")
    if payload is not None:
        page.evaluate("(p) => window.__a3stage.load(p)", json.loads(json.dumps(payload)))
    page.evaluate("() => window.__a3stage.pause()")
    return page


def go(page, step: int) -> None:
    page.evaluate("(s) => window.__a3stage.setStep(s)", step)
    page.wait_for_function(f"() => document.querySelector('#stage-counter').dataset.step === '{step}'")


def n_steps(page) -> int:
    return page.evaluate("() => window.__a3stage.state.P.steps.length")


def dag_numbers_overlap(page) -> list:
    """Pairs of DAG numbers whose drawn extents touch (the canvas records them)."""
    boxes = sorted(json.loads(page.get_attribute("#stage-dag", "data-labels") or "null"))
    return [(a, b) for a, b in zip(boxes, boxes[1:], strict=False) if b[0] < a[1] + 2]


# --------------------------------------------------------------------------------------------------
# text: whole characters, visible whitespace


def test_split_characters_and_whitespace_round_trip_to_the_stage(page_url, browser, explorer):
    payload = stage_payload(unicode_result(explorer), autoplay=False)
    page = open_stage(browser, page_url, 1366, 768, payload)
    go(page, -1)  # the given text shows its characters from the start
    assert page.text_content("#sentence").startswith("Zoë 🧩 ate 寿司?")  # an open slot: the grid's "?"
    assert page.eval_on_selector_all("#stage-grid .run", "els => els.map(e => e.textContent)") == ["🧩", "寿", "司"]
    go(page, n_steps(page) - 1)
    assert page.text_content("#sentence") == UNICODE_SHOWN
    assert page.eval_on_selector_all("#stage-grid .run", "els => els.map(e => e.textContent)") == [
        "🧩", "寿", "司", "🧩", "寿", "司"]
    # a split character's cells keep their own step colours under the one label
    colours = page.eval_on_selector_all("#stage-grid .cell", "els => els.slice(13, 16).map(e => e.style.background)")
    assert len(set(colours)) == 3
    # line breaks and a space: marks in the text and in the grid, never blank
    cells = page.eval_on_selector_all("#stage-grid .cell", "els => els.map(e => e.textContent)")
    assert cells[21:24] == ["↵", "↵↵", "·"]
    assert "\ufffd" not in page.text_content(".a3s")
    # in the text, a token holding a line break ends its line (its mark stays): one break each, ↵↵ too
    assert page.eval_on_selector_all("#sentence br.nl", "els => els.length") == 2
    tops = page.evaluate("() => [21, 22, 23].map((p) => "
                         "document.querySelector(`#sentence [data-p='${p}']`).getBoundingClientRect().top)")
    assert tops[0] < tops[1] < tops[2]
    # the grid's legend names the marks this text uses, and hovers with all of them
    legend = page.locator(".a3s-grid-panel .a3s-ws")
    assert legend.is_visible() and legend.text_content() == " · ↵ line break · · space"
    assert "⇥ a tab" in legend.get_attribute("title")
    # the page's own example has no whitespace marks: no such legend
    page.evaluate("(p) => window.__a3stage.load(p)", json.loads(json.dumps(
        stage_payload(explorer.decode(Request(text="Once upon a time there was a [MASK:3] dog.", method="A3 plan")),
                      autoplay=False))))
    assert not legend.is_visible()
    page.close()


def test_a_split_character_shows_as_open_until_all_its_tokens_are_decided(page_url, browser, explorer):
    result = unicode_result(explorer)
    page = open_stage(browser, page_url, 1366, 768, stage_payload(result, autoplay=False))
    decided = result.trace.decided_step()
    for step in range(n_steps(page)):
        go(page, step)
        chips = page.eval_on_selector_all("#sentence .tok", "els => els.map(e => [+e.dataset.p, e.textContent])")
        for start, end in ((13, 16), (16, 19), (19, 21)):  # the decoded 🧩, 寿 and 司
            shown = dict(chips)[start]
            assert (shown != "?") == all(decided[p] <= step for p in range(start, end)), (step, start, shown)
    page.close()


def test_bytes_that_make_no_character_show_as_their_values_on_the_stage(page_url, browser, explorer):
    """The browser walk's fill (finding 4): six byte tokens EF BC, which make no character. The text, the
    grid's cells ("‹EFBC›", close, to fit) and their hovers, the summary and the narration show the bytes, never
    "�"; an open slot is the grid's "?" in a dashed chip (finding 9); the summary says where, "at position 25"
    (finding 7)."""
    result = byte_result(explorer)
    page = open_stage(browser, page_url, 1366, 768, stage_payload(result, autoplay=False))
    go(page, -1)
    chip = page.locator("#sentence .tok.open").first
    assert chip.text_content() == "?" and chip.evaluate("e => getComputedStyle(e).borderTopStyle") == "dashed"
    assert "▢" not in page.text_content(".a3s")
    go(page, 0)
    first = result.trace.steps[0].positions[0]
    assert f"· at position {first} ·" in page.text_content("#summary")
    go(page, n_steps(page) - 1)
    assert page.text_content("#sentence") == f"{BYTES_GIVEN}{'‹EF BC›' * 6} and then the Zürich señor smiled."
    blanks = [p for p, g in enumerate(result.trace.given) if not g]
    cells = page.eval_on_selector_all("#stage-grid .cell", "els => els.map(e => [e.textContent, e.title])")
    assert [cells[p][0] for p in blanks] == ["‹EFBC›"] * 6  # written close, to fit the cell
    assert all(cells[p][1].startswith(f"position {p} · ‹EF BC› · decided at step ") for p in blanks), cells[blanks[0]]
    assert "the bytes ‹EF BC› that make no character" in page.text_content("#narration")
    assert "\ufffd" not in page.text_content(".a3s") and "\ufffd" not in "".join(title for _, title in cells)
    page.close()


# --------------------------------------------------------------------------------------------------
# masks: no open position is named


def test_the_mask_hover_never_names_an_open_token(page_url, browser, explorer):
    result = unicode_result(explorer)
    page = open_stage(browser, page_url, 1366, 768, stage_payload(result, autoplay=False))
    go(page, -1)
    canvas = page.locator("#stage-content")
    length = len(result.labels)
    for row in (14, 22):  # open before decoding: part of the decoded 🧩, and the "\n\n"
        for _ in range(20):  # the canvas is measured again each try: a late relayout may have moved it
            box = canvas.bounding_box()
            side, ox = float(canvas.get_attribute("data-side")), float(canvas.get_attribute("data-ox"))
            page.mouse.move(box["x"] + ox + side * 0.5 / length, box["y"] + side * (row + 0.5) / length)
            hover = page.text_content(".a3s-mask-hover")
            if hover.startswith(f"content: row {row} "):
                break
            page.wait_for_timeout(100)
        assert hover.startswith(f"content: row {row} “?”"), hover
    page.close()


# --------------------------------------------------------------------------------------------------
# layout: the figures grow with the screen; presentation mode on a laptop; long texts


PLOT_AREAS = """() => {
  const rect = (s) => document.querySelector(s).getBoundingClientRect();
  const panels = rect('.a3s-panels'), box = rect('.a3s-gridbox'), grid = rect('#stage-grid');
  const visible = (Math.min(grid.right, box.right) - Math.max(grid.left, box.left)) *
                  (Math.min(grid.bottom, box.bottom) - Math.max(grid.top, box.top));
  const dag = document.querySelector('#stage-dag'), whole = dag.getBoundingClientRect();
  const plot = dag.dataset.plot ? JSON.parse(dag.dataset.plot) : [0, 0, whole.width, whole.height];
  const side = (s) => Number(document.querySelector(s).dataset.side);
  return {panels: panels.width * panels.height, grid: visible, dag: plot[2] * plot[3],
          masks: side('#stage-content') ** 2 + side('#stage-query') ** 2, mask_side: side('#stage-content')};
}"""


def test_the_figures_fill_the_stage_at_1920(page_url, browser):
    """The grid's cells, the DAG's plot area and both mask squares (not the padding around them) cover at
    least 75% of the panels below the controls and the text."""
    page = open_stage(browser, page_url, 1920, 1080)
    go(page, n_steps(page) // 2)
    page.wait_for_timeout(200)
    areas = page.evaluate(PLOT_AREAS)
    covered = (areas["grid"] + areas["dag"] + areas["masks"]) / areas["panels"]
    print(json.dumps({**areas, "covered": round(covered, 3)}))
    assert covered >= 0.75, areas
    assert areas["mask_side"] >= 400  # the masks grow with the screen too
    page.close()


def test_presentation_mode_at_1366_shows_the_whole_verdict_and_apart_dag_numbers(page_url, browser):
    page = open_stage(browser, page_url, 1366, 768)
    go(page, n_steps(page) // 2)
    page.locator("#stage-counter").click()
    page.keyboard.press("p")
    page.wait_for_function("() => document.documentElement.classList.contains('a3-present')")
    page.wait_for_timeout(300)
    verdict = page.locator("#verdict")
    said = page.evaluate("() => { const P = window.__a3stage.state.P, s = window.__a3stage.state.step;"
                         " return (s < 0 ? P.before : P.steps[s]).verdict; }")
    assert verdict.inner_text() == said and said.endswith(".")
    fits = page.evaluate("""() => { const v = document.querySelector('#verdict'), r = v.getBoundingClientRect(),
        panel = v.closest('.a3s-panel').getBoundingClientRect();
        return v.scrollHeight <= v.clientHeight + 1 && r.bottom <= panel.bottom + 1 && r.bottom <= innerHeight; }""")
    assert fits, "the verdict is cut"
    assert dag_numbers_overlap(page) == []
    font = page.evaluate("() => parseFloat(getComputedStyle(document.querySelector('#stage-grid .cell')).fontSize)")
    assert font >= 13
    page.close()


STAGE_PARTS = ("#narration", "#sentence", "#stage-grid", "#stage-dag", "#stage-content", "#stage-query",
               "#verdict", "#play-btn", "#edit-btn", "#stage-counter")


@pytest.mark.parametrize("width, height", [(1366, 768), (1920, 1080)])
@pytest.mark.parametrize("present", [False, True])
def test_the_longest_narration_fits_with_the_whole_stage(page_url, browser, explorer, width, height, present):
    """Diffusion revealing 7 tokens a step names 5 and "2 more" with their probabilities: the sentence
    shows whole (wrapped, never cut), and the stage still fits the screen with the verdict whole."""
    result = explorer.decode(Request(text="The cat sat on the mat and [MASK:9] at the birds in the [MASK:5] tree.",
                                     method="diffusion", k=7))
    page = open_stage(browser, page_url, width, height, stage_payload(result, autoplay=False))
    if present:
        page.locator("#stage-counter").click()
        page.keyboard.press("p")
        page.wait_for_function("() => document.documentElement.classList.contains('a3-present')")
    go(page, 0)
    page.wait_for_timeout(400)  # the stage lays itself out again
    assert "and 2 more at once" in page.inner_text("#narration")
    state = page.evaluate("""(parts) => {
      const inside = (s) => { const r = document.querySelector(s).getBoundingClientRect();
        return r.width > 3 && r.height > 3 && r.left >= 0 && r.top >= 0 && r.right <= innerWidth + 1 &&
          r.bottom <= innerHeight + 1; };
      const whole = (s) => { const n = document.querySelector(s); return n.scrollHeight <= n.clientHeight + 1; };
      return {outside: parts.filter((s) => !inside(s)), cut: ['#narration', '#verdict'].filter((s) => !whole(s)),
              scrolled: window.scrollY, side: Number(document.querySelector('#stage-query').dataset.side)}; }""",
                          list(STAGE_PARTS))
    assert state["outside"] == [] and state["cut"] == [] and state["scrolled"] == 0, state
    assert state["side"] >= (120 if width == 1366 else 300), state  # the masks stay readable: 4 px a cell and up
    page.close()


def long_payload(explorer: Explorer) -> dict:
    """A run of exactly LONG_TOKENS positions (with the start token), a third of them open."""
    words = ("The river ran past the old mill where the miller kept his books and his cats, and every evening "
             "the children came down the lane to hear the wheel turn and the water sing. ") * 3
    given = encode_plain_text(explorer.loaded.tokenizer, words, start_token_id=0)
    keep = LONG_TOKENS - 40 - 1
    text = explorer.loaded.tokenizer.decode(given[1: keep + 1].tolist()) + " [MASK:40]"
    result = explorer.decode(Request(text=text, method="A3 plan", order="random", seed=0))
    assert len(result.labels) == LONG_TOKENS
    return stage_payload(result, autoplay=False)


def test_a_long_text_keeps_the_grid_readable_at_1366(page_url, browser, explorer):
    page = open_stage(browser, page_url, 1366, 768, long_payload(explorer))
    for step in (0, n_steps(page) // 2, n_steps(page) - 1):
        go(page, step)
        font = page.evaluate("() => parseFloat(getComputedStyle(document.querySelector('#stage-grid .cell')).fontSize)")
        assert font >= 11, font
        # the grid scrolls inside its panel (never the page) and keeps this step's cell in view
        seen = page.evaluate("""() => {
            const c = document.querySelector('#stage-grid .cell.current').getBoundingClientRect(),
              b = document.querySelector('.a3s-gridbox').getBoundingClientRect();
            return c.top >= b.top - 1 && c.bottom <= b.bottom + 1; }""")
        assert seen, step
        assert dag_numbers_overlap(page) == []
    assert page.evaluate("() => window.scrollY") == 0
    assert page.evaluate("() => document.querySelector('.a3s-gridbox').getBoundingClientRect().bottom") <= 768
    page.close()


# --------------------------------------------------------------------------------------------------
# speed


def test_a_new_run_keeps_the_speed(page_url, browser):
    from playwright.sync_api import expect

    page = open_stage(browser, page_url, 1366, 768)
    page.locator("#stage-speed").fill("1.2")
    page.locator("#stage-speed").dispatch_event("change")
    page.locator("button[role=tab]", has_text="Your text").first.click()
    page.locator("#text textarea").fill("The cat sat on the mat and [MASK:3] at the birds.")
    page.locator("#method label", has_text="A3 plan").click()
    page.locator("#run-btn").click()
    expect(page.locator(".a3s-headline")).to_contain_text(re.compile(r"A3 plan \(left to right\): 3 model calls"),
                                                          timeout=60_000)
    assert page.input_value("#stage-speed") == "1.2"
    page.close()


# --------------------------------------------------------------------------------------------------
# presentation mode: the headline's counts and the grid's words whole


def present(page) -> None:
    page.locator("#present-btn").click()
    page.wait_for_function("() => document.documentElement.classList.contains('a3-present')")
    page.wait_for_timeout(300)  # the stage lays itself out again


def test_in_presentation_mode_the_headline_keeps_its_counts_and_leaves_out_its_aside(page_url, browser, explorer):
    """Best of N's headline names what was kept in brackets; on a projector at 1366 px that aside is left out
    (it still shows on the page, and hovers) so that the counts read whole instead of ending in "…"."""
    from app.session import BEST_OF_N

    result = explorer.decode(Request(text="Mia found an old key under the porch. [MASK:6] Inside the box was a "
                                          "letter from her grandmother.", method=BEST_OF_N, seed=0))
    page = open_stage(browser, page_url, 1366, 768, stage_payload(result, autoplay=False))
    aside = page.locator(".a3s-headline .a3s-aside")
    assert aside.count() == 1 and aside.inner_text().startswith(" (") and "kept" in aside.inner_text()
    assert aside.is_visible()
    assert aside.get_attribute("title")  # the aside hovers with what its part means, like the part itself
    present(page)
    assert not aside.is_visible()
    shown = page.locator(".a3s-headline").inner_text()
    assert re.search(r"model calls for \d+ tokens · groups of 4 would take \d+ · AR needs \d+", shown), shown
    cut = page.evaluate("() => { const h = document.querySelector('.a3s-headline'); "
                        "return h.scrollWidth - h.clientWidth; }")
    assert cut <= 1, cut
    page.close()


@pytest.mark.parametrize("width, height, presenting", [(1366, 768, False), (1920, 1080, True)])
def test_a_long_word_shows_whole_in_its_grid_cell(page_url, browser, explorer, width, height, presenting):
    """"grandmother" in a cell sized for short words gets a smaller type of its own rather than "grandm…"."""
    result = explorer.decode(Request(text="Inside the box was a letter from her grandmother, extraordinarily kind "
                                          "and understanding. [MASK:3]", method="A3 plan", seed=0))
    page = open_stage(browser, page_url, width, height, stage_payload(result, autoplay=False))
    if presenting:
        present(page)
    go(page, n_steps(page) - 1)
    cells = page.evaluate("""() => [...document.querySelectorAll('#stage-grid .cell')].map((c) => ({
        text: c.textContent, cut: c.scrollWidth - c.clientWidth, font: parseFloat(getComputedStyle(c).fontSize),
        grid: parseFloat(getComputedStyle(c.parentElement).fontSize)}))""")
    long = [c for c in cells if "grandmother" in c["text"]]
    assert long and long[0]["font"] < long[0]["grid"], long  # it needed the smaller type here
    words = [c for c in cells if len(c["text"].strip()) <= 12]
    assert all(c["cut"] <= 0 for c in words), [c for c in words if c["cut"] > 0]
    assert min(c["font"] for c in cells) >= 9
    page.close()


def test_presentation_mode_gives_the_stage_the_window_and_escape_leaves_it(page_url, browser):
    """On a projector the tabs and the example's note go (the note only ever showed as "Example deco…"), the
    stage grows into their room, and Escape leaves presentation mode as P does."""
    from playwright.sync_api import expect

    page = open_stage(browser, page_url, 1366, 768)
    tabs, note = page.locator("#tabs > .tab-wrapper"), page.locator(".a3s-note")
    assert tabs.is_visible() and note.is_visible() and note.inner_text()
    height = page.evaluate("() => document.querySelector('#stage .a3s').getBoundingClientRect().height")
    present(page)
    assert not tabs.is_visible() and not note.is_visible()
    page.wait_for_function("(h) => document.querySelector('#stage .a3s').getBoundingClientRect().height > h + 30",
                           arg=height)
    page.wait_for_function("() => !!document.fullscreenElement")  # the whole screen, not only the window
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.documentElement.classList.contains('a3-present')")
    page.wait_for_function("() => !document.fullscreenElement")
    assert tabs.is_visible() and note.is_visible()
    present(page)  # the browser leaves the screen (its own Escape, F11): the mode goes with it
    page.wait_for_function("() => !!document.fullscreenElement")
    page.evaluate("() => document.exitFullscreen()")
    page.wait_for_function("() => !document.documentElement.classList.contains('a3-present')")
    assert tabs.is_visible()
    page.keyboard.press("Escape")  # not presenting: Escape does nothing
    assert not page.evaluate("() => document.documentElement.classList.contains('a3-present')")
    # "✎ your text" from presentation mode: the mode ends with the stage, the text tab comes with its tabs
    present(page)
    page.locator("#stage #edit-btn").click()
    page.wait_for_function("() => !document.documentElement.classList.contains('a3-present')")
    expect(page.locator("#text textarea")).to_be_visible()
    assert tabs.is_visible()
    page.close()


LONG = ("Every summer my grandparents rented a small cabin by the lake, far from the noise of the city. In the "
        "mornings my grandfather would wake before dawn and walk down to the wooden dock with his fishing rod, a "
        "thermos of coffee and an old radio. [MASK:30] By the time the rest of us woke up, he had usually caught "
        "enough fish for lunch, and my grandmother would fry them in a black iron pan while we set the table on "
        "the porch. Those were the best days of my childhood, and I still think of them whenever I smell coffee.")


@pytest.mark.parametrize("width, height", [(1366, 768), (1280, 720), (1920, 1080)])
def test_a_long_text_scrolls_by_whole_lines_and_keeps_the_current_line_whole(page_url, browser, explorer, width,
                                                                             height):
    """In presentation mode a long text's box scrolls; it once stopped mid-line, so its top line was cut through
    its letters, and its height cut the bottom line (browser walks). Every step: the box starts at a line's
    top, holds whole lines, shows the current token's line whole, and shades the edge with more text beyond."""
    result = explorer.decode(Request(text=LONG, method="A3 plan", seed=0))
    page = open_stage(browser, page_url, width, height, stage_payload(result, autoplay=False))
    present(page)
    go(page, -1)  # before the first step: the first blank in view, whole
    first = page.evaluate("""() => { const box = document.querySelector('#sentence'), b = box.getBoundingClientRect();
        const c = box.querySelector('.tok.open').getBoundingClientRect(); return [c.top - b.top, c.bottom - b.top,
        box.clientHeight]; }""")
    assert first[0] >= 0 and first[1] <= first[2] + 1, first
    scrolled = 0
    for step in range(0, n_steps(page), 3):
        go(page, step)
        box = page.evaluate("""() => {
            const box = document.querySelector('#sentence'), text = box.firstElementChild, s = getComputedStyle(text);
            const cur = box.querySelector('.tok.current').getBoundingClientRect(), b = box.getBoundingClientRect();
            return {top: box.scrollTop, line: parseFloat(s.lineHeight), pad: parseFloat(s.paddingTop),
                    height: box.clientHeight, full: box.scrollHeight, cur: [cur.top - b.top, cur.bottom - b.top],
                    above: box.classList.contains('more-above'), below: box.classList.contains('more-below')};
        }""")
        assert box["full"] > box["height"], box  # the text does not fit: the case this is about
        lines = (box["height"] - 2 * box["pad"]) / box["line"]
        assert abs(lines - round(lines)) < 0.05 and round(lines) >= 1, box  # no line cut at the bottom edge
        assert box["above"] == (box["top"] > 1), box
        assert box["below"] == (box["top"] + box["height"] < box["full"] - 1), box
        scrolled += box["top"] > 0
        assert box["top"] == 0 or abs((box["top"] - box["pad"]) / box["line"] - round((box["top"] - box["pad"]) /
                                                                                     box["line"])) < 0.02, box
        assert box["cur"][0] >= 0 and box["cur"][1] <= box["height"] + 1, box  # the current token whole
    assert scrolled or width >= 1920  # the later steps' line lies below the first view (at 1920 the blank's fits)
    page.close()


def test_a_long_texts_grid_scrolls_by_whole_rows_and_fades_the_edge_with_more(page_url, browser, explorer):
    """A 200-token text's order grid outgrows its panel at 1366 px: the box follows the step (before the first,
    the first blank), starting at a row's top (its top row was once cut mid-cell, with nothing saying rows lay
    above), and fades the edges with rows beyond."""
    text = LONG.replace("[MASK:30]", "") + " " + LONG.replace("[MASK:30] ", "").split(". ", 1)[1] + " [MASK:6]"
    result = explorer.decode(Request(text=text, method="A3 plan", seed=0))
    assert len(result.trace.final_ids) > 180
    page = open_stage(browser, page_url, 1366, 768, stage_payload(result, autoplay=False))
    seen = []
    for step in (-1, 0, n_steps(page) - 1):
        go(page, step)
        box = page.evaluate("""(step) => {
            const box = document.querySelector('#stage-grid').parentElement, b = box.getBoundingClientRect();
            const cells = [...box.querySelectorAll('.cell')], cols = window.__a3stage.state.P.columns;
            const pitch = cells[cols].getBoundingClientRect().top - cells[0].getBoundingClientRect().top;
            const cur = box.querySelector(step < 0 ? '.cell.open' : '.cell.current'), c = cur.getBoundingClientRect();
            return {top: box.scrollTop, height: box.clientHeight, full: box.scrollHeight, pitch,
                    cur: [c.top - b.top, c.bottom - b.top],
                    above: box.classList.contains('more-above'), below: box.classList.contains('more-below')};
        }""", step)
        assert box["full"] > box["height"] + box["pitch"], box  # the grid does not fit: the case this is about
        assert box["above"] == (box["top"] > 1) and box["below"] == (box["top"] + box["height"] < box["full"] - 1)
        assert abs(box["top"] / box["pitch"] - round(box["top"] / box["pitch"])) < 0.02, box  # a row's top
        assert box["cur"][0] >= -1 and box["cur"][1] <= box["height"] + 1, box  # the current (open) cell whole
        seen.append(box)
    assert all(b["top"] > 0 and b["above"] for b in seen)  # the blank at the end: the box went down to it
    go(page, -1)
    page.evaluate("() => { document.querySelector('#stage-grid').parentElement.scrollTop = 0; }")
    page.wait_for_function("""() => { const box = document.querySelector('#stage-grid').parentElement;
        return !box.classList.contains('more-above') && box.classList.contains('more-below'); }""")  # scrolled back
    page.close()

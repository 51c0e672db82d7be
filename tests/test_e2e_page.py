"""The page around the stage, in a real headless Chromium (tiny model): every export downloads on one
click the file of the step on screen; the Step details figures fit their boxes after a return visit
and after a branch; the stage's keys act only on the stage; the chips follow a paste and an example,
masks clicked survive typing elsewhere, and chips sent with their text stay; a branch leaves no
attention plot of the old run; the tables fit and break between words; every method says what it
does; no text names Python modules."""

import io
import re
import zipfile
from pathlib import Path

import pytest
from conftest import launched_app
from test_e2e import open_page, open_tab, stage_step

pytestmark = pytest.mark.browser

SLOW = 60_000  # ms: two busy cores


@pytest.fixture(scope="module")
def page_url():
    with launched_app("tiny") as (url, _):
        yield url


def stop_stage_at(page, presses: list[str]) -> None:
    """Stop the example playing (Home) and press these keys on the stage."""
    page.locator("#stage-counter").click()
    for key in ["Home", *presses]:
        page.keyboard.press(key)


def n_steps(page) -> int:
    return int(page.evaluate("() => window.__a3stage.state.P.steps.length"))


def blur(page) -> None:
    """Focus on nothing (the page itself), as after a click on plain text."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")


# ----------------------------------------------------------------------------------------- 1. export
def download_once(page, downloads: list, button: str):
    """Click an export button once; the one download it gives (and no other)."""
    before = len(downloads)
    with page.expect_download(timeout=SLOW) as info:
        page.locator(f"#{button}").click()
    download = info.value
    page.wait_for_timeout(800)  # a second download would have started by now
    assert len(downloads) == before + 1, f"{button}: {len(downloads) - before} downloads for one click"
    return download


def test_each_export_downloads_on_one_click_the_step_on_screen(page_url, browser, tmp_path):
    page = open_page(browser, page_url)
    downloads = []
    page.on("download", lambda download: downloads.append(download))
    stop_stage_at(page, ["ArrowRight"])
    total = n_steps(page)
    open_tab(page, "Export")
    names = {button: download_once(page, downloads, button).suggested_filename
             for button in ("export-trace", "export-csv", "export-npz", "export-html", "export-gif", "export-player")}
    # every file of one trace is named after its text's first words and the trace (never "trace (1).json")
    stem = re.fullmatch(r"(a3-[a-z0-9-]+-[0-9a-f]{6})-trace\.json", names["export-trace"])
    assert stem, names
    stem = stem[1]
    assert names == {"export-trace": f"{stem}-trace.json", "export-csv": f"{stem}-masks-step1.zip",
                     "export-npz": f"{stem}-masks-step1.npz", "export-html": f"{stem}-figures-step1.html",
                     "export-gif": f"{stem}-playback.gif", "export-player": f"{stem}-player.html"}
    # another step on screen, and the export is at once of that step: no wait for the server to hear of it
    open_tab(page, "Stage")
    page.locator("#stage-counter").click()
    page.keyboard.press("End")
    open_tab(page, "Export")
    csv = download_once(page, downloads, "export-csv")
    assert csv.suggested_filename == f"{stem}-masks-step{total}.zip"
    with zipfile.ZipFile(io.BytesIO(Path(csv.path()).read_bytes())) as zf:
        assert sorted(zf.namelist()) == ["content.csv", "groups.csv", "query.csv"]
    figures = download_once(page, downloads, "export-html")
    assert figures.suggested_filename == f"{stem}-figures-step{total}.html"
    assert f"Step {total}/{total}" in Path(figures.path()).read_text(encoding="utf-8")
    # the player of the whole run opens on that step too (it opened before decoding, the step to find again)
    player = download_once(page, downloads, "export-player")
    player.save_as(tmp_path / "player.html")  # the download's own file has no extension: no page to a browser
    shown = browser.new_page()
    shown.goto((tmp_path / "player.html").as_uri())
    shown.wait_for_selector("#player[data-step]", state="attached")
    assert shown.get_attribute("#player", "data-step") == str(total - 1)
    assert shown.locator("#counter").inner_text() == f"step {total} / {total}"
    shown.close()
    page.close()


def test_export_opened_during_the_first_visits_play_exports_the_step_the_visitor_saw(page_url, browser):
    """The example plays on a first visit; Export opened meanwhile stops the stage on the step it showed, names
    that step, and every press downloads that same step (it once took whatever step the hidden stage had got
    to at each press)."""
    page = open_page(browser, page_url)
    downloads = []
    page.on("download", lambda download: downloads.append(download))
    page.wait_for_function("() => window.__a3stage.state.playing && window.__a3stage.state.step >= 1",
                           timeout=SLOW)
    open_tab(page, "Export")
    page.wait_for_function("() => !window.__a3stage.state.playing")
    seen = stage_step(page) + 1  # as the stage counts
    line = page.locator("#export-on-stage")
    expect_text = f"On the stage: step {seen}/{n_steps(page)}. The step exports below are of that step."
    page.wait_for_function("(t) => document.querySelector('#export-on-stage').textContent.includes(t)", arg=expect_text)
    assert line.is_visible()
    first = download_once(page, downloads, "export-csv").suggested_filename
    page.wait_for_timeout(1500)  # the stage, had it gone on playing, would be steps further by now
    second = download_once(page, downloads, "export-csv").suggested_filename
    assert first == second and first.endswith(f"-masks-step{seen}.zip")
    assert stage_step(page) + 1 == seen
    page.close()


# -------------------------------------------------------------------------------- 2. figures fit
DETAIL_PLOTS = ("#logprob-plot", "#grid-plot", "#dag-plot", "#mask-plot")
FIGURES_OUTSIDE = """(ids) => ids.flatMap((id) => {
  const box = document.querySelector(id).getBoundingClientRect(), svg = document.querySelector(id + ' .main-svg');
  if (!svg) return [id + ': not drawn'];
  const drawn = svg.getBoundingClientRect();
  return drawn.left >= box.left - 1 && drawn.right <= box.right + 1 ? [] :
    [`${id}: drawn ${Math.round(drawn.width)} px wide in a ${Math.round(box.width)} px box`];
})"""


def assert_figures_fit(page) -> None:
    try:
        page.wait_for_function(f"() => ({FIGURES_OUTSIDE})({list(DETAIL_PLOTS)}).length === 0", timeout=10_000)
    except Exception:  # say which figure is cut off
        assert page.evaluate(FIGURES_OUTSIDE, list(DETAIL_PLOTS)) == []


def test_step_details_figures_fit_their_boxes_after_a_return_visit_and_a_branch(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    stop_stage_at(page, ["ArrowRight", "ArrowRight"])
    total = n_steps(page)
    open_tab(page, "Step details")
    expect(page.locator("#details-summary")).to_contain_text(f"Step 2/{total}", timeout=15_000)
    assert_figures_fit(page)
    # back to the stage, to its end: the figures are redrawn while their tab is hidden
    open_tab(page, "Stage")
    page.locator("#stage-counter").click()
    page.keyboard.press("End")
    page.wait_for_timeout(1500)  # the stage settles and the hidden figures are redrawn
    open_tab(page, "Step details")
    expect(page.locator("#details-summary")).to_contain_text(f"Step {total}/{total}", timeout=15_000)
    assert_figures_fit(page)
    # a branch opens the stage; its figures too are drawn while Step details is hidden
    open_tab(page, "Stage")
    stop_stage_at(page, ["ArrowRight"])
    open_tab(page, "Step details")
    expect(page.locator("#details-summary")).to_contain_text(f"Step 1/{total}", timeout=15_000)
    page.locator("#branching").get_by_text("Branch from this step").click()
    expect(page.locator("#br-position input")).to_have_value(re.compile(r"decided here"), timeout=15_000)
    page.locator("#br-token-btn").click()
    expect(page.locator("#tab-stage")).to_be_visible(timeout=SLOW)
    page.wait_for_function("() => !window.__a3stage.state.playing && window.__a3stage.state.step >= 0",
                           timeout=SLOW)
    page.wait_for_timeout(1500)
    open_tab(page, "Step details")
    expect(page.locator("#br-tree")).to_contain_text("▶ 1", timeout=15_000)
    assert_figures_fit(page)
    page.close()


# ---------------------------------------------------------------------------------------- 3. keys
def test_stage_keys_leave_other_tabs_alone(page_url, browser):
    page = open_page(browser, page_url)
    stop_stage_at(page, ["ArrowRight"])
    open_tab(page, "Order lab")
    page.wait_for_selector("#gallery-plot .js-plotly-plot")
    page.wait_for_timeout(500)  # the tab at its full height
    blur(page)
    assert page.evaluate("() => document.documentElement.scrollHeight > window.innerHeight + 50")
    # the page's own End, Home and Space scroll it (each waits for the scroll before the next key)
    for key, scrolled in (("End", "> 0"), ("Home", "=== 0"), (" ", "> 0")):
        page.keyboard.press(key)
        page.wait_for_function(f"() => window.scrollY {scrolled}", timeout=5_000)
        page.wait_for_timeout(600)
    assert not page.evaluate("() => window.__a3stage.state.playing") and stage_step(page) == 0
    open_tab(page, "How A3 works")
    blur(page)
    page.keyboard.press("p")  # not presentation mode from another tab
    page.wait_for_timeout(400)
    assert not page.evaluate("() => document.documentElement.classList.contains('a3-present')")
    # on the stage the keys still act
    open_tab(page, "Stage")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => window.__a3stage.state.step === 1", timeout=5_000)
    page.close()


def test_keys_on_a_focused_control_act_on_that_control(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    stop_stage_at(page, ["ArrowRight"])
    open_tab(page, "Your text")
    slider = page.locator("#group-size input[type=range]")
    slider.focus()
    page.keyboard.press("ArrowRight")  # the slider steps, not the hidden stage
    expect(slider).to_have_value("2")
    assert stage_step(page) == 0
    page.locator("#text textarea").fill("The cat sat on the mat and [MASK:3] at the birds.")
    page.locator("#method label", has_text="A3 plan").click()
    page.locator("#run-btn").focus()
    page.keyboard.press(" ")  # space on the Run button runs
    expect(page.locator(".a3s-headline")).to_contain_text("A3 plan (", timeout=SLOW)
    page.close()


def test_a_number_typed_outside_its_range_shows_the_value_that_runs(page_url, browser):
    """Temperature −1 or top-p 0 typed into a slider's box: the box shows what the run will use."""
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    open_tab(page, "Your text")
    page.get_by_text("Sampling", exact=True).click()
    for box, typed, shown in (("#temperature", "-1", "0"), ("#temperature", "7", "2"), ("#top-p", "0", "0.05")):
        field = page.locator(f"{box} input[type=number]")
        field.fill(typed)
        field.press("Tab")
        expect(field).to_have_value(shown)
        expect(page.locator(f"{box} input[type=range]")).to_have_value(shown)
    speed = page.locator("#stage-speed")  # the stage's own box too (its range: 0.05 to 5 s)
    open_tab(page, "Stage")
    speed.fill("9")
    speed.press("Tab")
    expect(speed).to_have_value("5")
    page.close()


def test_run_from_the_foot_of_your_text_opens_the_stage_at_the_top(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url, 1366, 560)  # a stage taller than the window
    open_tab(page, "Your text")
    page.locator("#text textarea").fill("The cat sat on the mat and [MASK:3] at the birds.")
    page.locator("#method label", has_text="A3 plan").click()
    page.get_by_text("Custom group ids (researchers)").click()  # the tab taller than the window
    page.evaluate("() => window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_function("() => window.scrollY > 100")
    page.locator("#run-btn").click()
    expect(page.locator(".a3s-headline")).to_contain_text("A3 plan (", timeout=SLOW)
    page.wait_for_function("() => window.scrollY === 0", timeout=5_000)
    page.close()


def test_space_presses_a_stage_button_reached_with_tab(page_url, browser):
    """A keyboard user tabs to « first, ◂ prev, next ▸ or last »: Space presses that button, as on any
    button; after a click on one, Space plays or pauses (the lecturer's key)."""
    page = open_page(browser, page_url)
    stop_stage_at(page, ["ArrowRight", "ArrowRight", "ArrowRight"])
    page.locator("#stage #first-btn").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "prev-btn"
    page.keyboard.press(" ")
    page.wait_for_function("() => window.__a3stage.state.step === 1", timeout=5_000)
    page.wait_for_timeout(1_200)  # more than two steps at the stage's speed: it would have moved on
    assert stage_step(page) == 1 and not page.evaluate("() => window.__a3stage.state.playing")
    page.locator("#stage #next-btn").click()  # a click: the focus stays, unseen, and Space plays
    page.keyboard.press(" ")
    page.wait_for_function("() => window.__a3stage.state.playing", timeout=5_000)
    page.keyboard.press(" ")
    page.wait_for_function("() => !window.__a3stage.state.playing", timeout=5_000)
    page.locator("#tab-stage-button").focus()  # the Stage tab itself, reached with the keyboard: Space plays
    page.keyboard.press(" ")
    page.wait_for_function("() => window.__a3stage.state.playing", timeout=5_000)
    page.keyboard.press(" ")
    page.close()


# --------------------------------------------------------------------------------------- 4. chips
def chips(page) -> list[tuple[str, bool]]:
    return page.evaluate("""() => [...document.querySelectorAll('#picker .chip')]
        .map((c) => [c.textContent, c.classList.contains('masked')])""")


def test_chips_follow_a_paste_and_a_click_on_them_counts_at_run(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_tab(page, "Your text")
    page.wait_for_selector("#picker .chip")
    page.evaluate("() => navigator.clipboard.writeText('The sailor mended his nets by the harbour.')")
    box = page.locator("#text textarea")
    box.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Control+V")
    expect(page.locator("#picker")).to_contain_text("harbour", timeout=15_000)
    expect(page.locator("#picker .tp-count")).to_have_text(re.compile(r"· 0 open$"))
    page.locator("#picker .chip", has_text="nets").click()
    expect(page.locator("#picker .tp-count")).to_have_text(re.compile(r"· 1 open$"))
    page.locator("#method label", has_text="A3 plan").click()
    page.locator("#run-btn").click()
    expect(page.locator("#stage-counter")).to_have_text("Step 1/1", timeout=SLOW)
    page.close()


def test_chips_follow_a_click_on_an_example(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    open_tab(page, "Your text")
    page.wait_for_selector("#picker .chip")
    expect(page.locator("#picker")).not_to_contain_text("recipe")
    page.locator("#examples button", has_text="A recipe").first.click()
    expect(page.locator("#text textarea")).to_have_value(re.compile("^The recipe was simple"))
    expect(page.locator("#picker")).to_contain_text("recipe", timeout=15_000)
    expect(page.locator("#picker .tp-count")).to_have_text(re.compile(r"· 8 open$"))
    page.close()


def test_masks_clicked_survive_typing_elsewhere(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    open_tab(page, "Your text")
    box = page.locator("#text textarea")
    box.fill("The old fisherman rowed his boat across the lake")
    box.press_sequentially(".")
    expect(page.locator("#picker")).to_contain_text("lake.", timeout=15_000)
    page.locator("#picker .chip", has_text="fisherman").click()
    page.locator("#picker .chip", has_text="boat").click()
    expect(page.locator("#picker .tp-count")).to_have_text(re.compile(r"· 2 open$"))
    box.press("End")
    box.press_sequentially(" Then he slept.")
    expect(page.locator("#picker")).to_contain_text("slept", timeout=15_000)
    box.press("Home")
    box.press_sequentially("Yes. ")
    expect(page.locator("#picker .chip").nth(1)).to_have_text("Yes", timeout=15_000)
    masked = [text for text, m in chips(page) if m]
    assert masked == [" fisherman", " boat"]
    page.close()


def test_chips_sent_with_the_text_stay(page_url, browser):
    """Order lab's "use it" sends a text and its chips at once: re-chipping the new text must not undo them."""
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    open_tab(page, "Order lab")
    page.locator("#gallery-use").click()
    expect(page.locator("#text textarea")).to_have_value(page.locator("#lab-text textarea").input_value(),
                                                         timeout=15_000)
    page.wait_for_timeout(1500)  # the text's change event has come and gone
    expect(page.locator("#picker .tp-count")).not_to_have_text(re.compile(r"· 0 open$"))
    page.close()


# ----------------------------------------------------------------------------------- 5. attention
def test_a_branch_leaves_no_attention_plot_of_the_old_run(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    stop_stage_at(page, ["ArrowRight", "ArrowRight"])
    open_tab(page, "Step details")
    expect(page.locator("#details-summary")).to_contain_text("Step 2/", timeout=15_000)
    page.locator("#attention").get_by_text("Attention weights at this step").click()
    page.locator("#attn-btn").click()
    expect(page.locator("#attn-plot")).to_contain_text("Attention weights at step 2", timeout=SLOW)
    page.locator("#branching").get_by_text("Branch from this step").click()
    expect(page.locator("#br-position input")).to_have_value(re.compile(r"decided here"), timeout=15_000)
    page.locator("#br-token-btn").click()
    expect(page.locator("#tab-stage")).to_be_visible(timeout=SLOW)
    page.wait_for_function("() => !window.__a3stage.state.playing && window.__a3stage.state.step >= 0",
                           timeout=SLOW)
    open_tab(page, "Step details")
    expect(page.locator("#br-tree")).to_contain_text("▶ 1", timeout=15_000)
    expect(page.locator("#attn-plot")).to_be_hidden(timeout=15_000)  # not the old run's "step 2"
    expect(page.locator("#attn-note")).to_contain_text("another step or run")
    # drawn again, it is the new run's step: the branch lands paused where it was branched
    page.locator("#attn-btn").click()
    at = stage_step(page) + 1
    expect(page.locator("#attn-plot")).to_contain_text(f"Attention weights at step {at}", timeout=SLOW)
    expect(page.locator("#attn-note")).to_have_text("")
    page.close()


# ------------------------------------------------------------------------------------- 6. smaller
WORDS_SPLIT = """(selector) => [...document.querySelectorAll(selector)].flatMap((cell) => {
  const text = cell.firstChild && cell.firstChild.nodeType === 3 ? cell.firstChild : null;
  if (!text) return [];
  const split = [];
  for (const m of text.data.matchAll(/\\S+/g)) {
    const range = document.createRange();
    range.setStart(text, m.index); range.setEnd(text, m.index + m[0].length);
    const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
    if (tops.size > 1) split.push(m[0]);
  }
  return split;
})"""


def test_compare_headers_break_between_words_only(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    open_tab(page, "Your text")
    page.locator("#text textarea").fill("The cat sat on the mat and [MASK:4] at the birds.")
    page.locator("#compare-btn").click()
    expect(page.locator("#compare-table")).to_contain_text("one-step parallel", timeout=SLOW)
    page.wait_for_timeout(300)
    assert page.locator("#compare-table th .header").count() >= 7
    assert page.evaluate(WORDS_SPLIT, "#compare-table th .header") == []
    page.close()


def test_examples_fit_and_every_method_says_what_it_does(page_url, browser):
    from playwright.sync_api import expect

    from app.ui.text_tab import EXAMPLE_LABELS, METHOD_ABOUT
    from model.config import METHODS

    page = open_page(browser, page_url)
    open_tab(page, "Your text")
    page.wait_for_selector("#examples button")
    shown = page.evaluate("""() => [...document.querySelectorAll('#examples button')].map((b) => {
      const r = b.getBoundingClientRect(), box = b.closest('.block').getBoundingClientRect();
      return [b.innerText.trim(), r.left >= box.left - 1 && r.right <= box.right + 1 && r.width > 0];
    })""")
    assert [text for text, _ in shown] == EXAMPLE_LABELS  # whole, in order: no label cut with "..."
    assert all(inside for _, inside in shown), shown
    for spec in METHODS.values():
        page.locator("#method label", has_text=re.compile(rf"^\s*{re.escape(spec.label)}\s*$")).click()
        expect(page.locator("#method-about")).to_have_text(METHOD_ABOUT[spec.label])

    page.close()


MODULE_NAME = re.compile(r"\b(model|app|bench)\.[a-z_]{2,}\b")


def test_no_text_on_the_page_names_a_python_module(page_url, browser):
    page = open_page(browser, page_url)
    text = page.evaluate("() => document.querySelector('gradio-app').innerText")
    for tab in ("Your text", "Compare", "Order lab", "Step details", "Export", "How A3 works"):
        open_tab(page, tab)
        page.wait_for_timeout(300)
        if tab == "Step details":
            for accordion in ("Branch from this step", "Attention weights at this step"):
                page.get_by_text(accordion).first.click()
            page.wait_for_timeout(300)
        text += page.evaluate("() => document.querySelector('gradio-app').innerText")  # the tab on show
    assert sorted({m.group(0) for m in MODULE_NAME.finditer(text)}) == []
    page.close()


def test_best_of_n_says_its_cost_lists_its_candidates_and_puts_any_on_the_stage(page_url, browser):
    """A3 best of N: the cost before the run, then every candidate with its score and calls, the kept one
    marked, and another candidate onto the stage without decoding again."""
    from playwright.sync_api import expect

    from app.session import BEST_OF_N, BEST_OF_N_ABOUT
    from model.rerank import CANDIDATES, planned_calls

    page = open_page(browser, page_url)
    open_tab(page, "Your text")
    # the page's default: its cost is said at once, before anything is typed, and follows a new text
    from app.demo_trace import DEMO_TEXT
    from model.text import parse_blanks

    example_open = sum(p for p in parse_blanks(DEMO_TEXT) if isinstance(p, int))
    expect(page.locator("#best-cost")).to_contain_text(f"{planned_calls(example_open)} model calls", timeout=SLOW)
    page.locator("#text textarea").fill("The cat sat on the mat and [MASK:4] at the birds in the old tree.")
    page.locator("#text textarea").blur()
    expect(page.locator("#best-cost")).to_contain_text(f"{planned_calls(4)} model calls", timeout=SLOW)
    page.locator("#method label", has_text=BEST_OF_N).click()
    expect(page.locator("#method-about")).to_contain_text(BEST_OF_N_ABOUT)
    expect(page.locator("#method-about")).to_contain_text("it reads only No stutter")
    expect(page.locator("#best-cost")).to_contain_text(f"{planned_calls(4)} model calls", timeout=SLOW)
    page.locator("#run-btn").click()
    # the example on the stage is a best-of-N run too: wait for this run's headline (4 tokens), which comes
    # with the switch to the stage, before going back to the table
    page.wait_for_function("() => /best of N: \\d+ model calls for 4 tokens/.test("
                           "document.querySelector('#stage').innerText)", timeout=SLOW)
    open_tab(page, "Your text")
    table = page.locator("#best-table")
    for name, _ in CANDIDATES:
        expect(table).to_contain_text(name, timeout=SLOW)
    assert table.inner_text().count("✓") == 1
    expect(page.locator("#best-note")).to_contain_text(f"{planned_calls(4)} model calls in all")
    kept = re.search(r"kept (.+?), the whole text", page.locator("#best-note").inner_text()).group(1)
    names = [name for name, _ in CANDIDATES]
    other = names[(names.index(kept) + 1) % len(names)]
    page.locator("#best-pick input").click()
    page.get_by_role("option", name=other, exact=True).click()
    page.locator("#best-btn").click()
    page.wait_for_function(f"() => document.querySelector('#stage').innerText.includes({other!r})", timeout=SLOW)
    # the table is of that run's text: an edited text hides it (it read as the new text's candidates)
    open_tab(page, "Your text")
    expect(page.locator("#best-note")).to_be_visible()
    page.locator("#text textarea").fill("A new text, with [MASK:2] in it.")
    expect(page.locator("#best-note")).to_be_hidden(timeout=SLOW)
    page.close()


def test_a_text_edited_while_its_run_decodes_keeps_its_own_chips_and_no_stale_tables(page_url, browser):
    """Run, then edit the text before the run answers: the run's answer (chips and best-of-N table of the text
    it read) must not come back over the edited text; the chips are the new text's."""
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    open_tab(page, "Your text")
    box = page.locator("#text textarea")
    box.fill("The sailor mended his nets by the harbour, and then [MASK:60] in the evening light.")
    box.blur()
    page.locator("#method label", has_text="A3 best of N").click()
    page.locator("#run-btn").click()
    box.fill("A new text about the moon and the stars.")  # typed while the run decodes
    page.wait_for_function("() => /best of N: \\d+ model calls for 60 tokens/.test("
                           "document.querySelector('#stage').innerText)", timeout=SLOW)
    open_tab(page, "Your text")
    expect(page.locator("#picker")).to_contain_text("moon", timeout=SLOW)
    page.wait_for_timeout(500)
    assert "sailor" not in page.locator("#picker").inner_text()
    expect(page.locator("#best-note")).to_be_hidden()
    assert box.input_value() == "A new text about the moon and the stars."
    page.close()

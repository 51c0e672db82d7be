"""Exports for slides (app.slides): the GIF has one frame per step at slide size; the HTML player is
self-contained, and opened from file:// in headless Chromium with the network cut off it steps with the
keyboard, shows the trace's tokens at every step, and draws mask cells equal to two_stream_masks."""

import json
import re

import pytest
import torch
from PIL import Image, ImageDraw

from app.figures import character_labels, display_label
from app.session import Explorer, Request
from app.slides import GIF_PANELS, GIF_SIZE, _Frames, export_gif, export_player, frame_cells, gif_frames, text_places
from app.trace_view import OPEN_LABEL, view_of_dict
from model.decoding import DecodeTrace, collect, run_decoder
from model.masks import two_stream_masks
from model.plans import make_plan
from model.text import encode_masked_text, token_strings

TEXT = "The old fisherman rowed his [MASK:5] across the quiet lake at [MASK:3]."
# mode -> decoder arguments; "plan" uses random groups of 2, so the order is neither AR nor contiguous
MODES = {"plan": {}, "dynamic": {"k": 2}, "official_dynamic": {"k": 2}, "ar_baseline": {}}


def _decode(loaded, mode: str) -> DecodeTrace:
    masked = encode_masked_text(loaded.tokenizer, TEXT, start_token_id=loaded.start_token_id)
    order, size = ("random", 2) if mode == "plan" else ("left_to_right", 1)
    plan = make_plan(masked.token_ids, given=masked.given, order=order, group_size=size,
                     generator=torch.Generator().manual_seed(0))
    # ar_baseline runs the tiny model itself as its "base": the export only reads the trace
    return collect(run_decoder(mode, loaded.model, plan, seed=0, **MODES[mode]))


@pytest.fixture(scope="module")
def traces(tiny_loaded):
    """mode -> (DecodeTrace, its dict with token strings)."""
    out = {}
    for mode in MODES:
        trace = _decode(tiny_loaded, mode)
        out[mode] = trace, trace.to_dict(tiny_loaded.tokenizer)
    return out


def expected_tokens(loaded, trace: DecodeTrace, step: int) -> dict[int, str]:
    """first position of each piece of text -> the string the player must show after `step`: the token
    (a character split over several tokens: the character, once), or OPEN_LABEL ("?") where still open."""
    strings = token_strings(loaded.tokenizer, trace.final_ids, start_token_id=loaded.start_token_id)
    whole, runs = character_labels(strings)
    tokens = trace.tokens_at(step)
    out = {p: OPEN_LABEL if t is None else display_label(whole[p]) for p, t in enumerate(tokens)}
    for start, end in runs:
        out[start] = OPEN_LABEL if any(tokens[p] is None for p in range(start, end)) else out[start]
        for p in range(start + 1, end):
            del out[p]
    return out


# --------------------------------------------------------------------------------------------------
# GIF


@pytest.mark.parametrize("mode", list(MODES))
def test_gif_has_one_frame_per_step_at_slide_size(traces, mode, tmp_path):
    trace, data = traces[mode]
    path = export_gif(data, tmp_path / f"{mode}.gif")
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.size == GIF_SIZE == (1280, 720)
        assert gif.n_frames == len(trace.steps) > 1
        assert gif.info.get("loop") == 0  # loops on a slide
        durations = []
        for k in range(gif.n_frames):
            gif.seek(k)
            durations.append(gif.info["duration"])
    assert all(d > 0 for d in durations) and durations[-1] >= durations[0]  # the last frame holds longer


def test_gif_frames_tint_each_step_in_the_page_palette(traces):
    from app.figures import step_colors

    trace, data = traces["plan"]
    frames = gif_frames(data)
    colours = {tuple(round(float(c)) for c in s[4:-1].split(",")) for s in step_colors(len(trace.steps))}
    above_legend = (0, 0, GIF_SIZE[0], GIF_SIZE[1] - 50)  # the legend's colour ramp shows every step
    first, last = ({px for _, px in f.crop(above_legend).getcolors(1 << 20)} for f in (frames[0], frames[-1]))
    # the last frame shows every step's colour, the first only the first step's
    assert colours <= last
    assert len(colours & first) < len(colours)
    assert frames[0].tobytes() != frames[1].tobytes()


def test_gif_refuses_an_empty_trace(traces, tmp_path):
    _, data = traces["plan"]
    with pytest.raises(ValueError, match="no steps"):
        export_gif({**data, "steps": []}, tmp_path / "empty.gif")


# --------------------------------------------------------------------------------------------------
# HTML player: static checks


def test_player_is_one_self_contained_file(traces, tmp_path):
    _, data = traces["official_dynamic"]
    page = export_player(data, tmp_path / "player.html").read_text()
    assert "{{" not in page  # every placeholder filled
    assert not re.search(r"<(script|img|iframe)[^>]*\bsrc=|<link\b|@import|https?://", page)
    assert "window.A3Player" in page and "grid-template-areas" in page  # player.js and player.css inlined
    assert "const A3Core" in page  # the stage's per-step rules (stage_core.js), not a copy of them
    # a token can never close the data script early
    tricky = {**data, "final_tokens": [*data["final_tokens"][:-1], "</script><b>"]}
    page = export_player(tricky, tmp_path / "tricky.html").read_text()
    assert page.count("</script>") == 2 and "<b>" not in page


# --------------------------------------------------------------------------------------------------
# HTML player in a real browser, from file://, offline


READ_CELLS = """(id) => {
  // the colour drawn at the centre of every mask cell, in display order: 1 = the "may attend" blue
  const c = document.getElementById(id), d = c.dataset, ctx = c.getContext("2d");
  const r = c.width / parseFloat(c.style.width), n = +d.n, cell = +d.cell;
  const px = ctx.getImageData(0, 0, c.width, c.height).data, out = [];
  for (let a = 0; a < n; a++) for (let b = 0; b < n; b++) {
    const x = Math.floor((+d.x0 + (b + 0.5) * cell) * r), y = Math.floor((+d.y0 + (a + 0.5) * cell) * r);
    const k = 4 * (y * c.width + x);
    out.push(px[k + 2] - px[k] > 60 ? 1 : 0);
  }
  return {cells: out, order: d.order.split(",").map(Number), step: +d.step};
}"""


def shown_tokens(page) -> dict[int, str]:
    """Each position's text as the player shows it: a decided token's leading space sits just before its box."""
    return page.eval_on_selector_all("#sentence [data-pos]", """els => els.map(e => [+e.dataset.pos,
        (e.previousSibling && e.previousSibling.nodeType === 3 ? e.previousSibling.textContent : '')
        + e.textContent])""")


@pytest.mark.browser
@pytest.mark.parametrize("mode", list(MODES))
def test_player_offline_steps_with_keys_like_the_trace(traces, tiny_loaded, browser, mode, tmp_path):
    trace, data = traces[mode]
    path = export_player(data, tmp_path / f"{mode}.html")
    context = browser.new_context(viewport={"width": 1366, "height": 768}, offline=True)
    attempted, errors = [], []

    def block(route):  # the network is off: anything that is not the file itself is aborted and noted
        if not route.request.url.startswith("file://"):
            attempted.append(route.request.url)
            return route.abort()
        return route.continue_()

    context.route("**/*", block)
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector("#sentence [data-pos]")
    n_steps = len(trace.steps)
    hidden = {0} if data["final_tokens"][0] == "⟨s⟩" else set()

    def check(step: int) -> None:
        assert page.evaluate("window.A3Player.step") == step
        assert page.get_attribute("#player", "data-step") == str(step)
        want = {p: s for p, s in expected_tokens(tiny_loaded, trace, step).items() if p not in hidden}
        assert dict(shown_tokens(page)) == want, f"tokens differ at step {step}"
        content, query = two_stream_masks(torch.tensor(trace.group_ids_at(step)))
        for canvas, mask in (("mask-content", content), ("mask-query", query)):
            drawn = page.evaluate(READ_CELLS, canvas)
            assert drawn["step"] == step and drawn["order"] == list(range(trace.plan.length))
            assert drawn["cells"] == mask.flatten().int().tolist(), f"{canvas} differs at step {step}"
        grid_open = page.locator("#grid .cell.open").count()
        assert grid_open == sum(1 for t in trace.tokens_at(step) if t is None)

    check(-1)  # opens before decoding: only the given tokens
    for step in range(n_steps):
        page.keyboard.press("ArrowRight")
        check(step)
    page.keyboard.press("ArrowRight")  # past the end it stays on the last step
    check(n_steps - 1)
    page.keyboard.press("ArrowLeft")
    check(n_steps - 2)
    page.keyboard.press("Home")
    check(-1)
    page.keyboard.press("End")
    check(n_steps - 1)
    assert "Step" in page.text_content("#summary") and f"/{n_steps}" in page.text_content("#summary")

    # the slider scrubs; the DAG draws the page's edges
    page.locator("#slider").fill("0")
    check(0)
    # the step's narration, as the stage has it; "narrate" switches it off
    view = view_of_dict(data)
    assert page.text_content("#narration") == view.steps[0].narration
    assert page.evaluate("() => { const n = document.querySelector('#narration');"
                         " return n.scrollHeight <= n.clientHeight + 1; }")  # nothing cut
    page.locator("#narrate").uncheck()
    assert not page.locator("#narration").is_visible()
    page.locator("#narrate").check()
    assert page.locator("#narration").is_visible()
    assert int(page.get_attribute("#dag", "data-edges")) == len(data_edges(trace))
    assert not attempted and not errors
    context.close()


def data_edges(trace: DecodeTrace) -> list:
    from app.figures import dependency_graph

    return list(dependency_graph(trace).edges())


@pytest.mark.browser
def test_player_plays_by_itself_and_space_pauses(traces, browser, tmp_path):
    from playwright.sync_api import expect

    trace, data = traces["plan"]
    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    page.goto(export_player(data, tmp_path / "player.html").as_uri())
    page.select_option("#speed", "0.25")
    page.locator("#summary").click()
    page.keyboard.press(" ")
    expect(page.locator("#player")).to_have_attribute("data-step", str(len(trace.steps) - 1), timeout=10_000)
    expect(page.locator("#play")).to_have_attribute("aria-label", "play")  # stopped at the end
    page.keyboard.press(" ")  # from the end, play starts over
    expect(page.locator("#player")).not_to_have_attribute("data-step", str(len(trace.steps) - 1))
    page.keyboard.press(" ")
    paused = page.get_attribute("#player", "data-step")
    page.wait_for_timeout(600)
    assert page.get_attribute("#player", "data-step") == paused
    # one screen: nothing scrolls at 1920x1080
    assert page.evaluate("document.documentElement.scrollHeight <= innerHeight")
    # a button reached with Tab: Space presses it (one step back), it does not play
    page.keyboard.press("End")
    page.locator("#first").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "prev"
    page.keyboard.press(" ")
    expect(page.locator("#player")).to_have_attribute("data-step", str(len(trace.steps) - 2))
    page.wait_for_timeout(400)
    expect(page.locator("#play")).to_have_attribute("aria-label", "play")
    page.close()


# --------------------------------------------------------------------------------------------------
# text as text: whole characters, visible whitespace, no gaps inside words, wrapping


@pytest.fixture(scope="module")
def unicode_data(tiny_loaded):
    """The export of a run with "Zoë 🧩 ate 寿司" given and " 🧩 寿司", line breaks and a space decoded
    (tests/test_trace_view.unicode_result)."""
    from test_trace_view import unicode_result

    explorer = Explorer(tiny_loaded)
    return json.loads(explorer.trace_json(unicode_result(explorer)))


def gif_text(frames: _Frames, step: int) -> str:
    """The text a GIF frame writes, piece by piece as it lays them out."""
    return "".join(chip.label for chip in frames.view.sentence(step))


def test_gif_text_shows_whole_characters_and_visible_whitespace(unicode_data):
    frames = _Frames(view_of_dict(unicode_data), GIF_SIZE)
    last = len(frames.view.steps) - 1
    assert gif_text(frames, last) == "Zoë 🧩 ate 寿司 🧩 寿司↵↵↵· done."
    assert gif_text(frames, -1).startswith("Zoë 🧩 ate 寿司?")  # what is given shows from the start; "?" is open
    for step in range(-1, last + 1):
        text = gif_text(frames, step)
        assert "\ufffd" not in text and "<0x" not in text
        # a split character shows only once all its tokens are decided; until then it is one open box
        chips = frames.view.sentence(step)
        for chip in chips:
            if len(chip.positions) > 1:
                known = all(frames.view.given[p] or 0 <= frames.view.decided[p] <= step for p in chip.positions)
                assert (chip.label != OPEN_LABEL) == known
    # the grid labels each split character once, across its cells
    grid = {r.text for r in frames.view.run_labels(last)}
    assert grid == {"🧩", "寿", "司"}
    assert [c.text for c in frame_cells(frames.view, last) if c.p in range(21, 24)] == ["↵", "↵↵", "·"]
    frames.draw(last)  # and it draws


@pytest.fixture(scope="module")
def bytes_data(tiny_loaded):
    """The export of the browser walk's run whose blank the model filled with byte tokens EF BC, which make
    no character (tests/test_trace_view.byte_result)."""
    from test_trace_view import byte_result

    explorer = Explorer(tiny_loaded)
    return json.loads(explorer.trace_json(byte_result(explorer)))


def test_gif_shows_bytes_that_make_no_character_as_their_values(bytes_data):
    """The GIF's text, cells and captions: "‹EF BC›" for each byte token, never "�"; where the step's
    tokens sit reads "at position 29", not a count."""
    from test_trace_view import BYTES_GIVEN

    frames = _Frames(view_of_dict(bytes_data, panels=GIF_PANELS), GIF_SIZE)
    last = len(frames.view.steps) - 1
    assert gif_text(frames, last) == f"{BYTES_GIVEN}{'‹EF BC›' * 6} and then the Zürich señor smiled."
    blanks = [p for p, g in enumerate(bytes_data["plan"]["given"]) if not g]
    assert [c.text for c in frame_cells(frames.view, last) if c.p in blanks] == ["‹EFBC›"] * 6
    for step in range(-1, last + 1):
        caption = frames.view.caption(step)
        assert "\ufffd" not in gif_text(frames, step) + caption.summary + caption.narration
        if step >= 0:
            where = frames.view.steps[step].positions
            assert f" · at position {where[0]} · " in caption.summary and "committed positions" not in caption.summary
            assert "the bytes ‹EF BC› that make no character" in frames.narration_lines[step][0] + " " + \
                " ".join(frames.narration_lines[step][1:])
    frames.draw(last)  # and it draws


def test_gif_text_joins_tokens_as_the_tokenizer_does(tiny_loaded, tmp_path):
    """"M" + "ia" reads "Mia" and "porch" + "." reads "porch.": pieces of a word touch, a given piece
    takes exactly its text's width, and a line breaks only before a space."""
    explorer = Explorer(tiny_loaded)
    text = "Mia found an old key under the porch. [MASK:6] Inside the box was a letter from her grandmother."
    data = json.loads(explorer.trace_json(explorer.decode(Request(text=text, method="A3 plan"))))
    frames = _Frames(view_of_dict(data), GIF_SIZE)
    places, _ = frames.text_layout
    chips = frames.view.sentence(-1)
    labels = [frames.view.labels[c.p] for c in chips]
    assert labels[:2] == ["M", "ia"] and "".join(labels).startswith("Mia found an old key under the porch.")
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for (i, x, y, w), (j, nx, ny, _) in zip(places, places[1:], strict=False):
        if chips[i].state == "given":
            assert w == pytest.approx(probe.textlength(labels[i], font=frames.text_font))  # no padding
        if ny == y:
            assert nx == pytest.approx(x + w)  # side by side, no gap
        else:
            assert labels[j][:1] == " " or labels[i][-1:] in " ·↵", "a line breaks only between words"
    assert text_places(["ab", "cd", " ef"], [10, 10, 10], (0, 0, 25), 5) == [(0, 0, 0, 10), (1, 10, 0, 10),
                                                                             (2, 0, 5, 10)]
    # a line break stays a mark on its line: one layout for every frame never tells where a break is to come
    assert text_places(["ab↵", "cd", " ef"], [10, 10, 10], (0, 0, 100), 5) == [(0, 0, 0, 10), (1, 10, 0, 10),
                                                                              (2, 20, 0, 10)]


@pytest.mark.browser
def test_player_shows_whole_characters_and_visible_whitespace(unicode_data, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(export_player(unicode_data, tmp_path / "player.html").as_uri())
    page.keyboard.press("End")
    text = page.text_content("#sentence")
    assert text == "Zoë 🧩 ate 寿司 🧩 寿司↵↵↵· done."
    tops = page.evaluate("() => [21, 22, 23].map((p) => "
                         "document.querySelector(`#sentence [data-pos='${p}']`).getBoundingClientRect().top)")
    assert tops[0] < tops[1] < tops[2]  # a token holding a line break ends its line, as on the stage
    assert page.eval_on_selector_all("#grid .run", "els => els.map(e => e.textContent)") == ["🧩", "寿", "司", "🧩",
                                                                                          "寿", "司"]
    assert "\ufffd" not in page.text_content("#player")
    ticks = json.loads(page.get_attribute("#mask-query", "data-ticks"))
    assert ticks[4:7] == ["4:🧩", "5:🧩", "6:🧩"] and ticks[21:24] == ["21:↵", "22:↵↵", "23:·"]
    page.keyboard.press("Home")  # before decoding, nothing open is named
    ticks = json.loads(page.get_attribute("#mask-query", "data-ticks"))
    assert all(t == f"{p}:?" for p, t in enumerate(ticks) if not unicode_data["plan"]["given"][p])
    page.close()


@pytest.mark.browser
def test_player_shows_bytes_that_make_no_character_and_the_stages_words(bytes_data, browser, tmp_path):
    """The player's text, grid and ticks show the byte tokens as "‹EF BC›" (the walk saw "�"); it words its
    DAG as the stage does ("what each step saw", "chain only"); an open slot reads "?", not a tick box."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(export_player(bytes_data, tmp_path / "player.html").as_uri())
    page.keyboard.press("Home")
    chip = page.locator("#sentence .tok.open").first
    assert chip.text_content() == "?" and chip.evaluate("e => getComputedStyle(e).borderTopStyle") == "dashed"
    assert "▢" not in page.text_content("#player")
    page.keyboard.press("End")
    assert page.text_content("#sentence").count("‹EF BC›") == 6
    assert "\ufffd" not in page.text_content("#player")
    cells = page.eval_on_selector_all("#grid .cell", "els => els.map(e => e.textContent)")
    assert cells.count("‹EFBC›") == 6  # a cell writes the bytes close
    assert json.loads(page.get_attribute("#mask-query", "data-ticks")).count("25:‹EFBC›") == 1
    assert " · at position " in page.text_content("#summary")
    dag = page.text_content(".dag-panel h2")
    assert "what each step saw" in dag and "chain only" in dag
    assert "direct only" not in dag and "conditioned" not in dag
    page.close()


LONG = ("Mia found an old key under the porch. [MASK:6] Inside the box was a letter from her grandmother. She read "
        "it twice, folded it along its old creases and put it back under the loose board by the kitchen door.")


@pytest.mark.browser
def test_player_text_wraps_at_1366(tiny_loaded, browser, tmp_path):
    """A long text wraps inside its box at every step (it used to run on as one line past the box)."""
    explorer = Explorer(tiny_loaded)
    data = json.loads(explorer.trace_json(explorer.decode(Request(text=LONG, method="A3 plan"))))
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(export_player(data, tmp_path / "player.html").as_uri())
    for key in ("Home", "End"):
        page.keyboard.press(key)
        box = page.evaluate("""() => { const s = document.getElementById('sentence');
            return {scroll: s.scrollWidth, client: s.clientWidth, lines: new Set([...s.children].map(
              (c) => Math.round(c.getBoundingClientRect().bottom))).size}; }""")
        assert box["scroll"] <= box["client"] + 1 and box["lines"] >= 2, (key, box)
    page.close()


def test_gif_frames_narrate_each_step_in_two_lines_at_most(traces, unicode_data):
    """Each frame carries its step's sentence, pointing only at what a frame draws (the masks: a frame has
    no DAG), in at most two lines that fit the frame."""
    for data in (*(d for _, d in traces.values()), unicode_data):
        frames = _Frames(view_of_dict(data, panels=GIF_PANELS), GIF_SIZE)
        width = GIF_SIZE[0] - 2 * frames.margin
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        for step, lines in enumerate(frames.narration_lines):
            sentence = frames.view.steps[step].narration
            assert " ".join(lines) == sentence and "DAG" not in sentence and 1 <= len(lines) <= 2
            assert all(probe.textlength(line, font=frames.narration_font) <= width for line in lines)
        assert frames.text_box[1] >= round(84 * frames.scale) + max(map(len, frames.narration_lines)) * \
            frames.narration_h


@pytest.mark.browser
def test_player_opens_on_the_step_it_was_exported_at(traces, browser, tmp_path):
    """The Export tab passes the step on the stage; the player opens there, paused (and before decoding at -1)."""
    trace, data = traces["plan"]
    middle = len(trace.steps) // 2
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    for start, counter in ((middle, f"step {middle + 1} / {len(trace.steps)}"), (-1, f"start / {len(trace.steps)}")):
        page.goto(export_player(data, tmp_path / f"player{start}.html", start).as_uri())
        page.wait_for_selector("#player[data-step]", state="attached")
        assert page.get_attribute("#player", "data-step") == str(start)
        assert page.locator("#counter").inner_text() == counter
        assert page.locator("#play").get_attribute("aria-label") == "play"  # paused
    page.close()

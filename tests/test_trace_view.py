"""The trace view (app.trace_view): one description of a trace that the stage, the GIF and the player draw.
A live result and its export give the same view; old trace dicts still load; the title names the method
once; the per-step cells follow the trace; the stage's payload is the view plus the stage's own keys."""

import json
import re

import pytest

from app import figures
from app.session import Explorer, Request
from app.stage import stage_payload
from app.trace_view import OPEN_LABEL, method_of, title_for, view_of_dict, view_of_result

TEXT = "Mia found an old key.\nShe [MASK:4] the box and [MASK:2] a letter."
UNICODE_GIVEN = "Zoë 🧩 ate 寿司"  # byte-level BPE splits 🧩 over 3 tokens, 寿 over 3 and 司 over 2


def unicode_result(explorer: Explorer, method: str = "A3 plan", **settings):
    """A run whose text holds characters split over several tokens, given and decoded, and whitespace
    tokens: "Zoë 🧩 ate 寿司" given, then a blank that a random order fills, one token per step, with
    " 🧩 寿司", a line break, two line breaks and a space (the decoded tokens are set after decoding, so
    a split character's tokens are decided at different steps, some before the others)."""
    tok = explorer.loaded.tokenizer
    fill = tok(" 🧩 寿司", add_special_tokens=False).input_ids + [198, 1116, 216]  # "\n", "\n\n", " "
    text = f"{UNICODE_GIVEN}[MASK:{len(fill)}] done."
    result = explorer.decode(Request(text=text, method=method, order="random", seed=1, **settings))
    trace = result.trace
    fills = dict(zip((p for p, g in enumerate(trace.given) if not g), fill, strict=True))
    for s in trace.steps:
        s.tokens = [fills[p] for p in s.positions]
    trace.final_ids = [fills.get(p, t) for p, t in enumerate(trace.final_ids)]
    return explorer.result(trace, method)


BYTES_GIVEN = "Café déjà vu — naïve “quotes” 日本語 😀"  # accents, quotes, a dash, split characters, an emoji
BYTES_TOKEN = "ï¼"  # bytes EF BC: the start of a full-width character, never completed


def byte_result(explorer: Explorer, method: str = "A3 plan", n: int = 6):
    """The browser walk's text with its blank filled as the default model filled it: each of the `n` tokens
    the byte token "ï¼" (EF BC), which makes no character (set after decoding, as in `unicode_result`)."""
    tok = explorer.loaded.tokenizer
    byte = tok.convert_tokens_to_ids(BYTES_TOKEN)
    result = explorer.decode(Request(text=f"{BYTES_GIVEN} [MASK:{n}] and then the Zürich señor smiled.",
                                     method=method, order="random", seed=1))
    trace = result.trace
    for s in trace.steps:
        s.tokens = [byte] * len(s.positions)
    trace.final_ids = [t if g else byte for t, g in zip(trace.final_ids, trace.given, strict=True)]
    return explorer.result(trace, method)
METHODS = ("A3 plan", "A3 dynamic", "official dynamic", "diffusion", "one-step parallel", "AR baseline")


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    return Explorer(tiny_loaded)


@pytest.fixture(scope="module")
def runs(explorer):
    """method -> (Result, its export as the page writes it: trace dict + method + model)."""
    out = {}
    for method in METHODS:
        result = explorer.decode(Request(text=TEXT, method=method, k=2))
        out[method] = result, json.loads(explorer.trace_json(result))
    return out


@pytest.mark.parametrize("method", METHODS)
def test_a_result_and_its_export_give_the_same_view(runs, method):
    result, data = runs[method]
    live, exported = view_of_result(result).to_dict(), view_of_dict(data).to_dict()
    assert live == exported
    assert json.loads(json.dumps(live)) == live  # plain JSON values only
    assert live["method"] == method and live["final_text"] == result.text


def test_the_view_reads_the_trace(runs):
    result, _ = runs["official dynamic"]
    view, trace = view_of_result(result), result.trace
    assert view.length == trace.plan.length and view.decided == trace.decided_step()
    assert view.columns == figures.grid_columns(trace.plan.length)
    whole, runs = figures.character_labels(result.labels)  # a split character's tokens read the character
    assert view.labels == [figures.display_label(t) for t in whole] and view.runs == [list(r) for r in runs]
    assert "↵" in "".join(view.labels) and not any("\n" in t for t in view.labels)  # the line break shows
    assert view.short == [figures.short_label(t, figures.CELL_LABEL_CHARS) for t in whole]  # the stage fits its type
    assert view.palette.steps == figures.step_colors(result.n_steps)
    assert view.palette.ink == [figures.ink_on(c) for c in view.palette.steps]
    assert view.hide_start and view.labels[0] == "⟨s⟩"
    for t, s in enumerate(trace.steps):
        assert view.steps[t].positions == s.positions and view.steps[t].tokens == [view.labels[p] for p in s.positions]
        assert view.groups_at(t) == trace.group_ids_at(t)  # official dynamic: a grouping per step
        assert view.steps[t].verdict.startswith("No leak")
    assert view.dag.nodes == figures.node_names(trace) and view.dag.offset == 1
    assert len(view.dag.edges) == figures.dependency_graph(trace).number_of_edges()


def test_cells_at_each_step_follow_the_trace(runs):
    result, _ = runs["A3 plan"]
    view, trace = view_of_result(result), result.trace
    for step in range(-1, result.n_steps):
        cells, tokens = view.cells(step), trace.tokens_at(step)
        assert [c.state == "open" for c in cells] == [t is None for t in tokens]
        assert [c.p for c in cells if c.current] == (sorted(trace.steps[step].positions) if step >= 0 else [])
        for c in cells:
            if c.state == "open":
                assert (c.text, c.label, c.color) == ("?", OPEN_LABEL, view.palette.open)
            else:
                whole = c.run >= 0 and all(view.known(step)[slice(*view.runs[c.run])])
                assert c.label == view.labels[c.p]
                assert c.text == (view.short[c.p] if c.run < 0 else "" if whole else "…")
            if c.state == "decided":
                assert c.color == view.palette.steps[c.decided_at] and c.ink == view.palette.ink[c.decided_at]
        chips = view.sentence(step)  # the start token is not text; a split character is one chip
        assert [p for chip in chips for p in chip.positions] == list(range(1, view.length))


def test_an_old_trace_dict_still_loads(runs):
    """A dict written before exports named the method, the model and the token strings (to_dict without
    a tokenizer): positions read "#id" and the method is the page's name for the decoder's mode."""
    _, data = runs["A3 dynamic"]
    newer = ("method", "model", "config", "final_tokens", "final_text", "decided_step")
    old = {k: v for k, v in data.items() if k not in newer}
    old["settings"] = {k: v for k, v in old.get("settings", {}).items() if k != "method"}
    view = view_of_dict(old)
    assert view.labels == [f"#{t}" for t in data["final_ids"]] and not view.hide_start
    assert view.method == "A3 dynamic" and view.title == "A3 dynamic (confidence, k=2)"
    assert [s.positions for s in view.steps] == [s["positions"] for s in data["steps"]]
    # a generation config, when a dict carries one, names the method
    assert method_of({**old, "config": {"method": "official_dynamic"}}) == "official dynamic"
    assert method_of({**data, "config": {"method": "other"}}) == "A3 dynamic"  # the export's own name first


@pytest.mark.parametrize("method", METHODS)
def test_the_title_names_the_method_once(runs, method):
    title = view_of_result(runs[method][0]).title
    assert title.lower().count(method.lower()) == 1, title
    word = method.split()[-1].lower()  # "dynamic", "plan", "parallel", "baseline", "diffusion"
    assert title.lower().count(word) == 1, title
    assert title.count("A3") <= 1 and "·  " not in title


def test_title_for_keeps_what_the_plan_name_adds():
    assert title_for("A3 dynamic", "dynamic", "dynamic (confidence, k=1)") == "A3 dynamic (confidence, k=1)"
    assert title_for("A3 plan", "plan", "span_left_to_right") == "A3 plan · span left to right"
    assert title_for("diffusion", "diffusion", "masked diffusion (entropy, k=3)") == "masked diffusion (entropy, k=3)"
    assert title_for("", "plan", "custom groups") == "custom groups"
    assert title_for("A3 plan", "plan", "") == "A3 plan"


def test_stage_payload_is_the_view_and_the_stage_keys(runs):
    result, _ = runs["A3 plan"]
    payload, view = stage_payload(result, speed=0.8), view_of_result(result).to_dict()
    assert {k: payload[k] for k in view} == view
    assert set(payload) - set(view) == {"id", "empty", "model", "text", "headline", "autoplay", "loop", "speed",
                                        "note"}
    assert payload["speed"] == 0.8 and payload["text"] == result.text and not payload["empty"]
    assert stage_payload(result)["speed"] is None  # unless asked, a new payload keeps the speed the user set


# --------------------------------------------------------------------------------------------------
# whole characters beyond the stage: the Step details text and candidates, the chips


UNICODE_SHOWN = "Zoë 🧩 ate 寿司 🧩 寿司↵↵↵· done."  # unicode_result's text at its last step


def test_the_details_text_reads_whole_characters_as_the_stage_does(explorer):
    import html

    from app.render import sentence_html

    result = unicode_result(explorer)
    view = view_of_result(result)
    for step in range(-1, result.n_steps):
        shown = sentence_html(result, step)
        assert "&lt;0x" not in shown and "\ufffd" not in shown
        pieces = re.findall(r'class="tok ([a-z ]+)" data-positions="([\d,]+)"[^>]*>([^<]*)</span>', shown)
        chips = view.sentence(step)  # the stage's text, piece for piece
        assert [(state, positions, html.unescape(text)) for state, positions, text in pieces] == [
            (c.state + (" current" if c.current else ""), ",".join(map(str, c.positions)), c.label) for c in chips]
    assert html.unescape(re.sub(r"<[^>]+>", "", sentence_html(result, result.n_steps - 1))) == UNICODE_SHOWN


def test_the_chips_read_whole_characters(explorer):
    from app.picker import TokenPicker, chip_labels

    value = explorer.picker_from_text(UNICODE_GIVEN + " [MASK:2]\nend")
    assert any("<0x" in t for t in value["tokens"])  # byte-level BPE splits 🧩, 寿 and 司
    labels = chip_labels(value["tokens"])
    assert len(labels) == len(value["tokens"])
    assert "".join(label or "" for label in labels).startswith("⟨s⟩" + UNICODE_GIVEN)
    assert not any("<0x" in (label or "") or "\ufffd" in (label or "") for label in labels)
    assert labels.count(None) == 5 and "↵" in labels  # 🧩 and 寿 hold 3 tokens each, 司 2; the line break shows
    assert TokenPicker().postprocess(value) == {**value, "labels": labels}  # what the browser gets
    sent_back = {**value, "tokens": ["\ud800", *value["tokens"][1:]]}  # a browser's value can hold anything
    assert "labels" not in TokenPicker().postprocess(sent_back)  # its chips then show their tokens as they are


def test_the_candidates_read_whole_characters(explorer):
    from app.figures import CHARACTER_PIECE, candidate_rows, token_in_place

    result = unicode_result(explorer)
    runs = [(start, end) for start, end in figures.character_labels(result.labels)[1]]
    decided = result.trace.decided_step()
    for step in range(result.n_steps):
        _, rows = candidate_rows(result.trace, step, result.labels, result.token_text)
        assert rows and not any("<0x" in str(cell) or "\ufffd" in str(cell) for row in rows for cell in row)
        for row in rows:
            if row[1] != "committed now":
                continue
            p = row[0]
            start, end = next(((s, e) for s, e in runs if s <= p < e), (p, p + 1))
            if end - start > 1:  # one token of a split character: the character once all are known
                which = f"token {p - start + 1} of {end - start}"
                whole = all(0 <= decided[q] <= step or result.trace.given[q] for q in range(start, end))
                assert row[2] == (f"{view_of_result(result).labels[p]} ({which})" if whole
                                  else f"{which} of a character"), (step, row)
    # a byte token reads the character it makes with the rest of its character's tokens
    labels = ["a", " <0xF0><0x9F>", "<0xA7>", "<0xA9>"]
    assert token_in_place(labels, 2, "<0xA7>", (1, 4)) == " 🧩"
    assert token_in_place(labels, 2, "<0x41>", (1, 4)) == CHARACTER_PIECE  # no character
    assert token_in_place(labels, 2, "<0xA7>", (1, 4), known=[True, True, True, False]) == CHARACTER_PIECE
    assert token_in_place(labels, 0, "<0xE2><0x80><0x94>") == "—" and token_in_place(labels, 0, " cat") == " cat"


# --------------------------------------------------------------------------------------------------
# bytes that make no character: shown as their values, "‹EF BC›", never "�"


def test_bytes_that_make_no_character_read_as_their_values_in_every_label(explorer):
    """The walk's fill of byte tokens (EF BC each): the cells, the chips and their hovers (the view's labels),
    the mask ticks and the narration show "‹EF BC›"; the given non-ASCII text reads as it always did."""
    result = byte_result(explorer)
    view, trace = view_of_result(result), result.trace
    blanks = [p for p, g in enumerate(trace.given) if not g]
    assert len(blanks) == 6 and all(view.labels[p] == "‹EF BC›" and view.short[p] == "‹EFBC›" for p in blanks)
    last = result.n_steps - 1
    assert [c.text for c in view.cells(last) if c.p in blanks] == ["‹EFBC›"] * 6  # close, to fit a cell
    chips = view.sentence(last)
    assert [c.label for c in chips if c.p in blanks] == ["‹EF BC›"] * 6
    assert "".join(c.label for c in chips).startswith(BYTES_GIVEN + "‹EF BC›")  # given text whole, as before
    assert all(s.tokens == ["‹EF BC›"] * len(s.positions) for s in view.steps)
    assert view.tick_texts(last)[blanks[0]:blanks[-1] + 1] == ["‹EFBC›"] * 6
    narrated = [s.narration for s in view.steps]
    assert all("the bytes ‹EF BC› that make no character" in n for n in narrated), narrated
    # the export: final_text is the tokenizer's decode (as the API's filled text); final_tokens hold
    # every token exactly, and the view's shown_text is the text as the views show it
    data = json.loads(explorer.trace_json(result))
    assert data["final_text"] == result.text and "\ufffd" in data["final_text"]
    assert [data["final_tokens"][p] for p in blanks] == ["<0xEF><0xBC>"] * 6
    exported = view_of_dict(data)
    assert exported.shown_text == view.shown_text == f"{BYTES_GIVEN}{'‹EF BC›' * 6} and then the Zürich señor smiled."
    shown = json.dumps({k: v for k, v in exported.to_dict().items() if k != "final_text"}, ensure_ascii=False)
    assert "\ufffd" not in shown and "<0x" not in shown  # the player embeds this: no "�" left in it
    # the figures read the same labels: grid cells and their hovers, mask ticks, the DAG's hover
    grid = figures.grid_figure(trace, last, result.labels)
    cells = next(t for t in grid.data if t.name == "cells")
    assert [cells.text[p] for p in blanks] == ["‹EFBC›"] * 6
    assert all("token: ‹EF BC›" in cells.hovertext[p] for p in blanks)
    dag = figures.dag_figure(trace, last, result.labels)
    assert "‹EF BC›" in next(t for t in dag.data if t.name == "this step").hovertext[0]
    assert not any("\ufffd" in str(x) for fig in (grid, dag, figures.mask_figure(trace, last, result.labels))
                   for t in fig.data for x in (t.text, t.hovertext, getattr(t, "x", None)) if x is not None)


def test_split_characters_and_given_non_ascii_text_read_as_before(explorer):
    """Not a regression: a character split over tokens still reads whole, once (no bytes shown)."""
    view = view_of_result(unicode_result(explorer))
    assert not any(figures.makes_no_character(label) for label in view.labels)
    assert view.shown_text.startswith(UNICODE_GIVEN) and "‹" not in view.shown_text


def test_a_token_the_no_repeat_rule_chose_is_narrated_as_not_the_first_choice(explorer):
    """Greedy with the no-repeat rule on, a step says "not its first choice" exactly where the decoder recorded
    that the rule banned the most likely token (`rule_banned`); a token picked for a branch, or a sampled
    step, never says it."""
    import copy
    import dataclasses

    from app.branching import tree_of

    result = explorer.decode(Request(text=TEXT, method="A3 plan", no_repeat=3))
    assert result.trace.config.sampler.no_repeat == 3
    for view_step, record in zip(view_of_result(result).steps, result.trace.steps, strict=True):
        assert ("not its first choice" in view_step.narration) == bool(record.rule_banned)
    trace = copy.deepcopy(result.trace)
    trace.steps[2].rule_banned = list(trace.steps[2].positions)  # as if the rule had acted there
    edited = dataclasses.replace(result, trace=trace)
    assert "not its first choice (that would repeat nearby text)" in view_of_result(edited).steps[2].narration
    sampled = copy.deepcopy(trace)
    sampled.config = trace.config.replace(sampler=dataclasses.replace(trace.config.sampler, temperature=0.7))
    assert "first choice" not in view_of_result(dataclasses.replace(result, trace=sampled)).steps[2].narration
    # a branch that picks the runner-up at step 2: the model's top token was not banned, it was overruled
    tree, _ = tree_of(explorer, result, None)
    record = result.trace.steps[2]
    runner_up = int(record.candidates[record.positions[0]][1][0])
    index = tree.branch(2, position=record.positions[0], token=runner_up)
    branched = tree.branches[index].trace
    assert branched.steps[2].tokens == [runner_up] and not branched.steps[2].rule_banned
    assert "first choice" not in view_of_result(dataclasses.replace(result, trace=branched)).steps[2].narration

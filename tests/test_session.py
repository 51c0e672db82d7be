"""The explainer's callbacks without the UI (tiny model; same code path as the page)."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from app.figures import one_line
from app.session import BEST_OF_N, COMPARE_METHODS, ORDER_NAMES, Explorer, InputError, Request
from model.config import LABELS
from model.decoding import sequence_log_likelihood
from model.masks import two_stream_masks


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    return Explorer(tiny_loaded)


TEXT = "The cat sat on the mat and [MASK:4] at the birds in the old tree."


def test_picker_marks_blanks_as_locked_open_chips(explorer):
    picker = explorer.picker_from_text(TEXT)
    assert picker["tokens"][0] == "⟨s⟩" and picker["mask"][0] is False
    blanks = [i for i, m in enumerate(picker["mask"]) if m]
    assert len(blanks) == 4 and all(picker["tokens"][i] == "?" for i in blanks)
    assert picker["locked"] == [0, *blanks]


def test_clicked_chips_become_open_positions_and_locked_ones_cannot_change(explorer):
    text = "The cat sat on the mat and looked at the birds."
    picker = explorer.picker_from_text(text)
    picker["mask"][3] = picker["mask"][4] = True
    picker["mask"][0] = True  # a crafted value: the start token must stay given
    ids, given = explorer.sequence(Request(text=text, picker=picker))
    assert (~given).nonzero(as_tuple=True)[0].tolist() == [3, 4] and bool(given[0])
    # a picker of another text is ignored: the blanks of this text count
    stale = Request(text=TEXT, picker=picker)
    assert int((~explorer.sequence(stale)[1]).sum()) == 4


@pytest.mark.parametrize("method", list(LABELS))
def test_every_method_decodes_and_fills_exactly_the_blanks(explorer, method):
    result = explorer.decode(Request(text=TEXT, method=method, k=2, group_size=2))
    trace = result.trace
    open_positions = trace.plan.open_positions
    assert sorted(p for s in trace.steps for p in s.positions) == open_positions
    assert len(result.labels) == len(trace.final_ids) and result.text
    assert all(result.token_text(c[0]) for s in trace.steps for cands in s.candidates.values() for c in cands)


@pytest.mark.parametrize("order", list(ORDER_NAMES))
def test_every_order_preset_runs(explorer, order):
    mask = explorer.picker_from_text(TEXT)["mask"]
    blank_groups = iter([3, 1, 2, 1])  # the four blanks: two groups of one, one of two, out of order
    groups = " ".join(str(next(blank_groups)) if m else "0" for m in mask) if order == "custom group ids" else ""
    result = explorer.decode(Request(text=TEXT, order=order, group_size=2, custom_groups=groups))
    assert result.n_steps >= 1


def test_figure_1_grouping_from_text(explorer):
    result = explorer.decode(Request(text="The cat sat [MASK:3]", order="custom group ids",
                                     custom_groups="0 1 1 1 3 2 2"))
    steps = [s.positions for s in result.trace.steps]
    assert steps == [[5, 6], [4]]  # G2 = {5, 6} before G3 = {4}
    assert "No leak" in explorer.verdict(result, 0)


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("   ", "empty"),
    ("No blanks in this text.", "Nothing is masked"),
    ("[MASK:5]", "Everything is masked"),
    ("A text [MASK:0] here.", "Malformed blank"),
    ("A text [MASK:x] here.", "Malformed blank"),
    ("A text [MASK here.", "Malformed blank"),
    ("word " * 300 + "[MASK]", "too long"),
])
def test_bad_text_gives_a_clear_message(explorer, text, message):
    with pytest.raises(InputError, match=message) as raised:
        explorer.decode(Request(text=text))
    said = str(raised.value)
    assert said.lower().count("malformed blank") <= 1, said  # never "Malformed blank: malformed blank '[MASK:x]'"
    if "MASK:" in text and message == "Malformed blank":
        assert said.startswith("Malformed blank '[MASK"), said  # the blank named at once


@pytest.mark.parametrize("kwargs, message", [
    (dict(order="custom group ids", custom_groups="0 1 x"), "Invalid plan"),
    (dict(order="custom group ids", custom_groups="0 1 2"), "which has 3 ids for a text of 20 positions"),
    (dict(order="custom group ids", custom_groups=""), "empty"),
    (dict(order="sideways"), "Unknown order"),
    (dict(method="beam search"), "Unknown method"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(strategy="loudest"), "Unknown strategy"),
])
def test_bad_settings_give_a_clear_message(explorer, kwargs, message):
    with pytest.raises(InputError, match=message):
        explorer.decode(Request(text=TEXT, **kwargs))


def test_custom_ids_that_do_not_fit_name_the_setting_and_the_fix(explorer):
    """Order lab's "use it" leaves the order on custom group ids, its ids in a closed box: the next text's
    run says where the ids are, how many there are against how many it needs, and what to do."""
    n = len(explorer.picker_from_text(TEXT)["ids"])
    with pytest.raises(InputError) as err:
        explorer.decode(Request(text=TEXT, method="A3 plan", order="custom group ids", custom_groups="0 " * 28))
    assert str(err.value) == (
        f"Order is set to custom group ids, which has 28 ids for a text of {n} positions (one id per token, the "
        "start token first): edit them under Custom group ids (researchers), or choose another order.")
    with pytest.raises(InputError, match="1 id for a text"):
        explorer.decode(Request(text=TEXT, order="custom group ids", custom_groups="0"))
    with pytest.raises(InputError, match=r"^Invalid plan: custom group ids are empty.* Order is set to custom group "
                                         r"ids: edit them under Custom group ids \(researchers\), or choose another"):
        explorer.decode(Request(text=TEXT, order="custom group ids", custom_groups=""))


@pytest.mark.parametrize("method", ["A3 plan", "A3 dynamic"])
def test_an_any_length_blank_with_custom_ids_says_they_need_a_fixed_length(explorer, method):
    text = "The old dog slept by the fire. [MASK:?] The children laughed and gave him a treat."
    request = Request(text=text, method=method, order="custom group ids", custom_groups="0 " * 28)
    for run in (explorer.decode, explorer.compare):
        with pytest.raises(InputError, match=r"^Order is set to custom group ids, which need blanks of a fixed "
                                             r"length: a \[MASK:\?\] blank is decoded at several lengths.*"
                                             r"Give the blank a length, e.g. \[MASK:5\], or choose another order"):
            run(request)


def test_infill_api_returns_text_and_a_trace_with_steps(explorer):
    filled, trace_json = explorer.infill(TEXT, "A3 dynamic", 3)
    data = json.loads(trace_json)
    assert isinstance(data["steps"], list) and data["steps"] and data["method"] == "A3 dynamic"
    assert filled == data["final_text"] and "[MASK" not in filled
    assert filled.startswith("The cat sat on the mat and")


def test_compare_runs_every_method_on_the_same_input_and_keeps_each_run(explorer):
    comparison = explorer.compare(Request(text=TEXT, k=2))
    # each row is named with its settings: "A3 plan (left to right)", "A3 dynamic (confidence, k = 2)"
    assert [r[0] for r in comparison.rows] == [comparison.results[m].name for m in COMPARE_METHODS]
    assert [r[0] for r in comparison.rows][:4] == ["A3 plan (left to right)", "A3 dynamic (confidence, k = 2)",
                                                   "diffusion (confidence, k = 2)", "one-step parallel (k = 2)"]
    assert list(COMPARE_METHODS) == ["A3 plan", "A3 dynamic", "diffusion", "one-step parallel", "AR baseline",
                                     "A3 best of N"]
    assert comparison.headers == ["method", "steps", "model calls", "seconds", "tokens/s", "log p (own order)",
                                  "log p, whole text"]
    for method, (_, steps, calls, seconds, per_s, own, reference) in zip(COMPARE_METHODS, comparison.rows, strict=True):
        result = comparison.results[method]  # the run itself: the stage can step through it, no re-decoding
        assert steps == result.n_steps >= 1 and calls == result.model_calls >= result.trace.model_calls >= 1
        assert seconds >= 0 and (per_s is None or per_s > 0) and own <= 0 and reference <= 0
    texts = comparison.texts_markdown()
    assert all(f"**{comparison.results[m].name}:**" in texts for m in COMPARE_METHODS)
    # the last column is what best of N keeps its fill by: no method's whole text beats its own, A3 plan
    # left to right (one of its candidates) included
    whole = {method: row[6] for method, row in zip(COMPARE_METHODS, comparison.rows, strict=True)}
    assert whole["A3 best of N"] >= whole["A3 plan"] - 0.01
    best = comparison.results["A3 best of N"].trace
    assert whole["A3 best of N"] == pytest.approx(
        sequence_log_likelihood(explorer.loaded.model, best.final_ids, torch.arange(len(best.final_ids)))[0], abs=0.01)


def test_ar_baseline_without_a_base_is_a_visible_warning_not_a_crash(tiny_loaded, monkeypatch):
    from app.session import Explorer as _Explorer

    class NoBase:  # the loaded model, minus its base
        def __init__(self, loaded):
            self.__dict__["_loaded"] = loaded

        def __getattr__(self, name):
            return getattr(self._loaded, name)

        has_base = False
        no_base_reason = "this checkpoint names no base model."

    explorer = _Explorer(NoBase(tiny_loaded))
    assert "AR baseline" in explorer.base_note() and "no base model" in explorer.base_note()
    with pytest.raises(InputError, match="AR baseline"):
        explorer.decode(Request(text=TEXT, method="AR baseline"))
    comparison = explorer.compare(Request(text=TEXT, k=2))
    row = next(r for r in comparison.rows if r[0] == "AR baseline")
    assert "AR baseline" not in comparison.results and row[1] is None
    assert any("AR baseline not run" in w for w in comparison.warnings) and not comparison.notes


def test_mask_exports_match_two_stream_masks(explorer):
    result = explorer.decode(Request(text=TEXT, order="random", group_size=2, seed=1))
    step = 1
    groups = torch.tensor(result.trace.group_ids_at(step))
    content, query = two_stream_masks(groups)
    npz = np.load(io.BytesIO(Explorer.masks_npz(result, step)))
    assert np.array_equal(npz["content"], content.numpy()) and np.array_equal(npz["query"], query.numpy())
    assert np.array_equal(npz["group_ids"], groups.numpy())
    with zipfile.ZipFile(io.BytesIO(Explorer.masks_csv(result, step))) as zf:
        csv_query = np.loadtxt(io.StringIO(zf.read("query.csv").decode()), delimiter=",", dtype=int)
        assert np.array_equal(csv_query, query.numpy().astype(int))
        rows = zf.read("groups.csv").decode().splitlines()
    # each step's export says which rows it is about: the positions decided at it, and those known by then
    decided, given = result.trace.decided_step(), result.trace.given
    assert rows[0] == f"position,group,decided_at_step_{step + 1},known_at_step_{step + 1}"
    table = [tuple(int(v) for v in row.split(",")) for row in rows[1:]]
    assert [p for p, _, now, _ in table if now] == sorted(result.trace.steps[step].positions)
    assert all(known == int(g or 0 <= d <= step) for (_, _, _, known), d, g in zip(table, decided, given, strict=True))
    assert npz["this_step"].tolist() == [bool(now) for _, _, now, _ in table] and int(npz["step"]) == step + 1
    assert npz["known"].tolist() == [bool(known) for *_, known in table]
    later = zipfile.ZipFile(io.BytesIO(Explorer.masks_csv(result, step + 1))).read("groups.csv").decode()
    assert later.splitlines()[1:] != rows[1:]  # another step, other rows marked (not only another header)
    before = zipfile.ZipFile(io.BytesIO(Explorer.masks_csv(result, -1))).read("groups.csv").decode().splitlines()
    assert before[0].endswith("decided_at_step_0,known_at_step_0")
    assert [row.split(",")[2:] for row in before[1:]] == [["0", str(int(g))] for g in given]  # nothing decided yet
    exported = json.loads(explorer.trace_json(result))
    assert len(exported["steps"]) == result.n_steps and exported["final_text"] == result.text


def test_sentence_view_and_render_follow_the_trace(explorer):
    from app.render import clamp_step, render_step, sentence_html

    result = explorer.decode(Request(text=TEXT, order="outside-in", group_size=1))
    decided = result.trace.decided_step()
    for step in range(-1, result.n_steps):
        html = sentence_html(result, step)
        assert html.count('class="tok open"') == sum(1 for d in decided if d > step)
        assert html.count("tok decided current") == (len(result.trace.steps[step].positions) if step >= 0 else 0)
    rendered = render_step(result, 99)  # out of range: clamped to the last step
    assert rendered.grid.layout.meta["step"] == result.n_steps - 1 == clamp_step(result, "99")
    assert clamp_step(result, None) == -1


def test_given_tokens_follow_the_model_layouts_convention(tiny_loaded):
    """Ours: given tokens left to right (causal groups); the official code's: one joint group."""
    import dataclasses

    from model.loading import tiny_model

    official = dataclasses.replace(tiny_loaded, model=tiny_model(len(tiny_loaded.tokenizer), block_layout="official"))
    for loaded, expect_distinct in ((tiny_loaded, True), (official, False)):
        explorer = Explorer(loaded)
        plan = explorer.plan(Request(text=TEXT))
        given_groups = plan.group_ids[plan.given].tolist()
        assert (len(set(given_groups)) == len(given_groups)) is expect_distinct
        assert explorer.given_grouping == ("causal" if expect_distinct else "joint")
        assert int(plan.group_ids[plan.open].min()) > max(given_groups)  # blanks after every given token


def test_attention_at_a_step_is_the_steps_rows_and_bad_steps_say_what_to_do(explorer):
    result = explorer.decode(Request(text=TEXT, method="A3 dynamic"))
    step = 2
    weights = explorer.attention(result, step)
    assert list(weights.rows) == result.trace.steps[step].positions and weights.stream == "query"
    rows = weights.probs[:, :, list(weights.rows)]  # (layers, heads, R, L)
    allowed = weights.allowed[list(weights.rows)]
    assert np.allclose(rows.sum(-1), 1.0, atol=1e-5) and not rows[..., ~allowed].any()
    content = explorer.attention(result, step, "content")
    assert content.stream == "content" and list(content.rows) == list(weights.rows)
    for bad in (-1, result.n_steps):
        with pytest.raises(InputError, match="step forward"):
            explorer.attention(result, bad)
    with pytest.raises(InputError, match="Run a decoding first"):
        explorer.attention(None, 0)


def test_plan_runs_compute_the_other_candidates_when_a_step_is_first_shown(explorer):
    from model.decoding import has_preview

    result = explorer.decode(Request(text=TEXT))  # A3 plan, left to right
    trace = result.trace
    assert not has_preview(trace, 0) and set(trace.steps[0].candidates) == set(trace.steps[0].positions)
    explorer.preview(result, 0)
    assert has_preview(trace, 0) and len(trace.steps[0].candidates) == 4
    shown = {int(t) for c in trace.steps[0].candidates.values() for t, _ in c}
    assert shown <= set(result.vocab)  # every candidate has its display string
    explorer.preview(result, -1)  # before any step: nothing to compute, no error
    data = json.loads(explorer.trace_json(result))  # an export carries what was computed, no more
    assert [len(s["candidates"]) for s in data["steps"]] == [4, 1, 1, 1]
    explorer.preview_all(result)
    assert [len(s.candidates) for s in trace.steps] == [4, 3, 2, 1]


def test_best_of_n_keeps_the_candidate_the_model_scores_highest_and_lists_them_all(explorer):
    result = explorer.decode(Request(text=TEXT, method=BEST_OF_N))
    found = result.best_of_n
    scores = [c.logp for c in found.candidates]
    assert found.best_index == scores.index(max(scores)) and result.trace is found.best.trace
    assert result.method == BEST_OF_N and result.model_calls == found.model_calls > result.trace.model_calls
    headers, rows = explorer.best_of_n_rows(result)
    assert [r[0] for r in rows] == [c.name for c in found.candidates]
    assert [r[4] for r in rows].count("✓") == 1 and rows[found.best_index][4] == "✓"
    assert [r[2] for r in rows] == [round(s, 2) for s in scores]
    # each fill is the whole fill, every open token of it (none dropped as if it were a start token)
    tok, open_positions = explorer.loaded.tokenizer, found.best.trace.plan.open_positions
    for row, c in zip(rows, found.candidates, strict=True):
        ids = [c.trace.final_ids[p] for p in open_positions]
        assert row[1] == one_line(tok.decode(ids)) or "‹" in row[1], (row[1], tok.decode(ids))
    # two blanks: each candidate's fill names them apart, in text order
    two = explorer.decode(Request(text="The cat [MASK:2] on the mat and [MASK:3] at the dog.", method=BEST_OF_N))
    for row, c in zip(explorer.best_of_n_rows(two)[1], two.best_of_n.candidates, strict=True):
        first, second = ([c.trace.final_ids[p] for p in blank] for blank in (two.trace.plan.open_positions[:2],
                                                                               two.trace.plan.open_positions[2:]))
        assert row[1] == f"{one_line(tok.decode(first))} … {one_line(tok.decode(second))}" or "‹" in row[1], row[1]
    # any candidate can go onto the stage, without decoding again
    other = (found.best_index + 1) % len(found.candidates)
    shown = explorer.best_of_n_candidate(result, other)
    assert shown.trace is found.candidates[other].trace and shown.best_of_n is found
    with pytest.raises(InputError, match="no candidate 99"):
        explorer.best_of_n_candidate(result, 99)


def test_best_of_n_says_what_it_costs_before_it_runs(explorer):
    from model.rerank import planned_calls

    note = explorer.best_of_n_cost(TEXT)
    assert f"{planned_calls(4)} model calls" in note
    assert explorer.decode(Request(text=TEXT, method=BEST_OF_N)).model_calls == planned_calls(4)
    assert "lengths" in explorer.best_of_n_cost("The cat [MASK:?] on the mat.")
    # tokens clicked open on the chips of this very text count; chips of another text do not
    chips = explorer.picker_from_text(TEXT)
    first_given = chips["mask"].index(False, 1)
    chips["mask"][first_given] = True
    assert "the 5 blank tokens" in explorer.best_of_n_cost(TEXT, chips)
    assert f"{planned_calls(5)} model calls" in explorer.best_of_n_cost(TEXT, chips)
    assert "the 4 blank tokens" in explorer.best_of_n_cost(TEXT, {**chips, "text": TEXT + " More."})


def test_best_of_n_composes_with_a_blank_of_any_length(explorer):
    result = explorer.decode(Request(text="The cat sat on the [MASK:?] and looked at the birds.", method=BEST_OF_N))
    assert result.flexible is not None and len(result.flexible.candidates) >= 2


def test_the_api_decodes_best_of_n(explorer):
    text, trace_json = explorer.infill(TEXT, BEST_OF_N, 0)
    assert json.loads(trace_json)["method"] == BEST_OF_N and "[MASK" not in text


def test_tables_show_bytes_that_make_no_character_as_their_values_never_a_replacement_character(explorer):
    """The best-of-N candidates, the Compare texts and the branch table read as the stage does: "‹EF BC›"."""
    from app import branching
    from app.session import Comparison

    tok = explorer.loaded.tokenizer
    byte = tok.convert_tokens_to_ids("ï¼")  # bytes EF BC: the start of a character never completed
    result = explorer.decode(Request(text="A cat [MASK:2] sat.", method=BEST_OF_N))
    open_positions = result.trace.plan.open_positions
    for c in result.best_of_n.candidates:
        c.trace.final_ids = [byte if p in open_positions else t for p, t in enumerate(c.trace.final_ids)]
    rows = explorer.best_of_n_rows(result)[1]
    assert all(r[1] == "‹EF BC›‹EF BC›" for r in rows), rows
    shown = explorer.result(result.best_of_n.best.trace, "A3 plan")
    assert "\ufffd" not in shown.shown_text and "‹EF BC›" in shown.shown_text and "\ufffd" in shown.text
    comparison = Comparison()
    comparison.results["A3 plan"] = shown
    assert "‹EF BC›" in comparison.texts_markdown() and "\ufffd" not in comparison.texts_markdown()
    tree, _ = branching.tree_of(explorer, shown, None)
    text = branching.tree_rows(explorer, tree, shown)[0][6]
    assert "‹EF BC›" in text and "\ufffd" not in text


def test_the_no_stutter_switch_reaches_every_decode(explorer):
    """The Sampling box's switch (app.ui.text_tab) sets the no-repeat rule of the run's config, of every best-of-N
    candidate and of a branch's rest; a script that sends no switch gets the page's default (on)."""
    from app.session import NO_REPEAT
    from app.ui.text_tab import request_of

    values = ["Mia found a [MASK:4] key.", None, "A3 plan", "left to right", 1, "confidence", 1, 0, 0, 1, 0, ""]
    assert NO_REPEAT == 3 and request_of(*values).no_repeat == NO_REPEAT
    assert request_of(*values, True).no_repeat == 3 and request_of(*values, False).no_repeat == 0
    on, off = (explorer.decode(request_of(*values, switch)) for switch in (True, False))
    assert on.trace.config.sampler.no_repeat == 3 and off.trace.config.sampler.no_repeat == 0
    best = explorer.decode(request_of(*values[:2], BEST_OF_N, *values[3:], True))
    assert {c.config.sampler.no_repeat for c in best.best_of_n.candidates} == {3}
    plain = explorer.decode(request_of(*values[:2], BEST_OF_N, *values[3:], False))
    assert {c.config.sampler.no_repeat for c in plain.best_of_n.candidates} == {0}


def test_a_trace_config_holds_only_what_its_method_reads(explorer):
    """The page's boxes hold an order, a group size, a strategy and k whatever the method; a run's config (and its
    trace JSON) keeps only those its method read (a dynamic run's once said "order": "random")."""
    settings = dict(text=TEXT, order="random", group_size=2, strategy="entropy", k=2)
    dynamic = json.loads(explorer.decode(Request(method="A3 dynamic", **settings)).trace.to_json())["config"]
    assert (dynamic["order"], dynamic["group_size"], dynamic["strategy"], dynamic["k"]) == ("custom", 1, "entropy", 2)
    plan = json.loads(explorer.decode(Request(method="A3 plan", **settings)).trace.to_json())["config"]
    assert (plan["order"], plan["group_size"], plan["strategy"], plan["k"]) == ("random", 2, "confidence", 1)
    parallel = explorer.decode(Request(method="one-step parallel", **settings)).trace.config
    assert (parallel.order, parallel.strategy, parallel.k) == ("custom", "confidence", 2)

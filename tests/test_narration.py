"""The stage's narration (app.narration, kept per step in the trace view): for every method the page offers,
the sentence of every step names exactly the tokens the step decides (as whole characters), their
probabilities and how many tokens the step sees, as the trace has them, and points at the marks the stage
draws for the step in their colour; a step that decides many tokens names 5, then "and N more"; the start
and the end say what is given and that the text is complete; a split character is never named before all
its tokens are known, and no byte token ever reads "<0xNN>"."""

import colorsys
import copy
import math
import re

import pytest
import torch
from test_trace_view import unicode_result

from app import figures, narration
from app.narration import Piece, named, start_sentence, step_sentence
from app.session import PAGE_METHODS, Explorer, Request
from app.trace_view import view_of_result
from model.masks import two_stream_masks
from model.text import character_runs, string_bytes

TEXT = "The cat sat on the mat and [MASK:5] at the birds in the [MASK:2] tree."
SETTINGS = {"A3 plan": dict(order="random", group_size=2, seed=3)}  # groups of 2 in a random order
QUOTED = re.compile(r"“([^”]*)”")


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    return Explorer(tiny_loaded)


@pytest.fixture(scope="module")
def results(explorer):
    """Every method of the page's list (A3 best of N included), two tokens per step where it takes k."""
    return {method: explorer.decode(Request(text=TEXT, method=method, k=2, **SETTINGS.get(method, {})))
            for method in PAGE_METHODS}


def with_probabilities(result):
    """A copy whose steps' tokens have probabilities across the range (the tiny random model gives every
    token about 1/vocab): 0.93, 0.47, 0.31, ..., 0.004; a step's log p stays their sum."""
    result = copy.deepcopy(result)
    for t, record in enumerate(result.trace.steps):
        record.token_logprobs = [math.log(0.93 / (1 + t + i * 120)) for i in range(len(record.positions))]
        record.logprob = sum(record.token_logprobs)
    return result


def shown_bytes(strings: list[str]) -> str:
    """Token strings whose bytes make no whole character, as the views write them: every byte that is not
    part of a character as its value, a run of them in one "‹EF BC›" (worked out with Python's codec)."""
    text = b"".join(string_bytes(s) for s in strings).decode("utf-8", "backslashreplace")
    escaped = r"(?:\\x[0-9a-f]{2})+"  # one or more bytes in a row, as "\\xef\\xbc"
    return re.sub(escaped, lambda m: "‹" + " ".join(re.findall(r"[0-9a-f]{2}", m.group(0))).upper() + "›", text)


def expected_pieces(result, step: int) -> list[tuple[str, float]]:
    """What the step decides, worked out from the trace alone: per character of the final text that it
    decides tokens of (in text order), the character as the text shows it (bytes that make no character
    as "‹EF BC›"), or None while some of its tokens are still open; and the probability of the tokens
    decided now."""
    trace, record = result.trace, result.trace.steps[step]
    known = [g or 0 <= d <= step for g, d in zip(trace.given, trace.decided_step(), strict=True)]
    logp = dict(zip(record.positions, record.token_logprobs, strict=True))
    out = []
    for start, end, text in character_runs(result.labels):
        here = [p for p in range(start, end) if p in logp]
        if here:
            text = shown_bytes(result.labels[start:end]) if "\ufffd" in text else text
            shown = figures.display_label(text).strip() or figures.display_label(text)
            out.append((shown if all(known[start:end]) else None, math.exp(sum(logp[p] for p in here))))
    return out


def expected_name(text: str | None) -> str:
    if text is None:
        return narration.PART_OF_A_CHARACTER
    return narration.bytes_name(text) if "‹" in text else f"“{text}”"


def context_of(result, step: int) -> int:
    """How many positions the step's first row may attend to in the query stream of its grouping."""
    groups = torch.tensor(result.trace.group_ids_at(step))
    _, query = two_stream_masks(groups)
    return int(query[result.trace.steps[step].positions[0]].sum())


def said_probabilities(sentence: str) -> list[str]:
    """The probabilities a sentence gives: "(p = 0.41, 0.30)" -> ["0.41", "0.30"]; "(p < 0.001 each)"."""
    found = re.search(r"\(p ([=<]) ([^)]*)\)", sentence)
    assert found, sentence
    sign, values = found.groups()
    values = [v.strip() for v in values.removesuffix(" each").split(",") if v.strip() != "…"]
    values = ["<" + v.removeprefix("under ") if v.startswith("under ") else v for v in values]  # among others
    return ["<" + v if sign == "<" else v for v in values]


def agrees(said: str, p: float) -> bool:
    if said.startswith("<"):
        return p < float(said[1:])
    return abs(float(said) - p) <= 0.5 * 10 ** -len(said.split(".")[1]) + 1e-9


@pytest.mark.parametrize("method", PAGE_METHODS)
@pytest.mark.parametrize("odds", ["as decoded", "across the range"])
def test_every_step_names_its_tokens_their_probability_and_what_it_sees(results, method, odds):
    result = results[method] if odds == "as decoded" else with_probabilities(results[method])
    view, trace = view_of_result(result), result.trace
    assert len(view.steps) == result.n_steps > 0
    for t, record in enumerate(trace.steps):
        sentence = view.steps[t].narration
        pieces = expected_pieces(result, t)
        assert sentence.startswith(f"Step {t + 1}"), sentence
        # the tokens, in text order: 5 named, the rest counted; bytes that make no character shown as bytes
        names = [text for text, _ in pieces[: narration.MAX_NAMED]]
        assert QUOTED.findall(sentence) == [n for n in names if n is not None and "‹" not in n], (sentence, pieces)
        assert sentence.count(narration.PART_OF_A_CHARACTER) == names.count(None)
        verb = narration.VERB.get(trace.mode, "decides")  # one-step parallel's steps reveal its one call's tokens
        assert f"{verb} {named([expected_name(n) for n, _ in pieces])}" in sentence, (sentence, pieces)
        more = len(pieces) - narration.MAX_NAMED
        assert (f"and {more} more" in sentence) == (more > 0), sentence
        # their probabilities
        said = said_probabilities(sentence)
        assert len(said) == min(len(pieces), narration.MAX_NAMED) or (len(said) == 1 and "each" in sentence)
        for value, (_, p) in zip(said * len(pieces) if "each" in sentence else said, pieces[: narration.MAX_NAMED],
                                 strict=False):
            assert agrees(value, p), (sentence, value, p)
        # what the step sees: its query-mask row
        context = context_of(result, t)
        assert view.steps[t].context == context
        seen = re.search(r"seeing (?:the|all|only the) (\d+|one) ", sentence)
        assert seen and seen.group(1) == (str(context) if context != 1 else "one"), (sentence, context)
        # the marks drawn for this step: the orange arcs into it, its orange row(s) in the masks
        if t < result.n_steps - 1:
            rows = "rows" if len(record.positions) > 1 else "row"
            assert sentence.endswith(f"orange arcs in the DAG, orange {rows} in the masks."), sentence
        else:
            assert sentence.endswith("the text is complete."), sentence
        assert "<0x" not in sentence and "\ufffd" not in sentence
        assert view.steps[t].named == named([expected_name(n) for n, _ in pieces])


def test_the_start_says_what_is_given_and_how_many_steps(results):
    for method, result in results.items():
        trace = result.trace
        n_given = sum(trace.given)
        start = view_of_result(result).before.narration
        assert start.startswith(f"Before decoding: {n_given} tokens are given"), (method, start)
        assert f"{trace.plan.length - n_given} are open" in start and f"in {result.n_steps} steps" in start
    assert "the base model" in view_of_result(results["AR baseline"]).before.narration


def test_each_mode_says_what_its_steps_see(results):
    said = {method: view_of_result(result).steps[0].narration for method, result in results.items()}
    assert "in earlier groups" in said["A3 plan"] and "in earlier groups" in said["A3 dynamic"]
    assert "known so far" in said["official dynamic"] and "known so far" in said["diffusion"]
    assert "only the" in said["one-step parallel"] and "given tokens" in said["one-step parallel"]
    # its steps only reveal what its one model call predicted: never "decides" a step after that call
    assert said["one-step parallel"].startswith("Step 1: the model reveals ")
    start = view_of_result(results["one-step parallel"]).before.narration
    assert "all predicted at once in one model call, then revealed" in start
    assert said["AR baseline"].startswith("Step 1: the base model") and "to its left" in said["AR baseline"]


def test_the_colour_word_is_the_colour_the_stage_highlights_with():
    """"orange" names figures.HIGHLIGHT_COLOR, the colour of the arcs into the step and of its mask rows."""
    r, g, b = (int(narration_hex, 16) / 255 for narration_hex in
               (figures.HIGHLIGHT_COLOR[1:3], figures.HIGHLIGHT_COLOR[3:5], figures.HIGHLIGHT_COLOR[5:7]))
    hue, lightness, saturation = colorsys.rgb_to_hls(r, g, b)
    assert narration.HIGHLIGHT_WORD == "orange" and 0 <= hue * 360 <= 40 and saturation > 0.5


def test_many_tokens_name_five_then_and_n_more():
    """A hand-made step that decides 8 tokens at once."""
    pieces = [Piece(word, p) for word, p in zip(["the", "old", "man", "and", "his", "dog", "ran", "far"],
                                                 [0.41, 0.3, 0.2, 0.12, 0.05, 0.004, 0.0002, 0.9], strict=True)]
    sentence = step_sentence(2, 10, pieces, 18, "plan", rows=8)
    assert sentence == ("Step 3: the model decides “the”, “old”, “man”, “and”, “his” and 3 more at once "
                        "(p = 0.41, 0.30, 0.20, 0.12, 0.05, …), seeing the 18 tokens in earlier groups: "
                        "orange arcs in the DAG, orange rows in the masks.")
    assert named(["a"]) == "a" and named(["a", "b"]) == "a and b" and named(list("abc")) == "a, b and c"
    assert named(list("abcde")) == "a, b, c, d and e" and named(list("abcdef")) == "a, b, c, d, e and 1 more"
    two = step_sentence(0, 3, pieces[:2], 1, "ar_baseline", rows=2)
    assert two.startswith("Step 1: the base model decides “the” and “old” at once (p = 0.41, 0.30), seeing "
                          "the one token to its left")
    last = step_sentence(9, 10, pieces[:1], 20, "diffusion", n_open=9, n_left=0)
    assert last == ("Step 10, the last: the model decides “the” (p = 0.41), seeing all 20 tokens known so far; "
                    "the text is complete.")
    assert step_sentence(0, 1, pieces[:1], 3, "plan").startswith("Step 1, the only step:")
    # in brief (while the stage plays): what is decided, and at the last step whether the text is complete
    assert step_sentence(2, 10, pieces, 18, "plan", rows=8, brief=True) == (
        "Step 3: the model decides “the”, “old”, “man”, “and”, “his” and 3 more at once (p = 0.41, 0.30, 0.20, 0.12, "
        "0.05, …).")
    assert step_sentence(9, 10, pieces[:1], 20, "diffusion", n_open=9, n_left=0, brief=True) == (
        "Step 10, the last: the model decides “the” (p = 0.41); the text is complete.")
    assert step_sentence(1, 3, pieces[:1], 4, "plan", forced=True, brief=True) == (
        "Step 2: “the” is read from the text (the model gave it p = 0.41).")
    assert "no other token" in step_sentence(0, 2, pieces[:1], 0, "plan")
    assert "arcs" not in step_sentence(0, 2, pieces[:1], 0, "plan")  # a step that sees nothing has no arcs
    assert start_sentence(1, 1, 1, "plan").startswith("Before decoding: 1 token is given (grey), 1 is open (marked ?)")
    assert narration.OPEN_MARK == figures.OPEN_MARK == "?"  # the grid's mark for an open position, in the text too


def test_bytes_that_make_no_character_are_said_so():
    """A random model can string bytes together that make no character: no "�" in the sentence; the
    bytes are named as the views show them ("‹EF BC›")."""
    sentence = step_sentence(0, 3, [Piece("\ufffd", 0.2), Piece("had", 0.5)], 4, "plan", rows=2)
    assert sentence.startswith(f"Step 1: the model decides {narration.NO_CHARACTER} and “had” at once")
    assert "\ufffd" not in sentence
    pieces = [Piece("‹EF BC›", 0.2, no_character=True), Piece(" ‹E2›", 0.1, no_character=True),
              Piece("x‹E2›", 0.3, no_character=True)]
    assert step_sentence(0, 3, pieces, 4, "plan", rows=3).startswith(
        "Step 1: the model decides the bytes ‹EF BC› that make no character, the byte ‹E2› that makes no "
        "character and “x‹E2›” (with bytes that make no character) at once (p = 0.20, 0.10, 0.30), seeing ")


def test_the_walks_byte_tokens_are_named_by_their_bytes(explorer):
    """The browser walk's fill: six byte tokens EF BC (no character): each step names them as "‹EF BC›"."""
    from test_trace_view import byte_result

    view = view_of_result(byte_result(explorer))
    for t, s in enumerate(view.steps):
        assert s.narration.startswith(f"Step {t + 1}") and "the bytes ‹EF BC› that make no character" in s.narration
        assert s.named == "the bytes ‹EF BC› that make no character"
        assert "\ufffd" not in s.narration and "<0x" not in s.narration


# --------------------------------------------------------------------------------------------------
# teacher-forced traces (the order lab's and the gallery's "Step through"): the tokens are given


def test_a_teacher_forced_trace_says_the_tokens_are_given_not_decided(explorer):
    from app.order_lab import lab_sequence, stepper_result
    from model.orders import Order, left_to_right

    ids = lab_sequence(explorer, "Mia found an old key under the porch.")
    order = Order("left_to_right", tuple(left_to_right(len(ids))))
    result = with_probabilities(stepper_result(explorer, ids, order, "teacher-forced left_to_right"))
    assert result.trace.settings.get("teacher_forced")
    from app.stage import calls_summary

    assert "stutter" not in calls_summary(result)  # nothing chosen: no rule to speak of
    # the calls are the stepping through's; Order lab's own score is one forward pass, and the headline says so
    assert calls_summary(result).endswith("one per group to show each step (the likelihood itself is one forward pass)")
    view = view_of_result(result)
    assert "reads them from the text" in view.before.narration and "decides" not in view.before.narration
    for t, s in enumerate(view.steps):
        sentence, (name, p) = s.narration, expected_pieces(result, t)[0]
        assert "decides" not in sentence, sentence
        odds = narration.probability(p)
        odds = f"p < {odds[1:]}" if odds.startswith("<") else f"p = {odds}"
        head = f"Step {t + 1}{', the last' if t == len(view.steps) - 1 else ''}"
        said = f"{head}: {expected_name(name)} is read from the text (the model gave it {odds}); the model sees "
        assert sentence.startswith(said), sentence
    # the same trace, exported and loaded again (the player, the GIF): still given
    assert view_of_dict_of(explorer, result).steps[0].narration == view.steps[0].narration
    # one that gives several tokens at once, and a probability below 0.001
    pieces = [Piece("found", 0.0004), Piece(" a", 0.0002)]
    assert step_sentence(2, 5, pieces[:1], 3, "plan", forced=True) == (
        "Step 3: “found” is read from the text (the model gave it p < 0.001); the model sees the 3 tokens in "
        "earlier groups: orange arcs in the DAG, orange row in the masks.")
    assert step_sentence(4, 5, pieces, 3, "plan", rows=2, forced=True, n_open=4) == (
        "Step 5, the last: “found” and “a” are read from the text at once (the model gave them p < 0.001 each); "
        "the model sees the 3 tokens in earlier groups; the text is complete.")
    mixed = [Piece("found", 0.0004), Piece(" a", 0.03)]
    assert "(the model gave them p = under 0.001, 0.03)" in step_sentence(4, 5, mixed, 3, "plan", rows=2, forced=True)
    assert "p = <" not in step_sentence(4, 5, mixed, 3, "plan", rows=2)
    assert start_sentence(1, 8, 8, "plan", forced=True) == (
        "Before decoding: 1 token is given (grey), 8 are open (marked ?); the model reads them from the text in 8 "
        "steps, one group at a time, in the plan's order, and says how likely it found them (teacher forcing).")


def view_of_dict_of(explorer, result):
    import json

    from app.trace_view import view_of_dict

    return view_of_dict(json.loads(explorer.trace_json(result)))


def test_names_are_short_whole_and_visible():
    words = [Piece(" had", 0.5), Piece("supercalifragilistic", 0.01)]
    assert QUOTED.findall(step_sentence(0, 5, words, 4, "plan", rows=2)) == ["had", "supercalifragil…"]
    # the view gives display labels: a line break reads ↵ and a space ·, so nothing is blank
    shown = [Piece(figures.display_label(t), 0.5) for t in ("\n", " ", " 🧩")]
    assert QUOTED.findall(step_sentence(0, 5, shown, 4, "plan", rows=3)) == ["↵", "·", "🧩"]


def test_split_characters_are_named_whole_once_all_their_tokens_are_known(explorer):
    """"Zoë 🧩 ate 寿司" given, then " 🧩 寿司" decoded one token per step in a random order: a step that
    decides some tokens of 🧩 says "part of a character" until the last of them; that step names it."""
    result = unicode_result(explorer)
    view = view_of_result(result)
    decided, trace = result.trace.decided_step(), result.trace
    named_at = {}
    for t, record in enumerate(trace.steps):
        sentence = view.steps[t].narration
        assert "<0x" not in sentence and "\ufffd" not in sentence, sentence
        for start, end, text in character_runs(result.labels):
            if end - start > 1 and any(p in record.positions for p in range(start, end)):
                whole = all(0 <= decided[p] <= t for p in range(start, end))
                if whole:
                    named_at[start] = t
                    assert f"“{text.strip()}”" in sentence, (t, sentence)
                else:
                    assert narration.PART_OF_A_CHARACTER in sentence and "“" not in sentence, (t, sentence)
    assert {view.labels[p].strip() for p in named_at} == {"🧩", "寿", "司"}
    assert view.before.narration.startswith(f"Before decoding: {sum(trace.given)} tokens are given")


def test_a_picked_token_and_the_model_s_own_at_the_same_step_read_as_every_step_does():
    """A branch's step: the user's pick, then what the model decided with it, its odds worded as everywhere."""
    pick = Piece(" dog", 0.0004, picked=True)
    rest = [Piece(w, 0.2) for w in (" a", " b", " c", " d", " e", " f")]
    said = step_sentence(2, 9, [pick, *rest], 4, "plan", brief=True)
    assert said == ("Step 3: you picked “dog” (the model gave it p < 0.001), and the model decides “a”, “b”, “c”, "
                    "“d”, “e” and 1 more at once (p = 0.20, 0.20, 0.20, 0.20, 0.20, …).")
    banned = step_sentence(2, 9, [pick, Piece(" cat", 0.3, passed_over=True)], 4, "plan", brief=True)
    assert banned.endswith("and the model decides “cat” (p = 0.30), not its first choice (that would repeat nearby "
                           "text).")


def test_a_token_the_text_s_layout_moved_says_why_once():
    """model.layout: the step says why the model's first choice was not taken, each reason once."""
    one = step_sentence(0, 9, [Piece(" He", 0.09, laid_out="a space is typed before the blank")], 4, "plan",
                        brief=True)
    assert one.endswith("decides “He” (p = 0.09), not its first choice (a space is typed before the blank).")
    both = step_sentence(2, 9, [Piece(" cat", 0.3, passed_over=True, laid_out="the text is on one line"),
                                Piece(" sat", 0.2, laid_out="the text is on one line"), Piece(" on", 0.4)], 4,
                         "plan", brief=True)
    assert both.endswith("(2 of them not its first choice: that would repeat nearby text and the text is on one "
                         "line)."), both
    assert both.count("not its first choice") == 1

"""Blanks of flexible length ([MASK:?]): candidate lengths, exact scores, the choice is the argmax shown."""

import json

import pytest
import torch

from app.session import Explorer, InputError, Request
from model.decoding import sequence_log_likelihood
from model.flexible import Candidate, blank_span, candidate_lengths, choose, find_flexible, whole_text_logp, with_length
from model.text import BlankSyntaxError, encode_masked_text

TEXT = "The cat sat on the mat and [MASK:?] at the birds in the old tree."


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    return Explorer(tiny_loaded)


def test_marker_syntax_guess_and_errors():
    assert find_flexible("no blank here") is None
    assert find_flexible("a [MASK:4] b") is None  # a fixed blank is not flexible
    assert find_flexible("a [MASK:?] b").guess == 6
    blank = find_flexible("a [mask : ?3] b")
    assert blank.guess == 3 and "a [mask : ?3] b"[blank.start : blank.end] == "[mask : ?3]"
    with pytest.raises(BlankSyntaxError, match="one per text"):
        find_flexible("[MASK:?] and [MASK:?]")
    for bad in ("[MASK:?0]", "[MASK:?99999]"):
        with pytest.raises(BlankSyntaxError, match="between 1 and"):
            find_flexible(bad)
    # the fixed-length parser points to the flexible search instead of failing silently
    with pytest.raises(BlankSyntaxError, match=r"\[MASK:\?\]"):
        encode_masked_text(None, "a [MASK:?] b", start_token_id=0)


def test_candidate_lengths_surround_the_guess():
    assert candidate_lengths(6) == [3, 5, 6, 8, 9, 12]
    assert candidate_lengths(1) == [1, 2]
    for guess in range(1, 40):
        lengths = candidate_lengths(guess)
        assert guess in lengths and min(lengths) >= 1 and lengths == sorted(set(lengths))
        assert min(lengths) <= max(1, guess // 2 + 1) and max(lengths) >= 2 * guess


def test_blank_span_locates_the_blank_tokens(tokenizer):
    text = "One [MASK:2] two [MASK:?] three."
    blank = find_flexible(text)
    for length in (1, 5):
        masked = encode_masked_text(tokenizer, with_length(text, blank, length), start_token_id=0)
        lo, hi = blank_span(tokenizer, text, blank, length, start_token_id=0)
        open_at = (~masked.given).nonzero(as_tuple=True)[0].tolist()
        assert open_at[-length:] == list(range(lo, hi))  # the second blank run is the flexible one
        assert bool(masked.given[hi])


def test_choice_is_the_argmax_of_the_shown_scores():
    cands = [Candidate(2, "", "", -10.0, 10), Candidate(4, "", "", -11.0, 12), Candidate(6, "", "", -13.5, 14)]
    # per token: -1.0, -0.917, -0.964 -> length 4; total: -10 is the largest -> length 2
    assert choose(cands, "per token") == 1 and choose(cands, "total") == 0
    tie = [Candidate(5, "", "", -10.0, 10), Candidate(3, "", "", -10.0, 10)]
    assert choose(tie, "per token") == 1  # the shorter of equal scores
    with pytest.raises(ValueError, match="normalisation"):
        choose(cands, "per byte")


def test_whole_text_logp_is_the_exact_left_to_right_likelihood(tiny):
    ids = torch.tensor([0, 5, 9, 14, 3, 7])
    logp, n = whole_text_logp(tiny, ids)
    expected, _ = sequence_log_likelihood(tiny, ids, torch.arange(6))
    assert n == 5 and logp == pytest.approx(expected)


def test_explorer_runs_every_length_and_keeps_the_best(explorer):
    result = explorer.decode(Request(text=TEXT))
    choice = result.flexible
    assert [c.length for c in choice.candidates] == candidate_lengths(6)
    scores = [c.per_token for c in choice.candidates]
    assert choice.chosen == max(range(len(scores)), key=lambda i: (scores[i], -choice.candidates[i].length))
    # the result on show is the chosen candidate's, and each score is the exact likelihood of its text
    assert result.trace is choice.best.trace
    tok = explorer.loaded.tokenizer
    for cand in choice.candidates:
        ids = cand.trace.final_ids
        assert len(ids) - 1 == cand.n_tokens
        assert cand.logp == pytest.approx(sequence_log_likelihood(explorer.loaded.model, ids,
                                                                  torch.arange(len(ids)))[0])
        assert len(cand.trace.plan.open_positions) == cand.length
        lo, hi = blank_span(tok, TEXT, find_flexible(TEXT), cand.length, start_token_id=explorer.loaded.start_token_id)
        assert cand.fill == tok.decode(ids[lo:hi], skip_special_tokens=True)
    rows = choice.rows()
    assert [r[4] for r in rows].count("✓") == 1 and rows[choice.chosen][4] == "✓"


def test_flexible_blank_beside_fixed_ones_and_clicked_chips(explorer):
    text = "The [MASK] sat on the mat and [MASK:?2] at the birds."
    picker = explorer.picker_from_text(text)  # the flexible blank shows at its guess (2 chips)
    assert sum(picker["mask"]) == 3
    picker["mask"][-2] = True  # a clicked chip after the blank: kept at every length, shifted
    result = explorer.decode(Request(text=text, picker=picker))
    for cand in result.flexible.candidates:
        given = cand.trace.given
        assert sum(not g for g in given) == 1 + cand.length + 1 and not given[-2]


def test_other_lengths_load_without_decoding_and_bad_lengths_say_so(explorer):
    result = explorer.decode(Request(text=TEXT))
    other = next(c for c in result.flexible.candidates if c.length != result.flexible.best.length)
    shown = explorer.flexible_candidate(result, other.length)
    assert shown.trace is other.trace and shown.flexible is result.flexible
    # the stage's note says which length it shows, beside the one the search kept
    from app.stage import stage_payload

    kept = result.flexible.best.length
    assert stage_payload(shown)["note"].startswith(f"On the stage: the {other.length}-token fill. [MASK:?] tried ")
    assert f"kept {kept}" in stage_payload(shown)["note"]
    assert stage_payload(result)["note"].startswith("[MASK:?] tried ")
    with pytest.raises(InputError, match="not tried"):
        explorer.flexible_candidate(result, 999)
    plain = explorer.decode(Request(text="The cat [MASK:2] on the mat."))
    with pytest.raises(InputError, match="no blank of flexible length"):
        explorer.flexible_candidate(plain, 2)


def test_infill_api_reports_the_search(explorer):
    text, trace_json = explorer.infill(TEXT)
    data = json.loads(trace_json)
    flex = data["flexible"]
    assert flex["normalisation"] == "per token" and "per token" in flex["rule"]
    best = max(flex["candidates"], key=lambda c: (c["logp_per_token"], -c["length"]))
    assert flex["chosen_length"] == best["length"] and text == best["text"]


def test_two_flexible_blanks_are_a_page_error(explorer):
    with pytest.raises(InputError, match="one per text"):
        explorer.decode(Request(text="a [MASK:?] b [MASK:?] c"))


def test_lengths_that_do_not_fit_are_skipped_and_none_fitting_is_an_error(tiny_loaded):
    small = Explorer(tiny_loaded, max_tokens=17)
    text = "The cat sat on the mat and [MASK:?8] at birds."
    around = len(small.picker_from_text(text.replace("[MASK:?8]", "[MASK:1]"))["ids"]) - 1
    room = 17 - around
    assert room < 8  # the guess itself does not fit, shorter lengths do
    result = small.decode(Request(text=text))
    assert [c.length for c in result.flexible.candidates] == [n for n in candidate_lengths(8) if n <= room]
    with pytest.raises(InputError, match="too long for a blank of flexible length"):
        small.decode(Request(text="word " * 15 + "[MASK:?]"))  # room for 1 token; 3 is the least tried


def test_clicks_carry_over_from_the_picker_of_the_kept_length(explorer):
    text = "The [MASK] sat on the mat and [MASK:?2] at the birds."
    first = explorer.decode(Request(text=text))
    kept = first.flexible.best.length
    picker = explorer.picker_at_length(text, kept)
    assert picker["flexible_length"] == kept and sum(picker["mask"]) == 1 + kept
    picker["mask"][-2] = True  # a click on the chips shown after that run
    again = explorer.decode(Request(text=text, picker=picker))
    for cand in again.flexible.candidates:
        assert not cand.trace.given[-2] and sum(not g for g in cand.trace.given) == 1 + cand.length + 1
    stale = {**picker, "flexible_length": kept + 1}  # a picker that does not match its length: no clicks
    assert all(c.trace.given[-2] for c in explorer.decode(Request(text=text, picker=stale)).flexible.candidates)


def test_compare_searches_once_and_decodes_every_method_at_the_kept_length(explorer):
    comparison = explorer.compare(Request(text=TEXT))
    kept = explorer.decode(Request(text=TEXT)).flexible.best.length
    assert any(f"kept {kept} tokens" in note for note in comparison.notes) and not comparison.warnings
    assert "- ℹ️ [MASK:?] searched with" in comparison.texts_markdown() and "⚠" not in comparison.texts_markdown()
    for result in comparison.results.values():
        assert len(result.trace.plan.open_positions) == kept


def test_a_search_counts_every_lengths_calls_as_the_page_said_it_would(explorer):
    """Best of N on a [MASK:?] blank said "12 model calls for 12 tokens" (the kept fill's own decode) after Your
    text had said "about 55": the headline counts the whole search, and names it."""
    from app.session import BEST_OF_N
    from app.stage import calls_summary
    from model.rerank import planned_calls

    result = explorer.decode(Request(text=TEXT, method=BEST_OF_N))
    lengths = [c.length for c in result.flexible.candidates]
    said = sum(planned_calls(n) for n in lengths) + len(lengths)
    assert f"about {said} model calls" in explorer.best_of_n_cost(TEXT)
    assert result.model_calls == said
    kept = result.flexible.best.length
    assert calls_summary(result).startswith(
        f"A3 best of N: {said} model calls in all, {len(lengths)} lengths of the blank decoded by best of N and scored"
        f" · the fill on the stage ({kept} tokens) took {result.trace.model_calls} model calls · groups of 4 would "
        f"take {-(-kept // 4)} · AR needs {kept}")
    other = next(c for c in result.flexible.candidates if c is not result.flexible.best)
    assert explorer.flexible_candidate(result, other.length).model_calls == said  # the same search's calls
    plan = explorer.decode(Request(text=TEXT, method="A3 plan"))
    assert plan.model_calls == sum(c.trace.model_calls for c in plan.flexible.candidates) + len(lengths)

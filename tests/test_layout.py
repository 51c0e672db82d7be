"""The typed text's layout (model.layout): a space typed before a blank begins a word there, a text on one line
gets no line break; every decoder keeps to it, and records the model's own probabilities."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import VOCAB

from model.config import DecodeConfig, Sampler
from model.decoding import DecodeTrace, collect, decode, decode_together, sequence_log_likelihood
from model.layout import Layout, LayoutTokens, ruled_logits
from model.plans import Plan, PlanError, make_plan
from model.repeats import FORMS, TokenForms
from model.rerank import best_of_n
from model.text import encode_masked_text

# a made-up vocabulary where the layout rules out most tokens, so that a decode without it breaks it: tokens 0-9
# special-like (no text), every third one "\n" (a line break), the others " wN" (a word after a space) when N is
# 1 modulo 5, else "wN" (a piece with no space)
TEXTS = ["" if t < 10 else "\n" if t % 3 == 0 else f" w{t}" if t % 5 == 1 else f"w{t}" for t in range(VOCAB)]
SPACED = {t for t, text in enumerate(TEXTS) if text.startswith(" ")}
BREAKS = {t for t, text in enumerate(TEXTS) if "\n" in text}


class FakeTokenizer:
    """Enough of a tokenizer for encode_masked_text: every character one token (a space its own), ids by ord."""

    def __call__(self, text, add_special_tokens=False):
        return type("Encoded", (), {"input_ids": [ord(ch) % 50 + 10 for ch in text]})()


def encode(text: str):
    return encode_masked_text(FakeTokenizer(), text, start_token_id=0)


@pytest.mark.parametrize("text, starts, one_line", [
    ("fire. [MASK:3] The", [6], True),  # the space before the blank goes to the fill: its first token is a word's
    ("fire.[MASK:3] The", [], True),  # no space typed: the fill may go on the word ("fire.jpg")
    ("fire.\n[MASK:2] The", [], False),  # a line break before it is the text's own token
    ("[MASK:2] [MASK:3] end", [3], True),  # the space between two blanks: the second begins a word
    ("a [MASK] b  [MASK:2]\tc", [2, 5], True),  # any run of spaces; a tab after a blank is the text's
    ("[MASK:2] at the start", [], True),
])
def test_the_layout_is_read_off_the_typed_text(text, starts, one_line):
    masked = encode(text)
    assert masked.layout == Layout(tuple(starts), one_line)
    assert all(not bool(masked.given[p]) for p in starts)  # each a blank's first position


def test_layout_tokens_rule_out_non_words_at_a_word_start_and_breaks_in_one_line():
    tokens = LayoutTokens.of_texts(TEXTS)
    rows = tokens.banned(Layout((4,), True), [4, 5], VOCAB)
    assert set(rows[0].nonzero().flatten().tolist()) == set(range(VOCAB)) - (SPACED - BREAKS)
    assert set(rows[1].nonzero().flatten().tolist()) == BREAKS
    rows = tokens.banned(Layout((4,), False), [4, 5], VOCAB + 3)  # the model's vocabulary may be larger
    assert set(rows[0].nonzero().flatten().tolist()) == set(range(VOCAB)) - SPACED
    assert not bool(rows[1].any())
    # a token of spaces alone is no word (" ", " \n\n": the review found " \n\n" passed the first version)
    blank = LayoutTokens.of_texts(["", " ", " \n\n", " He", "\n", "he", " He\n"])
    assert blank.banned(Layout((1,)), [1], 7)[0].tolist() == [True, True, True, False, True, True, True]
    # a vocabulary without words after a space: the word start keeps only the line breaks' ban
    unspaced = LayoutTokens.of_texts(["", "he", "\n", "."])
    assert unspaced.banned(Layout((1,), True), [1], 4)[0].tolist() == [False, False, True, False]
    assert not bool(unspaced.banned(Layout((1,)), [1], 4).any())


def test_ruled_logits_leave_the_input_alone_without_a_layout_and_give_way_when_nothing_is_left():
    tokens = LayoutTokens.of_texts(TEXTS)
    logits = torch.randn(2, VOCAB)
    assert ruled_logits(logits, [3, 4], None, tokens)[0] is logits
    assert ruled_logits(logits, [3, 4], Layout((3,), True), None)[0] is logits
    logits[0, 12] = 50.0  # "w12": no space, the most likely at the word start 3
    ruled, moved = ruled_logits(logits, [3, 4], Layout((3,)), tokens)
    assert moved == {3} and int(ruled[0].argmax()) in SPACED
    assert torch.equal(ruled[1], logits[1]) and torch.equal(logits[0, 12], torch.tensor(50.0))  # the input is kept
    nothing = LayoutTokens.of_texts([""] * VOCAB)  # no token begins with a space: the rule gives way
    assert ruled_logits(logits, [3, 4], Layout((3,)), nothing)[0] is logits
    breaks = LayoutTokens.of_texts(["\n"] * VOCAB)  # every token a line break: nothing would be left
    assert ruled_logits(logits, [3, 4], Layout((), True), breaks)[0] is logits


@pytest.fixture(scope="module")
def laid_model(sharp_tiny):
    model = copy.deepcopy(sharp_tiny)
    setattr(model, FORMS, TokenForms(list(range(VOCAB)), [not any(c.isalpha() for c in t) for t in TEXTS],
                                     layout=LayoutTokens.of_texts(TEXTS)))
    return model


def laid_plan(order="left_to_right", size=1, one_line=True) -> Plan:
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(10, VOCAB, (20,), generator=g)
    given = torch.ones(20, dtype=torch.bool)
    given[5:10] = False
    given[13:17] = False
    return make_plan(tokens, given=given, order=order, group_size=size).with_layout(Layout((5, 13), one_line))


def check_laid_out(trace: DecodeTrace, one_line: bool = True) -> None:
    final = trace.final_ids
    assert final[5] in SPACED and final[13] in SPACED, (final[5], final[13])
    if one_line:
        assert not {final[p] for p in trace.plan.open_positions} & BREAKS
    assert trace.plan.layout == Layout((5, 13), one_line)  # the realised plan keeps it (exports carry it)


@pytest.mark.parametrize("config", [
    DecodeConfig("plan", order="left_to_right"), DecodeConfig("plan", order="random", group_size=2),
    DecodeConfig("dynamic", strategy="confidence", k=1), DecodeConfig("dynamic", strategy="entropy", k=2),
    DecodeConfig("diffusion", k=1), DecodeConfig("official_dynamic", k=1), DecodeConfig("one_step_parallel", k=1),
    DecodeConfig("ar_baseline"), DecodeConfig("plan", order="left_to_right", sampler=Sampler(0.9), seed=4),
    DecodeConfig("plan", order="left_to_right", sampler=Sampler(no_repeat=3)),
], ids=lambda c: f"{c.method}-{c.order}-{c.strategy}-{c.k}-{c.sampler.temperature}-{c.sampler.no_repeat}")
def test_every_decoder_keeps_to_the_layout(laid_model, config):
    plan = laid_plan(config.order if config.spec.order else "left_to_right", config.group_size)
    trace = collect(decode(laid_model, plan, config, base=laid_model))
    check_laid_out(trace)
    free = collect(decode(laid_model, plan.with_layout(None), config, base=laid_model))
    assert free.plan.layout is None
    # the rule did work here: without it, this model puts an unspaced token or a line break somewhere
    assert final_breaks_layout(free) or config.sampler.temperature or config.method == "official_dynamic"


def final_breaks_layout(trace: DecodeTrace) -> bool:
    final = trace.final_ids
    return (final[5] not in SPACED or final[13] not in SPACED
            or bool({final[p] for p in trace.plan.open_positions} & BREAKS))


def test_the_records_keep_the_models_own_probabilities_and_name_what_the_layout_moved(laid_model):
    plan = laid_plan()
    trace = collect(decode(laid_model, plan, DecodeConfig("plan")))
    open_positions = plan.open_positions
    total, per_position = sequence_log_likelihood(laid_model, trace.final_ids, plan.group_ids)
    steps_total = sum(s.logprob for s in trace.steps)
    assert steps_total == pytest.approx(float(per_position[open_positions].sum()), abs=1e-4)
    moved = [p for s in trace.steps for p in (s.layout_banned or [])]
    assert moved, "the test model's first choice should break the layout somewhere"
    for s in trace.steps:
        for p in s.layout_banned or []:
            top = s.candidates[p][0][0]  # the model's own most likely token, as recorded
            assert top not in SPACED or top in BREAKS
            assert s.tokens[s.positions.index(p)] != top
    restored = DecodeTrace.from_dict(trace.to_dict())
    assert restored.plan.layout == plan.layout
    assert [s.layout_banned for s in restored.steps] == [s.layout_banned for s in trace.steps]


def test_decoding_together_keeps_the_layout_as_each_decode_alone(laid_model):
    configs = [DecodeConfig("plan", order="left_to_right", preview_open=False),
               DecodeConfig("plan", order="ends_first", preview_open=False),
               DecodeConfig("dynamic", strategy="confidence", k=1)]
    plans = [laid_plan(c.order if c.method == "plan" else "left_to_right") for c in configs]
    together = decode_together(laid_model, plans, configs)
    for plan, config, trace in zip(plans, configs, together, strict=True):
        alone = collect(decode(laid_model, plan, config))
        assert trace.final_ids == alone.final_ids
        check_laid_out(trace)
    found = best_of_n(laid_model, plans[0].token_ids, plans[0].given, layout=plans[0].layout)
    for candidate in found.candidates:
        check_laid_out(candidate.trace)


def test_a_plans_layout_must_name_open_positions_and_round_trips():
    plan = laid_plan()
    with pytest.raises(PlanError, match="not open positions"):
        plan.with_layout(Layout((4,)))  # position 4 is given
    d = plan.to_dict()
    assert d["layout"] == {"word_starts": [5, 13], "one_line": True}
    assert Plan.from_dict(d).layout == plan.layout
    assert "layout" not in plan.with_layout(None).to_dict()  # plans without one read as before
    for bad, match in (({"word_starts": "5"}, "word_starts"), ({"word_starts": [5], "one_line": "false"}, "one_line"),
                       ("5", "an object")):
        with pytest.raises(PlanError, match=match):
            Plan.from_dict({**d, "layout": bad})


def test_a_layout_needs_a_model_that_knows_its_tokenizer(sharp_tiny):
    with pytest.raises(PlanError, match="mark_forms"):
        collect(decode(sharp_tiny, laid_plan(), DecodeConfig("plan", order="left_to_right")))


def test_a_forced_token_is_not_said_to_be_moved_by_the_layout(laid_model):
    plan = laid_plan()
    free = collect(decode(laid_model, plan, DecodeConfig("plan", order="left_to_right")))
    moved = sorted(p for s in free.steps for p in (s.layout_banned or []))
    force = torch.full((plan.length,), -1)
    force[moved] = torch.tensor([free.final_ids[p] for p in moved])
    forced = collect(decode(laid_model, plan, DecodeConfig("plan", order="left_to_right"), force_tokens=force))
    assert forced.final_ids == free.final_ids and not any(s.layout_banned for s in forced.steps)


def test_the_page_keeps_the_space_typed_before_a_blank(default_model):
    """The walk's finding: after "fire. " a blank was filled with "\\n\\nThe children were happy." (the model
    starts a paragraph there two times in three): the typed space was gone, and the one-line text broke."""
    from app.session import Explorer, Request
    from app.trace_view import step_pieces

    explorer = Explorer(default_model)
    text = "The old dog slept by the fire. [MASK:8] The children laughed and gave him a treat."
    for method in ("A3 plan", "A3 dynamic", "A3 best of N"):
        result = explorer.decode(Request(text, method=method))
        trace = result.trace
        fill = default_model.tokenizer.decode([trace.final_ids[p] for p in trace.plan.open_positions])
        assert fill.startswith(" ") and fill[1:2].strip() and "\n" not in fill, (method, fill)
        assert result.text.startswith("The old dog slept by the fire. ") and "\n" not in result.text
    plan_trace = explorer.decode(Request(text, method="A3 plan")).trace
    first = plan_trace.steps[0]
    assert first.layout_banned == first.positions  # the model's own first choice was a line break
    assert default_model.tokenizer.decode([first.candidates[first.positions[0]][0][0]]) == "\n"
    shown = [default_model.tokenizer.decode([t]) for t in plan_trace.final_ids]
    piece = step_pieces(plan_trace, 0, shown, [(p, p + 1) for p in range(len(shown))])[0]
    assert piece.laid_out == "a space is typed before the blank"

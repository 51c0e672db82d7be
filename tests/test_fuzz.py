"""Property-based tests: the blank syntax, the group-id parser, plans and every decoder on generated input.

The only exceptions allowed are the documented input errors (TextInputError and its BlankSyntaxError,
PlanError, and the ValueErrors of Sampler); every open position is filled exactly once and the given
tokens never change. Derandomized with a fixed number of examples, so a run is the same everywhere.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import VOCAB
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from model.decoding import MODES, STRATEGIES, DecodeTrace, Sampler, collect, run_decoder
from model.plans import (
    GROUP_ID_LIMIT,
    ORDERS,
    Plan,
    PlanError,
    blind_positions,
    custom_plan,
    make_plan,
    parse_group_ids,
)
from model.text import MAX_BLANK, TextInputError, encode_masked_text, parse_blanks

pytestmark = pytest.mark.usefixtures("one_thread")


def fuzz(max_examples: int):
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------------------------------
# generated text: any code point (lone surrogates and control characters included) mixed with
# fragments of the blank syntax and numbers of every size and sign

ANY_CHAR = st.characters(codec=None, exclude_categories=())
FRAGMENTS = st.sampled_from(["[MASK]", "[mask]", "[MASK:", "[Mask:3]", "]", "[", ":", "-", " ", "\n", "\t", "\x00",
                             "[MASK:0]", "[MASK:512]", "[MASK:513]", "[MASK: 2]", "[ MASK ]", "\ud83d", "\u200b"])
NUMBERS = st.integers(min_value=-(10**30), max_value=10**30).map(str)
TEXT = st.lists(st.one_of(st.text(ANY_CHAR, max_size=6), FRAGMENTS, NUMBERS,
                          st.integers(1, 600).map(lambda n: f"[MASK:{n}]")), max_size=12).map("".join)
BLANK = re.compile(r"\[mask(?::([0-9]+))?\]", re.IGNORECASE)


@fuzz(1500)
@given(TEXT)
def test_blank_parser_splits_any_text_or_raises_an_input_error(text):
    try:
        pieces = parse_blanks(text)
    except TextInputError as err:
        assert str(err)
        return
    blanks = [p for p in pieces if isinstance(p, int)]
    assert all(1 <= n <= MAX_BLANK for n in blanks)
    assert all(p for p in pieces if isinstance(p, str))  # no empty text pieces
    assert "".join(p for p in pieces if isinstance(p, str)) == BLANK.sub("", text)
    assert blanks == [int(m.group(1) or 1) for m in BLANK.finditer(text)]


@fuzz(300)
@given(TEXT)
def test_masked_text_encodes_or_raises_an_input_error(tokenizer, text):
    try:
        enc = encode_masked_text(tokenizer, text, start_token_id=0, max_length=512)
    except TextInputError as err:
        assert str(err)
        return
    assert enc.token_ids[0] == 0 and bool(enc.given[0])
    assert enc.token_ids.shape == enc.given.shape and len(enc.token_ids) <= 512
    assert int((~enc.given).sum()) == sum(p for p in parse_blanks(text) if isinstance(p, int))
    assert int(enc.token_ids.min()) >= 0 and int(enc.token_ids.max()) < len(tokenizer)


# --------------------------------------------------------------------------------------------------
# group ids typed as text


@fuzz(800)
@given(st.one_of(TEXT, st.lists(st.one_of(NUMBERS, FRAGMENTS), max_size=10).map(" ".join)), st.integers(-3, 12))
def test_group_id_parser_parses_or_raises_a_plan_error(text, length):
    try:
        values = parse_group_ids(text, length)
    except PlanError as err:
        assert str(err)
        return
    assert len(values) == length and all(isinstance(v, int) for v in values)
    assert values == [int(p) for p in text.replace(",", " ").split()]


@fuzz(300)
@given(st.lists(st.integers(-GROUP_ID_LIMIT, GROUP_ID_LIMIT - 1), min_size=1, max_size=20),
       st.sampled_from([" ", ", ", ",", "\t"]))
def test_typed_group_ids_round_trip(values, separator):
    assert parse_group_ids(separator.join(map(str, values)), len(values)) == values


# --------------------------------------------------------------------------------------------------
# plans

GIVEN = st.lists(st.booleans(), min_size=1, max_size=24)
SIZES = st.one_of(st.integers(-2, 30), st.just(10**18), st.sampled_from([True, 1.5, "2", None]))
GROUP_LABELS = st.one_of(st.integers(-5, 40), st.integers(-(2**63), 2**63 - 1))


def assert_valid_plan(plan: Plan, given: list[bool]):
    groups = plan.group_ids
    assert plan.given.tolist() == given and groups.shape == (len(given),)
    assert plan.open_positions == [p for p, g in enumerate(given) if not g]
    assert int(groups.min()) < int(groups[plan.open].min())  # context before every open position
    assert int(groups.min()) >= -GROUP_ID_LIMIT and int(groups.max()) < GROUP_ID_LIMIT + len(given)
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))).group_ids.tolist() == groups.tolist()


@fuzz(800)
@given(GIVEN, st.sampled_from(ORDERS + ("sideways",)), SIZES, st.sampled_from(["causal", "joint", "both"]),
       st.integers(0, 2**32))
def test_named_plans_are_valid_or_raise_a_plan_error(given_list, order, size, grouping, seed):
    try:
        plan = make_plan(torch.arange(len(given_list)), given=torch.tensor(given_list), order=order,
                         group_size=size, given_grouping=grouping, generator=torch.Generator().manual_seed(seed))
    except PlanError as err:
        assert str(err)
        return
    assert_valid_plan(plan, given_list)
    assert torch.unique(plan.group_ids[plan.open], return_counts=True)[1].max() <= size
    assert int(plan.group_ids[plan.given].max()) < int(plan.group_ids[plan.open].min())  # given first


@fuzz(800)
@given(st.data(), GIVEN)
def test_custom_plans_are_valid_or_raise_a_plan_error(data, given_list):
    length = len(given_list)
    groups = data.draw(st.one_of(st.lists(GROUP_LABELS, min_size=length, max_size=length),
                                 st.lists(GROUP_LABELS, max_size=length + 2)))
    try:
        plan = custom_plan(torch.arange(length), given=torch.tensor(given_list), group_ids=groups)
    except PlanError as err:
        assert str(err)
        return
    assert_valid_plan(plan, given_list)
    assert plan.group_ids.tolist() == groups


# --------------------------------------------------------------------------------------------------
# every decoder on the tiny model


@st.composite
def plans(draw):
    """Named or custom plans over random tokens, some without context (which decoders must refuse)."""
    length = draw(st.integers(1, 20))
    given_list = draw(st.lists(st.booleans(), min_size=length, max_size=length))
    tokens = torch.tensor(draw(st.lists(st.integers(0, VOCAB - 1), min_size=length, max_size=length)))
    given = torch.tensor(given_list)
    if draw(st.booleans()):
        groups = torch.tensor(draw(st.lists(st.integers(-3, 12), min_size=length, max_size=length)))
    else:
        order, size = draw(st.sampled_from(ORDERS)), draw(st.integers(1, 5))
        groups = None
    if draw(st.integers(0, 9)) == 0:  # built directly, bypassing the plan constructors' checks
        return Plan(tokens, given, groups if groups is not None else torch.arange(length))
    if groups is not None:
        return custom_plan(tokens, given=given, group_ids=groups)
    return make_plan(tokens, given=given, order=order, group_size=size,
                     generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))


SAMPLERS = st.builds(Sampler, temperature=st.one_of(st.just(0.0), st.floats(0.05, 3.0)),
                     top_k=st.integers(0, 12), top_p=st.floats(0.01, 1.0))


@fuzz(600)
@given(st.data(), st.sampled_from(MODES), st.integers(1, 4), st.sampled_from(STRATEGIES), SAMPLERS,
       st.integers(0, 2**31))
def test_every_decoder_fills_each_open_position_once_and_keeps_the_given(tiny, data, mode, k, strategy, sampler,
                                                                       seed):
    try:
        plan = data.draw(plans())
    except PlanError:
        event("plan refused by its constructor")
        return  # covered above
    refused = (not bool(plan.open.any()) or not bool(plan.given.any())
               or (mode == "plan" and bool(blind_positions(plan.given, plan.group_ids)))
               or (mode == "ar_baseline" and not bool(plan.given[0])))
    try:
        trace = collect(run_decoder(mode, tiny, plan, sampler=sampler, seed=seed, strategy=strategy, k=k))
    except PlanError as err:
        event("decoder refused the plan")
        assert refused, err  # refused exactly the plans with nothing to decode or no context
        assert re.search("Give at least one token first|needs a given first position|open set is empty", str(err))
        return
    assert not refused
    event(f"decoded ({mode})")
    committed = [p for s in trace.steps for p in s.positions]
    assert sorted(committed) == plan.open_positions  # each open position exactly once
    initial = plan.token_ids.tolist()
    assert all(trace.final_ids[p] == initial[p] for p in range(plan.length) if plan.given[p])
    assert all(0 <= t < VOCAB for t in trace.final_ids)
    assert trace.tokens_at(len(trace.steps) - 1) == trace.final_ids
    assert all(len(s.positions) <= (1 if mode in ("ar_baseline",) else k if mode != "plan" else plan.length)
               for s in trace.steps)
    assert all(s.logprob <= 1e-5 for s in trace.steps)
    again = DecodeTrace.from_dict(json.loads(trace.to_json()))
    assert again.final_ids == trace.final_ids and again.group_ids == trace.group_ids


@fuzz(300)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.booleans(), st.none()),
       st.one_of(st.integers(-5, 10**20), st.floats(), st.booleans(), st.none()),
       st.one_of(st.floats(allow_nan=True), st.integers(-2, 2), st.none()))
def test_sampler_settings_are_valid_or_raise_a_value_error(temperature, top_k, top_p):
    try:
        sampler = Sampler(temperature, top_k, top_p)
    except ValueError as err:
        assert str(err)
        return
    assert sampler.temperature >= 0 and sampler.top_k >= 0 and 0 < sampler.top_p <= 1

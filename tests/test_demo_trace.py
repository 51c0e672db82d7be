"""The example the page opens with (assets/demo_trace.json, written by `python -m app.demo_trace`) is a
consistent trace of the current default model: its plan is valid, its steps fill exactly the blanks,
its tokens re-decode into its text, and it was decoded by the adapter that ships today."""

import json
from types import SimpleNamespace

import pytest
import torch

from app.demo_trace import (
    DEMO_REQUEST,
    PATH,
    load_demo,
    matches,
    model_fingerprint,
    read_record,
    result_from_record,
    same_candidates,
)
from app.session import Explorer, Request
from app.stage import calls_summary
from app.trace_view import view_of_dict, view_of_result
from model.layout import Layout
from model.masks import check_masks, two_stream_masks
from model.repeats import RULE
from model.text import decode_text, encode_masked_text

REGENERATE = "regenerate it with `python -m app.demo_trace`"


@pytest.fixture(scope="module")
def record():
    record = read_record(PATH)
    assert record is not None, f"{PATH} is missing or unreadable: {REGENERATE}"
    return record


def test_shipped_trace_is_a_valid_plan_filled_step_by_step(record):
    result = result_from_record(record)
    trace = result.trace
    plan = trace.plan
    open_positions = plan.open_positions
    committed = [p for s in trace.steps for p in s.positions]
    assert sorted(committed) == open_positions and len(committed) == len(set(committed))  # each blank once
    assert [s.step for s in trace.steps] == list(range(len(trace.steps)))
    groups = torch.tensor(trace.group_ids)
    assert all(int(groups[p]) > int(groups[plan.given].max()) for p in open_positions)  # given groups first
    for s in trace.steps:  # each step commits one group, and groups come in decoding order
        assert len({int(groups[p]) for p in s.positions}) == 1
    order = [int(groups[s.positions[0]]) for s in trace.steps]
    assert order == sorted(order)
    content, query = two_stream_masks(groups)
    assert check_masks(content, query, groups).ok
    assert trace.tokens_at(len(trace.steps) - 1) == trace.final_ids
    assert len(result.labels) == len(trace.final_ids) and record["method"] == DEMO_REQUEST["method"]


def test_shipped_tokens_re_decode_into_its_text(record, tokenizer):
    trace = result_from_record(record).trace
    assert decode_text(tokenizer, trace.final_ids) == record["text"] == record["trace"]["final_text"]
    masked = encode_masked_text(tokenizer, DEMO_REQUEST["text"], start_token_id=trace.final_ids[0])
    assert masked.token_ids.tolist()[:1] == trace.final_ids[:1]
    given = masked.given.tolist()
    assert given == trace.given
    assert [t for t, g in zip(masked.token_ids.tolist(), given, strict=True) if g] == \
        [t for t, g in zip(trace.final_ids, given, strict=True) if g]


def test_shipped_trace_comes_from_the_adapter_that_ships(record):
    assert record["model"] == "default"
    assert record["fingerprint"] == model_fingerprint("default"), f"the default model changed: {REGENERATE}"
    assert same_candidates(record["best_of_n"]), f"best of N decodes other candidates today: {REGENERATE}"
    assert record["rule"] == RULE, f"the no-repeat rule changed: {REGENERATE}"


def test_a_record_of_other_candidates_is_not_shown(record):
    """A trace recorded before best of N's candidates changed is stale: matches() refuses it (the app then
    decodes the example at start-up)."""
    found = record["best_of_n"]
    assert same_candidates(found)
    renamed = {**found, "candidates": [{**found["candidates"][0], "name": "outside-in"}, *found["candidates"][1:]]}
    assert not same_candidates(renamed)
    assert not same_candidates({**found, "candidates": found["candidates"][:-1]})
    assert not same_candidates({"candidates": [{"config": {}}]})
    changed = json.loads(json.dumps(found))
    changed["candidates"][1]["config"]["order"] = "outside_in"  # same name, another config
    assert not same_candidates(changed)

    class Shipped:  # the default model as the app holds it, without loading it
        loaded = SimpleNamespace(name="default")

        def picker_from_text(self, text):
            return {"ids": record["trace"]["plan"]["token_ids"]}

        def layout(self, text):  # the text's layout as today's app reads it (model.layout): the blank's first token
            return Layout((record["trace"]["plan"]["given"].index(False),), True)

    assert matches(record, Shipped())
    unlaid = json.loads(json.dumps(record))
    del unlaid["trace"]["plan"]["layout"]
    assert not matches(unlaid, Shipped())  # decoded before the layout rule: decoded again at start-up
    assert not matches({**record, "best_of_n": changed}, Shipped())
    assert not matches({**record, "rule": "forms, window 24, skip 2, word pieces free"}, Shipped())  # rule v1
    assert not matches({k: v for k, v in record.items() if k != "rule"}, Shipped())


def test_other_models_decode_the_example_at_start_up(tiny_loaded):
    explorer = Explorer(tiny_loaded)
    result, note = load_demo(explorer)
    assert result is not None and "start-up" in note
    assert result.n_steps == len(result.trace.plan.open_positions)  # A3 dynamic, k = 1
    assert result.text == explorer.decode(Request(**DEMO_REQUEST)).text


def test_shipped_trace_draws_as_its_result_does(record):
    """The shipped dict (written before the trace view existed) gives the view its Result gives: the
    stage and the exports of the opening example agree."""
    exported = view_of_dict({**record["trace"], "method": record["method"]})
    assert exported == view_of_result(result_from_record(record))
    assert exported.title.count(record["method"]) == 1 and exported.steps


def test_the_shipped_best_of_n_keeps_every_candidate_and_counts_every_call(record):
    """The page's default decoder is best of N: the first visit shows the kept candidate, counts the calls of
    all of them, and the kept one is the argmax of the scores listed."""
    result = result_from_record(record)
    found = result.best_of_n
    assert found is not None and len(found.candidates) > 1
    scores = [c.logp for c in found.candidates]
    assert found.best_index == scores.index(max(scores))
    assert found.best.trace.final_ids == result.trace.final_ids
    assert result.model_calls == found.model_calls > result.trace.model_calls
    assert f"{found.model_calls} model calls" in calls_summary(result)

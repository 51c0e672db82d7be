"""model.rerank: best of N fills by the A3 model's own exact likelihood of the whole text."""

import pytest
import torch
from conftest import two_span_plan

from model.config import DecodeConfig, Sampler
from model.decoding import collect, decode, sequence_log_likelihood
from model.loading import tiny_model
from model.plans import make_plan
from model.rerank import CANDIDATES, best_of_n, planned_calls


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(101, seed=0)


@pytest.fixture(scope="module")
def blank():
    plan = two_span_plan()
    return plan.token_ids, plan.given


@pytest.fixture(scope="module")
def result(tiny, blank):
    return best_of_n(tiny, *blank)


def test_every_candidate_is_the_decode_its_config_asks_for(tiny, blank, result):
    ids, given = blank
    assert [c.name for c in result.candidates] == [name for name, _ in CANDIDATES]
    for cand in result.candidates:
        order = "left_to_right" if cand.config.order == "custom" else cand.config.order  # dynamic: any plan
        plan = make_plan(ids, given=given, order=order, group_size=cand.config.group_size)
        alone = collect(decode(tiny, plan, cand.config))
        assert cand.trace.final_ids == alone.final_ids and cand.trace.config == cand.config
        assert [t for t, g in zip(cand.trace.final_ids, given.tolist(), strict=True) if g] == ids[given].tolist()


def test_each_score_is_the_exact_left_to_right_log_likelihood_of_its_text(tiny, result):
    for cand in result.candidates:
        expected, _ = sequence_log_likelihood(tiny, cand.trace.final_ids, torch.arange(len(cand.trace.final_ids)))
        assert cand.logp == pytest.approx(expected, abs=1e-3)


def test_the_choice_is_the_argmax_of_the_scores_shown(result):
    scores = [c.logp for c in result.candidates]
    assert result.best_index == scores.index(max(scores)) and result.best is result.candidates[result.best_index]


def test_calls_are_counted_and_known_before_the_run(result, blank):
    n_open = int((~blank[1]).sum())
    assert result.scoring_calls == 1  # six candidates, one batched forward
    together = [c for c in result.candidates if c.together]
    assert len(together) == 5 and all(c.calls == n_open for c in together)  # five plans, one call per step
    alone = [c for c in result.candidates if not c.together]
    assert result.model_calls == n_open + sum(c.trace.model_calls for c in alone) + 1
    assert result.model_calls == planned_calls(n_open)


def test_a_planted_better_candidate_wins(tiny, blank):
    """A candidate forced to the text the model scores highest must be chosen: sample many texts, put the
    most likely one in as a 'teacher-forced' candidate by seed search, and check the ranking follows."""
    ids, given = blank
    configs = [(f"seed {s}", DecodeConfig("plan", order="left_to_right", sampler=Sampler(1.0), seed=s,
                                          preview_open=False)) for s in range(5)]
    result = best_of_n(tiny, ids, given, candidates=configs)
    alone = [sequence_log_likelihood(tiny, c.trace.final_ids, torch.arange(ids.numel()))[0]
             for c in result.candidates]
    assert result.best_index == max(range(5), key=lambda i: (alone[i], -i))


def test_no_candidates_is_a_clear_error(tiny, blank):
    with pytest.raises(ValueError, match="at least one candidate"):
        best_of_n(tiny, *blank, candidates=())

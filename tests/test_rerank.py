"""model.rerank: best of N fills by the A3 model's own exact likelihood of the whole text."""

import pytest
import torch
from conftest import two_span_plan
from test_decoding import LayerSpy

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
    """Each candidate, decoded in lockstep with the others (dynamic included), is its own decode: the same steps,
    tokens and realised plan as decoding it alone, log-probabilities within 1e-4."""
    ids, given = blank
    assert [c.name for c in result.candidates] == [name for name, _ in CANDIDATES]
    for cand in result.candidates:
        order = "left_to_right" if cand.config.order == "custom" else cand.config.order  # dynamic: any plan
        plan = make_plan(ids, given=given, order=order, group_size=cand.config.group_size)
        alone = collect(decode(tiny, plan, cand.config))
        assert cand.trace.final_ids == alone.final_ids and cand.trace.config == cand.config
        assert cand.trace.plan.group_ids.tolist() == alone.plan.group_ids.tolist()
        assert [(s.positions, s.tokens) for s in cand.trace.steps] == [(s.positions, s.tokens) for s in alone.steps]
        assert max(abs(a.logprob - b.logprob) for a, b in zip(cand.trace.steps, alone.steps, strict=True)) < 1e-4
        assert [t for t, g in zip(cand.trace.final_ids, given.tolist(), strict=True) if g] == ids[given].tolist()


def test_each_score_is_the_exact_left_to_right_log_likelihood_of_its_text(tiny, result):
    for cand in result.candidates:
        expected, _ = sequence_log_likelihood(tiny, cand.trace.final_ids, torch.arange(len(cand.trace.final_ids)))
        assert cand.logp == pytest.approx(expected, abs=1e-3)


def test_the_choice_is_the_argmax_of_the_scores_shown(result):
    scores = [c.logp for c in result.candidates]
    assert result.best_index == scores.index(max(scores)) and result.best is result.candidates[result.best_index]


def test_calls_are_counted_and_known_before_the_run(tiny, blank, result, monkeypatch):
    """Every candidate shares one lockstep decode (one call per step serves all six), one forward scores them
    all, and the count said before the run is the number of passes through the model that happen."""
    n_open = int((~blank[1]).sum())
    assert result.scoring_calls == 1  # six candidates, one forward
    assert all(c.together and c.calls == n_open for c in result.candidates)  # one call per step for all
    assert result.model_calls == n_open + 1 == planned_calls(n_open)
    spy = LayerSpy(tiny, monkeypatch)
    best_of_n(tiny, *blank)
    assert spy.calls == result.model_calls


def test_candidates_decoded_alone_and_of_other_lengths_are_counted_too(tiny, blank, monkeypatch):
    """A dynamic candidate of k = 2 (half the steps) joins the lockstep; a diffusion candidate is decoded alone;
    two scoring passes of 2 candidates each: the planned count is what runs."""
    n_open = int((~blank[1]).sum())
    candidates = (CANDIDATES[0], ("dynamic, k 2", DecodeConfig("dynamic", k=2)),
                  ("diffusion", DecodeConfig("diffusion", k=3)), CANDIDATES[3])
    spy = LayerSpy(tiny, monkeypatch)
    result = best_of_n(tiny, *blank, candidates=candidates, batch_size=2)
    assert [c.together for c in result.candidates] == [True, True, False, True]
    assert [c.calls for c in result.candidates] == [n_open, -(-n_open // 2), -(-n_open // 3), n_open]
    assert result.scoring_calls == 2
    assert spy.calls == result.model_calls == n_open + -(-n_open // 3) + 2 == planned_calls(n_open, candidates, 2)


def test_the_base_model_is_never_called(tiny, blank, monkeypatch):
    """Every way to the base AR model (the evaluation's judge) fails the test if the rerank takes it."""
    import model.base
    import model.decoding
    import model.loading

    def judge(*args, **kwargs):
        raise AssertionError("the rerank used the base model")

    for module, name in ((model.loading.LoadedModel, "base"), (model.loading, "base_a3"),
                         (model.loading, "load_ar_base"), (model.base, "load_base_causal_lm"),
                         (model.decoding, "causal_log_probs"), (model.decoding, "decode_ar_baseline")):
        monkeypatch.setattr(module, name, judge)
    monkeypatch.setitem(model.decoding._DECODERS, "ar_baseline", judge)
    assert best_of_n(tiny, *blank).best.trace.final_ids


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


def test_best_of_n_round_trips_through_its_dict(result):
    import json

    from model.rerank import BestOfN

    again = BestOfN.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.best_index == result.best_index and again.model_calls == result.model_calls
    assert [c.name for c in again.candidates] == [c.name for c in result.candidates]
    assert [c.trace.final_ids for c in again.candidates] == [c.trace.final_ids for c in result.candidates]
    assert [c.config for c in again.candidates] == [c.config for c in result.candidates]
    assert [c.logp for c in again.candidates] == [round(c.logp, 4) for c in result.candidates]

import json

import pytest
import torch
from conftest import VOCAB, random_groups, two_span_plan

from model.config import DecodeConfig
from model.decoding import (
    MODES,
    DecodeEngine,
    DecodeTrace,
    Sampler,
    batch_log_likelihood,
    collect,
    decode,
    decode_ar_baseline,
    decode_diffusion,
    decode_dynamic,
    decode_official_dynamic,
    decode_one_step_parallel,
    decode_plan,
    decode_together,
    forward_rows,
    left_to_right_log_likelihoods,
    run_decoder,
    sequence_log_likelihood,
)
from model.loading import tiny_model
from model.masks import two_stream_masks
from model.modeling import A3Cache
from model.plans import ORDERS, Plan, PlanError, custom_plan, make_plan

L = 24


def infill_plan(order="left_to_right", size=1, seed=0, length=L):
    return two_span_plan(order, size, seed, length)


def probs_of(trace):
    return [(s.token_logprobs, s.entropy, s.candidates) for s in trace.steps]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("size", [1, 3])
def test_cached_and_recomputed_plan_decoding_agree(tiny, order, size):
    plan = infill_plan(order, size)
    cached = collect(decode_plan(tiny, plan, cache=True))
    recomputed = collect(decode_plan(tiny, plan, cache=False))
    official = collect(decode_plan(tiny, plan, cache=False, full_forward=True))
    assert cached.final_ids == recomputed.final_ids == official.final_ids
    for a, b in zip(cached.steps, recomputed.steps, strict=True):
        assert a.positions == b.positions and a.tokens == b.tokens
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs, strict=True)) < 1e-4
        assert max(abs(a.entropy[p] - b.entropy[p]) for p in a.entropy) < 1e-4
    for a, b in zip(cached.steps, official.steps, strict=True):
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs, strict=True)) < 1e-4


def test_cached_query_logits_equal_recomputed_logits_on_custom_groups(tiny):
    g = torch.Generator().manual_seed(7)
    groups = random_groups(L, g, n_groups=6)
    tokens = torch.randint(0, VOCAB, (L,), generator=g)
    given = groups == groups.min()
    plan = custom_plan(tokens, given=given, group_ids=groups)
    cached, full = DecodeEngine(tiny, plan, cache=True), DecodeEngine(tiny, plan, cache=False)
    for target in plan.open_groups:
        rows = (groups == target).nonzero(as_tuple=True)[0].tolist()
        context = (groups < target).nonzero(as_tuple=True)[0].tolist()
        a = cached.query_logits(groups, context, rows, [target] * len(rows))
        b = full.query_logits(groups, context, rows, [target] * len(rows))
        assert (a - b).abs().max() < 1e-4


@pytest.mark.slow
def test_cached_plan_decoding_on_the_real_model(default_model):
    tok, model = default_model.tokenizer, default_model.model
    ids = [default_model.start_token_id] + tok("The cat sat on the mat and looked at the bird in the tree.").input_ids
    given = torch.ones(len(ids), dtype=torch.bool)
    given[4:10] = False
    plan = make_plan(ids, given=given, order="random", group_size=2, generator=torch.Generator().manual_seed(0))
    cached = collect(decode_plan(model, plan, preview_open=False))
    recomputed = collect(decode_plan(model, plan, cache=False, preview_open=False))
    assert cached.final_ids == recomputed.final_ids
    assert abs(cached.logprob - recomputed.logprob) < 1e-3


def test_same_seed_same_trace_and_greedy_ignores_the_seed(tiny):
    plan = infill_plan("random", 2)
    sampler = Sampler(temperature=1.0, top_k=20, top_p=0.9)
    a = collect(decode_plan(tiny, plan, sampler=sampler, seed=11))
    b = collect(decode_plan(tiny, plan, sampler=sampler, seed=11))
    c = collect(decode_plan(tiny, plan, sampler=sampler, seed=12))
    assert a.final_ids == b.final_ids and probs_of(a) == probs_of(b)
    assert a.final_ids != c.final_ids
    greedy = [collect(decode_plan(tiny, plan, seed=s)).final_ids for s in (1, 2, 3)]
    assert greedy[0] == greedy[1] == greedy[2]


@pytest.mark.parametrize("mode", MODES)
def test_every_decoder_fills_each_open_position_once_and_keeps_the_given(tiny, mode):
    plan = infill_plan("outside_in", 2)
    trace = collect(run_decoder(mode, tiny, plan, sampler=Sampler(temperature=1.0), seed=3, k=2))
    committed = [p for s in trace.steps for p in s.positions]
    assert sorted(committed) == plan.open_positions and len(committed) == len(set(committed))
    initial = plan.token_ids.tolist()
    assert all(trace.final_ids[p] == initial[p] for p in range(L) if plan.given[p])
    # one call a step; one-step parallel predicts everything in its one call and then only reveals
    assert trace.model_calls == (1 if mode == "one_step_parallel" else len(trace.steps))
    assert [s.step for s in trace.steps] == list(range(len(trace.steps)))
    assert all(trace.decided_step()[p] == -1 for p in range(L) if plan.given[p])
    assert trace.tokens_at(len(trace.steps) - 1) == trace.final_ids


@pytest.mark.parametrize("seed", range(6))
def test_log_likelihood_equals_the_sum_of_teacher_forced_step_log_probs(tiny, seed):
    g = torch.Generator().manual_seed(seed)
    groups = random_groups(L, g, n_groups=7)
    tokens = torch.randint(0, VOCAB, (L,), generator=g)
    given = groups == groups.min()
    plan = custom_plan(tokens, given=given, group_ids=groups)
    total, per_position = sequence_log_likelihood(tiny, tokens, groups, scored=~given)
    trace = collect(decode_plan(tiny, plan, force_tokens=tokens))
    assert trace.final_ids == tokens.tolist()
    assert abs(trace.logprob - total) < 1e-4
    for step in trace.steps:
        assert abs(step.logprob - float(per_position[step.positions].sum())) < 1e-4


def test_dynamic_decoding_commits_become_groups_consistent_with_plan_decoding(tiny):
    plan = infill_plan()
    for strategy in ("confidence", "entropy", "random"):
        trace = collect(decode_dynamic(tiny, plan, strategy=strategy, k=2, seed=5))
        recomputed = collect(decode_dynamic(tiny, plan, strategy=strategy, k=2, seed=5, cache=False))
        assert trace.final_ids == recomputed.final_ids
        realised = trace.plan
        assert all(len(s.positions) <= 2 for s in trace.steps)
        for s in trace.steps:
            assert all(realised.group_ids[p] == s.group for p in s.positions)
        # decoding the realised grouping as a plan, teacher-forced, reproduces the same log-probs
        replay = collect(decode_plan(tiny, realised, force_tokens=trace.final_ids))
        assert abs(replay.logprob - trace.logprob) < 1e-4


def test_confidence_and_entropy_pick_the_best_open_positions(tiny):
    plan = infill_plan()
    for strategy in ("confidence", "entropy"):
        for s in collect(decode_dynamic(tiny, plan, strategy=strategy, k=3)).steps:
            if strategy == "confidence":
                worst_chosen = min(s.confidence[p] for p in s.positions)
                assert all(s.confidence[p] <= worst_chosen for p in s.confidence if p not in s.positions)
            else:
                worst_chosen = max(s.entropy[p] for p in s.positions)
                assert all(s.entropy[p] >= worst_chosen for p in s.entropy if p not in s.positions)


def test_official_dynamic_groups_committed_tokens_together_and_recomputes(tiny):
    plan = infill_plan()
    trace = collect(decode_official_dynamic(tiny, plan, k=4))
    for s in trace.steps:
        groups = torch.tensor(trace.group_ids_at(s.step))
        still_open = set(plan.open_positions) - {p for t in trace.steps[: s.step] for p in t.positions}
        assert set((groups == 1).nonzero(as_tuple=True)[0].tolist()) == still_open
        assert set(s.candidates) == still_open


def test_one_step_parallel_never_conditions_on_its_own_reveals(tiny):
    plan = infill_plan()
    trace = collect(decode_one_step_parallel(tiny, plan, k=2))
    assert trace.mode == "one_step_parallel"
    first = trace.steps[0]
    for s in trace.steps[1:]:
        for p, cands in s.candidates.items():
            assert cands == first.candidates[p]
    # versus A3 dynamic, whose later predictions do change once tokens are committed
    dynamic = collect(decode_dynamic(tiny, plan, k=2))
    later = dynamic.steps[1]
    assert any(later.candidates[p] != dynamic.steps[0].candidates[p] for p in later.candidates)


def first_reveal_varied(decoder, tiny, plan):
    """Two runs whose first reveal is the same position with different tokens (sampled, k=1)."""
    runs = [collect(decoder(tiny, plan, k=1, sampler=Sampler(temperature=1.0), seed=s)) for s in range(8)]
    base = runs[0]
    for other in runs[1:]:
        if other.steps[0].positions == base.steps[0].positions and other.steps[0].tokens != base.steps[0].tokens:
            return base, other
    raise AssertionError("no two seeds revealed different tokens first")


def test_a_revealed_token_changes_later_predictions_only_in_diffusion(tiny):
    plan = infill_plan()
    a, b = first_reveal_varied(decode_diffusion, tiny, plan)
    assert a.steps[1].candidates != b.steps[1].candidates  # fed back: the reveal conditions step 2
    a, b = first_reveal_varied(decode_one_step_parallel, tiny, plan)
    assert a.steps[1].candidates == b.steps[1].candidates  # never fed back


def test_diffusion_feeds_revealed_tokens_back(tiny):
    plan = infill_plan()
    trace = collect(decode_diffusion(tiny, plan, k=2))
    assert trace.mode == "diffusion" and trace.model_calls == len(trace.steps) == 5
    first, second = trace.steps[0], trace.steps[1]
    assert set(second.candidates) == set(first.candidates) - set(first.positions)
    assert any(second.candidates[p] != first.candidates[p] for p in second.candidates)
    # a revealed token changes later predictions: the next step's blanks (one last group) see it
    groups = trace.group_ids_at(1)
    blank_group = groups[second.positions[0]]
    assert all(groups[p] < blank_group for p in first.positions)


def _visible_to_blanks(step_groups: list[int], open_now: list[int]) -> dict[int, set[int]]:
    """What each blank's query row may see at a step, read off the mask rule (query: g[j] < g[i])."""
    g = torch.tensor(step_groups)
    _, query = two_stream_masks(g)
    return {p: set(query[p].nonzero(as_tuple=True)[0].tolist()) for p in open_now}


@pytest.mark.parametrize("grouping", ["causal", "joint"])
def test_diffusion_reads_the_known_tokens_as_the_model_was_trained(tiny, grouping):
    """Every step's blanks see exactly the known tokens (given + revealed), and the known tokens are laid
    out as the plan lays out its given ones: each its own group in position order (causal), or one
    bidirectional group (joint, the official code's layout)."""
    base = infill_plan()
    plan = make_plan(base.token_ids, given=base.given, order="left_to_right", given_grouping=grouping)
    trace = collect(decode_diffusion(tiny, plan, k=2))
    open_now = plan.open_positions
    for s in trace.steps:
        groups = torch.tensor(s.group_ids)
        known = [p for p in range(plan.length) if p not in open_now]
        assert _visible_to_blanks(s.group_ids, open_now) == dict.fromkeys(open_now, set(known))
        if grouping == "causal":  # 0, 1, 2, ... in position order
            assert groups[known].tolist() == list(range(len(known)))
        else:
            assert set(groups[known].tolist()) == {0}
        open_now = [p for p in open_now if p not in s.positions]


class _RowCounter:
    """Wraps model.model's forward: how many content rows each call computed."""

    def __init__(self, model, monkeypatch):
        self.rows, forward = [], model.model.forward

        def counted(*args, **kwargs):
            self.rows.append(kwargs["content_ids"].shape[1])
            return forward(*args, **kwargs)

        monkeypatch.setattr(model.model, "forward", counted)


@pytest.mark.parametrize(("strategy", "k", "seed"), [("confidence", 1, 0), ("confidence", 2, 1), ("random", 1, 2),
                                                     ("entropy", 3, 3)])
def test_cached_and_recomputed_diffusion_agree(sharp_tiny, monkeypatch, strategy, k, seed):
    """The causal layout's cache keeps the known rows before the first open position; every step's
    reveals, probabilities and candidates are those of a full recompute."""
    tiny = sharp_tiny  # choices apart by more than float rounding (see its fixture)
    plan = infill_plan(seed=seed)
    counter = _RowCounter(tiny, monkeypatch)
    cached = collect(decode_diffusion(tiny, plan, k=k, strategy=strategy, seed=seed))
    cached_rows, counter.rows = counter.rows, []
    recomputed = collect(decode_diffusion(tiny, plan, k=k, strategy=strategy, seed=seed, cache=False))
    assert cached.settings == {"cache": True} and recomputed.settings == {"cache": False}
    assert cached.final_ids == recomputed.final_ids and cached.model_calls == recomputed.model_calls
    for a, b in zip(cached.steps, recomputed.steps, strict=True):
        assert a.positions == b.positions and a.tokens == b.tokens and a.group_ids == b.group_ids
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs, strict=True)) < 1e-4
        assert a.candidates.keys() == b.candidates.keys()
        for p in a.candidates:
            assert [t for t, _ in a.candidates[p]] == [t for t, _ in b.candidates[p]]
            assert max(abs(x - y) for (_, x), (_, y) in zip(a.candidates[p], b.candidates[p], strict=True)) < 1e-4
        assert max(abs(a.entropy[p] - b.entropy[p]) for p in a.entropy) < 1e-4
    # the first open position is 5: rows 0-4 once; then every known row from the first still-open one on
    open_now, expected, final = plan.open_positions, [], 0
    for s in cached.steps:
        expected.append(sum(1 for p in range(final, plan.length) if p not in open_now))
        final = min(open_now)
        open_now = [p for p in open_now if p not in s.positions]
    assert cached_rows == expected and counter.rows == [plan.length] * len(recomputed.steps)
    assert sum(cached_rows) < sum(counter.rows)


def test_diffusion_of_a_joint_plan_is_never_cached(tiny, monkeypatch):
    """In the joint layout every known row sees every reveal: nothing can be kept, every call computes every row."""
    base = infill_plan()
    plan = make_plan(base.token_ids, given=base.given, order="left_to_right", given_grouping="joint")
    counter = _RowCounter(tiny, monkeypatch)
    trace = collect(decode_diffusion(tiny, plan, k=2))
    assert trace.settings == {"cache": False}
    assert counter.rows == [plan.length] * len(trace.steps)


def test_cached_diffusion_with_the_first_position_open_keeps_nothing_until_it_is_known(sharp_tiny, monkeypatch):
    """An open first position: no row lies before it, so the first calls keep nothing; the reveals match a full
    recompute's."""
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, VOCAB, (L,), generator=g)
    given = torch.ones(L, dtype=torch.bool)
    given[0] = given[6] = given[7] = False
    plan = make_plan(tokens, given=given, order="left_to_right")
    counter = _RowCounter(sharp_tiny, monkeypatch)
    cached = collect(decode_diffusion(sharp_tiny, plan, seed=1))
    assert counter.rows[0] == int(given.sum())  # the first call: every known row, none kept before it
    assert cached.final_ids == collect(decode_diffusion(sharp_tiny, plan, seed=1, cache=False)).final_ids


@pytest.mark.slow
def test_cached_diffusion_on_the_real_model(default_model):
    tok, model = default_model.tokenizer, default_model.model
    text = "The cat sat on the mat and looked at the bird in the tree. Then it jumped down and ran to the door."
    ids = [default_model.start_token_id] + tok(text).input_ids
    given = torch.ones(len(ids), dtype=torch.bool)
    given[6:11] = False
    given[15:19] = False
    plan = make_plan(ids, given=given, order="left_to_right")
    cached = collect(decode_diffusion(model, plan))
    recomputed = collect(decode_diffusion(model, plan, cache=False))
    assert cached.final_ids == recomputed.final_ids
    assert abs(cached.logprob - recomputed.logprob) < 1e-3


def test_diffusion_of_a_joint_plan_is_the_official_dynamic_computation(tiny):
    base = infill_plan()
    plan = make_plan(base.token_ids, given=base.given, order="left_to_right", given_grouping="joint")
    for strategy in ("confidence", "entropy"):
        diffusion = collect(decode_diffusion(tiny, plan, k=3, strategy=strategy))
        official = collect(decode_official_dynamic(tiny, plan, k=3, strategy=strategy))
        assert diffusion.mode == "diffusion" and official.mode == "official_dynamic"
        assert diffusion.final_ids == official.final_ids
        assert probs_of(diffusion) == probs_of(official)
        assert [s.group_ids for s in diffusion.steps] == [s.group_ids for s in official.steps]
    via_mode = collect(run_decoder("diffusion", tiny, plan, k=3))
    assert via_mode.final_ids == collect(decode_diffusion(tiny, plan, k=3)).final_ids


def test_ar_baseline_is_the_base_model_continuing_from_the_left(tiny_llama):
    llama, a3 = tiny_llama
    tokens = torch.randint(0, VOCAB, (16,), generator=torch.Generator().manual_seed(2))
    given = torch.ones(16, dtype=torch.bool)
    given[8:] = False
    trace = collect(decode_ar_baseline(a3, make_plan(tokens, given=given)))
    generated = llama.generate(tokens[None, :8], max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert trace.final_ids == generated[0].tolist()
    # a given suffix is not used: changing it changes nothing before it
    given[12:] = True
    changed = tokens.clone()
    changed[12:] = (changed[12:] + 1) % VOCAB
    a = collect(decode_ar_baseline(a3, make_plan(tokens, given=given)))
    b = collect(decode_ar_baseline(a3, make_plan(changed, given=given)))
    assert a.final_ids[8:12] == b.final_ids[8:12]


def test_top_k_1_and_tiny_top_p_sample_the_argmax(tiny):
    plan = infill_plan()
    greedy = collect(decode_plan(tiny, plan)).final_ids
    assert collect(decode_plan(tiny, plan, sampler=Sampler(temperature=1.0, top_k=1), seed=4)).final_ids == greedy
    assert collect(decode_plan(tiny, plan, sampler=Sampler(temperature=0.7, top_p=1e-6), seed=4)).final_ids == greedy


def test_trace_json_round_trip(tiny):
    trace = collect(decode_dynamic(tiny, infill_plan(), k=3, sampler=Sampler(temperature=1.0), seed=1))
    data = json.loads(trace.to_json())
    assert isinstance(data["steps"], list) and len(data["steps"]) == len(trace.steps)
    again = DecodeTrace.from_dict(data)
    assert again.to_dict() == trace.to_dict()
    assert again.decided_step() == trace.decided_step()


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-0.1), "temperature must be >= 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(top_k=-1), "top_k must be an integer >= 0"),
])
def test_bad_sampler_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampler(**kwargs)


def test_bad_decoder_arguments_raise(tiny):
    plan = infill_plan()
    with pytest.raises(ValueError, match="strategy must be one of"):
        collect(decode_dynamic(tiny, plan, strategy="loudest"))
    with pytest.raises(ValueError, match="k .* must be a positive integer"):
        collect(decode_dynamic(tiny, plan, k=0))
    with pytest.raises(ValueError, match="Unknown method"):
        run_decoder("beam", tiny, plan)
    short = tiny_model(VOCAB, max_position_embeddings=16)
    with pytest.raises(PlanError, match="at most 16"):
        collect(decode_plan(short, plan))
    with pytest.raises(PlanError, match="force_tokens"):
        collect(decode_plan(tiny, plan, force_tokens=[1, 2]))
    with pytest.raises(PlanError, match="needs a given first position"):
        collect(decode_ar_baseline(tiny, Plan(torch.arange(5), torch.tensor([False, False, True, True, True]),
                                              torch.arange(5))))


# --------------------------------------------------------------------------------------------------
# no context, no prediction: positions that would be decoded from a constant output are refused


@pytest.mark.parametrize("mode", MODES)
def test_every_decoder_refuses_to_predict_from_no_context(tiny, mode):
    tokens = torch.arange(8)
    nothing_given = Plan(tokens, torch.zeros(8, dtype=torch.bool), torch.arange(8))
    with pytest.raises(PlanError, match="Give at least one token first|needs a given first position"):
        collect(run_decoder(mode, tiny, nothing_given))


def test_plan_decoding_refuses_open_positions_in_the_lowest_group(tiny):
    given = torch.tensor([False, True, True, False, False, True])
    lowest_open = Plan(torch.arange(6), given, torch.tensor([0, 0, 1, 2, 2, 1]))
    with pytest.raises(PlanError, match=r"open positions \[0\] would be predicted from no context.*Give at least"):
        collect(decode_plan(tiny, lowest_open))
    # the dynamic decoders regroup the open positions after the given ones, so the same plan is fine
    assert sorted(collect(decode_dynamic(tiny, lowest_open)).decided_step()) == [-1, -1, -1, 0, 1, 2]


def test_a_trace_log_prob_is_the_likelihood_conditional_on_the_first_group(tiny):
    plan = infill_plan("random", 2)
    trace = collect(decode_plan(tiny, plan))
    total, _ = sequence_log_likelihood(tiny, trace.final_ids, plan.group_ids, scored=plan.open)
    assert abs(trace.logprob - total) < 1e-4
    with_given, per_position = sequence_log_likelihood(tiny, trace.final_ids, plan.group_ids)  # every scored row
    lowest = plan.group_ids == plan.group_ids.min()
    assert torch.isnan(per_position[lowest]).all()  # the first group is the condition: never scored
    assert not torch.isnan(per_position[~lowest]).any() and with_given <= total + 1e-4


# --------------------------------------------------------------------------------------------------
# realised plans hold plain numbers at every step


def _steps_with_traces(gen):
    """Drive a decoder and look at its trace after every step (what a streaming caller sees)."""
    while True:
        try:
            next(gen)
        except StopIteration:
            return
        inner = gen
        while inner.gi_yieldfrom is not None:  # decode() delegates to the method's decoder
            inner = inner.gi_yieldfrom
        yield inner.gi_frame.f_locals["trace"]


@pytest.mark.parametrize("mode", ["dynamic", "official_dynamic", "diffusion"])
def test_mid_run_traces_export_exactly_and_undecided_positions_come_last(tiny, mode):
    plan = infill_plan()
    for trace in _steps_with_traces(run_decoder(mode, tiny, plan, k=3)):
        groups = torch.tensor(trace.group_ids)
        assert int(groups.abs().max()) < 2**53  # exact in JavaScript
        decided = {p for s in trace.steps for p in s.positions}
        undecided = [p for p in plan.open_positions if p not in decided]
        if undecided:
            assert int(groups[undecided].min()) > int(groups[sorted(decided)].max())
        again = DecodeTrace.from_dict(json.loads(trace.to_json()))
        assert again.group_ids == trace.group_ids


# --------------------------------------------------------------------------------------------------
# dynamic decoders rank on the distribution they sample from (temperature, top-k, top-p), as the official code


@pytest.mark.parametrize("mode", ["dynamic", "official_dynamic", "diffusion"])
def test_selection_scores_use_the_filtered_distribution(tiny, mode):
    plan = infill_plan()
    greedy = collect(run_decoder(mode, tiny, plan, k=2))
    for s in greedy.steps:  # greedy: scored at temperature 1 without filters = the recorded confidence
        assert all(abs(s.selection_scores[p] - s.confidence[p]) < 1e-6 for p in s.confidence)
    top2 = collect(run_decoder(mode, tiny, plan, k=2, sampler=Sampler(temperature=1.0, top_k=2), seed=1))
    for s in top2.steps:
        for p, cands in s.candidates.items():  # top-2 renormalised: p1 / (p1 + p2)
            (_, p1), (_, p2) = cands[:2]
            assert abs(s.selection_scores[p] - p1 / (p1 + p2)) < 1e-4
        best = sorted(s.selection_scores.values(), reverse=True)[len(s.positions) - 1]
        assert all(s.selection_scores[p] >= best for p in s.positions)
    entropy = collect(run_decoder(mode, tiny, plan, k=2, strategy="entropy",
                                  sampler=Sampler(temperature=0.5, top_k=1), seed=1))
    assert all(v == 0 for s in entropy.steps for v in s.selection_scores.values())  # one token left: H = 0


@pytest.mark.parametrize("order, size", [("left_to_right", 1), ("random", 3), ("outside_in", 2)])
def test_preview_on_demand_equals_the_preview_decoded_with_every_step(tiny, order, size):
    from model.decoding import fill_preview, has_preview, open_at

    plan = infill_plan(order, size)
    full = collect(decode_plan(tiny, plan, preview_open=True))
    lean = collect(decode_plan(tiny, plan, preview_open=False))
    assert lean.final_ids == full.final_ids
    for step, (a, b) in enumerate(zip(full.steps, lean.steps, strict=True)):
        assert set(b.candidates) == set(b.positions) and (step == len(lean.steps) - 1 or not has_preview(lean, step))
        own = {p: list(b.candidates[p]) for p in b.positions}
        fill_preview(tiny, lean, step)
        assert has_preview(lean, step) and set(b.candidates) == set(a.candidates) == set(open_at(full, step))
        for p in a.candidates:
            assert [t for t, _ in a.candidates[p]] == [t for t, _ in b.candidates[p]]
            assert max(abs(x - y) for (_, x), (_, y) in zip(a.candidates[p], b.candidates[p], strict=True)) < 1e-4
            assert abs(a.entropy[p] - b.entropy[p]) < 1e-4 and abs(a.confidence[p] - b.confidence[p]) < 1e-4
        assert {p: b.candidates[p] for p in b.positions} == own  # the decoded entries are kept as they were
        assert fill_preview(tiny, lean, step) is b  # a second call computes nothing new


def test_preview_on_demand_leaves_other_decoders_alone(tiny):
    from model.decoding import fill_preview

    trace = collect(decode_dynamic(tiny, infill_plan(), k=2))
    before = [dict(s.candidates) for s in trace.steps]
    for step in range(len(trace.steps)):
        fill_preview(tiny, trace, step)
    assert [dict(s.candidates) for s in trace.steps] == before


class LayerSpy:
    """Counts passes through the model (its first layer runs once per forward, whatever the batch) and the
    rows of each."""

    def __init__(self, model, monkeypatch):
        self.rows = []
        layer = model.model.layers[0]
        inner = layer.forward

        def forward(rows, *args, **kwargs):
            self.rows.append(rows.shape[0] * rows.shape[1])
            return inner(rows, *args, **kwargs)

        monkeypatch.setattr(layer, "forward", forward)

    @property
    def calls(self) -> int:
        return len(self.rows)


LANES = [("plan", "left_to_right", 1), ("plan", "outside_in", 1), ("plan", "right_to_left", 1), ("plan", "random", 1),
         ("plan", "outside_in", 2), ("preview", "right_to_left", 1), ("dynamic", "confidence", 1),
         ("dynamic", "entropy", 2), ("dynamic", "random", 3)]


def lanes(base, sampler, grouping="causal"):
    plans, configs = [], []
    for seed, (kind, how, size) in enumerate(LANES):
        if kind == "dynamic":
            plans.append(make_plan(base.token_ids, given=base.given, given_grouping=grouping))
            configs.append(DecodeConfig("dynamic", strategy=how, k=size, sampler=sampler, seed=seed))
        else:
            plans.append(make_plan(base.token_ids, given=base.given, order=how, group_size=size,
                                   given_grouping=grouping, generator=torch.Generator().manual_seed(3)))
            configs.append(DecodeConfig("plan", order=how, group_size=size, sampler=sampler, seed=seed,
                                        preview_open=kind == "preview"))
    return plans, configs


@pytest.mark.parametrize("sampled, grouping", [(False, "causal"), (True, "causal"), (False, "joint")])
def test_decodes_together_equal_each_decoded_alone(sharp_tiny, sampled, grouping, monkeypatch):
    """Lockstep decoding (one model call per step for every lane: plans of any groups, dynamic decoding of any
    strategy and k; the given tokens read causally or as one group) gives each lane its own decode: the same
    steps, groups, tokens and candidates, the same realised plan, log-probabilities within 1e-4; the run takes
    as many calls as its longest lane."""
    tiny = sharp_tiny
    base = infill_plan()
    plans, configs = lanes(base, Sampler(temperature=1.0, top_k=20) if sampled else Sampler(), grouping)
    spy = LayerSpy(tiny, monkeypatch)
    together = decode_together(tiny, plans, configs)
    assert spy.calls == max(len(t.steps) for t in together) == len(base.open_positions)
    for plan, config, trace in zip(plans, configs, together, strict=True):
        alone = collect(decode(tiny, plan, config))
        assert trace.final_ids == alone.final_ids and trace.config == config and trace.mode == alone.mode
        assert trace.plan.group_ids.tolist() == alone.plan.group_ids.tolist() and trace.plan.name == alone.plan.name
        assert trace.settings == alone.settings and trace.model_calls == alone.model_calls == len(alone.steps)
        for a, b in zip(trace.steps, alone.steps, strict=True):
            assert (a.step, a.group, a.positions, a.tokens, a.model_calls) == (b.step, b.group, b.positions, b.tokens,
                                                                               b.model_calls)
            assert abs(a.logprob - b.logprob) < 1e-4
            assert a.candidates.keys() == b.candidates.keys()
            assert all([t for t, _ in a.candidates[p]] == [t for t, _ in b.candidates[p]] for p in a.candidates)
            assert max(abs(a.confidence[p] - b.confidence[p]) for p in a.confidence) < 1e-4
            assert (a.selection_scores is None) == (b.selection_scores is None)
            if a.selection_scores is not None and config.strategy != "random":
                assert max(abs(a.selection_scores[p] - b.selection_scores[p]) for p in a.selection_scores) < 1e-4
            elif a.selection_scores is not None:
                assert a.selection_scores == b.selection_scores  # the same draws from the same seed


def test_decoding_together_needs_one_text_with_the_given_groups_first(tiny):
    base = infill_plan()
    pairs = make_plan(base.token_ids, given=base.given, group_size=2)
    assert len(decode_together(tiny, [base, pairs], [DecodeConfig("plan")] * 2)[1].steps) == 5  # groups of 2: fine
    other = make_plan(base.token_ids.roll(1), given=base.given)
    with pytest.raises(PlanError, match="must share tokens"):
        decode_together(tiny, [base, other], [DecodeConfig("plan")] * 2)
    late = base.group_ids.clone()
    late[-1] = int(late.max()) + 1  # a given token after every open group: its content is not the first call's
    with pytest.raises(PlanError, match="every given group before every open one"):
        decode_together(tiny, [custom_plan(base.token_ids, given=base.given, group_ids=late)], [DecodeConfig("plan")])
    with pytest.raises(PlanError, match="decode 'diffusion' alone"):
        decode_together(tiny, [base], [DecodeConfig("diffusion")])


def _flat_visibility(key_lane, key_group, row_lane, row_group, is_query):
    own = (key_lane[None] == -1) | (key_lane[None] == row_lane[:, None])
    sees = torch.where(is_query[:, None], key_group[None] < row_group[:, None], key_group[None] <= row_group[:, None])
    return own & sees


def test_given_rows_computed_once_give_every_lane_the_logits_of_its_own_forward(tiny):
    """The lockstep's flat cache: the given tokens' content rows once for both lanes (lane -1), then each lane's
    own content rows; every query row gets the logits of an uncached forward of its own lane's grouping."""
    plans = [infill_plan("left_to_right"), infill_plan("right_to_left")]
    tokens, given = plans[0].token_ids, plans[0].given  # random tokens at the open positions: a filled text
    open_at = plans[0].open_positions
    expected = torch.cat([tiny(tokens[None], group_ids=plan.group_ids[None]).logits[0, open_at] for plan in plans])
    q_lane = torch.tensor([0] * len(open_at) + [1] * len(open_at))
    q_group = torch.cat([plan.group_ids[open_at] for plan in plans])
    first = torch.cat([plan.group_ids[open_at] == plan.open_groups[0] for plan in plans])
    given_at = given.nonzero(as_tuple=True)[0]
    cache = A3Cache(tiny.config, 1, L + len(open_at))
    key_lane = key_group = torch.zeros(0, dtype=torch.long)
    for call, (positions, lane, groups) in enumerate([
            (given_at, torch.full_like(given_at, -1), plans[0].group_ids[given_at]),  # shared, computed once
            (torch.tensor(open_at * 2), q_lane, q_group)]):  # each lane's own content rows
        key_lane, key_group = torch.cat([key_lane, lane]), torch.cat([key_group, groups])
        visible = _flat_visibility(key_lane, key_group, torch.cat([lane, q_lane]), torch.cat([groups, q_group]),
                                   torch.arange(len(lane) + len(q_lane)) >= len(lane))
        logits = tiny.lm_head(forward_rows(tiny, tokens[positions], positions, torch.tensor(open_at * 2), visible,
                                           cache, groups))
        rows = first if call == 0 else slice(None)  # after the first call only the first groups see all they need
        assert (logits[rows] - expected[rows]).abs().max() < 1e-4
    assert cache.length == len(given_at) + 2 * len(open_at)


def test_left_to_right_likelihoods_share_prefixes_and_equal_the_batched_forward(tiny, monkeypatch):
    g = torch.Generator().manual_seed(5)
    base = torch.randint(0, VOCAB, (L,), generator=g)
    texts = base.repeat(5, 1)
    texts[1, 9:] = torch.randint(0, VOCAB, (L - 9,), generator=g)  # shares positions 0..8
    texts[2, 12:] = torch.randint(0, VOCAB, (L - 12,), generator=g)  # shares 0..11
    texts[3, 0] = (base[0] + 1) % VOCAB  # shares nothing
    texts[4] = texts[1]  # a text listed twice
    expected, expected_per = batch_log_likelihood(tiny, texts, torch.arange(L))
    spy = LayerSpy(tiny, monkeypatch)
    totals, per = left_to_right_log_likelihoods(tiny, texts, head_rows=7)
    assert spy.calls == 1
    distinct = len({tuple(t[: i + 1].tolist()) for t in texts for i in range(L - 1)})
    assert spy.rows == [2 * distinct] and distinct == (L - 1) + (L - 10) + (L - 13) + (L - 1)
    assert (totals - expected).abs().max() < 1e-3 and totals[4] == totals[1]
    assert per[:, 0].isnan().all() and (per[:, 1:] - expected_per[:, 1:]).abs().max() < 1e-4


def test_one_step_parallel_reveals_its_one_prediction(tiny):
    """Its steps reveal the rows of one call: each position's candidates are what that call gave it (a second
    call, seeing only the given tokens again, would give the same rows)."""
    plan = infill_plan("outside_in", 2)
    trace = collect(run_decoder("one_step_parallel", tiny, plan, k=2))
    assert trace.model_calls == 1 and len(trace.steps) == -(-len(plan.open_positions) // 2)
    groups = trace.plan.group_ids
    with torch.no_grad():
        logp = torch.log_softmax(tiny(plan.token_ids[None], group_ids=groups[None]).logits[0].float(), -1)
    for s in trace.steps:
        for p, token, lp in zip(s.positions, s.tokens, s.token_logprobs, strict=True):
            assert token == int(logp[p].argmax()) and abs(lp - float(logp[p, token])) < 1e-4

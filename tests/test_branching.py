"""Branching (model/branching.py): a branch shares its parent's first k steps exactly, never recomputes
them, and is the same decoding a full recompute of its plan gives."""

import json
import math
from dataclasses import asdict

import pytest
import torch
from conftest import VOCAB, two_span_plan

from model.branching import BranchTree
from model.decoding import (
    DecodePrefix,
    DecodeTrace,
    Sampler,
    collect,
    decode_diffusion,
    decode_plan,
    sequence_log_likelihood,
)
from model.plans import PlanError

pytestmark = pytest.mark.usefixtures("one_thread")

L = 24
MODES = [("plan", {}), ("dynamic", {"k": 2})]


def infill_plan(order="random", size=2, seed=0):
    """Two masked spans (10 open positions) in a 24-token sequence; random groups of 2: 5 steps."""
    return two_span_plan(order, size, seed, L)


def tree_of(model, mode, kwargs, **decode):
    return BranchTree.decode(model, infill_plan(), mode=mode, **kwargs, **decode)


def second_candidate(step):
    """A position of the step and its second most likely token (another token than the committed one)."""
    position = step.positions[0]
    token, prob = step.candidates[position][1]
    assert token != step.tokens[0]
    return position, token, prob


def record(step):
    """A step record without its timing (which may differ between runs)."""
    d = asdict(step)
    d.pop("elapsed_s")
    return d


class ForwardSpy:
    """Wraps A3Model.forward: the content positions and the number of query rows of every call."""

    def __init__(self, model, monkeypatch):
        self.calls = []
        inner = model.model.forward

        def forward(*args, **kwargs):
            self.calls.append((kwargs["content_positions"][0].tolist(), kwargs["query_positions"].shape[1]))
            return inner(*args, **kwargs)

        monkeypatch.setattr(model.model, "forward", forward)


# --------------------------------------------------------------------------------------------------
# the shared prefix


@pytest.mark.parametrize("mode, kwargs", MODES)
@pytest.mark.parametrize("k", [0, 2, 4])
def test_a_branch_reproduces_its_parents_first_k_steps_exactly(tiny, mode, kwargs, k):
    tree = tree_of(tiny, mode, kwargs)
    parent = tree[0].trace
    position, token, _ = second_candidate(parent.steps[k])
    branch = tree[tree.branch(k, position=position, token=token)]
    assert branch.parent == 0 and branch.at_step == k
    assert [record(s) for s in branch.trace.steps[:k]] == [record(s) for s in parent.steps[:k]]
    # step k is read from the same cached context, so its candidates are the parent's
    new, old = branch.trace.steps[k], parent.steps[k]
    assert new.group == old.group and set(new.candidates) == set(old.candidates)
    for p, cands in old.candidates.items():
        assert [t for t, _ in new.candidates[p]] == [t for t, _ in cands]
        assert max(abs(a - b) for (_, a), (_, b) in zip(new.candidates[p], cands, strict=True)) < 1e-5


@pytest.mark.parametrize("mode, kwargs", MODES)
def test_the_prefix_is_never_recomputed(tiny, mode, kwargs, monkeypatch):
    tree = tree_of(tiny, mode, kwargs)
    parent, k = tree[0].trace, 3
    shared = set(parent.plan.given.nonzero(as_tuple=True)[0].tolist())
    shared |= {p for s in parent.steps[:k] for p in s.positions}
    position, token, _ = second_candidate(parent.steps[k])
    spy = ForwardSpy(tiny, monkeypatch)
    branch = tree[tree.branch(k, position=position, token=token)]
    remaining = len(branch.trace.steps) - k
    assert len(spy.calls) == remaining == branch.new_model_calls
    assert branch.trace.model_calls == parent.steps[k - 1].model_calls + remaining
    first_content, first_queries = spy.calls[0]
    assert first_content == [] and first_queries > 0  # step k only reads the cache
    computed = [p for content, _ in spy.calls for p in content]
    assert not shared & set(computed), "a content row of the shared prefix was recomputed"
    assert len(computed) == len(set(computed))  # and no row twice


def test_the_parents_cache_is_copied_not_shared(tiny):
    tree = tree_of(tiny, "plan", {})
    before = [t.clone() for t in tree[0].trace.cache.k]
    length = tree[0].trace.cache.length
    for k in (1, 2):
        tree.branch(k, seed=k, sampler=Sampler(temperature=1.0))
    assert tree[0].trace.cache.length == length
    assert all(torch.equal(a, b) for a, b in zip(before, tree[0].trace.cache.k, strict=True))


# --------------------------------------------------------------------------------------------------
# a branch is the decoding a full recompute gives


def replay(model, trace, **kwargs):
    """The branch's final plan decoded again from scratch, without any cache."""
    return collect(decode_plan(model, trace.plan, cache=False, **kwargs))


@pytest.mark.parametrize("mode, kwargs", MODES)
def test_a_cached_branch_equals_a_full_recompute(tiny, mode, kwargs):
    tree = tree_of(tiny, mode, kwargs)
    parent, k = tree[0].trace, 2
    position, token, _ = second_candidate(parent.steps[k])
    picked = tree[tree.branch(k, position=position, token=token)].trace
    order = "outside_in" if mode == "plan" else "entropy"
    replanned = tree[tree.branch(1, order=order, group_size=3)].trace
    for branch in (picked, replanned):
        forced = replay(tiny, branch, force_tokens=branch.final_ids)
        for a, b in zip(branch.steps, forced.steps, strict=True):
            assert a.positions == b.positions and a.tokens == b.tokens and a.group == b.group
            assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs, strict=True)) < 1e-4
            assert set(a.entropy) == set(b.entropy)
            assert max(abs(a.entropy[p] - b.entropy[p]) for p in a.entropy) < 1e-4
    # greedy: forcing only the shared prefix and the pick, the recompute chooses the branch's tokens itself
    decided = {p: t for s in picked.steps[: k + 1] for p, t in zip(s.positions, s.tokens, strict=True)}
    partial = [decided.get(p, -1) for p in range(L)]
    assert replay(tiny, picked, force_tokens=partial).final_ids == picked.final_ids


@pytest.mark.parametrize("mode, kwargs", MODES)
def test_a_branch_log_prob_is_the_exact_sequence_log_likelihood(tiny, mode, kwargs):
    tree = tree_of(tiny, mode, kwargs, sampler=Sampler(temperature=1.0), seed=3)
    position, token, _ = second_candidate(tree[0].trace.steps[1])
    picked = tree.branch(1, position=position, token=token)
    grandchild = tree.branch(3, parent=picked, group_size=1)
    for index in (0, picked, grandchild):
        trace = tree[index].trace
        total, _ = sequence_log_likelihood(tiny, trace.final_ids, trace.plan.group_ids, scored=trace.plan.open)
        assert abs(tree[index].logprob - total) < 1e-4


# --------------------------------------------------------------------------------------------------
# what a branch changes


@pytest.mark.parametrize("mode, kwargs", MODES)
def test_a_picked_candidate_is_committed_and_kept(tiny, mode, kwargs):
    tree = tree_of(tiny, mode, kwargs)
    parent, k = tree[0].trace, 2
    position, token, prob = second_candidate(parent.steps[k])
    branch = tree[tree.branch(k, position=position, token=token)]
    step = branch.trace.steps[k]
    assert parent.final_ids[position] != token and branch.trace.final_ids[position] == token
    assert step.tokens[step.positions.index(position)] == token
    assert abs(math.exp(step.token_logprobs[step.positions.index(position)]) - prob) < 1e-5
    # the step's other decisions are kept: tokens of one group are predicted in parallel
    others = {p: t for p, t in zip(parent.steps[k].positions, parent.steps[k].tokens, strict=True) if p != position}
    assert all(branch.trace.final_ids[p] == t for p, t in others.items())
    assert branch.change == {"position": position, "token": token}
    assert "step 2" in branch.name


def test_a_picked_open_position_joins_the_step(tiny):
    plan_tree, dynamic_tree = tree_of(tiny, "plan", {}), tree_of(tiny, "dynamic", {"k": 2})
    for tree in (plan_tree, dynamic_tree):
        parent, k = tree[0].trace, 1
        later = parent.steps[3].positions[0]  # open at step 1, decided later by the parent
        token = parent.steps[k].candidates[later][1][0]
        step = tree[tree.branch(k, position=later, token=token)].trace.steps[k]
        assert later in step.positions and step.tokens[step.positions.index(later)] == token
        size = len(parent.steps[k].positions)
        # plan: the position joins step k's group; dynamic: it takes the place of the least preferred one
        assert len(step.positions) == (size + 1 if tree is plan_tree else size)


def test_a_new_order_and_group_size_replan_the_undecided_positions(tiny):
    tree = tree_of(tiny, "plan", {})
    parent, k = tree[0].trace, 2
    branch = tree[tree.branch(k, order="right_to_left", group_size=3)].trace
    undecided = sorted(p for s in parent.steps[k:] for p in s.positions)
    assert [s.positions for s in branch.steps[k:]] == [sorted(undecided[::-1][i : i + 3])
                                                       for i in range(0, len(undecided), 3)]
    assert branch.plan.name == "right_to_left (groups of 3)"
    # group_size alone keeps the parent's order: the random order of the rest is redrawn in groups of 1
    sizes = [len(s.positions) for s in tree[tree.branch(k, group_size=1)].trace.steps]
    assert sizes == [2, 2] + [1] * len(undecided)


def test_ends_first_goes_on_after_the_ends_are_decided(tiny):
    """A branch of an ends-first run, past the blanks' ends, decodes the rest left to right: the position
    before a decided end is not taken for a new end; before the ends are decided, they still come first."""
    tree = BranchTree.decode(tiny, two_span_plan("ends_first"), mode="plan")
    parent = tree[0].trace
    assert [s.positions for s in parent.steps[:2]] == [[10], [18]]
    late = tree[tree.branch(2, group_size=2)].trace
    assert [s.positions for s in late.steps[2:]] == [[5, 6], [7, 8], [9, 15], [16, 17]]
    early = tree[tree.branch(1, order="ends_first", group_size=2)].trace
    assert [s.positions for s in early.steps[1:]] == [[18], [5, 6], [7, 8], [9, 15], [16, 17]]


def test_dynamic_branches_change_strategy_and_tokens_per_step(tiny):
    tree = tree_of(tiny, "dynamic", {"k": 1})
    branch = tree[tree.branch(2, order="entropy", group_size=3)].trace
    assert branch.config.strategy == "entropy" and branch.config.k == 3 and branch.config.method == "dynamic"
    assert [len(s.positions) for s in branch.steps] == [1, 1, 3, 3, 2]
    for s in branch.steps[2:]:  # each new step commits the lowest-entropy open positions
        worst = max(s.entropy[p] for p in s.positions)
        assert all(s.entropy[p] >= worst for p in s.entropy if p not in s.positions)


def test_branches_of_branches_and_plain_data(tiny):
    tree = tree_of(tiny, "plan", {})
    first = tree.branch(1, order="left_to_right")
    position, token, _ = second_candidate(tree[first].trace.steps[3])
    second = tree.branch(3, parent=first, position=position, token=token)
    assert [record(s) for s in tree[second].trace.steps[:3]] == [record(s) for s in tree[first].trace.steps[:3]]
    assert tree.children(0) == [first] and tree.children(first) == [second]
    data = json.loads(json.dumps(tree.to_dict()))
    assert [b["parent"] for b in data["branches"]] == [None, 0, first]
    assert [b["at_step"] for b in data["branches"]] == [0, 1, 3]
    assert data["branches"][second]["final_ids"] == tree[second].trace.final_ids
    assert data["branches"][second]["trace"]["final_ids"] == tree[second].trace.final_ids
    assert abs(data["branches"][second]["logprob"] - tree[second].logprob) < 1e-9


def test_a_trace_without_its_cache_is_rebuilt_once(tiny, monkeypatch):
    kept = tree_of(tiny, "plan", {})
    loaded = BranchTree(tiny, DecodeTrace.from_dict(json.loads(kept[0].trace.to_json())))
    assert loaded[0].trace.cache is None
    position, token, _ = second_candidate(kept[0].trace.steps[2])
    spy = ForwardSpy(tiny, monkeypatch)
    a = loaded[loaded.branch(2, position=position, token=token)]
    # one call rebuilds the root's content, once, and the first branch counts it as its own
    assert len(spy.calls) == a.new_model_calls == b_calls_from_step(kept, 2) + 1
    loaded.branch(1, order="blocks")
    assert len(spy.calls) == a.new_model_calls + loaded[2].new_model_calls  # no second rebuild
    b = kept[kept.branch(2, position=position, token=token)]
    assert a.trace.final_ids == b.trace.final_ids
    assert abs(a.logprob - b.logprob) < 1e-4


def b_calls_from_step(tree, k: int) -> int:
    """Calls a branch at step k makes when its parent's cache is kept: one per remaining step."""
    return len(tree[0].trace.steps) - k


def test_decoders_keep_no_cache_unless_asked(tiny):
    plan = infill_plan()
    assert collect(decode_plan(tiny, plan)).cache is None
    assert collect(decode_plan(tiny, plan, keep_cache=True)).cache is not None


def test_a_prefix_must_match_the_plan(tiny):
    trace = collect(decode_plan(tiny, infill_plan()))
    other = infill_plan("left_to_right", 1)
    with pytest.raises(PlanError, match="prefix step 0 committed group"):
        collect(decode_plan(tiny, other, prefix=DecodePrefix(trace.steps[:1])))
    with pytest.raises(PlanError, match="not in the first new step's group"):
        collect(decode_plan(tiny, trace.plan, prefix=DecodePrefix(trace.steps[:1], commit={20: 1})))


# --------------------------------------------------------------------------------------------------
# bad input says what to fix


@pytest.fixture(scope="module")
def bad_tree(tiny):
    return tree_of(tiny, "plan", {})


@pytest.mark.parametrize("kwargs, message", [
    (dict(at_step=-1, seed=1), r"at_step must be a step of branch 0, in \[0, 5\)"),
    (dict(at_step=5, seed=1), r"at_step must be a step of branch 0, in \[0, 5\)"),
    (dict(at_step=True, seed=1), "at_step must be a step"),
    (dict(at_step=1, parent=7, seed=1), r"parent must be a branch index in \[0, 1\)"),
    (dict(at_step=1), "nothing to change at step 1"),
    (dict(at_step=1, position=0, token=3), "position 0 is not open at step 1 .* pick one of"),
    (dict(at_step=1, position="DECIDED_AT_0", token=3), "is not open at step 1"),
    (dict(at_step=1, position="AT_1", token=VOCAB), rf"token must be a token id in \[0, {VOCAB}\)"),
    (dict(at_step=1, position="AT_1", token=-1), "token must be a token id"),
    (dict(at_step=1, position="AT_1", token=2.5), "token must be an integer"),
    (dict(at_step=1, token=3), "pass position= to say which"),
    (dict(at_step=1, position="AT_1"), "without a token: pass token= too"),
    (dict(at_step=1, order="sideways"), "order must be one of"),
    (dict(at_step=1, order="entropy"), "order must be one of"),
    (dict(at_step=1, order="blocks", group_size=0), "group_size must be a positive integer"),
    (dict(at_step=1, sampler="greedy"), "sampler must be a model.config.Sampler"),
])
def test_bad_branch_arguments_raise_a_clear_plan_error(bad_tree, kwargs, message):
    steps = bad_tree[0].trace.steps
    if kwargs.get("position") == "DECIDED_AT_0":
        kwargs["position"] = steps[0].positions[0]
    elif kwargs.get("position") == "AT_1":
        kwargs["position"] = steps[1].positions[0]
    with pytest.raises(PlanError, match=message):
        bad_tree.branch(**kwargs)
    assert len(bad_tree) == 1  # nothing was added


def test_dynamic_traces_take_strategies_and_other_modes_cannot_branch(tiny):
    tree = tree_of(tiny, "dynamic", {"k": 2})
    with pytest.raises(PlanError, match="order must be a strategy, one of"):
        tree.branch(1, order="left_to_right")
    diffusion = collect(decode_diffusion(tiny, infill_plan(), k=2))
    with pytest.raises(PlanError, match="branching needs a trace of mode plan or dynamic.*got 'diffusion'"):
        BranchTree(tiny, diffusion)
    with pytest.raises(PlanError, match="branching needs a trace of mode"):
        BranchTree.decode(tiny, infill_plan(), mode="one_step_parallel")

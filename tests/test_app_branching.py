"""Branching as the page does it (app.branching over model.branching), on the tiny model."""

import pytest

from app import branching
from app.session import Explorer, InputError, Request

TEXT = "The cat sat on the mat and [MASK:5] at the birds."


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    return Explorer(tiny_loaded)


def test_branch_with_another_candidate_keeps_the_prefix_and_grows_the_tree(explorer):
    result = explorer.decode(Request(text=TEXT))
    step = 2
    positions = branching.open_positions(result, step)
    decided = result.trace.steps[step].positions[0]
    assert positions[0][1] == decided and "decided here" in positions[0][0]
    assert {p for _, p in positions} == set(result.trace.steps[step].candidates)
    tokens = branching.token_choices(result, step, decided)
    assert [t for _, t in tokens] == [t for t, _ in result.trace.steps[step].candidates[decided]]
    other = tokens[1][1]
    tree, shown, _ = branching.branch(explorer, None, result, step, position=decided, token=other)
    assert len(tree) == 2 and shown.trace is tree[1].trace
    assert shown.trace.final_ids[decided] == other
    assert [s.tokens for s in shown.trace.steps[:step]] == [s.tokens for s in result.trace.steps[:step]]
    # the shared prefix is not decoded again: one call rebuilds its content (the page keeps no cache)
    assert tree[1].new_model_calls == result.n_steps - step + 1

    # branching the branch (now on the stage) adds a child of branch 1, not of the root
    tree, again, _ = branching.branch(explorer, tree, shown, 3, order="right to left", group_size=2)
    assert len(tree) == 3 and tree[2].parent == 1 and tree.children(1) == [2]
    rows = branching.tree_rows(explorer, tree, again)
    assert [r[0] for r in rows] == ["0", "1", "▶ 2"] and rows[2][2] == 1 and rows[2][3] == 3
    assert rows[1][6] == shown.text

    # a fresh run is not part of the tree: branching it starts a new tree
    fresh = explorer.decode(Request(text=TEXT, seed=1))
    new_tree, _, _ = branching.branch(explorer, tree, fresh, 0, order="outside-in")
    assert new_tree is not tree and len(new_tree) == 2


def test_dynamic_runs_continue_with_a_strategy(explorer):
    result = explorer.decode(Request(text=TEXT, method="A3 dynamic", k=1))
    choices, label = branching.continuation_choices(result)
    assert choices == ["confidence", "entropy", "random"] and "dynamic" in label
    tree, shown, _ = branching.branch(explorer, None, result, 1, order="entropy", group_size=2)
    assert shown.trace.mode == "dynamic" and all(len(s.positions) <= 2 for s in shown.trace.steps[1:])


def test_what_cannot_branch_says_why(explorer):
    result = explorer.decode(Request(text=TEXT))
    for method in ("diffusion", "one-step parallel", "official dynamic"):
        other = explorer.decode(Request(text=TEXT, method=method))
        assert "cannot branch" in branching.can_branch(other)
        with pytest.raises(InputError, match="cannot branch"):
            branching.branch(explorer, None, other, 0, order="left to right")
    with pytest.raises(InputError, match="Stop the stage on a step"):
        branching.branch(explorer, None, result, -1, order="left to right")
    with pytest.raises(InputError, match="Unknown order"):
        branching.branch(explorer, None, result, 0, order="sideways")
    with pytest.raises(InputError, match="Cannot branch"):
        branching.branch(explorer, None, result, 0, position=0, token=5)  # the start token is given
    with pytest.raises(InputError, match="Run a decoding first"):
        branching.branch(explorer, None, None, 0, order="left to right")
    with pytest.raises(InputError, match="Pick a position and one of its candidates"):
        branching.branch(explorer, None, result, 0, position=5, token=None)
    assert branching.open_positions(result, -1) == [] and branching.token_choices(None, 0, 1) == []


def test_the_tree_is_capped(explorer, monkeypatch):
    monkeypatch.setattr(branching, "MAX_BRANCHES", 2)
    result = explorer.decode(Request(text=TEXT))
    tree, _, _ = branching.branch(explorer, None, result, 1, order="right to left")
    with pytest.raises(InputError, match="the most the page keeps"):
        branching.branch(explorer, tree, result, 2, order="outside-in")

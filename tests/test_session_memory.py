"""Each browser session's memory cap (app.memory over model.branching), on the tiny model: the oldest
caches go first, the branches stay, a dropped cache comes back in one counted call with the same results."""

import pytest

from app import branching, memory
from app.order_lab import compute
from app.session import Explorer, Request

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "The cat sat on the mat and [MASK:6] at the birds."
BIG = 2**40  # a cap nothing reaches


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    return Explorer(tiny_loaded)


class CallCount:
    """Counts the model's forward passes."""

    def __init__(self, model, monkeypatch):
        self.n = 0
        inner = model.model.forward

        def forward(*args, **kwargs):
            self.n += 1
            return inner(*args, **kwargs)

        monkeypatch.setattr(model.model, "forward", forward)


def grown(explorer, n_branches=4):
    """A run and a chain of branches from it (each from the last, at step 1), the cap out of reach."""
    result = explorer.decode(Request(text=TEXT))
    tree, shown = None, result
    for size in range(1, n_branches):
        tree, shown, note = branching.branch(explorer, tree, shown, 1, order="right to left", group_size=size,
                                             cap=BIG)
        assert note == ""
    return result, tree


def test_the_cap_comes_from_the_environment_and_a_bad_value_says_what_is_expected():
    assert memory.session_cap_bytes({}) == memory.SESSION_MB * 2**20 == 256 * 2**20
    assert memory.session_cap_bytes({"A3_SESSION_MB": "64"}) == 64 * 2**20
    assert memory.session_cap_bytes({"A3_SESSION_MB": " 0.5 "}) == 2**19
    for bad in ("0", "-3", "lots", "nan", "inf"):
        with pytest.raises(ValueError, match="A3_SESSION_MB must be a positive number of MB"):
            memory.session_cap_bytes({"A3_SESSION_MB": bad})


def test_the_caches_are_counted_exactly_and_the_rest_estimated(explorer):
    result, tree = grown(explorer)
    cached = tree.cached()
    assert cached == list(range(len(tree)))  # every branch holds its cache; the root's was rebuilt first
    cache = tree[1].trace.cache
    assert memory.cache_bytes(cache) == sum(t.numel() * t.element_size()
                                            for t in [*cache.k, *cache.v, cache.groups, cache.positions]) > 0
    caches = sum(memory.cache_bytes(b.trace.cache) for b in tree.branches)
    traces = sum(memory.trace_bytes(b.trace) for b in tree.branches)
    assert traces > 0
    # the result on the stage is the tree's root: counted once
    assert memory.session_bytes(tree, results=[result]) == caches + traces - memory.trace_bytes(result.trace) \
        + memory.result_bytes(result)
    compared = explorer.decode(Request(text=TEXT, seed=3))
    assert memory.session_bytes(tree, results=[result, compared]) > memory.session_bytes(tree, results=[result])
    lab = compute(explorer, "The cat sat on the mat.", n_random=2, group_size=2, seed=0)
    assert memory.lab_bytes(lab) > 0
    assert memory.session_bytes(tree, results=[result], lab=lab) == memory.session_bytes(tree, results=[result]) \
        + memory.lab_bytes(lab)


def test_past_the_cap_the_oldest_caches_go_first_and_every_branch_stays(explorer):
    result, tree = grown(explorer)
    n, order = len(tree), tree.cached()
    total = memory.session_bytes(tree, results=[result])
    two_oldest = sum(memory.cache_bytes(tree[i].trace.cache) for i in order[:2])
    dropped = memory.fit(tree, total - two_oldest, results=[result])
    assert dropped == order[:2] and len(tree) == n
    assert tree.cached() == order[2:] and all(tree[i].trace.cache is None for i in dropped)
    assert memory.session_bytes(tree, results=[result]) <= total - two_oldest
    assert all(b.trace.steps and b.trace.final_ids for b in tree.branches)  # the traces stay whole
    assert memory.fit(tree, BIG, results=[result]) == []  # under the cap: nothing more goes


def test_branching_past_the_cap_drops_and_says_so(explorer):
    result, tree = grown(explorer)
    before = len(tree)
    tree, shown, note = branching.branch(explorer, tree, tree_result(explorer, tree, 2), 1, order="outside-in",
                                         cap=1)
    assert len(tree) == before + 1 and shown.trace is tree[before].trace
    assert tree.cached() == []  # a cap of one byte keeps no cache at all, yet every branch is there
    assert note.startswith(memory.NOTE_PREFIX) and "the oldest" in note and "Every branch stays" in note
    assert "Traceback" not in note


def tree_result(explorer, tree, index):
    return branching.branch_result(explorer, tree, index, "A3 plan")


def test_a_dropped_cache_is_rebuilt_in_one_counted_call_with_the_same_results(explorer, monkeypatch):
    _, kept = grown(explorer)
    _, dropped = grown(explorer)
    assert [b.trace.final_ids for b in kept.branches] == [b.trace.final_ids for b in dropped.branches]
    assert dropped.drop_cache(2) and not dropped.drop_cache(2)
    parent = tree_result(explorer, dropped, 2)
    step = 1
    position = parent.trace.steps[step].positions[0]
    token = parent.trace.steps[step].candidates[position][1][0]

    calls = CallCount(explorer.loaded.model, monkeypatch)
    _, again, note = branching.branch(explorer, kept, tree_result(explorer, kept, 2), step, position=position,
                                      token=token, cap=BIG)
    remaining = parent.n_steps - step
    assert calls.n == kept[len(kept) - 1].new_model_calls == remaining and note == ""
    calls.n = 0
    _, rebuilt, note = branching.branch(explorer, dropped, parent, step, position=position, token=token, cap=BIG)
    new = dropped[len(dropped) - 1]
    assert calls.n == new.new_model_calls == remaining + 1  # exactly one call more: the rebuild, counted
    assert note.startswith(memory.NOTE_PREFIX) and "Branch 2's cache had been dropped" in note
    assert "one model call" in note
    # the same decoding as from the cache that was never dropped
    assert rebuilt.trace.final_ids == again.trace.final_ids
    assert [s.tokens for s in rebuilt.trace.steps] == [s.tokens for s in again.trace.steps]
    assert [s.token_logprobs for s in rebuilt.trace.steps] == [s.token_logprobs for s in again.trace.steps]
    # the rebuilt cache is now the newest: the next drop takes the others first
    assert dropped.cached()[-2:] == [2, len(dropped) - 1]
    calls.n = 0
    branching.branch(explorer, dropped, parent, 2, order="outside-in", cap=BIG)
    assert calls.n == dropped[len(dropped) - 1].new_model_calls == parent.n_steps - 2  # no second rebuild


@pytest.mark.filterwarnings("ignore:Something went wrong")
def test_the_page_shows_the_note_in_its_warning_line_never_a_traceback(explorer, monkeypatch):
    from app.ui.details_tab import DetailsCallbacks
    from app.ui.model_calls import model_calls

    on = DetailsCallbacks(model_calls(explorer))
    result = explorer.decode(Request(text=TEXT))
    monkeypatch.setenv("A3_SESSION_MB", "0.001")  # below one cache: every branch drops the oldest ones
    tree, shown, *_, warning = on.on_branch_order(None, result, 1, "right to left", 1, {}, None)
    assert warning.startswith(f"ℹ️ {memory.NOTE_PREFIX}") and "dropped" in warning and "Traceback" not in warning
    assert len(tree) == 2 and tree.cached() == []
    *_, warning = on.on_branch_order(tree, shown, 1, "outside-in", 2, {"A3 plan": result}, None)
    assert "Branch 1's cache had been dropped" in warning and len(tree) == 3
    monkeypatch.setenv("A3_SESSION_MB", "lots")  # a bad value set after start-up: a warning, not a traceback
    *_, warning = on.on_branch_order(tree, shown, 1, "outside-in", 2, {}, None)
    assert warning.startswith("⚠️") and "Traceback" not in warning and len(tree) == 3  # nothing changed

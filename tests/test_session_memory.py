"""Each browser session's memory cap (app.memory over model.branching), on the tiny model: the least
recently used caches go first (the parent's and the new branch's last), the branches stay, a dropped cache
comes back in one counted call with the same results, and the note says honestly what the tab holds."""

import threading
import time

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
    assert memory.session_cap_bytes({}) == memory.SESSION_MB * 2**20 == 192 * 2**20
    assert 20 * memory.SESSION_MB + 1024 < 6 * 1024  # 20 tabs at the cap and the ~1 GB model: under 6 GB
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


def test_the_ttl_comes_from_the_environment_and_a_bad_value_says_what_is_expected():
    assert memory.session_ttl_s({}) == memory.SESSION_TTL_S == 1800
    assert memory.session_ttl_s({"A3_SESSION_TTL": "90"}) == 90.0
    for bad in ("0", "-3", "soon", "nan", "inf"):
        with pytest.raises(ValueError, match="A3_SESSION_TTL must be a positive number of seconds"):
            memory.session_ttl_s({"A3_SESSION_TTL": bad})
    assert "idle for 1.5 minutes" in memory.not_held(environ={"A3_SESSION_TTL": "90"})


def test_past_the_cap_the_least_recently_used_caches_go_first_and_every_branch_stays(explorer):
    result, tree = grown(explorer)
    n, order = len(tree), tree.cached()
    total = memory.session_bytes(tree, results=[result])
    two_first = sum(memory.cache_bytes(tree[i].trace.cache) for i in order[:2])
    dropped, held = memory.fit(tree, total - two_first, results=[result])
    assert dropped == order[:2] and len(tree) == n
    assert tree.cached() == order[2:] and all(tree[i].trace.cache is None for i in dropped)
    assert held == memory.session_bytes(tree, results=[result]) <= total - two_first
    assert all(b.trace.steps and b.trace.final_ids for b in tree.branches)  # the traces stay whole
    assert memory.fit(tree, BIG, results=[result]) == ([], held)  # under the cap: nothing more goes


def test_a_cache_branched_from_is_used_and_goes_after_the_ones_not_used_since(explorer):
    result, tree = grown(explorer)  # a chain 0 -> 1 -> 2 -> 3: built in that order
    assert tree.cached() == [0, 1, 2, 3]
    branching.branch(explorer, tree, result, 1, order="outside-in", cap=BIG)  # from the root again
    assert tree.cached() == [1, 2, 3, 0, 4]  # the root's cache was just read: it is not the first to go
    total = memory.session_bytes(tree, results=[result])
    one = memory.cache_bytes(tree[1].trace.cache)
    assert memory.fit(tree, total - one, results=[result])[0] == [1]


def test_the_parent_and_the_new_branch_keep_their_caches_unless_nothing_else_is_left(explorer):
    result, tree = grown(explorer)
    total = memory.session_bytes(tree, results=[result])
    caches = {i: memory.cache_bytes(tree[i].trace.cache) for i in tree.cached()}
    # room for two caches: the two least recently used (0 and 1) are the ones this call keeps
    dropped, _ = memory.fit(tree, total - caches[2] - caches[3], results=[result], keep=(0, 1))
    assert dropped == [2, 3] and tree.cached() == [0, 1]
    dropped, _ = memory.fit(tree, 1, results=[result], keep=(1, 0))  # nothing else left: they go too, last
    assert dropped == [1, 0] and tree.cached() == []


def test_past_the_cap_with_nothing_left_to_drop_the_note_says_what_the_tab_still_holds(explorer):
    result, tree = grown(explorer)
    _, _, note = branching.branch(explorer, tree, result, 1, order="outside-in", cap=1)
    assert tree.cached() == []
    assert "still holds" in note and "may hold 9.54e-07 MB" in note and "holds at most" not in note
    assert "cannot be dropped" in note
    held = memory.session_bytes(tree, results=[result])
    assert memory.note([], None, held + 1, held) == ""  # under the cap: nothing to say
    over = memory.note([], None, 1, held)
    assert over.startswith(memory.NOTE_PREFIX) and "still holds" in over and "after the cache" not in over


@pytest.mark.parametrize(("dropped", "rebuilt", "held"), [
    ([0], None, 0), ([0, 1, 11], None, 0), ([], 2, 0), ([3], 1, 0), ([4, 5], None, 2**30), ([], None, 2**30),
    ([7], 7, 2**30),
])
def test_a_note_is_read_back_as_what_it_says(dropped, rebuilt, held):
    said = memory.note(dropped, rebuilt, 2**20, held)
    assert memory.parse_note(f"ℹ️ {said}") == (len(dropped), int(rebuilt is not None))
    assert memory.parse_note("⚠️ Something else: branch 3 was dropped") == (0, 0)


def test_the_lab_counts_its_ar_row_and_the_page_counts_the_run_its_attention_was_drawn_for(explorer):
    from dataclasses import replace

    from app.ui.details_tab import DetailsCallbacks
    from app.ui.model_calls import model_calls

    lab = compute(explorer, "The cat sat on the mat.", n_random=2, group_size=2, seed=0)
    with_ar = replace(lab, ar=(-3.0, [None, -1.0, -2.0, -0.5, -0.1, -0.2, -0.3]))
    assert memory.lab_bytes(with_ar) > memory.lab_bytes(replace(lab, ar=None))
    seen = {}

    def branch(tree, result, step, **change):
        seen.update(change)
        raise branching.InputError("stop here")

    on = DetailsCallbacks(model_calls(explorer))
    on.calls = replace(on.calls, branch=branch)
    result, drawn = explorer.decode(Request(text=TEXT)), explorer.decode(Request(text=TEXT, seed=5))
    on.on_branch_order(None, result, 1, "right to left", 1, {}, None, (drawn, 2))
    assert seen["held"] == [drawn]


def test_a_branch_says_itself_whether_it_rebuilt_its_parent_and_the_tree_keeps_no_last_call_state(explorer):
    result, tree = grown(explorer)
    assert not hasattr(tree, "last_rebuilt")
    assert tree.drop_cache(1)
    tree.branch(1, parent=1, order="right_to_left")
    tree.branch(1, parent=2, order="right_to_left")
    assert tree[len(tree) - 2].rebuilt_parent and not tree[len(tree) - 1].rebuilt_parent


def test_a_cache_dropped_between_its_rebuild_and_its_copy_is_still_copied(explorer, monkeypatch):
    _, tree = grown(explorer)
    assert tree.drop_cache(2)
    tick = tree._tick

    def dropping_tick():  # another branch of the tab drops the cache just rebuilt, before it is copied
        tree.drop_cache(2)
        return tick()

    monkeypatch.setattr(tree, "_tick", dropping_tick)
    index = tree.branch(1, parent=2, order="right_to_left")
    assert tree[index].trace.final_ids and tree[index].rebuilt_parent


def test_branches_of_one_tab_are_made_one_at_a_time_so_the_tree_never_passes_its_limit(explorer, monkeypatch):
    result, tree = grown(explorer)
    monkeypatch.setattr(branching, "MAX_BRANCHES", len(tree) + 1)  # room for one more
    inner = type(tree).branch

    def slow(self, *args, **kwargs):  # both calls are inside the model at once, without the lock
        time.sleep(0.3)
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(type(tree), "branch", slow)
    outcomes = []

    def one(order):
        try:
            branching.branch(explorer, tree, result, 1, order=order, cap=BIG)
            outcomes.append("made")
        except branching.InputError as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=one, args=(order,)) for order in ("outside-in", "right to left")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("made") == 1 and any("the most the page keeps" in o for o in outcomes), outcomes
    assert len(tree) == branching.MAX_BRANCHES


def test_branching_past_the_cap_drops_and_says_so(explorer):
    result, tree = grown(explorer)
    before = len(tree)
    tree, shown, note = branching.branch(explorer, tree, tree_result(explorer, tree, 2), 1, order="outside-in",
                                         cap=1)
    assert len(tree) == before + 1 and shown.trace is tree[before].trace
    assert tree.cached() == []  # a cap of one byte keeps no cache at all, yet every branch is there
    assert note.startswith(memory.NOTE_PREFIX) and "the least recently used" in note and "Every branch stays" in note
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
    # the rebuilt cache was just used: the next drop takes the others first
    assert dropped.cached()[-2:] == [2, len(dropped) - 1]
    calls.n = 0
    branching.branch(explorer, dropped, parent, 2, order="outside-in", cap=BIG)
    assert calls.n == dropped[len(dropped) - 1].new_model_calls == parent.n_steps - 2  # no second rebuild


WARNING = 6  # the warning line among a branch's outputs (app.ui.details_tab.DetailsCallbacks.on_branch)


@pytest.mark.filterwarnings("ignore:Something went wrong")
def test_the_page_shows_the_note_in_its_warning_line_never_a_traceback(explorer, monkeypatch):
    from app.ui.details_tab import DetailsCallbacks
    from app.ui.model_calls import model_calls

    on = DetailsCallbacks(model_calls(explorer))
    result = explorer.decode(Request(text=TEXT))
    monkeypatch.setenv("A3_SESSION_MB", "0.001")  # below one cache: every branch drops every cache
    out = on.on_branch_order(None, result, 1, "right to left", 1, {}, None)
    tree, shown, warning = out[0], out[1], out[WARNING]
    assert warning.startswith(f"ℹ️ {memory.NOTE_PREFIX}") and "dropped" in warning and "Traceback" not in warning
    assert len(tree) == 2 and tree.cached() == []
    warning = on.on_branch_order(tree, shown, 1, "outside-in", 2, {"A3 plan": result}, None)[WARNING]
    assert "Branch 1's cache had been dropped" in warning and len(tree) == 3
    monkeypatch.setenv("A3_SESSION_MB", "lots")  # a bad value set after start-up: a warning, not a traceback
    warning = on.on_branch_order(tree, shown, 1, "outside-in", 2, {}, None)[WARNING]
    assert warning.startswith("⚠️") and "Traceback" not in warning and len(tree) == 3  # nothing changed


def app_script():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("a3_app_script_memory", Path(__file__).parents[1] / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("argv", "env"), [
    (["--session-mb", "lots"], {}), (["--queue-size", "2.5"], {}), (["--session-ttl", "0"], {}),
    ([], {"A3_SESSION_MB": "-1"}), ([], {"A3_QUEUE_SIZE": "many"}), ([], {"A3_SESSION_TTL": "soon"}),
])
def test_app_checks_its_limits_before_it_builds_and_a_bug_in_build_is_not_swallowed(monkeypatch, capsys, argv, env):
    import app as app_package

    for name in ("A3_SESSION_MB", "A3_QUEUE_SIZE", "A3_SESSION_TTL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def build(model, device=None):
        raise AssertionError("built before the limits were checked")

    monkeypatch.setattr(app_package, "build", build)
    monkeypatch.setenv("A3_MALLOC_ARENAS", "0")  # main() in this process: leave the test runner's malloc alone
    with pytest.raises(SystemExit) as stop:
        app_script().main(["--model", "tiny", *argv])
    assert stop.value.code == 2 and "must be a positive" in capsys.readouterr().err


def test_a_value_error_inside_build_is_a_bug_with_its_traceback_not_a_one_line_error(monkeypatch):
    import app as app_package

    for name in ("A3_SESSION_MB", "A3_QUEUE_SIZE", "A3_SESSION_TTL"):
        monkeypatch.delenv(name, raising=False)

    def build(model, device=None):
        raise ValueError("a bug")

    monkeypatch.setattr(app_package, "build", build)
    monkeypatch.setenv("A3_MALLOC_ARENAS", "0")  # main() in this process: leave the test runner's malloc alone
    with pytest.raises(ValueError, match="a bug"):
        app_script().main(["--model", "tiny"])

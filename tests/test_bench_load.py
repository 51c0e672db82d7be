"""bench.load: a crowd of visitors against the launched app, on the tiny model (seconds, not minutes)."""

import json

from app import memory
from bench import load
from bench.load import Tally, branchable, main, percentile


def test_a_small_crowd_gets_answers_and_clear_messages_and_the_memory_is_read(capsys):
    # four visitors and a queue of one: some are told "busy" (not an error); a tab cap below one branch
    # cache: every branch drops caches and says so (not an error either)
    main(["--json", "--model", "tiny", "--visitors", "4", "--minutes", "0.3", "--settle", "1", "--seed", "1",
          "--queue-size", "1", "--session-mb", "0.01"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("visitors", "minutes", "errors_good_input", "bad_inputs", "bad_inputs_clear", "rss_mb", "endpoints",
                "busy", "cache_drops"):
        assert key in result
    assert result["queue_size"] == 1 and result["session_mb"] == 0.01
    assert result["malloc_arenas"] == memory.arenas_in_effect()  # what the started app logs it keeps
    busy = result["busy"]
    assert set(busy) == {"calls", "p50_s", "max_s"} and busy["calls"] > 0 and 0 < busy["p50_s"] <= busy["max_s"]
    drops = result["cache_drops"]
    assert drops["dropped"] == sum(d for d, _ in drops["per_session"])
    assert result["visitors"] == 4 and result["calls"] > 5
    assert result["errors_good_input"] == 0, result["good_input_errors"]
    if result["endpoints"].get("on_branch_order", {}).get("calls"):  # a branch was answered: it dropped caches
        assert drops["dropped"] > 0, drops
    assert result["bad_inputs_clear"] == result["bad_inputs"], result["unclear_answers"]
    rss = result["rss_mb"]
    assert rss["cold"] > 0 and 0 < rss["start"] <= rss["peak"] and rss["after"] > 0
    anon = rss["anon"]  # the server's own memory, without mapped files (Linux)
    assert 0 < anon["start"] <= rss["start"] and 0 < anon["after"] <= rss["after"]
    assert {"/infill", "on_run"} <= set(result["endpoints"])
    for name, stats in result["endpoints"].items():
        assert stats["calls"] > 0 and 0 < stats["p50_s"] <= stats["p95_s"], name


def test_a_traceback_or_the_catch_all_is_counted_as_unclear_and_a_warning_on_good_input_as_an_error():
    tally = Tally()
    ok = {"success": True, "latency_s": 0.1, "queue_s": 0.01}
    failed = {"success": False, "latency_s": 0.1, "queue_s": 0.01, "error": None}
    tally.add("/infill", failed, bad=True, message="The text is 5,000 characters long; the limit is 4,000.",
              what="x")
    tally.add("/infill", failed, bad=True, message='Traceback (most recent call last):\n  File "a.py", line 1',
              what="x")
    tally.add("/infill", failed, bad=True, message="Something went wrong on the server", what="x")
    tally.add("on_run", ok, bad=True, message="", what="x")  # bad input answered without a word
    tally.add("on_run", ok, bad=False, message="⚠️ cannot decode this", what="x")
    tally.add("on_run", ok, bad=False, message="", what="x")
    tally.add("on_branch_order", ok, bad=False, message="ℹ️ Branch 2 reproduces run 0 (main run) exactly", what="x")
    assert (tally.bad, tally.bad_clear, len(tally.unclear)) == (4, 1, 3)
    assert len(tally.good_errors) == 1
    assert len(tally.latency["/infill"]) == 3 and len(tally.latency["on_run"]) == 3


def test_busy_answers_and_memory_notes_are_counted_apart_from_errors():
    tally = Tally()
    tally.add("on_run", {"success": False, "busy": True, "latency_s": 0.02, "error": "Queue is full."}, bad=False,
              message="Queue is full.", what="x", visitor="a")
    tally.add("on_run", {"success": False, "busy": True, "latency_s": 0.04}, bad=True, message="", what="x")
    dropped = memory.note([0, 1], None, 2**20)
    rebuilt = memory.note([], 2, 2**20)
    over = memory.note([4], None, 2**20, 2**21)  # past the cap even after the drop: still counted
    ok = {"success": True, "latency_s": 0.1, "queue_s": 0.01}
    tally.add("on_branch_order", ok, bad=False, message=f"ℹ️ {dropped}", what="x", visitor="a")
    tally.add("on_branch_order", ok, bad=False, message=f"ℹ️ {rebuilt}", what="x", visitor="a")
    tally.add("on_branch_order", ok, bad=False, message=f"ℹ️ {memory.note([3], 1, 2**20)}", what="x", visitor="b")
    tally.add("on_branch_order", ok, bad=False, message=f"ℹ️ {over}", what="x", visitor="b")
    tally.add("on_branch_order", ok, bad=False, message=f"ℹ️ {memory.note([], None, 1, 2)}", what="x", visitor="c")
    assert tally.busy == [0.02, 0.04] and tally.bad == 0 and tally.good_errors == []
    assert dict(tally.drops) == {"a": [2, 1], "b": [2, 1], "c": [0, 0]}


def test_percentiles_and_which_methods_branch():
    assert percentile([], 50) is None and percentile([2.0], 95) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.05
    assert branchable("A3 plan") and not branchable("AR baseline") and not branchable("A3 best of N")


def test_the_reported_arenas_follow_the_environment_the_app_starts_with():
    assert load._arenas({}) == "2 arenas" and load._arenas({"A3_MALLOC_ARENAS": "0"}) == "glibc's default"
    assert load._arenas({"MALLOC_ARENA_MAX": "1", "A3_MALLOC_ARENAS": "0"}) == "MALLOC_ARENA_MAX=1"

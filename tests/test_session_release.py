"""A closed or idle tab's runs are let go (app.ui.sessions), on the tiny app: when its heartbeat stream ends
(a browser tab closing, a gradio_client closing) or after the TTL without an event; the memory really goes
(nothing else keeps the run alive); the tab, if it comes back, is told to run again, never a traceback."""

import datetime
import gc
import os
import threading
import time
import weakref

import httpx
import pytest
from conftest import launched_app

from app import memory
from app.session import Result

TEXT = "The cat sat on the mat and [MASK:4] at the birds."
WAIT_S = 60


@pytest.fixture(scope="module")
def app():
    before = os.environ.get("GRADIO_HEARTBEAT_INTERVAL")
    os.environ["GRADIO_HEARTBEAT_INTERVAL"] = "0.25"  # a closed heartbeat is noticed at once (default: 15 s)
    try:
        with launched_app("tiny") as served:
            yield served
    finally:
        if before is None:
            os.environ.pop("GRADIO_HEARTBEAT_INTERVAL", None)
        else:
            os.environ["GRADIO_HEARTBEAT_INTERVAL"] = before


class Heartbeat(threading.Thread):
    """A browser tab's heartbeat stream for one session, open until `close()`."""

    def __init__(self, url: str, session: str):
        super().__init__(daemon=True)
        self.url, self.session, self.opened, self.closing = url, session, threading.Event(), threading.Event()

    def run(self):
        with httpx.stream("GET", f"{self.url}/gradio_api/heartbeat/{self.session}", timeout=WAIT_S) as stream:
            for _ in stream.iter_lines():
                self.opened.set()
                if self.closing.is_set():
                    return

    def close(self):
        self.closing.set()
        self.join(WAIT_S)


def ran_and_branched(url: str, session: str):
    """A run on the page's stage, settled on step 1, branched once: (page, the branch's warning)."""
    from bench.load import PageConfig, call

    page = PageConfig(url)
    ran = call(url, page.fn_index("on_run"), page.data("on_run", text=TEXT, method="A3 plan"), session)
    assert ran["success"], ran
    call(url, page.fn_index("on_step_settled"), page.data("on_step_settled"), session, event_data={"step": 1})
    branched = call(url, page.fn_index("on_branch_order"),
                    page.data("on_branch_order", **{"br-order": "right to left", "br-size": 1}), session)
    assert branched["success"], branched
    return page, page.warning_of("on_branch_order", branched["output"])


def held(demo, session: str) -> dict:
    """The session's heavy States by name (what app.ui.sessions lets go)."""
    states = demo.state_holder.session_data[session].state_data
    return {key: states.get(key) for key in demo.releaser.empty}


def branch_again(url: str, page, session: str) -> str:
    from bench.load import call

    answer = call(url, page.fn_index("on_branch_order"),
                  page.data("on_branch_order", **{"br-order": "outside-in", "br-size": 1}), session)
    assert answer["success"], answer
    return page.warning_of("on_branch_order", answer["output"])


def test_a_closed_tab_lets_its_runs_go_at_once_and_nothing_else_keeps_them(app):
    url, demo = app[0].rstrip("/"), app[1]
    session = "closing-tab-1"
    heartbeat = Heartbeat(url, session)
    heartbeat.start()
    assert heartbeat.opened.wait(WAIT_S)
    page, warning = ran_and_branched(url, session)
    assert "⚠️" not in warning
    result = next(v for v in held(demo, session).values() if isinstance(v, Result))
    tree = next(v for v in held(demo, session).values() if type(v).__name__ == "BranchTree")
    gone = weakref.ref(result.trace), weakref.ref(tree)
    del result, tree
    assert demo.state_holder.session_data[session].config_values  # the outputs' last values, before
    heartbeat.close()  # the tab closes: Gradio runs the page's unload event
    deadline = time.monotonic() + WAIT_S
    while (any(v not in (None, {}) for v in held(demo, session).values())
           or demo.state_holder.session_data[session].config_values):
        assert time.monotonic() < deadline, "the closed tab's runs (or its outputs' last values) were never let go"
        time.sleep(0.1)
    gc.collect()
    assert [ref() for ref in gone] == [None, None]  # nothing else held the run or the tree
    # the same session coming back (a dropped connection) is told, never shown a traceback or another run
    warning = branch_again(url, page, session)
    assert warning.startswith("⚠️") and "holds no run" in warning and "Traceback" not in warning


def test_a_session_idle_past_the_ttl_lets_its_runs_go_and_one_in_use_keeps_them(app):
    url, demo = app[0].rstrip("/"), app[1]
    releaser = demo.releaser
    page, _ = ran_and_branched(url, "idle-script-1")  # no heartbeat: as a script, or bench.load's raw calls
    ran_and_branched(url, "busy-script-1")
    now = datetime.datetime.now()
    demo.state_holder.time_last_used["idle-script-1"] = now - datetime.timedelta(seconds=releaser.ttl_s + 1)
    assert "idle-script-1" in releaser.sweep(now) and "busy-script-1" not in releaser.sweep(now)
    assert all(v in (None, {}) for v in held(demo, "idle-script-1").values())
    assert any(isinstance(v, Result) for v in held(demo, "busy-script-1").values())
    assert releaser.free() and not releaser.free()  # freed once, for what was let go
    assert "idle-script-1" not in releaser.sweep(now)  # let go once; again only after a new event
    warning = branch_again(url, page, "idle-script-1")
    assert warning.startswith("⚠️") and "holds no run" in warning and "idle for 30 minutes" in warning


def test_free_memory_trims_the_heap_where_the_c_library_can_and_only_collects_elsewhere(monkeypatch):
    import ctypes.util

    if ctypes.util.find_library("c") and memory._malloc_trim() is not None:
        assert memory.free_memory()  # glibc: malloc_trim(0) ran
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)  # musl, macOS: no malloc_trim
    assert memory.free_memory() is False

    def broken(_):
        raise OSError("no")

    monkeypatch.setattr(memory, "_malloc_trim", lambda: broken)
    assert memory.free_memory() is False


class _Libc:
    def __init__(self, answer=1):
        self.calls, self.answer = [], answer

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.answer


def test_the_app_holds_malloc_to_few_arenas_unless_told_otherwise():
    libc = _Libc()
    assert memory.cap_arenas({}, libc) == memory.ARENAS == 2 and libc.calls == [(-8, 2)]  # M_ARENA_MAX
    libc = _Libc()
    assert memory.cap_arenas({"A3_MALLOC_ARENAS": " 4 "}, libc) == 4 and libc.calls == [(-8, 4)]
    left_alone = ({"A3_MALLOC_ARENAS": "0"}, {"A3_MALLOC_ARENAS": "00"}, {"MALLOC_ARENA_MAX": "8"},
                  {"MALLOC_ARENA_MAX": "1", "A3_MALLOC_ARENAS": "3"})
    for env in left_alone:
        libc = _Libc()
        assert memory.cap_arenas(env, libc) is None and libc.calls == []  # glibc's own setting is left alone
    assert memory.cap_arenas({}, _Libc(answer=0)) is None  # mallopt refused: nothing claimed
    assert memory.cap_arenas({}, object()) is None  # a C library without mallopt (musl, macOS)
    for bad in ("two", "-1", "1.5", "２", "1025", "2147483648"):
        with pytest.raises(ValueError, match="A3_MALLOC_ARENAS must be a whole number") as err:
            memory.cap_arenas({"A3_MALLOC_ARENAS": bad}, _Libc())
        assert repr(bad) in str(err.value)
    # what the start-up log and bench.load say
    assert memory.arenas_in_effect({}) == "2 arenas" and memory.arenas_in_effect({"A3_MALLOC_ARENAS": "1"}) == "1 arena"
    assert memory.arenas_in_effect({"A3_MALLOC_ARENAS": "00"}) == "glibc's default"
    assert memory.arenas_in_effect({"MALLOC_ARENA_MAX": "4", "A3_MALLOC_ARENAS": "0"}) == "MALLOC_ARENA_MAX=4"


def test_the_arena_cap_comes_before_torch_and_gradio_and_a_bad_value_stops_the_app_with_a_message():
    import ctypes.util
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "A3_MALLOC_ARENAS")}
    # app.py's main() as `python app.py` runs it, with a spy in cap_arenas's place that says what was loaded
    probe = ("import runpy, sys, app.memory as m\n"
             "def spy(*a, **k):\n"
             "    raise SystemExit('loaded: ' + repr(sorted(n for n in ('torch', 'gradio') if n in sys.modules)))\n"
             "m.cap_arenas = spy\n"
             "sys.argv = ['app.py', '--model', 'tiny']\n"
             "runpy.run_path('app.py', run_name='__main__')\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.strip().endswith("loaded: []"), out.stderr[-2000:]
    real = subprocess.run([sys.executable, "-c", "import app.memory as m; print(m.cap_arenas())"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=60)
    glibc = ctypes.util.find_library("c") is not None and sys.platform.startswith("linux")
    assert real.stdout.split() == ["2" if glibc else "None"], real.stderr
    bad = subprocess.run([sys.executable, "app.py", "--model", "tiny"], cwd=root, capture_output=True, text=True,
                         env={**env, "A3_MALLOC_ARENAS": "many"}, timeout=60)
    assert bad.returncode == 2 and "A3_MALLOC_ARENAS must be a whole number" in bad.stderr
    assert "Traceback" not in bad.stderr

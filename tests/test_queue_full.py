"""A full queue answers "busy" at once, never a hang (app.layout.queue_size), on the tiny model: through
gradio_client, through the queue's HTTP routes as bench.load and the page call them, and in the page itself;
the server still answers a good request afterwards. Timings are never asserted tighter than "answered"."""

import contextlib
import os
import threading
import time

import pytest
from conftest import launched_app

from app.session import Explorer

TEXT = "The cat sat on the mat and [MASK:3] at the birds."
ANSWERED_S = 60  # "answered, not hung"


@contextlib.contextmanager
def queue_of_one():
    """The tiny app with A3_QUEUE_SIZE=1: one event may wait (another runs beside it)."""
    before = os.environ.get("A3_QUEUE_SIZE")
    os.environ["A3_QUEUE_SIZE"] = "1"
    try:
        with launched_app("tiny") as served:
            yield served
    finally:
        if before is None:
            os.environ.pop("A3_QUEUE_SIZE", None)
        else:
            os.environ["A3_QUEUE_SIZE"] = before


@pytest.fixture(scope="module")
def app():
    with queue_of_one() as served:
        yield served


class Gate:
    """Holds every decode until opened: the first call runs (and waits), the next one waits in the queue."""

    def __init__(self, monkeypatch):
        self.entered, self.open = threading.Event(), threading.Event()
        decode = Explorer.decode

        def held(explorer, request):
            self.entered.set()
            self.open.wait(ANSWERED_S)
            return decode(explorer, request)

        monkeypatch.setattr(Explorer, "decode", held)


def fill_the_queue(url: str, demo, gate: Gate) -> list:
    """One /infill call running (held by the gate) and one waiting: the queue of one is full."""
    from gradio_client import Client

    running = Client(url, verbose=False).submit(TEXT, "A3 plan", 0, api_name="/infill")
    assert gate.entered.wait(ANSWERED_S), "the first call never started"
    waiting = Client(url, verbose=False).submit(TEXT, "A3 plan", 1, api_name="/infill")
    deadline = time.monotonic() + ANSWERED_S
    while len(demo._queue) < 1:
        assert time.monotonic() < deadline, "the second call never joined the queue"
        time.sleep(0.05)
    return [running, waiting]


def test_a_bad_queue_size_says_what_is_expected(monkeypatch):
    from app.layout import QUEUE_SIZE, queue_size

    monkeypatch.delenv("A3_QUEUE_SIZE", raising=False)
    assert queue_size() == QUEUE_SIZE == 64 and queue_size(4) == 4 and queue_size("8") == 8
    monkeypatch.setenv("A3_QUEUE_SIZE", "3")
    assert queue_size() == 3 and queue_size(5) == 5
    for bad in (0, -2, "many", "2.5", True):
        with pytest.raises(ValueError, match="must be a positive whole number"):
            queue_size(bad)


def test_a_full_queue_answers_busy_at_once_and_the_server_answers_afterwards(app, monkeypatch):
    from gradio_client import Client
    from gradio_client.utils import QueueError

    from bench.load import PageConfig, call

    url, demo = app[0].rstrip("/"), app[1]
    gate = Gate(monkeypatch)
    jobs = fill_the_queue(url, demo, gate)
    try:
        # gradio_client: QueueError at once
        start = time.perf_counter()
        with pytest.raises(QueueError, match="Queue is full"):
            Client(url, verbose=False).predict(TEXT, "A3 plan", 2, api_name="/infill")
        assert time.perf_counter() - start < ANSWERED_S
        # the queue's own routes (the page, bench.load): HTTP 503 with Gradio's words, counted as busy
        page = PageConfig(url)
        answer = call(url, page.fn_index("infill"), [TEXT, "A3 plan", 3], "busy-test", timeout=ANSWERED_S)
        assert answer["busy"] and not answer["success"] and "Queue is full" in answer["error"]
        assert answer["latency_s"] < ANSWERED_S
    finally:
        gate.open.set()
    for job in jobs:  # the two that got in are answered
        filled, _ = job.result(timeout=ANSWERED_S)
        assert "[MASK" not in filled
    filled, trace = Client(url, verbose=False).predict(TEXT, "A3 plan", 4, api_name="/infill")
    assert "[MASK" not in filled and '"steps"' in trace


@pytest.mark.browser
def test_the_page_says_the_app_is_busy(app, browser, monkeypatch):
    url, demo = app[0].rstrip("/"), app[1]
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(url)
    page.wait_for_selector("#stage .a3s")
    page.locator("button[role=tab]", has_text="Your text").first.click()
    gate = Gate(monkeypatch)
    jobs = fill_the_queue(url, demo, gate)
    try:
        page.locator("#run-btn").click()
        page.get_by_text("currently busy").first.wait_for(timeout=ANSWERED_S * 1000)
    finally:
        gate.open.set()
        for job in jobs:
            job.result(timeout=ANSWERED_S)
        page.close()

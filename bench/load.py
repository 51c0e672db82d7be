"""Many visitors at once: latency, queue wait, errors and the server's memory under a class-sized crowd.

    python -m bench.load --json --visitors 20 --minutes 5              # starts `python app.py --model default`
    python -m bench.load --json --visitors 4 --minutes 1 --model tiny   # seconds of setup: the smoke run
    python -m bench.load --json --visitors 20 --minutes 5 --url http://127.0.0.1:7860   # a running app
    python -m bench.load --json --visitors 20 --minutes 5 --queue-size 4 --session-mb 1  # a full queue, the cap

Starts `python app.py --model MODEL` on a free port itself (or uses `--url`; then the server's memory is not
read), then runs N visitors for T minutes, each in a thread with a gradio_client session of its own (its
session hash carries the page's state between its calls, as a browser tab's does). Each visitor, again and
again, in a seeded random mix:
  - decodes blanks of 2, 6, 14 and 30 tokens with every method of the page, through the API (`/infill`) and
    through the page's own Run event;
  - on the page: lets the stage settle on a step, then branches from it, draws its attention, or exports a
    GIF and the offline player;
  - scores orders in the order lab and through the API (`/order_likelihoods`);
  - sends bad input about 30% of the time (a text over the size limit, an unknown method, a seed that is
    not a number, broken orders JSON or group ids, a text without a blank);
  - now and then leaves in the middle of a decode (joins the queue, closes the connection once it starts).
  - after a branch, now and then branches the branch again (the tree grows, and with it the tab's memory);
  - when its time is up, leaves as a browser tab closes: its session's heartbeat stream (opened by its
    gradio_client, for the session all its calls use) ends, and the app lets the tab's runs go.

`--queue-size N` and `--session-mb MB` are passed to the app it starts (`python app.py --queue-size N
--session-mb MB`; with `--url`, start the app with them yourself). A full queue refuses an event at once
(HTTP 503; gradio_client raises QueueError "Queue is full! Please try again."; the page says "This
application is currently busy. Please try again."): such an answer is counted under `busy` with how fast it
came (p50 and max seconds from the call to the refusal), never as an error, and the visitor tries something
else a moment later. The page's notes about the tab's memory cap ("ℹ️ Memory: ... dropped ...", app.memory)
are counted per visitor under `cache_drops` (caches dropped, dropped caches rebuilt; read by
app.memory.parse_note, next to the function that writes them), not as errors.

Reported per endpoint: calls, p50 and p95 latency (queue join to the result) and queue wait (join to the
start of processing). Errors on good input (a failed call or a warning where none is due), bad inputs, and
bad inputs answered with a clear message: the app's own words, never a traceback, an exception's class,
a server path, Gradio's generic "has raised an exception" or the app's own catch-all. The server's RSS
(with any child processes) before anything ran (`cold`), when the visitors arrive (`start`: after one
warm-up calls that make the server load what it loads on first use, the AR base model, about 0.5 GB, and
read the A3 model's memory-mapped weights once), at its peak, and `--settle` seconds (60) after the last
visitor left (the app lets a closed tab's runs go and hands the memory back: `after` should be back near
`start`); `rss_mb.anon` the same without the pages of mapped files (the weights), where Linux says. Take
timings with nothing else running on the machine. One JSON object on the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

from app.memory import NOTE_PREFIX, parse_note
from app.ui.shared import INFO_MARK as INFO
from bench.fuzz_api import GRADIO_GENERIC, flag_leaks
from bench.server import served_app

BUSY_STATUS = 503  # what Gradio's queue/join answers when the queue is full ("Queue is full. Max size is N ...")
BUSY_PAUSE_S = 0.5  # how long a visitor told "busy" waits before it goes on

STORY = ("Mia found an old key under the porch. {blank} She opened the little box with it, and inside was a "
         "letter from her grandmother.")
BLANK_TOKENS = (2, 6, 14, 30)
BAD_SHARE = 0.3
LEAVE_SHARE = 0.05
ORDER_NAMES = ("left_to_right", "right_to_left", "outside_in", "blocks_of_4", "random_0")


def branchable(label: str) -> bool:
    """Whether the page can branch a run of this method (the others answer why not, on purpose)."""
    from model.config import LABELS, METHODS

    return label in LABELS and METHODS[LABELS[label]].branchable


def text_with_blank(n: int) -> str:
    return STORY.format(blank=f"[MASK:{n}]")


# --------------------------------------------------------------------------------------------------
# the server and its memory


def process_tree_rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    """RSS of a process and all its descendants, in MB (None once it is gone). `field`: the line of
    /proc/PID/status to sum: VmRSS (all), RssAnon (the process's own memory, without the pages of files it
    maps, such as the model's weights: those the kernel can drop and read again) or RssFile."""
    if field != "VmRSS" and not Path(f"/proc/{pid}/status").is_file():
        return None  # not Linux, or gone
    try:
        if field != "VmRSS":
            raise ImportError  # psutil reads the whole RSS only
        import psutil

        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20
    except ImportError:
        pass
    except Exception:  # the process has gone
        return None
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children[int(fields[1])].append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            if p == pid:
                return None
        todo.extend(children.get(p, []))
    return total / 2**20


class MemoryWatch(threading.Thread):
    """Samples a process tree's RSS every `every` seconds; `peak` is the largest sample."""

    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self._stop_event = pid, every, 0.0, threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = process_tree_rss_mb(self.pid)
            if rss is not None:
                self.peak = max(self.peak, rss)
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()


# --------------------------------------------------------------------------------------------------
# the page's events, as a browser sends them


class PageConfig:
    """The app's events by name: fn_index, what the page sends by default, where its warning goes."""

    def __init__(self, url: str):
        import httpx

        config = httpx.get(f"{url}/config", timeout=30).json()
        self.components = {c["id"]: c for c in config["components"]}
        self.events = {d["api_name"]: d for d in config["dependencies"] if d.get("backend_fn") and d.get("api_name")}
        warning = [i for i, c in self.components.items() if c.get("props", {}).get("elem_id") == "warning"]
        self.warning_id = warning[0] if warning else None

    def fn_index(self, name: str) -> int:
        return self.events[name]["id"]

    def data(self, name: str, **values) -> list:
        """The inputs of an event as the page starts, with some replaced by elem_id (or label)."""
        data = []
        for i in self.events[name]["inputs"]:
            component = self.components[i]
            props = component.get("props", {})
            key = props.get("elem_id") or props.get("label")
            value = None if component["type"] == "state" else props.get("value")
            data.append(values.get(key, value))
        return data

    def choices(self, elem_id: str) -> list:
        for component in self.components.values():
            props = component.get("props", {})
            if props.get("elem_id") == elem_id:
                return [c[1] if isinstance(c, list | tuple) else c for c in props.get("choices") or []]
        return []

    def update_choices(self, name: str, output: list | None, elem_id: str) -> list:
        """The choices an event's output sets on a dropdown (empty when it sets none)."""
        outputs = self.events[name]["outputs"]
        ids = [i for i in outputs if self.components[i].get("props", {}).get("elem_id") == elem_id]
        if output is None or not ids:
            return []
        value = output[outputs.index(ids[0])]
        choices = value.get("choices") if isinstance(value, dict) else None
        return [c[1] if isinstance(c, list | tuple) else c for c in choices or []]

    def warning_of(self, name: str, output: list | None) -> str:
        """The text the event put in the page's warning line ("" for none)."""
        outputs = self.events[name]["outputs"]
        if output is None or self.warning_id not in outputs:
            return ""
        value = output[outputs.index(self.warning_id)]
        if isinstance(value, dict):  # an update: {"value": ..., "__type__": "update"}
            value = value.get("value")
        return value if isinstance(value, str) else ""


def call(url: str, fn_index: int, data: list, session_hash: str, *, event_data=None, leave: bool = False,
         timeout: float = 600) -> dict:
    """One event the way the browser calls it (POST queue/join, then queue/data). {"success", "output",
    "error", "latency_s", "queue_s", "left", "busy"}; `leave` closes the connection once processing starts;
    `busy`: the queue was full and refused the event."""
    import httpx

    body = {"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": event_data,
            "trigger_id": None}
    start, queued = time.perf_counter(), None
    with httpx.Client(timeout=timeout) as http:
        joined = http.post(f"{url}/gradio_api/queue/join", json=body)
        if joined.status_code != 200:
            return {"success": False, "output": None, "error": joined.text, "latency_s": time.perf_counter() - start,
                    "queue_s": None, "left": False, "busy": joined.status_code == BUSY_STATUS}
        event_id = joined.json()["event_id"]
        with http.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session_hash}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") not in (None, event_id):
                    continue
                if message.get("msg") == "process_starts" and queued is None:
                    queued = time.perf_counter() - start
                    if leave:
                        return {"success": True, "output": None, "error": None, "left": True,
                                "latency_s": time.perf_counter() - start, "queue_s": queued}
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    return {"success": bool(message.get("success")), "output": output.get("data"),
                            "error": output.get("error"), "latency_s": time.perf_counter() - start,
                            "queue_s": queued, "left": False}
    return {"success": False, "output": None, "error": "the stream closed without a result",
            "latency_s": time.perf_counter() - start, "queue_s": queued, "left": False}


# --------------------------------------------------------------------------------------------------
# the visitors


class Tally:
    """Every call's outcome, shared by the visitors."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.queue: dict[str, list[float]] = defaultdict(list)
        self.good_errors: list[str] = []
        self.bad, self.bad_clear, self.left = 0, 0, 0
        self.unclear: list[str] = []
        self.busy: list[float] = []  # seconds from the call to the "busy" answer
        self.drops: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # visitor -> [caches dropped, rebuilt]

    def add(self, endpoint: str, result: dict, *, bad: bool, message: str, what: str, visitor: str = "") -> None:
        with self.lock:
            if result.get("left"):
                self.left += 1
                return
            if result.get("busy"):
                self.busy.append(result["latency_s"])
                return
            if NOTE_PREFIX in message:  # the tab's memory cap at work: a note, not an error
                dropped, rebuilt = parse_note(message)
                self.drops[visitor][0] += dropped
                self.drops[visitor][1] += rebuilt
                message = ""
            if message.lstrip().startswith(INFO):  # the app's own information ("branch 2 reproduces run 0 ..")
                message = ""
            self.latency[endpoint].append(result["latency_s"])
            if result.get("queue_s") is not None:
                self.queue[endpoint].append(result["queue_s"])
            if bad:
                self.bad += 1
                clear = bool(message.strip()) and GRADIO_GENERIC not in message \
                    and "Something went wrong" not in message and not flag_leaks(message, what)
                self.bad_clear += clear
                if not clear:
                    self.unclear.append(f"{endpoint}: {what[:60]!r} -> {message[:120]!r}")
            elif not result["success"] or message:
                said = message or result.get("error") or ""
                self.good_errors.append(f"{endpoint}: {what[:60]!r} -> {said[:160]!r}")


class Visitor(threading.Thread):
    def __init__(self, index: int, url: str, page: PageConfig, tally: Tally, deadline: float, seed: int):
        super().__init__(daemon=True)
        from gradio_client import Client

        self.client = Client(url, verbose=False, analytics_enabled=False)  # a session of its own
        self.session = getattr(self.client, "session_hash", None) or uuid.uuid4().hex[:12]
        self.url, self.page, self.tally, self.deadline = url, page, tally, deadline
        self.rng = random.Random(seed * 1000 + index)
        self.methods = page.choices("method")

    def event(self, name: str, *, bad: bool = False, what: str = "", event_data=None, leave: bool = False,
              **values) -> dict:
        result = call(self.url, self.page.fn_index(name), self.page.data(name, **values), self.session,
                      event_data=event_data, leave=leave)
        message = self.page.warning_of(name, result["output"]) if result["success"] else str(result["error"] or "")
        self.tally.add(name, result, bad=bad, message=message, what=what, visitor=self.session)
        self.pause_if_busy(result)
        return result

    def pause_if_busy(self, result: dict) -> None:
        if result.get("busy"):  # "try again in a moment"
            time.sleep(BUSY_PAUSE_S)

    def api(self, name: str, args: list, *, bad: bool = False, leave: bool = False) -> dict:
        result = call(self.url, self.page.fn_index(name), args, self.session, leave=leave)
        message = "" if result["success"] else str(result["error"] or "")
        self.tally.add("/" + name, result, bad=bad, message=message, what=json.dumps(args)[:200],
                       visitor=self.session)
        self.pause_if_busy(result)
        return result

    def run(self) -> None:
        try:
            self.visit()
        finally:
            self.leave()

    def visit(self) -> None:
        from app.session import MAX_TEXT_CHARS

        actions = (self.infill, self.page_run, self.lab, self.orders)
        first = True
        while time.monotonic() < self.deadline:
            if first:  # once through gradio_client itself: the API as a client library calls it
                from gradio_client.utils import QueueError

                start = time.perf_counter()
                try:
                    self.client.predict(text_with_blank(6), "A3 plan", 0, api_name="/infill")
                    result = {"success": True, "latency_s": time.perf_counter() - start}
                    message = ""
                except QueueError as err:  # the queue was full: "Queue is full! Please try again."
                    result, message = {"success": False, "busy": True, "latency_s": time.perf_counter() - start}, \
                        str(err)
                except Exception as err:
                    result, message = {"success": False, "latency_s": time.perf_counter() - start}, str(err)
                self.tally.add("/infill (gradio_client)", result, bad=False, message=message, what="first call",
                               visitor=self.session)
                self.pause_if_busy(result)
                first = False
                continue
            self.rng.choices(actions, weights=(35, 35, 15, 15))[0](self.rng.random() < BAD_SHARE, MAX_TEXT_CHARS)

    def leave(self) -> None:
        """Leave as a browser tab closes: the session's heartbeat stream (gradio_client's, for the session
        every call of this visitor uses) ends, so the app lets the tab's runs go (app.ui.sessions). The
        stream notices at its next beat (GRADIO_HEARTBEAT_INTERVAL, 15 s by default)."""
        self.client.close()

    def infill(self, bad: bool, limit: int) -> None:
        text, method, seed = text_with_blank(self.rng.choice(BLANK_TOKENS)), self.rng.choice(self.methods), 0
        if bad:
            kind = self.rng.randrange(3)
            text = "word " * (limit // 5 + 20) + "[MASK]" if kind == 0 else text
            method = "nonexistent decoder" if kind == 1 else method
            seed = "not a number" if kind == 2 else seed
        self.api("infill", [text, method, seed], bad=bad, leave=not bad and self.rng.random() < LEAVE_SHARE)

    def page_run(self, bad: bool, limit: int) -> None:
        text, method = text_with_blank(self.rng.choice(BLANK_TOKENS)), self.rng.choice(self.methods)
        if bad:
            text = self.rng.choice(["word " * (limit // 5 + 20) + "[MASK]", "A text without any blank."])
            self.event("on_run", bad=True, what=text[:80], text=text, method=method)
            return
        result = self.event("on_run", what=f"{method}: {text}", text=text, method=method,
                            leave=self.rng.random() < LEAVE_SHARE)
        if result.get("left") or not result["success"]:
            return
        step = self.rng.randrange(1, 4)
        settled = self.event("on_step_settled", event_data={"step": step}, what=f"step {step}")
        then = self.rng.randrange(3)
        if then < 2 and not settled["success"]:  # refused ("busy"): the step was never settled on the server,
            return  # so a branch or the attention would act on another step, as a browser's would: not tried
        if then == 0 and branchable(method):
            # the orders (plan) or strategies (dynamic) the page offers for this run, as the step's details set them
            offered = self.page.update_choices("on_step_settled", settled["output"], "br-order")
            choices = offered or self.page.choices("br-order") or ["left to right"]
            for size in range(1, 5):  # the first from the run; then, now and then, from the branch on show
                order = self.rng.choice(choices)
                branched = self.event("on_branch_order", what=f"branch {order}",
                                      **{"br-order": order, "br-size": size})
                if not branched["success"] or self.rng.random() < 0.5:
                    break
        elif then == 1:
            self.event("on_attention", what="attention")
        else:
            self.event("gif", what="gif")
            self.event("player", what="player")

    def lab(self, bad: bool, limit: int) -> None:
        text = STORY.format(blank="It was small and rusty.")
        custom = "0 1 2 x ]" if bad else ""
        self.event("on_lab", bad=bad, what=f"lab custom={custom!r}",
                   **{"lab-text": text, "lab-random": 6, "lab-custom": custom})

    def orders(self, bad: bool, limit: int) -> None:
        text = STORY.format(blank="It was small and rusty.")
        orders = "[[{" if bad else json.dumps(self.rng.sample(ORDER_NAMES, 3))
        self.api("order_likelihoods", [text, orders], bad=bad)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 3)


WARM_UP = [("Mia found an old key under the porch. [MASK:4] It was a letter.", "AR baseline", 0),
           ("Mia found an old key under the porch. [MASK:4] It was a letter.", "A3 plan", 0)]


def warm_up(url: str) -> None:
    """Two calls that make the server load what it loads only on first use (the AR base model, about 0.5 GB
    for the default model: the AR baseline, the order lab and `/order_likelihoods` read it) and touch the A3
    model's weights (read from a memory-mapped file: their pages count in RSS once a decode has read them),
    so that the memory the crowd leaves behind is measured from the server's settled state: `rss_mb.cold` is
    before them, `rss_mb.start` after. Their session closes at once; they are not counted among the visitors'
    calls."""
    from gradio_client import Client

    client = Client(url, verbose=False, analytics_enabled=False)
    try:
        for args in WARM_UP:
            client.predict(*args, api_name="/infill")
    finally:
        client.close()


def run_load(url: str, visitors: int, minutes: float, *, pid: int | None = None, seed: int = 0,
             settle: float = 60.0, queue_size: int | None = None, session_mb: float | None = None) -> dict:
    page, tally = PageConfig(url), Tally()
    watch = MemoryWatch(pid) if pid else None
    rss_cold = process_tree_rss_mb(pid) if pid else None
    warm_up(url)
    rss_start = process_tree_rss_mb(pid) if pid else None
    anon_start = process_tree_rss_mb(pid, "RssAnon") if pid else None
    if watch:
        watch.start()
    deadline = time.monotonic() + minutes * 60
    crowd = [Visitor(i, url, page, tally, deadline, seed) for i in range(visitors)]
    started = time.perf_counter()
    for visitor in crowd:
        visitor.start()
    for visitor in crowd:
        visitor.join()
    ran = time.perf_counter() - started
    if settle:
        time.sleep(settle)
    rss_after = process_tree_rss_mb(pid) if pid else None
    anon_after = process_tree_rss_mb(pid, "RssAnon") if pid else None
    if watch:
        watch.stop()
    endpoints = {name: {"calls": len(times), "p50_s": percentile(times, 50), "p95_s": percentile(times, 95),
                        "queue_p50_s": percentile(tally.queue.get(name, []), 50),
                        "queue_p95_s": percentile(tally.queue.get(name, []), 95)}
                 for name, times in sorted(tally.latency.items())}
    return {"url": url, "visitors": visitors, "minutes": minutes, "seconds": round(ran, 1), "seed": seed,
            "calls": sum(e["calls"] for e in endpoints.values()),
            "errors_good_input": len(tally.good_errors), "good_input_errors": tally.good_errors[:20],
            "bad_inputs": tally.bad, "bad_inputs_clear": tally.bad_clear, "unclear_answers": tally.unclear[:20],
            "left_mid_decode": tally.left,
            "queue_size": queue_size,
            "busy": {"calls": len(tally.busy), "p50_s": percentile(tally.busy, 50),
                     "max_s": round(max(tally.busy), 3) if tally.busy else None},
            "session_mb": session_mb,
            # the started app's malloc arenas (app.memory.arenas_in_effect); None with --url
            "malloc_arenas": _arenas() if pid else None,
            "cache_drops": {"dropped": sum(d for d, _ in tally.drops.values()),
                            "rebuilt": sum(r for _, r in tally.drops.values()),
                            # [dropped, rebuilt] of each visitor whose tab dropped or rebuilt a cache, most first
                            "per_session": sorted(([d, r] for d, r in tally.drops.values()), reverse=True)},
            "rss_mb": {"cold": _mb(rss_cold), "start": _mb(rss_start), "peak": _mb(watch.peak if watch else None),
                       "after": _mb(rss_after), "after_s": settle,
                       "anon": {"start": _mb(anon_start), "after": _mb(anon_after)}},
            "endpoints": endpoints}


def _arenas(environ=None) -> str:
    """What an app started from this environment holds glibc's malloc to (app.memory.arenas_in_effect, the
    words its start-up log uses)."""
    from app.memory import arenas_in_effect

    return arenas_in_effect(environ)


def _mb(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visitors", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--model", default="default", help="the model `python app.py --model` serves")
    ap.add_argument("--url", default=None, help="a running app instead (its memory is then not read)")
    ap.add_argument("--settle", type=float, default=60.0, help="seconds after the last visitor before RSS is read")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--queue-size", type=int, default=None, metavar="N",
                    help="the queue size of the app it starts (`app.py --queue-size`; default: the app's, 64)")
    ap.add_argument("--session-mb", type=float, default=None, metavar="MB",
                    help="the per-tab memory cap of the app it starts (`app.py --session-mb`; default: the app's, 192)")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args(argv)
    if args.visitors < 1 or args.minutes <= 0 or args.settle < 0:
        ap.error("--visitors must be at least 1, --minutes above 0 and --settle at least 0")
    if (args.queue_size is not None and args.queue_size < 1) or (args.session_mb is not None and args.session_mb <= 0):
        ap.error("--queue-size must be at least 1 and --session-mb above 0")
    sizes = {"queue_size": args.queue_size, "session_mb": args.session_mb}
    if args.url:  # the app runs with what it was started with: these are only reported
        result = run_load(args.url.rstrip("/"), args.visitors, args.minutes, seed=args.seed, settle=args.settle,
                          **sizes)
    else:
        with served_app(args.model, **sizes) as (url, pid, _):
            result = run_load(url, args.visitors, args.minutes, pid=pid, seed=args.seed, settle=args.settle,
                              **sizes)
        result["model"] = args.model
    if not args.json:
        print(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

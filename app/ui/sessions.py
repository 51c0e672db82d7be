"""A tab's runs go when the tab goes, so that a crowd's memory comes back once it leaves.

Gradio 6.31 keeps every session's gr.State values and the values its outputs last showed in
`blocks.state_holder` (gradio.state_holder.SessionState): for an hour after a tab closes (its heartbeat
stream, `/gradio_api/heartbeat/<session>`, ends; `SessionState.STATE_TTL_WHEN_CLOSED`), and for ever for a
session that never opens a heartbeat (a script calling the queue's routes). Here that is cut short:

  - when a tab closes, Gradio runs the page's unload event (`Blocks.unload`, fired when the heartbeat
    stream ends), and `SessionReleaser.on_unload` lets the tab's runs go at once;
  - a session with no event for `app.memory.session_ttl_s()` seconds (A3_SESSION_TTL, default 30 minutes)
    is let go by a sweep every few seconds, whether its tab is open, closed or never had one.

Letting go sets the heavy States (the result on the stage, the order lab's result, the comparison, the tree
of branches, the run the attention was drawn for) to their empty values and forgets the values the page's
outputs last showed (figures, tables: Gradio rebuilds them from the components when next needed); then
`app.memory.free_memory` collects the garbage and hands the heap back (malloc_trim). The session entry
itself stays, small, so a tab that comes back is told that its run is no longer held (app.memory.not_held),
never shown a traceback or another run.
"""

from __future__ import annotations

import copy
import datetime
import logging
import threading
import weakref

import gradio as gr

from app import memory
from app.ui.shared import States

log = logging.getLogger(__name__)


class SessionReleaser:
    """Lets the heavy state of closed and idle sessions of one Blocks go (see the module's text)."""

    def __init__(self, blocks: gr.Blocks, states: States, ttl_s: float | None = None):
        self._blocks = weakref.ref(blocks)
        self.ttl_s = memory.session_ttl_s() if ttl_s is None else float(ttl_s)
        # each heavy State's id and the value it takes when let go (what a handler reads as "none held")
        self.empty = {states.result._id: None, states.lab._id: None, states.compared._id: {},
                      states.tree._id: None, states.attention_at._id: None}
        self.released: dict[str, datetime.datetime] = {}  # session -> when it was let go
        self.lock = threading.Lock()
        self._to_free = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def holder(self):
        """Gradio's StateHolder (set when the app launches), or None."""
        blocks = self._blocks()
        return getattr(blocks, "state_holder", None) if blocks is not None else None

    def release(self, session_hash: str) -> bool:
        """Let one session's heavy state go (its memory is handed back by the next `free`); whether the
        session was there."""
        holder = self.holder
        session = holder.session_data.get(session_hash) if holder is not None else None
        if session is None:
            return False
        session.config_values = {}  # the outputs' last values: Gradio rebuilds an entry from its block when needed
        for key, value in self.empty.items():  # after: whoever sees the states let go sees the values gone too
            if key in session.state_data:
                session.state_data[key] = copy.copy(value)
        with self.lock:
            self.released[session_hash] = datetime.datetime.now()
            self._to_free = True
        return True

    def on_unload(self, request: gr.Request) -> None:
        """The page's unload event: the tab closed (or reloaded, which opens a new session)."""
        if request is not None and request.session_hash and self.release(request.session_hash):
            self.free()

    def sweep(self, now: datetime.datetime | None = None) -> list[str]:
        """Let go every session idle for more than the TTL since its last event (and not let go since);
        returns them."""
        holder = self.holder
        if holder is None:
            return []
        now = now or datetime.datetime.now()
        idle = datetime.timedelta(seconds=self.ttl_s)
        with holder.lock:
            last_used = list(holder.time_last_used.items())
        gone = []
        for session_hash, used in last_used:
            let_go = self.released.get(session_hash)
            if now - used > idle and (let_go is None or let_go < used) and self.release(session_hash):
                gone.append(session_hash)
        with self.lock:  # forget sessions Gradio itself has dropped
            for session_hash in [s for s in self.released if s not in holder.session_data]:
                del self.released[session_hash]
        return gone

    def free(self) -> bool:
        """Hand freed memory back to the system if anything was let go since the last time."""
        with self.lock:
            due, self._to_free = self._to_free, False
        if due:
            memory.free_memory()
        return due

    def start(self, every_s: float | None = None) -> SessionReleaser:
        """Sweep and free every `every_s` seconds (default: 2, or a quarter of the TTL when shorter) in a
        daemon thread, until `stop()` or until the Blocks is gone."""
        every = every_s if every_s is not None else min(2.0, self.ttl_s / 4)

        def loop():
            while not self._stop.wait(every) and self._blocks() is not None:
                try:
                    self.sweep()
                    self.free()
                except Exception:  # never let the sweeper die
                    log.exception("releasing idle sessions failed")

        self._thread = threading.Thread(target=loop, name="a3-session-releaser", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


def release_sessions(blocks: gr.Blocks, states: States, ttl_s: float | None = None) -> SessionReleaser:
    """Wire the unload event and start the sweeper (inside `blocks`' context)."""
    releaser = SessionReleaser(blocks, states, ttl_s)
    blocks.unload(releaser.on_unload)
    return releaser.start()

"""Each browser session's memory, capped in bytes, and let go when the tab goes. Plain values in, plain
values out; no gradio here (app.ui.sessions applies the release to Gradio's sessions).

A tab keeps in gr.State the result on the stage, the last comparison, the order lab's last result, the run
its attention plot was drawn for, and a tree of up to app.branching.MAX_BRANCHES branches, each with its
content cache (the model's keys and values for the positions decided so far: about 12 MB at 256 tokens on
the default model). `session_bytes` counts what the session holds: the caches' tensors exactly, the traces
and lab results estimated from their sizes (model.decoding's records are Python lists and dicts).

The cap is per tab (`session_cap_bytes`: SESSION_MB, or the environment's A3_SESSION_MB): 20 tabs at the
default cap and the default model (about 1 GB) stay under 6 GB. Past it, `fit` drops caches, the least
recently used first and the ones the branch just made used (its parent's, its own) last; never a branch: a
branch whose cache was dropped rebuilds it in one counted model call the next time it is branched from, as
the first branch of a run does (model.branching). The traces, comparisons and lab results stay; when they
alone pass the cap, the note says so (`note`; `parse_note` reads a note back, for bench.load).

A tab's runs go when the tab goes: when it closes (Gradio's heartbeat ends), or after SESSION_TTL_S
seconds without an event (A3_SESSION_TTL; a script's session has no heartbeat). `free_memory` then hands
the freed memory back to the system. A visitor who comes back to a released tab is told to run again
(`NOT_HELD`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only the annotations: app.py caps the allocator's arenas before torch loads
    import torch

SESSION_MB = 192  # the default cap on one browser tab's memory, in MB (2**20 bytes): 20 tabs ~ 3.8 GB
SESSION_MB_ENV = "A3_SESSION_MB"
SESSION_TTL_S = 1800  # a tab's runs are let go after this many seconds without an event (or when it closes)
SESSION_TTL_ENV = "A3_SESSION_TTL"
NOTE_PREFIX = "Memory:"  # how the page's notes about dropped and rebuilt caches start (bench.load counts them)

# rough sizes of CPython objects in a trace's records (64-bit): an int or float with its list or dict slot,
# a (token, probability) pair, a record
_NUMBER, _PAIR, _ENTRY, _RECORD = 36, 150, 110, 600


def _positive_env(name: str, default: float, unit: str, what: str, environ=None) -> float:
    """A positive finite number from the environment variable `name`, else `default`; a bad value raises
    ValueError saying what is expected."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive number of {unit} ({what}; default {default}); got {raw!r}.")
    return value


def session_cap_bytes(environ=None) -> int:
    """The cap in bytes: A3_SESSION_MB (a positive number of MB) if set, else SESSION_MB. A bad value raises
    ValueError with a message saying what is expected."""
    mb = _positive_env(SESSION_MB_ENV, SESSION_MB, "MB", "the memory one browser session may hold", environ)
    return int(mb * 2**20)


def session_ttl_s(environ=None) -> float:
    """Seconds without an event after which a tab's runs are let go: A3_SESSION_TTL (a positive number) if
    set, else SESSION_TTL_S. A bad value raises ValueError saying what is expected."""
    return _positive_env(SESSION_TTL_ENV, SESSION_TTL_S, "seconds", "how long a tab without events keeps its runs",
                         environ)


def not_held(what: str = "run", environ=None) -> str:
    """The page's words for a tab whose `what` (a run, a branch, a comparison, ...) was let go, or that
    never had one."""
    try:
        minutes = session_ttl_s(environ) / 60
    except ValueError:
        minutes = SESSION_TTL_S / 60
    return (f"this tab holds no {what} on the server: none yet, or it was let go because the tab was idle for "
            f"{minutes:.3g} minutes or was closed. Run it again.")


def free_memory() -> bool:
    """Collect garbage, then ask glibc to give freed heap memory back to the system (malloc_trim), so the
    process's RSS drops. Returns whether malloc_trim ran (only where the C library has it)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    with contextlib.suppress(Exception):
        trim(0)
        return True
    return False


ARENAS = 2  # glibc malloc arenas the app keeps (cap_arenas); A3_MALLOC_ARENAS=0 leaves glibc's default
ARENAS_ENV = "A3_MALLOC_ARENAS"
MAX_ARENAS = 1024  # more is no cap at all (glibc's default is 8 per core)
_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def wanted_arenas(environ=None) -> int | None:
    """The arenas the app asks glibc for: A3_MALLOC_ARENAS (a whole number, 0 for glibc's default) if set,
    else ARENAS; None for glibc's default. A bad value raises ValueError saying what is expected."""
    env = os.environ if environ is None else environ
    raw = (env.get(ARENAS_ENV) or "").strip()
    if raw and not (raw.isascii() and raw.isdigit() and int(raw) <= MAX_ARENAS):
        raise ValueError(f"{ARENAS_ENV} must be a whole number of malloc arenas from 0 (glibc's default) to "
                         f"{MAX_ARENAS} (default {ARENAS}); got {raw!r}.")
    arenas = int(raw) if raw else ARENAS
    return arenas or None


def arenas_in_effect(environ=None) -> str:
    """In words, what an app started from this environment holds glibc's malloc to: MALLOC_ARENA_MAX (glibc
    reads it itself at start, and cap_arenas leaves it alone) if set, else wanted_arenas."""
    env = os.environ if environ is None else environ
    glibc = (env.get("MALLOC_ARENA_MAX") or "").strip()
    if glibc:
        return f"MALLOC_ARENA_MAX={glibc}"
    arenas = wanted_arenas(env)
    return f"{arenas} arena{'' if arenas == 1 else 's'}" if arenas else "glibc's default"


def cap_arenas(environ=None, libc=None) -> int | None:
    """Hold glibc's malloc to a few arenas (mallopt M_ARENA_MAX), before torch and Gradio start threads.

    By default glibc gives each thread that allocates at once an arena of its own (up to 8 per core), and
    memory freed over many arenas is seldom handed back: after a crowd of visitors left, the server kept
    about three times as much as with two arenas (docs/benchmarks.md, "Many visitors"). Returns the cap
    set, or None where nothing was set: MALLOC_ARENA_MAX in the environment (glibc's own setting: left to
    it), A3_MALLOC_ARENAS=0, or a C library without mallopt. A bad A3_MALLOC_ARENAS raises ValueError."""
    env = os.environ if environ is None else environ
    arenas = wanted_arenas(env)
    if arenas is None or (env.get("MALLOC_ARENA_MAX") or "").strip():
        return None
    try:
        lib = libc or ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = lib.mallopt
        with contextlib.suppress(AttributeError, TypeError):  # a ctypes function: C ints in, an int out
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    except (OSError, AttributeError, TypeError):
        return None
    return arenas if mallopt(_M_ARENA_MAX, arenas) == 1 else None


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def tensor_bytes(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.nelement() * tensor.element_size()


def cache_bytes(cache) -> int:
    """An A3Cache (model.modeling): its keys and values in every layer, and its group and position slots."""
    if cache is None:
        return 0
    return sum(map(tensor_bytes, [*cache.k, *cache.v, cache.groups, cache.positions]))


def trace_bytes(trace) -> int:
    """A decoded trace without its cache (estimated): its plan's tensors and its step records."""
    if trace is None:
        return 0
    plan = trace.plan
    total = sum(tensor_bytes(getattr(plan, name, None)) for name in ("token_ids", "given", "group_ids"))
    total += _NUMBER * len(trace.final_ids)
    for step in trace.steps:
        pairs = sum(len(c) for c in step.candidates.values())
        entries = len(step.entropy) + len(step.confidence) + len(step.selection_scores or {}) + len(step.candidates)
        numbers = 3 * len(step.positions) + len(step.group_ids or ())
        total += _RECORD + _PAIR * pairs + _ENTRY * entries + _NUMBER * numbers
    return total


def result_bytes(result) -> int:
    """An app.session.Result (estimated): its trace, the other candidates it carries, its strings."""
    if result is None:
        return 0
    traces = {id(result.trace): result.trace}
    for kept in (result.flexible, result.best_of_n):
        for candidate in kept.candidates if kept is not None else ():
            traces[id(candidate.trace)] = candidate.trace
    strings = sum(len(s) + 60 for s in result.labels) + sum(len(s) + 100 for s in result.vocab.values())
    return sum(map(trace_bytes, traces.values())) + strings + len(result.text)


def lab_bytes(lab) -> int:
    """An app.order_lab.LabResult (estimated): per order, its group ids and per-token log p; the AR base's
    per-token log p."""
    if lab is None:
        return 0
    per_order = sum(_RECORD + _NUMBER * (len(o.group_ids) + len(o.token_logps)) for o in lab.orders)
    ar = _RECORD + _NUMBER * (1 + len(lab.ar[1])) if lab.ar else 0
    return per_order + ar + _NUMBER * len(lab.token_ids) + sum(len(s) + 60 for s in lab.labels) + len(lab.text)


def session_bytes(tree=None, *, results=(), lab=None) -> int:
    """Everything a session holds: the tree's caches and traces, other results (the one on the stage, a
    comparison's runs; each trace counted once), the lab's result."""
    seen, total = set(), lab_bytes(lab)
    for result in results:
        if result is not None and id(result.trace) not in seen:
            seen.add(id(result.trace))
            total += result_bytes(result) + cache_bytes(result.trace.cache)
    for branch in tree.branches if tree is not None else ():
        if id(branch.trace) not in seen:
            seen.add(id(branch.trace))
            total += trace_bytes(branch.trace) + cache_bytes(branch.trace.cache)
    return total


def fit(tree, cap: int, *, results=(), lab=None, keep=()) -> tuple[list[int], int]:
    """Drop the tree's caches until the session holds at most `cap` bytes, the least recently used first
    and the branches in `keep` (the parent just branched from, the new branch) only when nothing else is
    left; the branches stay. Returns (the branches whose caches were dropped, in that order; the bytes the
    session holds afterwards, which stay above `cap` when the rest alone is more)."""
    dropped = []
    total = session_bytes(tree, results=results, lab=lab)
    cached = tree.cached() if tree is not None else []
    order = [i for i in cached if i not in keep] + [i for i in keep if i in cached]
    for index in order:
        if total <= cap:
            break
        total -= cache_bytes(tree[index].trace.cache)
        tree.drop_cache(index)
        dropped.append(index)
    return dropped, total


def _mb(n: int) -> str:
    return f"{n / 2**20:.3g} MB"


def note(dropped: list[int], rebuilt: int | None, cap: int, held: int = 0) -> str:
    """What the page says about caches dropped to stay under the cap, a dropped cache rebuilt, and the tab
    holding more than its cap (`held` bytes) after all ("" for none of these). `parse_note` reads it back."""
    parts = []
    if rebuilt is not None:
        parts.append(f"branch {rebuilt}'s cache had been dropped to save memory, so it was rebuilt in one model "
                     "call (counted in the new branch's calls).")
    many = len(dropped) > 1
    caches = (f"the cache{'s' if many else ''} of branch{'es' if many else ''} {', '.join(map(str, dropped))} "
              f"(the least recently used)")
    if held > cap:
        parts.append(f"this tab may hold {_mb(cap)} but still holds {_mb(held)}"
                     + (f" after {caches} {'were' if many else 'was'} dropped" if dropped else "")
                     + ": what is left (the runs themselves, and the caches this branch needs) cannot be dropped. "
                     "Every branch stays; run again to start afresh.")
    elif dropped:
        parts.append(f"this tab holds at most {_mb(cap)}, so {caches} {'were' if many else 'was'} dropped. Every "
                     "branch stays; one model call rebuilds a cache when you branch from it again.")
    return f"{NOTE_PREFIX} {' '.join(p[0].upper() + p[1:] for p in parts)}" if parts else ""


_DROPPED = re.compile(r"the caches? of branch(?:es)? ([0-9][0-9, ]*) \(the least recently used\)")
_REBUILT = re.compile(r"cache had been dropped to save memory, so it was rebuilt")


def parse_note(message: str) -> tuple[int, int]:
    """(caches dropped, dropped caches rebuilt) that a `note` reports, wherever it sits in `message`; (0, 0)
    for any other message. Tested against `note` itself, so a rewording of one breaks the test of both."""
    if NOTE_PREFIX not in message:
        return 0, 0
    listed = _DROPPED.search(message)
    return (len(re.findall(r"[0-9]+", listed.group(1))) if listed else 0), int(bool(_REBUILT.search(message)))

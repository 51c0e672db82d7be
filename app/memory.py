"""Each browser session's memory, capped in bytes. Plain values in, plain values out; no gradio here.

A tab keeps in gr.State the result on the stage, the last comparison, the order lab's last result and a
tree of up to app.branching.MAX_BRANCHES branches, each with its content cache (the model's keys and values
for the positions decided so far: about 12 MB at 256 tokens on the default model). `session_bytes` counts
what the session holds: the caches' tensors exactly, the traces and lab results estimated from their sizes
(model.decoding's records are Python lists and dicts). Past the cap (`session_cap_bytes`: SESSION_MB, or the
environment's A3_SESSION_MB), `fit` drops the oldest caches first, never a branch: a branch whose cache was
dropped rebuilds it in one counted model call the next time it is branched from, as the first branch of a
run does (model.branching). The traces, comparisons and lab results stay; they are small beside the caches,
and the size limits on what a visitor sends (app.session) bound them.
"""

from __future__ import annotations

import os

import torch

SESSION_MB = 256  # the default cap on one browser session's memory, in MB (2**20 bytes)
SESSION_MB_ENV = "A3_SESSION_MB"
NOTE_PREFIX = "Memory:"  # how the page's notes about dropped and rebuilt caches start (bench.load counts them)

# rough sizes of CPython objects in a trace's records (64-bit): an int or float with its list or dict slot,
# a (token, probability) pair, a record
_NUMBER, _PAIR, _ENTRY, _RECORD = 36, 150, 110, 600


def session_cap_bytes(environ=None) -> int:
    """The cap in bytes: A3_SESSION_MB (a positive number of MB) if set, else SESSION_MB. A bad value raises
    ValueError with a message saying what is expected."""
    raw = (os.environ if environ is None else environ).get(SESSION_MB_ENV, "").strip()
    if not raw:
        return SESSION_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        mb = float("nan")
    if not mb > 0 or mb == float("inf"):
        raise ValueError(f"{SESSION_MB_ENV} must be a positive number of MB (the memory one browser session may "
                         f"hold; default {SESSION_MB}); got {raw!r}.")
    return int(mb * 2**20)


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
    """An app.order_lab.LabResult (estimated): per order, its group ids and per-token log p."""
    if lab is None:
        return 0
    per_order = sum(_RECORD + _NUMBER * (len(o.group_ids) + len(o.token_logps)) for o in lab.orders)
    return per_order + _NUMBER * len(lab.token_ids) + sum(len(s) + 60 for s in lab.labels) + len(lab.text)


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


def fit(tree, cap: int, *, results=(), lab=None) -> list[int]:
    """Drop the tree's oldest caches until the session holds at most `cap` bytes; the branches stay.
    Returns the branches whose caches were dropped, oldest first."""
    dropped = []
    total = session_bytes(tree, results=results, lab=lab)
    for index in tree.cached() if tree is not None else ():
        if total <= cap:
            break
        total -= cache_bytes(tree[index].trace.cache)
        tree.drop_cache(index)
        dropped.append(index)
    return dropped


def note(dropped: list[int], rebuilt: int | None, cap: int) -> str:
    """What the page says about caches dropped (to stay under the cap) and a dropped cache rebuilt ("" for
    neither)."""
    parts = []
    if rebuilt is not None:
        parts.append(f"branch {rebuilt}'s cache had been dropped to save memory, so it was rebuilt in one model "
                     "call (counted in the new branch's calls).")
    if dropped:
        which = ", ".join(map(str, dropped))
        parts.append(f"this tab holds at most {cap / 2**20:.3g} MB, so the cache{'s' if len(dropped) > 1 else ''} "
                     f"of branch{'es' if len(dropped) > 1 else ''} {which} (the oldest) "
                     f"{'were' if len(dropped) > 1 else 'was'} dropped. Every branch stays; one model call "
                     "rebuilds a cache when you branch from it again.")
    return f"{NOTE_PREFIX} {' '.join(p[0].upper() + p[1:] for p in parts)}" if parts else ""

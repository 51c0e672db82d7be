"""Branching on the page: the tree of runs grown from the result on the stage, without the UI.

The stage stops on step k; the user picks another candidate for a position open at k, or another order
(plan) / strategy (dynamic) and group size for the rest, and `model.branching.BranchTree` decodes the rest
from the parent's cache (the shared prefix is never recomputed). Every branch stays in the tree; any of
them can be put on the stage and branched again. Plain values in, plain values out; no gradio here.
"""

from __future__ import annotations

import threading
import weakref

from app import memory
from app.figures import candidate_text, character_labels, display_label, known_at, one_line, readable_text
from app.narration import rule_status
from app.session import ORDER_NAMES, Explorer, InputError, Result
from model.branching import BRANCHABLE, BranchTree
from model.config import STRATEGIES
from model.plans import PlanError
from model.text import token_strings

MAX_BRANCHES = 12  # each keeps its content cache (about 12 MB at 256 tokens on the default model) while the
# session stays under its memory cap (app.memory); past it the least recently used caches go, the branches stay
_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tree -> its lock: one branch at a time per tree
_LOCKS_GUARD = threading.Lock()
TREE_HEADERS = ["#", "branch", "parent", "shared steps", "log p", "new calls", "text"]
PLAN_ORDERS = [name for name in ORDER_NAMES if ORDER_NAMES[name] != "custom"]


def can_branch(result: Result | None) -> str:
    """Why this result cannot be branched ("" when it can)."""
    if result is None:
        return f"Run a decoding first, then stop the stage on the step to branch from: {memory.not_held()}"
    if result.trace.mode not in BRANCHABLE:
        return (f"{result.method} cannot branch: only A3 plan and A3 dynamic decode one cached order (the others "
                "regroup or recompute every step, or run another model). Run with one of those two.")
    return ""


def tree_of(explorer: Explorer, result: Result, tree: BranchTree | None) -> tuple[BranchTree, int]:
    """The tree the result belongs to and its index there; a result from elsewhere starts a new tree."""
    why = can_branch(result)
    if why:
        raise InputError(why)
    if tree is not None:
        for index, branch in enumerate(tree.branches):
            if branch.trace is result.trace:
                return tree, index
    return BranchTree(explorer.loaded.model, result.trace, name="0: main run", method=result.method), 0


def continuation_choices(result: Result | None) -> tuple[list[str], str]:
    """(choices, label) for "decode the rest": orders for a plan run, strategies for a dynamic one."""
    if result is not None and result.trace.mode == "dynamic":
        return list(STRATEGIES), "commit the rest by (dynamic)"
    return PLAN_ORDERS, "order of the rest (A3 plan)"


def other_continuation(result: Result | None) -> str | None:
    """The first continuation choice that is not how the run itself goes on (its strategy or its plan's
    order): decoding the rest the same way again would only reproduce it."""
    choices, _ = continuation_choices(result)
    if result is None:
        return choices[0] if choices else None
    config = result.trace.config
    own = config.strategy if result.trace.mode == "dynamic" else next(
        (name for name, value in ORDER_NAMES.items() if value == config.order), None)
    same = {own, "left to right"} if own == "ends first" else {own}  # past its ends, ends first IS left to right
    return next((c for c in choices if c not in same), choices[0] if choices else None)


def open_positions(result: Result | None, step: int) -> list[tuple[str, int]]:
    """(label, position) of every position with candidates at this step: the ones decided at it first."""
    if result is None or not 0 <= step < result.n_steps:
        return []
    record = result.trace.steps[step]
    decided = [p for p in record.positions if p in record.candidates]
    rest = sorted(p for p in record.candidates if p not in record.positions)
    chosen = dict(zip(record.positions, record.tokens, strict=True))
    labels = []
    for p in decided + rest:
        # the position's own label: the token it holds was decided here (the vocab only names candidates)
        now = f" (decided here: {display_label(result.labels[p]).strip() or '␣'})" if p in chosen else " (open)"
        labels.append((f"position {p}{now}", p))
    return labels


def token_choices(result: Result | None, step: int, position) -> list[tuple[str, int]]:
    """(label, token id) of the step's candidates for a position, most probable first. A label writes the
    token as the step's candidates table does (figures.candidate_text: a leading space as "␣", “␣the” is not
    “the”; a byte piece as the character it would make there), then its probability: “␣the” (p = 0.129)."""
    if result is None or position is None or not 0 <= step < result.n_steps:
        return []
    position = int(position)
    candidates = result.trace.steps[step].candidates.get(position, [])
    run = next(((start, end) for start, end in character_labels(result.labels)[1] if start <= position < end), None)
    known = known_at(result.trace, step)
    return [(f"“{candidate_text(result.labels, position, result.token_text(t), run, known)}” (p = {p:.3f})", int(t))
            for t, p in candidates]


def default_token(result: Result | None, step: int, position, tokens: list[tuple[str, int]]) -> int | None:
    """The candidate offered first: for a position decided at this step, the most probable token other than
    the one it committed (picking that one again would only reproduce the run); for an open one, the most
    probable."""
    if not tokens:
        return None
    committed = None
    if result is not None and position is not None and 0 <= step < result.n_steps:
        record = result.trace.steps[step]
        committed = dict(zip(record.positions, record.tokens, strict=True)).get(int(position))
    return next((t for _, t in tokens if t != committed), tokens[0][1])


def tree_lock(tree: BranchTree) -> threading.Lock:
    """The lock of one tree (a tab's): branch events of one tab run one at a time even where the model
    runs two events at once (GPU), so the tree never passes MAX_BRANCHES and a cache is never dropped while
    another branch reads it."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(tree, threading.Lock())


def branch(explorer: Explorer, tree: BranchTree | None, result: Result, step: int, *, position=None, token=None,
           order: str | None = None, group_size: int | None = None, held=(), lab=None,
           cap: int | None = None) -> tuple[BranchTree, Result, str]:
    """Branch the result on the stage at `step`; returns the tree, the new branch as a Result, and a note
    for the page ("" for none): the rest decoded after a branch's own pick (`_after_pick`), a branch that
    reproduces another run of the tree, a dropped cache rebuilt, or caches dropped to keep the session
    within `cap` bytes (default: app.memory.session_cap_bytes()). `held` (other Results) and `lab` (the order
    lab's LabResult) are what else the session keeps: they count towards the cap. Caches go least recently
    used first; the parent's and the new branch's last. Branches of one tree are made one at a time."""
    cap = memory.session_cap_bytes() if cap is None else cap  # checked at start-up; read before any change
    tree, parent = tree_of(explorer, result, tree)
    kept = ""
    if token is None and (order is not None or group_size is not None):
        step, kept = _after_pick(result, tree[parent], step)
    with tree_lock(tree):
        if len(tree) >= MAX_BRANCHES:
            raise InputError(f"This run has {MAX_BRANCHES} branches, the most the page keeps: run again to start "
                             "a new tree.")
        if order is None and group_size is None and (position is None or token is None):
            raise InputError("Pick a position and one of its candidates first (or an order for the rest).")
        if not 0 <= int(step) < result.n_steps:
            raise InputError("Stop the stage on a step first (→): a branch replaces a decision of that step or "
                             "decodes the rest from it.")
        if order is not None and result.trace.mode == "plan":
            if order not in ORDER_NAMES or ORDER_NAMES[order] == "custom":
                raise InputError(f"Unknown order {order!r}; choose one of {', '.join(PLAN_ORDERS)}.")
            order = ORDER_NAMES[order]
        try:
            index = tree.branch(int(step), parent=parent, position=None if position is None else int(position),
                                token=None if token is None else int(token), order=order,
                                group_size=None if group_size is None else int(group_size),
                                name=_name(result, len(tree), int(step), position, token, order, group_size))
        except PlanError as err:
            raise InputError(f"Cannot branch: {err}") from None
        rebuilt = parent if tree[index].rebuilt_parent and tree[parent].cache_drops else None
        dropped, held_bytes = memory.fit(tree, cap, results=[result, *held], lab=lab, keep=(parent, index))
        same = _mark_twin(tree, index)
    notes = [kept, same, memory.note(dropped, rebuilt, cap, held_bytes)]
    return tree, branch_result(explorer, tree, index, result.method), " ".join(n for n in notes if n)


def _after_pick(result: Result, shown, step: int) -> tuple[int, str]:
    """(the step to decode the rest from, a note) for "decode the rest this way" at `step` of the result
    on show. On the step where a branch committed the token picked for it, the rest is what comes after
    that pick: decoding it again from the step itself would throw the pick away (and reproduce the
    parent's run). Elsewhere the rest is decoded from the step itself, its own decision included."""
    if shown.parent is None or "token" not in shown.change or shown.at_step != int(step):
        return step, ""
    text = result.token_text(shown.change["token"]).strip() or repr(result.token_text(shown.change["token"]))
    if int(step) + 1 >= result.n_steps:
        raise InputError(f"Step {int(step) + 1} is the last one and commits the token picked for this branch "
                         f"('{text}'): nothing is left to decode after it. Branch the rest from an earlier "
                         "step, or pick another token.")
    return int(step) + 1, (f"Kept this branch's pick '{text}' (step {int(step) + 1}) and decoded the rest "
                           f"from step {int(step) + 2}.")


def twin(tree: BranchTree, index: int) -> tuple[int, bool] | None:
    """(another run of the tree with the same token at every position as branch `index`, whether it also
    decided them in the same steps), or None when the branch's text is new."""
    mine = tree[index].trace
    steps = [(list(s.positions), list(s.tokens)) for s in mine.steps]
    for i, other in enumerate(tree.branches):
        if i != index and list(other.trace.final_ids) == list(mine.final_ids):
            return i, steps == [(list(s.positions), list(s.tokens)) for s in other.trace.steps]
    return None


def _mark_twin(tree: BranchTree, index: int) -> str:
    """A note and a mark on the branch's name in the table when the branch reproduces another run step by step;
    only the mark when it reaches another run's text in another order."""
    found = twin(tree, index)
    if found is None:
        return ""
    other, exactly = found
    if not exactly:  # the same text decided in another order: another run to step through, marked, no note
        tree[index].name += f" (text of run {other})"
        return ""
    tree[index].name += f" (= run {other})"
    label = tree[other].name.split(": ", 1)[-1]
    return (f"Branch {index} reproduces run {other} ({label}) exactly, step by step: the same text, nothing new. "
            "Another token, order or strategy gives another run.")


def branch_index(tree: BranchTree | None, result: Result | None) -> int | None:
    """Where the result sits in the tree (None: not a run of it)."""
    if tree is None or result is None:
        return None
    return next((i for i, b in enumerate(tree.branches) if b.trace is result.trace), None)


def landing_step(tree: BranchTree, index: int) -> int:
    """The step a branch is shown at first: its first own step (where it leaves its parent, the token
    picked for it on show), so the stage stays where the researcher branched."""
    return min(tree[index].at_step, len(tree[index].trace.steps) - 1)


def branch_headline(tree: BranchTree, index: int, method: str) -> str:
    """The stage's headline for a branch: which one, of what, from which step, what it cost itself."""
    b = tree[index]
    calls = "call" if b.new_model_calls == 1 else "calls"
    line = f"branch {index} of {method}, from step {b.at_step + 1}: {b.new_model_calls} new model {calls}"
    if b.at_step:
        shared = "step 1" if b.at_step == 1 else f"steps 1-{b.at_step}"
        parent = "the main run" if b.parent == 0 else f"branch {b.parent}"  # the branch table's names
        line += f" · {shared} shared with {parent}"
    return line + rule_status(b.trace)


# what the branch headline's words mean (the stage's hover texts, with app.narration.TERMS)
BRANCH_TERMS = {
    "new model calls": "The model calls this branch made itself. The steps it shares with its parent were decoded "
                       "once, before, and are not run again (one call rebuilds their content when the parent's "
                       "cache was not kept).",
    "new model call": "The model calls this branch made itself. The steps it shares with its parent were decoded "
                      "once, before, and are not run again.",
    "shared with": "These first steps are the parent run's, copied as they are: the branch starts after them.",
}


def _name(result: Result, index: int, step: int, position, token, order, group_size) -> str:
    """A branch's name in the page's words: what changed, at which step (1-based, as the stage counts)."""
    if token is not None:
        shown = readable_text([result.token_text(int(token))])  # a lone byte as "‹EF›", never "<0xEF>"
        text = shown.strip() or repr(shown)
        what = f"'{text}' at position {position}"
    else:
        shown = {v: k for k, v in ORDER_NAMES.items()}.get(order, order)  # the page's word for an order
        what = f"rest {shown or 'as before'}" + (f", {group_size} per group" if group_size else "")
    return f"{index}: {what}, from step {step + 1}"


def branch_result(explorer: Explorer, tree: BranchTree, index: int, method: str) -> Result:
    try:
        trace = tree[int(index)].trace
    except (IndexError, ValueError, TypeError, PlanError):
        raise InputError(f"There is no branch {index!r}: pick one of the tree's rows.") from None
    return explorer.result(trace, method)


def tree_rows(explorer: Explorer, tree: BranchTree | None, shown: Result | None) -> list[list]:
    """One row per branch: index (▶ on the one shown), name, parent, step it leaves at, log p, calls, text."""
    if tree is None:
        return []
    rows = []
    loaded = explorer.loaded
    for i, b in enumerate(tree.branches):
        mark = "▶ " if shown is not None and b.trace is shown.trace else ""
        strings = token_strings(loaded.tokenizer, b.trace.final_ids, start_token_id=loaded.start_token_id)
        rows.append([f"{mark}{i}", b.name, "—" if b.parent is None else b.parent, b.at_step, round(b.logprob, 2),
                     b.new_model_calls, one_line(readable_text(strings[1:]))])  # a line break reads "↵"
    return rows

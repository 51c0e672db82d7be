"""The stage's data: everything the browser needs to draw every step of one trace, sent once.

`stage_payload(result)` turns a decoded `Result` into a plain dict (JSON-ready). The browser
(app/static/stage_core.js + stage.js) then draws the text, the order grid, the DAG and both masks for
any step without a server round trip, so playback keeps the speed asked and scrubbing is instant.

One source of truth: every decision about *what* a figure shows at a step is either taken here with
the Python figure helpers (colours, short labels, DAG edges, summaries, the checker's verdict) or made
in stage_core.js by the same rule as the Plotly reference in app.figures; tests/test_figures_stage.py
runs stage_core.js in Chromium and compares it with the reference figures step by step.
Nothing here imports gradio.
"""

from __future__ import annotations

import itertools
import math

import torch

from app import figures
from app.session import Result
from model.masks import check_masks, two_stream_masks

_ids = itertools.count(1)


def calls_summary(result: Result) -> str:
    """How many model calls this run took, counted against AR and fixed groups of 4."""
    trace = result.trace
    n_open = len(trace.plan.open_positions)
    tokens = "token" if n_open == 1 else "tokens"
    calls = "call" if trace.model_calls == 1 else "calls"
    return (f"{result.method}: {trace.model_calls} model {calls} for {n_open} {tokens} · "
            f"groups of 4 would take {math.ceil(n_open / 4)} · AR needs {n_open}")


def _verdicts(result: Result) -> list[str]:
    """The mask checker's verdict per step (index step + 1), computed once per distinct grouping."""
    trace = result.trace
    seen: dict[tuple, str] = {}
    out = []
    for step in range(-1, result.n_steps):
        groups = tuple(trace.group_ids_at(step))
        if groups not in seen:
            g = torch.tensor(groups)
            content, query = two_stream_masks(g)
            seen[groups] = check_masks(content, query, g).summary()
        out.append(seen[groups])
    return out


def stage_payload(result: Result | None, *, autoplay: bool = True, loop: bool = False, speed: float = 0.5,
                  note: str = "") -> dict:
    """The dict the stage component draws. `result=None` gives the empty stage (with what to do)."""
    if result is None:
        return {"id": next(_ids), "empty": True,
                "note": note or "Nothing to show yet: type a text with [MASK] blanks under “✎ Your text”, "
                                "then press Run."}
    trace, labels = result.trace, result.labels
    if not note and result.flexible is not None:
        note = result.flexible.summary() + " Every length with its fill: under ✎ Your text."
    n = result.n_steps
    colors = figures.step_colors(n)
    graph = figures.dependency_graph(trace)
    names = figures._node_names(trace)
    index = {name: i for i, name in enumerate(names)}
    reduced = figures.transitive_reduction(graph)
    steps = [{"positions": list(s.positions), "group": int(s.group),
              "groups": list(s.group_ids) if s.group_ids is not None else None} for s in trace.steps]
    return {
        "id": next(_ids),
        "empty": False,
        "method": result.method,
        "model": result.model,
        "text": result.text,
        "labels": list(labels),
        "short": [figures._short(label) for label in labels],
        "given": [bool(g) for g in trace.given],
        "decided": trace.decided_step(),
        "groups": trace.group_ids,
        "steps": steps,
        "colors": colors,
        "ink": ["#ffffff" if figures.is_dark(c) else "#111111" for c in colors],
        "given_color": figures.GIVEN_COLOR,
        "open_color": figures.OPEN_COLOR,
        "attend_color": figures.ATTEND_COLOR,
        "blocked_color": figures.BLOCKED_COLOR,
        "highlight_color": figures.HIGHLIGHT_COLOR,
        "columns": figures.grid_columns(trace.plan.length),
        "dag": {"nodes": names, "offset": 1 if names and names[0] == "given" else 0,
                "edges": [[index[u], index[v]] for u, v in graph.edges()],
                "reduced": [[index[u], index[v]] for u, v in reduced.edges()]},
        "summaries": [figures.step_summary(trace, step) for step in range(-1, n)],
        "verdicts": _verdicts(result),
        "headline": calls_summary(result),
        "autoplay": bool(autoplay and n > 0),
        "loop": bool(loop),
        "speed": float(speed),
        "note": note,
    }

"""Everything drawn for one step of a stored trace: pure functions of (result, step, options).

Stepping, scrubbing and playing only call `render_step`; they never call the model. The text is the
trace view's (`app.trace_view.TraceView.sentence`, as the stage shows it): whole characters, a character
split over several tokens one piece, whitespace as visible marks.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict
from dataclasses import dataclass

import plotly.graph_objects as go

from app import figures
from app.session import Result
from app.trace_view import TraceView, view_of_result


@dataclass
class Rendered:
    summary: str
    sentence: str
    grid: go.Figure
    dag: go.Figure
    masks: go.Figure
    candidates: tuple[list[str], list[list]]
    logprob: go.Figure


def clamp_step(result: Result, step) -> int:
    try:
        step = int(step)
    except (TypeError, ValueError):
        step = -1
    return max(-1, min(step, result.n_steps - 1))


def render_step(result: Result, step: int, *, reduce: bool = False, sort_by_group: bool = False) -> Rendered:
    trace, labels = result.trace, result.labels
    step = clamp_step(result, step)
    return Rendered(
        summary=figures.step_summary(trace, step),
        sentence=sentence_html(result, step),
        grid=figures.grid_figure(trace, step, labels),
        dag=figures.dag_figure(trace, step, labels, reduce=reduce),
        masks=figures.mask_figure(trace, step, labels, sort_by_group=sort_by_group),
        candidates=figures.candidate_rows(trace, step, labels, result.token_text),
        logprob=figures.logprob_figure(trace, step),
    )


# the views of the last few results: a step change redraws the same result, and its view is built once
_VIEWS: OrderedDict[int, tuple[Result, TraceView]] = OrderedDict()
_VIEWS_LOCK = threading.Lock()
_VIEWS_KEPT = 4


def view_of(result: Result) -> TraceView:
    """`view_of_result(result)`, built once per result while it is among the last few drawn."""
    with _VIEWS_LOCK:
        hit = _VIEWS.get(id(result))
        if hit is not None and hit[0] is result:
            _VIEWS.move_to_end(id(result))
            return hit[1]
    view = view_of_result(result)
    with _VIEWS_LOCK:
        _VIEWS[id(result)] = (result, view)
        while len(_VIEWS) > _VIEWS_KEPT:
            _VIEWS.popitem(last=False)
    return view


def _fill(colors: list[str]) -> str:
    """A piece's background: its step colour, or one stripe per token of a split character."""
    if len(colors) == 1:
        return colors[0]
    stops = [f"{c} {100 * i / len(colors):.2f}% {100 * (i + 1) / len(colors):.2f}%" for i, c in enumerate(colors)]
    return f"linear-gradient(90deg, {', '.join(stops)})"


def sentence_html(result: Result, step: int) -> str:
    """The text as it stands after `step` (the stage's `TraceView.sentence`): given tokens plain, decided
    ones tinted by their step, the current step's outlined, undecided ones as the grid marks them ("?")."""
    spans = []
    for chip in view_of(result).sentence(step):
        at = f'data-positions="{",".join(str(p) for p in chip.positions)}"'
        where = ("positions " + ", ".join(str(p) for p in chip.positions) if len(chip.positions) > 1
                 else f"position {chip.p}")
        label = html.escape(chip.label)
        if chip.state == "given":
            spans.append(f'<span class="tok given" {at}>{label}</span>')
        elif chip.state == "decided":
            cls = "tok decided current" if chip.current else "tok decided"
            spans.append(f'<span class="{cls}" {at} style="background:{_fill(chip.colors)};color:{chip.ink}" '
                         f'title="{where} · decided at step {chip.decided_at + 1}">{label}</span>')
        else:
            cls = "tok open current" if chip.current else "tok open"  # a split character, partly decided now
            spans.append(f'<span class="{cls}" {at} title="{where} · open">{label}</span>')
    return f'<div class="sentence" data-step="{step}">{"".join(spans)}</div>'

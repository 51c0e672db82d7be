"""Everything drawn for one step of a stored trace: pure functions of (result, step, options).

Stepping, scrubbing and playing only call `render_step`; they never call the model.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import plotly.graph_objects as go

from app import figures
from app.session import Result


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


def sentence_html(result: Result, step: int) -> str:
    """The text as it stands after `step`: given tokens plain, decided ones tinted by their step,
    the current step's outlined, undecided ones as ▢."""
    trace = result.trace
    decided = trace.decided_step()
    colors = figures.step_colors(result.n_steps)
    current = set(trace.steps[step].positions) if step >= 0 else set()
    spans = []
    for p, label in enumerate(result.labels[1:], start=1):
        d = decided[p]
        if d == -1:
            spans.append(f'<span class="tok given">{html.escape(label)}</span>')
        elif d <= step:
            cls = "tok decided current" if p in current else "tok decided"
            ink = "#fff" if figures.is_dark(colors[d]) else "#111"
            spans.append(f'<span class="{cls}" style="background:{colors[d]};color:{ink}" '
                         f'title="position {p} · step {d}">{html.escape(label)}</span>')
        else:
            spans.append(f'<span class="tok open" title="position {p} · open">▢</span>')
    return f'<div class="sentence" data-step="{step}">{"".join(spans)}</div>'

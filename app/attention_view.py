"""The attention weights of one step, drawn over its mask: a pure figure builder.

Rows are the positions a step decided, columns every key position. Allowed cells are coloured by
how much the row attended to that column; blocked cells are a separate grey layer whose values are
exact zeros, so the figure shows both what the mask permits and what the model did with it. Nothing
here imports gradio or calls the model: `model.attention` computes the weights, `app.render` (or
whoever wires it) passes them in. Conventions as in app/figures.py: numpy heatmap data, a fixed
`layout.height`, a constant `uirevision`, and `layout.meta` saying what is shown.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from app.figures import MAX_TICK_LABELS, legend_swatch, mask_ticks
from model.attention import BLOCKED_NOTE, STREAMS, select_weights

WEIGHT_COLORSCALE = "Blues"  # sequential, white at 0: an allowed but ignored cell reads as empty
BLOCKED_SHADE = "#bdbdbd"  # grey, absent from the weight scale: "may not attend" never looks like "0.0"


def reduction_label(layer: int | None, head: int | None) -> str:
    """Which slice of the weights a figure shows, in words."""
    if layer is None and head is None:
        return "mean of all layers and heads"
    if layer is None:
        return f"head {head}, mean of all layers"
    if head is None:
        return f"layer {layer}, mean of all heads"
    return f"layer {layer}, head {head}"


def _check_inputs(weights: np.ndarray, allowed: np.ndarray, labels: Sequence[str], rows: Sequence[int],
                  stream: str) -> None:
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}; got {stream!r}.")
    length = weights.shape[-1]
    if weights.ndim != 4 or weights.shape[-2] != length:
        raise ValueError(f"weights must be (layers, heads, L, L); got shape {weights.shape}.")
    if allowed.shape != (length, length):
        raise ValueError(f"allowed must be ({length}, {length}) to match the weights; got {allowed.shape}.")
    if len(labels) != length:
        raise ValueError(f"labels must name all {length} positions; got {len(labels)}.")
    if any(not 0 <= r < length for r in rows):
        raise ValueError(f"rows must be positions in [0, {length - 1}]; got {list(rows)}.")


def attention_figure(weights: np.ndarray, allowed: np.ndarray, labels: Sequence[str], rows: Sequence[int], *,
                     layer: int | None = None, head: int | None = None, stream: str = "query",
                     step: int | None = None, known: Sequence[bool] | None = None) -> go.Figure:
    """Heatmap of `rows` (the positions decided at this step) against all key positions.

    known (per position: given or decided by this step): the axes name only those tokens; an open
    position reads "p:?", so the figure never gives away a token before the step that decides it.

    weights (layers, heads, L, L) and allowed (L, L) come from `model.attention.AttentionWeights`;
    layer / head pick one slice, None averages over it. Weight on a blocked cell would be a leak in
    the data handed in, so it is refused rather than drawn.
    """
    weights, allowed = np.asarray(weights), np.asarray(allowed, dtype=bool)
    rows = [int(r) for r in rows]
    _check_inputs(weights, allowed, labels, rows, stream)
    shown = select_weights(weights, layer=layer, head=head)[rows]  # (R, L) float32
    blocked = ~allowed[rows]  # (R, L)
    if np.any(shown[blocked] != 0):
        raise ValueError("weights are non-zero on blocked cells: they do not belong to this mask.")
    known = None if known is None else [bool(k) for k in known]
    columns, row_ticks = mask_ticks(list(range(len(labels))), labels, known), mask_ticks(rows, labels, known)
    gap = 1 if len(columns) <= MAX_TICK_LABELS else 0
    zmax = float(shown[~blocked].max(initial=0.0)) or 1.0
    which = reduction_label(layer, head)
    at_step = "" if step is None else f" at step {step + 1}"
    fig = go.Figure([
        go.Heatmap(z=np.where(blocked, np.nan, shown).astype(np.float32), x=columns, y=row_ticks, zmin=0.0, zmax=zmax,
                   colorscale=WEIGHT_COLORSCALE, name="weight", xgap=gap, ygap=gap, hoverongaps=False,
                   colorbar=dict(title=dict(text="weight", side="right"), thickness=14, len=0.9),
                   hovertemplate="row %{y} → column %{x}<br>weight %{z:.4f}<extra>allowed</extra>"),
        go.Heatmap(z=np.where(blocked, 0.0, np.nan).astype(np.float32), x=columns, y=row_ticks, zmin=0.0, zmax=1.0,
                   colorscale=[[0, BLOCKED_SHADE], [1, BLOCKED_SHADE]], showscale=False, name="blocked",
                   xgap=gap, ygap=gap, hoverongaps=False,
                   hovertemplate="row %{y} → column %{x}<br>blocked: weight exactly 0<extra></extra>"),
        legend_swatch("blocked (exactly 0)", BLOCKED_SHADE),
    ])
    fig.update_layout(
        title=dict(text=f"Attention weights{at_step} · {stream} stream · {which}", x=0, xanchor="left", y=0.98,
                   yanchor="top"),
        height=int(np.clip(150 + 28 * len(rows), 240, 560)), margin=dict(l=10, r=10, t=62, b=10),
        uirevision="attention", plot_bgcolor="#ffffff", hovermode="closest", showlegend=True,
        legend=dict(orientation="h", x=0, xanchor="left", y=1.0, yanchor="bottom"),
        meta={"figure": "attention", "step": step, "stream": stream, "layer": layer, "head": head, "rows": rows,
              "reduction": which, "zmax": zmax, "note": BLOCKED_NOTE,
              "rows_seeing_nothing": [r for r, b in zip(rows, blocked, strict=True) if b.all()]},
    )
    axis = dict(type="category", showgrid=False, showline=True, linecolor="#999999", mirror=True, ticks="",
                tickfont=dict(size=9))
    fig.update_xaxes(tickangle=-60, title=dict(text="key position (content of)"), **axis)
    fig.update_yaxes(autorange="reversed", title=dict(text="this step's rows"), **axis)
    return fig

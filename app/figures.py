"""Figure builders: pure functions of (trace, step, labels) that return Plotly figures or table rows.

Nothing here imports gradio, calls the model or keeps state; `app.render` calls these on every step.
Conventions: `step` is the 0-based index of the current step and -1 means "before any step" (only the
given tokens); whatever a figure writes (DAG nodes, the log p axis, the colour bar, hovers, the summary)
numbers the steps from 1, as the stage does. `labels` holds one display string per position (the given or final token).

Everything is sized for `gr.Plot`: numpy arrays for heatmap data (plotly sends them as base64 typed
arrays), a fixed `layout.height`, a constant `uirevision` so zoom survives re-renders, no frames, and
only plotly.js 3.x attributes (gradio bundles 3.3.1). `layout.meta` says what each figure shows, so tests
(and the browser tests) can check it without reading pixels.

These figures are the reference drawing of a trace. Their helpers for labels (`display_label`,
`short_label`; `character_labels`, `position_texts` and `run_label_cells` for characters split over
several tokens, which read as one character once all their tokens are known), colours (`step_colors`,
`ink_on`, the *_COLOR constants), the grid's shape (`grid_columns`), the DAG (`node_names`,
`dependency_graph`, `transitive_reduction`) and the summary line are public: `app.trace_view` builds,
with them, the one view the stage, the GIF and the player draw.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import networkx as nx
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.colors import get_colorscale, sample_colorscale
from plotly.subplots import make_subplots

from app import narration
from model.decoding import DecodeTrace
from model.masks import group_order, two_stream_masks
from model.text import character_runs, escape_bytes, string_bytes

STEP_COLORSCALE = get_colorscale("Viridis")  # sequential and colour-blind safe; no grey in it
GIVEN_COLOR = "#c8c8c8"  # neutral grey: given tokens are context, not decoded
OPEN_COLOR = "#f1f1f1"  # not decided yet
ATTEND_COLOR = "#3b6fb6"  # the paper's blue: "may attend"
BLOCKED_COLOR = "#ffffff"
HIGHLIGHT_COLOR = "#e4572e"  # the current step: orange-red, absent from Viridis
GIVEN_INK = "#222222"  # text on a given cell
OPEN_INK = "#9a9a9a"  # the "?" of an open cell
OPEN_MARK = narration.OPEN_MARK  # what an open position reads: a grid cell, a mask tick, a chip of the text
FADED_OPACITY = 0.25  # steps after the current one

MAX_LABEL_CHARS = 8  # a Plotly figure's grid cell or mask tick: its type does not shrink to fit
CELL_LABEL_CHARS = 14  # the stage's grid and the GIF's: a long word gets a smaller type of its own first
_ESCAPED_BYTES = re.compile(r"(?:<0x[0-9A-F]{2}>)+")  # model.text.escape_bytes' spelling, one or more in a row
SHOWN_BYTES = re.compile(r"‹[0-9A-F]{2}(?: ?[0-9A-F]{2})*›")  # what `bytes_label` (and `short_label`) write
MAX_GRID_COLUMNS = 16
MAX_TICK_LABELS = 48  # up to this length the mask axes show "p:label"
MAX_LISTED = 12  # positions/tokens listed in one hover box
HOVER_TEXT = "%{hovertext}<extra></extra>"  # per-point hover strings, no trace name box
CANDIDATE_HEADERS = ["position", "status", "token", "top candidates (␣: a space)", "entropy", "confidence"]
SPACE_MARK = "␣"  # a candidate's leading or trailing space, which a table cell would not show (" The" vs "The")


# --------------------------------------------------------------------------------------------------
# shared helpers


def _check_step(trace: DecodeTrace, step: int) -> int:
    step = int(step)
    if not -1 <= step < len(trace.steps):
        raise ValueError(f"step must lie in [-1, {len(trace.steps) - 1}] for this trace; got {step}.")
    return step


def display_label(token: str) -> str:
    """A token as every view shows it: one line, whitespace made visible. A line break reads "↵" and
    a tab "⇥" (a "\\n" token would otherwise be an empty chip that breaks the line); a token of
    whitespace only shows each space as "·", so a fill of spaces is not a row of blank cells."""
    text = token.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        text = "".join(ch if ch in "\n\t" else "·" for ch in text)
    return text.replace("\n", "↵").replace("\t", "⇥")


def short_label(token: str, limit: int = MAX_LABEL_CHARS) -> str:
    """The label of a grid cell or a mask tick: the display label without its surrounding spaces
    (" cat" reads as "cat" in a cell), bytes that make no character written close ("‹EFBC›", which fits a
    cell where "‹EF BC›" would be cut), cut to `limit` characters (MAX_LABEL_CHARS, or CELL_LABEL_CHARS where
    the cell's type shrinks to fit)."""
    text = display_label(token)
    text = text.strip() or text
    text = SHOWN_BYTES.sub(lambda m: m.group(0).replace(" ", ""), text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bytes_label(data: bytes) -> str:
    """UTF-8 bytes as the views show them: whole characters as themselves, the bytes that make no
    character as their values ("‹EF BC›"), never "�" (which would hide which bytes the model chose)."""
    return _ESCAPED_BYTES.sub(lambda m: "‹" + " ".join(re.findall(r"<0x([0-9A-F]{2})>", m.group(0))) + "›",
                              escape_bytes(data))


def makes_no_character(label: str) -> bool:
    """Whether a label (`character_labels`) holds bytes that make no character."""
    return bool(SHOWN_BYTES.search(label))


def character_labels(labels: list[str]) -> tuple[list[str], list[tuple[int, int]]]:
    """Token strings (`model.text.token_strings`) -> per position the text of its character run, and
    the runs of two or more tokens as (start, end). The tokens of a character split over several
    tokens all read that whole character ("🧩"), never "�"; bytes that make no character (a character
    never completed, a stray continuation byte) read as their values, "‹EF BC›" (`bytes_label`)."""
    texts, runs = [], []
    for start, end, text in character_runs(labels):
        if "\ufffd" in text:  # the run's bytes make no whole character: show them (a real "�" stays)
            text = bytes_label(b"".join(string_bytes(t) for t in labels[start:end]))
        texts += [text] * (end - start)
        if end - start > 1:
            runs.append((start, end))
    return texts, runs


def joined_text(texts: list[str], runs: list[tuple[int, int]], skip: frozenset[int] = frozenset()) -> str:
    """`character_labels`' texts joined once per character (a run's text is its first token's), leaving out
    the positions in `skip`."""
    inside = {p for start, end in runs for p in range(start + 1, end)}
    return "".join(text for p, text in enumerate(texts) if p not in inside and p not in skip)


def readable_text(strings: list[str]) -> str:
    """Token strings (`model.text.token_strings`) joined as the views show them: a split character once,
    bytes that make no character as their values ("‹EF BC›"), never "�"."""
    return joined_text(*character_labels(strings))


def position_texts(texts: list[str], runs: list[tuple[int, int]], known: list[bool], *,
                   in_grid: bool, limit: int = MAX_LABEL_CHARS) -> list[str]:
    """What each position reads at a step (unescaped): its short label once known, OPEN_MARK ("?") while open.

    A split character is only decoded once all its tokens are known; until then its known tokens read
    "…". Once whole, its tokens read the character on a mask tick, and nothing in a grid cell (the grid
    labels the run once, across its cells: `run_label_cells`)."""
    out = [short_label(t, limit) if k else OPEN_MARK for t, k in zip(texts, known, strict=True)]
    for start, end in runs:
        whole = all(known[start:end])
        for p in range(start, end):
            if known[p]:
                out[p] = ("" if in_grid else out[p]) if whole else "…"
    return out


def run_label_cells(start: int, end: int, columns: int) -> tuple[int, int, int]:
    """Where the grid writes the label of the run [start, end): (row, first column, last column) of
    its longest piece on one row (the first on a tie), so a run that wraps is labelled once."""
    pieces = []
    p = start
    while p < end:
        row, c0 = divmod(p, columns)
        c1 = min(columns - 1, c0 + end - 1 - p)
        pieces.append((c1 - c0, -row, row, c0, c1))
        p += c1 - c0 + 1
    _, _, row, c0, c1 = max(pieces)
    return row, c0, c1


def _escape(text: str) -> str:
    """Plotly text reads a subset of HTML: a token such as "<b>" must show as itself."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(token: str) -> str:
    return _escape(display_label(token))


def cell_text(token: str) -> str:
    """`short_label` as Plotly text (escaped): what a grid cell or an axis tick shows."""
    return _escape(short_label(token))


def listed(items: list) -> str:
    """Items as the page lists them: "8, 9, 10", the first few then ", … (N in all)"."""
    shown = ", ".join(str(x) for x in items[:MAX_LISTED])
    return shown + (f", … ({len(items)} in all)" if len(items) > MAX_LISTED else "")


def step_colors(n_steps: int) -> list[str]:
    """The colour of each step, as the colorbar draws it (zmin 0, zmax max(n_steps - 1, 1))."""
    top = max(n_steps - 1, 1)
    return sample_colorscale(STEP_COLORSCALE, [min(t / top, 1.0) for t in range(n_steps)]) if n_steps else []


def is_dark(rgb: str) -> bool:
    r, g, b = (float(c) for c in rgb.removeprefix("rgb(").removesuffix(")").split(","))
    return 0.299 * r + 0.587 * g + 0.114 * b < 140


def ink_on(color: str) -> str:
    """The text colour that reads on a step colour: white on the dark end of Viridis, near-black on the light."""
    return "#ffffff" if is_dark(color) else "#111111"


def _step_zmax(trace: DecodeTrace) -> int:
    return max(len(trace.steps) - 1, 1)


MAX_STEP_TICKS = 8


def step_ticks(n_steps: int) -> list[int]:
    """The step numbers an axis or a colour bar names, counted from 1 as the stage counts them: every
    step, or 1 and every k-th (k = 2, 5, 10, 20, ...) so that at most MAX_STEP_TICKS are named."""
    for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000):
        shown = sorted({1, *range(k, n_steps + 1, k)}) if n_steps else []
        if len(shown) <= MAX_STEP_TICKS:
            return shown
    return [1, n_steps]


def _current_positions(trace: DecodeTrace, step: int) -> list[int]:
    return list(trace.steps[step].positions) if step >= 0 else []


# --------------------------------------------------------------------------------------------------
# 1. the order grid


def grid_columns(length: int) -> int:
    """Columns of the order grid: a readable block, not a strip (12 tokens: 5 x 3; 64: 12 x 6; 256: 16 x 16)."""
    return int(min(MAX_GRID_COLUMNS, max(4, math.ceil(math.sqrt(2 * max(length, 1))))))


def _legend_below() -> dict:
    """A horizontal legend under the plot, clear of the title and of the colour bar."""
    return dict(orientation="h", x=0, xanchor="left", y=-0.02, yanchor="top")


def grid_figure(trace: DecodeTrace, step: int, labels: list[str], *, columns: int | None = None) -> go.Figure:
    """Positions as cells in reading order, coloured by the step that decided them (up to `step`)."""
    step = _check_step(trace, step)
    columns = columns or grid_columns(trace.plan.length)
    length, n_rows = trace.plan.length, -(-trace.plan.length // columns)
    decided = np.asarray(trace.decided_step())
    given = np.asarray(trace.given, dtype=bool)
    shown = (decided >= 0) & (decided <= step)
    current = _current_positions(trace, step)

    def cells(values: np.ndarray) -> np.ndarray:
        """(L,) -> (rows, columns) float32, NaN (blank) past the end of the sequence."""
        out = np.full(n_rows * columns, np.nan, dtype=np.float32)
        out[:length] = values
        return out.reshape(n_rows, columns)

    layer = dict(xgap=2, ygap=2, hoverinfo="skip")
    fig = go.Figure([
        go.Heatmap(z=cells(np.zeros(length)), colorscale=[[0, OPEN_COLOR], [1, OPEN_COLOR]], showscale=False,
                   name="open", **layer),
        go.Heatmap(z=cells(np.where(given, 0.0, np.nan)), colorscale=[[0, GIVEN_COLOR], [1, GIVEN_COLOR]],
                   showscale=False, name="given", legendgroup="given", **layer),
        go.Heatmap(z=cells(np.where(shown, decided, np.nan)), zmin=0, zmax=_step_zmax(trace),
                   colorscale=STEP_COLORSCALE, name="decided",
                   colorbar=dict(title=dict(text="decided at step", side="right"), len=0.8, y=0, yanchor="bottom",
                                 thickness=14, **_colorbar_steps(len(trace.steps))),
                   **layer),
        _grid_text(trace, step, labels, columns),
        _grid_runs(trace, step, labels, columns),
        legend_swatch("given", GIVEN_COLOR),
        _outline_cells(current, columns, "this step"),
    ])
    fig.update_layout(
        title=dict(text="Generation order", x=0, xanchor="left", y=0.98, yanchor="top"),
        height=110 + 34 * n_rows, margin=dict(l=10, r=10, t=40, b=40), uirevision="grid", hovermode="closest",
        plot_bgcolor="#ffffff", legend=_legend_below(),
        meta={"figure": "grid", "step": step, "current_positions": current, "columns": columns},
    )
    axis = dict(showticklabels=False, ticks="", showgrid=False, zeroline=False)
    fig.update_xaxes(range=[-0.5, columns - 0.5], **axis)
    fig.update_yaxes(autorange="reversed", **axis)
    return fig


def _colorbar_steps(n_steps: int) -> dict:
    """The colour bar's ticks: the colour of step t (0-based, as the data holds it) named t + 1."""
    ticks = step_ticks(n_steps)
    return dict(tickmode="array", tickvals=[t - 1 for t in ticks], ticktext=[str(t) for t in ticks])


def known_at(trace: DecodeTrace, step: int) -> list[bool]:
    """Per position: given, or decided at or before `step`."""
    return [bool(g) or 0 <= d <= step for g, d in zip(trace.given, trace.decided_step(), strict=True)]


def _grid_text(trace: DecodeTrace, step: int, labels: list[str], columns: int) -> go.Scatter:
    """Cell labels, and the hover for every cell (the heatmaps skip hover: blank cells have none)."""
    decided, given, groups = trace.decided_step(), trace.given, trace.group_ids
    colors = step_colors(len(trace.steps))
    whole, runs = character_labels(labels)
    known = known_at(trace, step)
    texts = [_escape(t) for t in position_texts(whole, runs, known, in_grid=True)]
    fonts, hovers = [], []
    for p in range(len(labels)):
        d = decided[p]
        if given[p]:
            fonts.append(GIVEN_INK)
            state = "given"
        elif known[p]:
            fonts.append(ink_on(colors[d]))
            state = f"decided at step {d + 1}"  # steps count from 1, as the stage counts them
        else:
            fonts.append(OPEN_INK)
            state = f"open (decided at step {d + 1})" if d >= 0 else "open"
        token = _plain(whole[p]) if known[p] else OPEN_MARK
        hovers.append(f"position {p}<br>token: {token}<br>{state}<br>group {groups[p]}")
    positions = np.arange(len(labels))
    return go.Scatter(x=positions % columns, y=positions // columns, mode="markers+text", text=texts,
                      textfont=dict(color=fonts, size=11), hovertext=hovers, hovertemplate=HOVER_TEXT,
                      marker=dict(symbol="square", size=22, color="rgba(0,0,0,0)"), showlegend=False, name="cells")


def _grid_runs(trace: DecodeTrace, step: int, labels: list[str], columns: int) -> go.Scatter:
    """The label of each split character whose tokens are all known, written once across its cells."""
    whole, runs = character_labels(labels)
    known = known_at(trace, step)
    xs, ys, texts = [], [], []
    for start, end in runs:
        if all(known[start:end]):
            row, c0, c1 = run_label_cells(start, end, columns)
            xs.append((c0 + c1) / 2)
            ys.append(row)
            texts.append(cell_text(whole[start]))
    return go.Scatter(x=xs, y=ys, mode="text", text=texts, textfont=dict(size=13, color="#111111"),
                      hoverinfo="skip", showlegend=False, name="characters")


def legend_swatch(name: str, color: str) -> go.Scatter:
    """A legend entry for a heatmap layer (heatmaps have no legend item in plotly.js 3)."""
    return go.Scatter(x=[None], y=[None], mode="markers", name=name, legendgroup=name,
                      marker=dict(symbol="square", size=12, color=color), hoverinfo="skip")


def _outline_cells(positions: list[int], columns: int, name: str) -> go.Scatter:
    """Square outlines around cells, as one lines trace (NaN breaks the line between squares).

    Drawn in data coordinates, so they stay on their cells however the plot is resized or zoomed.
    """
    inset = 0.44
    corner_x = np.array([-inset, inset, inset, -inset, -inset, np.nan])
    corner_y = np.array([-inset, -inset, inset, inset, -inset, np.nan])
    cols = np.asarray(positions, dtype=np.float32) % columns
    rows = np.asarray(positions, dtype=np.float32) // columns
    xs = (cols[:, None] + corner_x[None, :]).ravel().astype(np.float32)
    ys = (rows[:, None] + corner_y[None, :]).ravel().astype(np.float32)
    return go.Scatter(x=xs, y=ys, mode="lines", name=name, line=dict(color=HIGHLIGHT_COLOR, width=3),
                      hoverinfo="skip", showlegend=True)


def outlined_cells(fig: go.Figure, columns: int | None = None) -> list[int]:
    """The positions a grid figure outlines as "this step" (read back from the drawn squares)."""
    columns = columns or fig.layout.meta["columns"]
    trace = next(t for t in fig.data if t.name == "this step")
    xs, ys = np.asarray(trace.x, dtype=float).reshape(-1, 6), np.asarray(trace.y, dtype=float).reshape(-1, 6)
    cols, rows = np.rint(xs[:, :4].mean(1)).astype(int), np.rint(ys[:, :4].mean(1)).astype(int)
    return sorted((rows * columns + cols).tolist())


# --------------------------------------------------------------------------------------------------
# 2. the group dependency DAG


def node_names(trace: DecodeTrace) -> list[str]:
    """Decoding order: the given node first (if any), then one node per step."""
    return (["given"] if any(trace.given) else []) + [f"s{t}" for t in range(len(trace.steps))]


def _dependency_parents(trace: DecodeTrace) -> list[np.ndarray]:
    """For each step t, the indices (into `node_names`) of the nodes its predictions conditioned on.

    Node u is a parent of step t iff u decoded earlier and holds a position q with g[q] < g[row] under
    the grouping the model used at step t. Per step this is one numpy pass over the positions: the
    smallest group id of each node is compared with the step's row group.
    """
    offset = 1 if any(trace.given) else 0
    decided = np.asarray(trace.decided_step())
    given = np.asarray(trace.given, dtype=bool)
    known = given | (decided >= 0)  # a partial trace leaves some positions undecided
    node_of = np.where(given, 0, decided + offset)[known]
    n_nodes = offset + len(trace.steps)

    def smallest_group(groups: list[int]) -> np.ndarray:
        smallest = np.full(n_nodes, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(smallest, node_of, np.asarray(groups, dtype=np.int64)[known])
        return smallest

    shared = smallest_group(trace.group_ids)
    parents = []
    for t, s in enumerate(trace.steps):
        groups = trace.group_ids_at(t)
        smallest = shared if s.group_ids is None else smallest_group(groups)
        row_group = groups[s.positions[0]]
        parents.append(np.flatnonzero(smallest[: t + offset] < row_group))
    return parents


def dependency_graph(trace: DecodeTrace) -> nx.DiGraph:
    """The group DAG: an edge u -> v means step v's predictions conditioned on u's tokens.

    Nodes are "given" (when the trace has given positions) and "s0", "s1", ... with attributes step,
    group, positions, tokens and logprob (the given node has step -1, group None and logprob 0).
    """
    names = node_names(trace)
    graph = nx.DiGraph()
    if names and names[0] == "given":
        positions = [p for p, g in enumerate(trace.given) if g]
        graph.add_node("given", step=-1, group=None, positions=positions,
                       tokens=[trace.plan.token_ids[p].item() for p in positions], logprob=0.0)
    for s in trace.steps:
        graph.add_node(f"s{s.step}", step=s.step, group=s.group, positions=list(s.positions), tokens=list(s.tokens),
                       logprob=s.logprob)
    for t, parents in enumerate(_dependency_parents(trace)):
        child = f"s{t}"
        graph.add_edges_from((names[u], child) for u in parents.tolist())
    return graph


def transitive_reduction(graph: nx.DiGraph) -> nx.DiGraph:
    """`nx.transitive_reduction` with node attributes kept, in O(edges) big-integer operations.

    Ancestor sets are bitmasks built in topological order; a parent edge survives iff the parent is
    not already an ancestor of another parent. networkx's own version walks descendants per node,
    which takes about half a second on the 400-step fan; the tests check both agree.
    """
    order = list(nx.topological_sort(graph))
    bit = {node: 1 << i for i, node in enumerate(order)}
    ancestors: dict = {}
    reduced = nx.DiGraph()
    reduced.add_nodes_from(graph.nodes(data=True))
    for node in order:
        parents = list(graph.predecessors(node))
        covered = 0  # everything reachable through some parent
        for u in parents:
            covered |= ancestors[u]
        ancestors[node] = covered
        for u in parents:
            ancestors[node] |= bit[u]
            if not covered & bit[u]:
                reduced.add_edge(u, node)
    return reduced


def dag_figure(trace: DecodeTrace, step: int, labels: list[str], *, reduce: bool = False) -> go.Figure:
    """The dependency DAG as an arc diagram: nodes on one line in decoding order, edges as arcs above it.

    All edges of an A3 plan make a fan (every group sees every earlier one); the transitive reduction
    is a chain. A one-step parallel trace has edges from "given" only.
    """
    step = _check_step(trace, step)
    graph = dependency_graph(trace)
    if reduce:
        graph = transitive_reduction(graph)
    names = node_names(trace)
    index = {name: i for i, name in enumerate(names)}
    offset = 1 if names and names[0] == "given" else 0
    current = f"s{step}" if step >= 0 else None
    edges = np.array([(index[u], index[v]) for u, v in graph.edges()], dtype=np.int64).reshape(-1, 2)
    into_current = edges[:, 1] == (step + offset) if current else np.zeros(len(edges), dtype=bool)
    future = edges[:, 1] > step + offset
    arcs = _arc_points(edges)
    top = max(float((edges[:, 1] - edges[:, 0]).max()) / 2 if len(edges) else 0.0, 1.2)  # a chain stays low

    fig = go.Figure([
        _lines(arcs, ~future & ~into_current, "dependencies", "rgba(80, 80, 80, 0.45)", 1),
        _lines(arcs, future, "later dependencies", "rgba(150, 150, 150, 0.15)", 1),
        _lines(arcs, into_current, "into this step", HIGHLIGHT_COLOR, 2.5),
        *_dag_nodes(trace, graph, names, step, labels),
    ])
    fig.update_layout(
        title=dict(text="Group dependency DAG", x=0, xanchor="left", y=0.98, yanchor="top"),
        height=340, margin=dict(l=10, r=10, t=40, b=70), uirevision="dag", hovermode="closest",
        plot_bgcolor="#ffffff", legend=dict(orientation="h", x=0, xanchor="left", y=-0.12, yanchor="top"),
        meta={"figure": "dag", "step": step, "current_node": current, "n_edges": graph.number_of_edges()},
    )
    fig.update_xaxes(range=[-0.7, max(len(names) - 0.3, 0.7)], showticklabels=False, ticks="", showgrid=False,
                     zeroline=False, title=dict(text="decoding order → (edges run left to right)"))
    fig.update_yaxes(range=[-0.3 * top, 1.08 * top], visible=False)
    return fig


def _arc_points(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E, 2) node indices -> per-edge arc points (E, n + 1) with a NaN column that breaks the line.

    A half-sine from u to v whose height is half the distance, so longer dependencies arch higher.
    Fewer points per arc once there are thousands of edges: a 256-step fan has 32k, and at 12 points
    each its figure would be 4 MB sent on every step change.
    """
    n_points = int(np.clip(150_000 // max(len(edges), 1), 4, 12))
    s = np.linspace(0.0, 1.0, n_points)
    start, span = edges[:, :1].astype(np.float32), (edges[:, 1:] - edges[:, :1]).astype(np.float32)
    xs = start + span * s[None, :]
    ys = (span / 2) * np.sin(np.pi * s)[None, :]
    gap = np.full((len(edges), 1), np.nan, dtype=np.float32)
    return np.hstack([xs, gap]).astype(np.float32), np.hstack([ys, gap]).astype(np.float32)


def _lines(arcs: tuple[np.ndarray, np.ndarray], keep: np.ndarray, name: str, color: str, width: float) -> go.Scatter:
    xs, ys = arcs
    return go.Scatter(x=xs[keep].ravel(), y=ys[keep].ravel(), mode="lines", name=name, hoverinfo="skip",
                      line=dict(color=color, width=width), showlegend=bool(keep.any()))


def _dag_nodes(trace: DecodeTrace, graph: nx.DiGraph, names: list[str], step: int,
               labels: list[str]) -> list[go.Scatter]:
    """The given node (grey), the step nodes (coloured by step, later ones faded) and the current one."""
    offset = 1 if names and names[0] == "given" else 0
    n_steps = len(trace.steps)
    size = 16 if n_steps <= 60 else 9
    whole = character_labels(labels)[0]  # a split character's tokens read the character
    hovers = [_node_hover(graph.nodes[name], name, step, whole) for name in names]
    show_text = len(names) <= 40
    out = []
    if offset:
        out.append(go.Scatter(x=[0], y=[0], mode="markers+text" if show_text else "markers", text=["given"],
                              textposition="bottom center", name="given", hovertext=hovers[:1],
                              hovertemplate=HOVER_TEXT,
                              marker=dict(size=size, color=GIVEN_COLOR, line=dict(color="#666666", width=1))))
    steps = np.arange(n_steps)
    out.append(go.Scatter(
        x=(steps + offset).astype(np.float32), y=np.zeros(n_steps, dtype=np.float32),
        mode="markers+text" if show_text else "markers", text=[str(t + 1) for t in steps] if show_text else None,
        textposition="bottom center", name="steps", hovertext=hovers[offset:],
        hovertemplate=HOVER_TEXT,
        marker=dict(size=size, color=steps.astype(np.float32), colorscale=STEP_COLORSCALE, cmin=0,
                    cmax=_step_zmax(trace), opacity=np.where(steps <= step, 1.0, FADED_OPACITY).astype(np.float32),
                    line=dict(color="#444444", width=0.5)),
    ))
    if step >= 0:
        out.append(go.Scatter(x=[step + offset], y=[0], mode="markers", name="this step",
                              hovertext=hovers[step + offset: step + offset + 1],
                              hovertemplate=HOVER_TEXT,
                              marker=dict(size=size * 1.7, color=step_colors(n_steps)[step],
                                          line=dict(color=HIGHLIGHT_COLOR, width=3))))
    return out


def _node_hover(node: dict, name: str, step: int, labels: list[str]) -> str:
    positions = node["positions"]
    tokens = [_plain(labels[p]) for p in positions]
    if name == "given":
        return f"given · {len(positions)} positions<br>positions {listed(positions)}<br>tokens {listed(tokens)}"
    if node["step"] > step:
        tokens = [OPEN_MARK] * len(positions)  # not decided yet at the current step
    return (f"step {node['step'] + 1} · group {node['group']}<br>positions {listed(positions)}"
            f"<br>tokens {narration.named(tokens)}<br>log p = {node['logprob']:.2f}")


# --------------------------------------------------------------------------------------------------
# 3. the two-stream attention masks


def mask_figure(trace: DecodeTrace, step: int, labels: list[str], *, sort_by_group: bool = False) -> go.Figure:
    """Content and query masks for the grouping used at `step`, side by side (1 = may attend).

    sort_by_group shows rows and columns in (group, position) order, where both become block-triangular.
    """
    step = _check_step(trace, step)
    groups = torch.tensor(trace.group_ids_at(step))
    content, query = two_stream_masks(groups)
    order = group_order(groups) if sort_by_group else torch.arange(groups.numel())
    shown_groups = groups[order].numpy()
    ticks = mask_ticks(order.tolist(), labels, known_at(trace, step))
    customdata = _group_pairs(shown_groups)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("content stream (g[j] ≤ g[i])", "query stream (g[j] < g[i])"))
    gap = 1 if len(ticks) <= MAX_TICK_LABELS else 0
    scale = [[0, BLOCKED_COLOR], [0.5, BLOCKED_COLOR], [0.5, ATTEND_COLOR], [1, ATTEND_COLOR]]
    for col, (name, mask) in enumerate((("content", content), ("query", query)), start=1):
        z = mask[order][:, order].numpy().astype(np.uint8)
        fig.add_trace(go.Heatmap(
            z=z, x=ticks, y=ticks, zmin=0, zmax=1, colorscale=scale, showscale=False, name=name, xgap=gap, ygap=gap,
            customdata=customdata, hoverongaps=False,
            hovertemplate="row %{y} → column %{x}<br>groups %{customdata[0]} → %{customdata[1]}"
                          f"<br>may attend: %{{z}}<extra>{name}</extra>",
        ), row=1, col=col)
    highlight = _current_positions(trace, step)
    fig.update_layout(
        height=500, margin=dict(l=10, r=10, t=64, b=10), uirevision="masks", plot_bgcolor="#e6e6e6",
        shapes=_row_bands(order.tolist(), highlight),
        meta={"figure": "masks", "step": step, "order": order.tolist(), "highlight_rows": highlight},
    )
    axis = dict(type="category", showgrid=False, showline=True, linecolor="#999999", mirror=True, ticks="",
                tickfont=dict(size=9), constrain="domain")
    fig.update_xaxes(tickangle=-60, **axis)
    fig.update_yaxes(autorange="reversed", **axis)
    fig.update_yaxes(scaleanchor="x", row=1, col=1)
    fig.update_yaxes(scaleanchor="x2", row=1, col=2)
    return fig


def mask_ticks(order: list[int], labels: list[str], known: list[bool] | None = None) -> list[str]:
    """Category names in display order; "p:label" while short enough to read, positions otherwise.

    With `known` (per position: given or decided at this step) an open position reads "p:?": no axis
    names a token before the step that decides it (`position_texts`)."""
    if len(order) > MAX_TICK_LABELS:
        return [str(p) for p in order]
    whole, runs = character_labels(labels)
    texts = position_texts(whole, runs, [True] * len(labels) if known is None else known, in_grid=False)
    return [f"{p}:{_escape(texts[p])}" for p in order]


def _group_pairs(groups: np.ndarray) -> np.ndarray:
    """(L,) -> (L, L, 2): (row group, column group) per cell, for the hover.

    The payload is L*L*2 numbers per panel, so they travel in the smallest integer type that holds them.
    """
    low, high = int(groups.min(initial=0)), int(groups.max(initial=0))
    fits = [t for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32)
            if np.iinfo(t).min <= low and high <= np.iinfo(t).max]
    rows = np.broadcast_to(groups[:, None], (len(groups), len(groups)))
    return np.stack([rows, rows.T], axis=-1).astype(fits[0] if fits else np.float64)


def _row_bands(order: list[int], rows: list[int]) -> list[dict]:
    """Translucent bands over the displayed rows of `rows`, one per run of adjacent rows, in both panels."""
    where = {p: i for i, p in enumerate(order)}
    shown = sorted(where[p] for p in rows)
    runs: list[list[int]] = []
    for i in shown:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    edge = len(order) - 0.5
    return [dict(type="rect", xref=xref, yref=yref, x0=-0.5, x1=edge, y0=lo - 0.5, y1=hi + 0.5, layer="above",
                 line=dict(width=1, color=HIGHLIGHT_COLOR), fillcolor="rgba(228, 87, 46, 0.22)")
            for xref, yref in (("x", "y"), ("x2", "y2")) for lo, hi in runs]


# --------------------------------------------------------------------------------------------------
# 4. log-probabilities per step


def logprob_figure(trace: DecodeTrace, step: int) -> go.Figure:
    """One bar per step (log p of the tokens it committed), later steps faded; cumulative on the right.
    The axis numbers the steps from 1, as the stage does (bar x = step index + 1)."""
    step = _check_step(trace, step)
    steps = np.arange(len(trace.steps))
    shown = steps + 1
    logps = np.array([s.logprob for s in trace.steps], dtype=np.float64)
    cumulative = np.cumsum(logps)
    hovers = [f"step {t + 1} · positions {listed(s.positions)}<br>log p = {s.logprob:.3f}"
              f"<br>cumulative = {c:.3f}" for t, (s, c) in enumerate(zip(trace.steps, cumulative, strict=True))]
    done = steps <= step
    fig = go.Figure([
        go.Bar(x=shown, y=logps, name="log p of the step", hovertext=hovers, hovertemplate=HOVER_TEXT,
               marker=dict(color=steps.astype(np.float32), colorscale=STEP_COLORSCALE, cmin=0, cmax=_step_zmax(trace),
                           opacity=np.where(done, 1.0, FADED_OPACITY).astype(np.float32))),
        go.Scatter(x=shown[done], y=cumulative[done], yaxis="y2", mode="lines+markers", name="cumulative",
                   line=dict(color="#333333", width=2), marker=dict(size=4), hoverinfo="skip"),
        # the rest of the way, dotted; it starts at the current step so the two lines join
        go.Scatter(x=shown[max(step, 0):], y=cumulative[max(step, 0):], yaxis="y2", mode="lines",
                   name="cumulative (to come)", line=dict(color="#999999", width=1.5, dash="dot"), hoverinfo="skip"),
    ])
    fig.update_layout(
        title=dict(text="log p of each committed group", x=0, xanchor="left", y=0.98, yanchor="top"),
        height=320, margin=dict(l=10, r=10, t=40, b=80), uirevision="logprob", hovermode="closest", bargap=0.15,
        plot_bgcolor="#ffffff", legend=dict(orientation="h", x=0, xanchor="left", y=-0.25, yanchor="top"),
        xaxis=dict(title=dict(text="step"), showgrid=False, tickmode="array", tickvals=step_ticks(len(trace.steps))),
        yaxis=dict(title=dict(text="log p (step)"), gridcolor="#eeeeee", zerolinecolor="#bbbbbb"),
        yaxis2=dict(title=dict(text="cumulative log p"), overlaying="y", side="right", showgrid=False),
        meta={"figure": "logprob", "step": step},
    )
    return fig


# --------------------------------------------------------------------------------------------------
# 5. the candidates table and the one-line summary


def one_line(text: str) -> str:
    """A text on one line (a table cell, a candidate), its line breaks and tabs marked as the stage marks them
    ("↵", "⇥"): a fill of line breaks is never an empty cell."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "↵").replace("\t", "⇥")


def visible_spaces(text: str) -> str:
    """`text` with its leading and trailing spaces as SPACE_MARK, so that " The" and "The" read apart."""
    core = text.strip(" ")
    if not core:
        return SPACE_MARK * len(text)
    lead, trail = len(text) - len(text.lstrip(" ")), len(text) - len(text.rstrip(" "))
    return SPACE_MARK * lead + core + SPACE_MARK * trail


CHARACTER_PIECE = "(part of a character)"  # a byte token that makes no whole character where it would go


def token_in_place(labels: list[str], p: int, token: str, run: tuple[int, int] | None = None,
                   known: list[bool] | None = None) -> str:
    """What `token` (a token string, `model.text.token_strings`) reads at position `p` of the text
    `labels`: itself when it holds whole characters; a byte piece read together with the other tokens of
    the character it would complete there (`run`: [start, end) of p's character, from `character_runs`),
    as that character ("🧩"); CHARACTER_PIECE when it makes no whole character there, or when one of those
    other tokens is not `known` yet (no view names a token before the step that decides it). Never "<0xNN>"."""
    if "<0x" not in token:
        return token
    start, end = run or (p, p + 1)
    if known is not None and not all(known[q] for q in range(start, end) if q != p):
        return CHARACTER_PIECE
    pieces = list(labels[start:end])
    pieces[p - start] = token
    text = "".join(t for _, _, t in character_runs(pieces))
    return CHARACTER_PIECE if "\ufffd" in text or "<0x" in text else text


def candidate_text(labels: list[str], p: int, token: str, run: tuple[int, int] | None = None,
                   known: list[bool] | None = None) -> str:
    """A candidate token as the candidates table and the branch menu write it: on one line, its leading or
    trailing space as SPACE_MARK (" the" reads "␣the"), a byte piece as the character it would make in place
    (`token_in_place`)."""
    return visible_spaces(one_line(token_in_place(labels, p, token, run, known)))


def candidate_rows(trace: DecodeTrace, step: int, labels: list[str], token_text: Callable[[int], str], *,
                   top: int = 5) -> tuple[list[str], list[list]]:
    """Headers and rows for the open positions the model scored at `step`: committed ones first, then
    by confidence (the top probability) descending.

    Tokens read as whole characters: a committed token that is one of a split character's tokens names
    the character and which of its tokens it is ("🧩 (token 2 of 3)"); a candidate byte token reads the
    character it would make with the rest of that character (`token_in_place`)."""
    step = _check_step(trace, step)
    if step < 0:
        return list(CANDIDATE_HEADERS), []
    record = trace.steps[step]
    committed = set(record.positions)
    whole, runs = character_labels(labels)
    run_of = {q: (start, end) for start, end in runs for q in range(start, end)}
    known = known_at(trace, step)

    def committed_text(p: int) -> str:
        start, end = run_of.get(p, (p, p + 1))
        if end - start == 1:
            return visible_spaces(one_line(whole[p]))  # as the candidates beside it read
        which = f"token {p - start + 1} of {end - start}"
        return f"{whole[p]} ({which})" if all(known[start:end]) else f"{which} of a character"

    rows = []
    for p, candidates in record.candidates.items():
        shown = (candidate_text(labels, p, token_text(t), run_of.get(p), known) for t, _ in candidates[:top])
        best = " · ".join(f"{text} {prob:.2f}" for text, (_, prob) in zip(shown, candidates[:top], strict=True))
        now = p in committed
        rows.append([p, "committed now" if now else "open", committed_text(p) if now else "", best,
                     round(float(record.entropy[p]), 3), round(float(record.confidence[p]), 3)])
    rows.sort(key=lambda row: (row[1] != "committed now", -row[5]))
    return list(CANDIDATE_HEADERS), rows


def step_summary(trace: DecodeTrace, step: int, *, timing: bool = True) -> str:
    """One line of plain text about the current step ("Step 3/12" counts steps from 1; "at position 24" or
    "at positions 8, 9" says where its tokens sit, counting from 0, the start token).

    timing=False leaves out the seconds: the trace view (stage, GIF, player) shows the order, not the
    speed of the machine that decoded it, so a trace and its export read the same.
    """
    step = _check_step(trace, step)
    if step < 0:
        n_given = sum(trace.given)
        return f"Before decoding: {n_given} given, {trace.plan.length - n_given} open"
    s = trace.steps[step]
    where = f"at position {s.positions[0]}" if len(s.positions) == 1 else f"at positions {listed(s.positions)}"
    line = (f"Step {step + 1}/{len(trace.steps)} · group {s.group} · {where} · "
            f"log p = {s.logprob:.2f} · model calls {s.model_calls}")
    return line + (f" · {s.elapsed_s:.3f} s since decoding began" if timing else "")


# --------------------------------------------------------------------------------------------------
# 6. compare: model calls and seconds per method


def compare_figure(methods: list[str], calls: list[int], seconds: list[float]) -> go.Figure:
    """Two small horizontal bar charts side by side: model calls and wall seconds per method."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("model calls", "seconds"))
    names = list(methods)
    for col, (values, fmt, color) in enumerate(((calls, "{:d}", ATTEND_COLOR), (seconds, "{:.2f} s", "#6b7280")),
                                               start=1):
        fig.add_trace(go.Bar(y=names, x=list(values), orientation="h", marker_color=color, showlegend=False,
                             text=[fmt.format(v) for v in values], textposition="auto", hoverinfo="skip",
                             cliponaxis=False), row=1, col=col)
    fig.update_layout(height=60 + 34 * max(len(names), 1), margin=dict(l=10, r=20, t=30, b=10),
                      plot_bgcolor="#ffffff", bargap=0.25, meta={"figure": "compare", "methods": names})
    fig.update_yaxes(autorange="reversed", ticks="", showgrid=False)
    fig.update_xaxes(showgrid=True, gridcolor="#eeeeee", zeroline=False, showticklabels=False)
    return fig

"""One description of a decoded trace for drawing: what the stage, the GIF and the player all read.

A trace is drawn four ways: the Plotly figures (app.figures, the reference), the live stage (app.stage
+ static/stage_core.js), the GIF and the offline HTML player (app.slides). Each shows, for a step, the
same tokens in the same colours, the same grid shape, the same DAG and the same summary line. `TraceView`
holds all of that, computed once in Python with the figures' own helpers (`figures.short_label`,
`figures.grid_columns`, `figures.step_colors`, `figures.dependency_graph`, ...), so the renderers only
draw. The per-step rule (which cell is given, decided, open or outlined at a step) is `TraceView.cells`
here and `A3Core.cells` in static/stage_core.js; tests/test_figures_stage.py checks the stage, the player
and the GIF against the reference figures at every step.

    view_of_result(result)   from a live `app.session.Result` (trace + labels)
    view_of_dict(data)       from an exported trace dict (`DecodeTrace.to_dict(tokenizer)`)
    view.to_dict()           the JSON the browser gets (the stage payload and the player embed it)

Both builders go through `build_view`. Plain values in, plain values out; nothing here imports gradio.
Each step also carries its narration (app.narration: one plain sentence saying what the step decides,
with which probability, what it sees and where the stage draws that), worked out here from the trace;
a teacher-forced trace (`settings["teacher_forced"]`, model.orders.teacher_forced_trace: the order lab's
and the gallery's "Step through") is narrated as given tokens, not decided ones.

Bytes that make no character (a model can choose a byte token whose character it never completes) read
as their values wherever a token's text is shown, "‹EF BC›" (`figures.character_labels`), never "�".
`final_text` stays the tokenizer's decode (the export's and the API's text, where such bytes are "�");
`shown_text` is the text as the views show it, and an export's `final_tokens` hold every token exactly
("<0xEF><0xBC>").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import groupby

import numpy as np
import torch

from app import figures, narration
from app.session import BEST_OF_N, BEST_OF_N_ABOUT, Result
from model.config import DecodeConfig, method_spec
from model.decoding import DecodeTrace
from model.masks import check_masks, two_stream_masks

START_LABEL = "⟨s⟩"  # model.text.token_strings' name for the start token; the text hides it
OPEN_LABEL = narration.OPEN_MARK  # an open position in the text: "?", as the grid marks it


@dataclass
class Palette:
    """Every colour the views use: one per step (Viridis, as the colour bar draws it), the text colour
    that reads on each, and the fixed ones."""

    steps: list[str]
    ink: list[str]
    given: str = figures.GIVEN_COLOR
    open: str = figures.OPEN_COLOR
    given_ink: str = figures.GIVEN_INK
    open_ink: str = figures.OPEN_INK
    attend: str = figures.ATTEND_COLOR
    blocked: str = figures.BLOCKED_COLOR
    highlight: str = figures.HIGHLIGHT_COLOR

    @classmethod
    def for_steps(cls, n_steps: int) -> Palette:
        colors = figures.step_colors(n_steps)
        return cls(colors, [figures.ink_on(c) for c in colors])


@dataclass
class Dag:
    """The group DAG of `figures.dependency_graph`: node names in decoding order ("given" first when the
    trace has given positions, then s0, s1, ...) and edges as [u, v] node indices."""

    nodes: list[str]
    offset: int  # index of node s0 (1 when there is a "given" node)
    edges: list[list[int]]
    reduced: list[list[int]]  # the transitive reduction (for A3 plans: the chain)


@dataclass
class Caption:
    """The lines under the controls at one step: the summary, the mask checker's verdict and the
    narration (one plain sentence, app.narration)."""

    summary: str
    verdict: str
    narration: str = ""


@dataclass
class ViewStep:
    positions: list[int]
    group: int
    groups: list[int] | None  # the grouping this step used, when it differs from the trace's (official dynamic)
    tokens: list[str]  # display labels of the committed tokens
    logprob: float
    model_calls: int
    summary: str
    verdict: str
    narration: str  # one plain sentence: what this step decides, sees, and where that is drawn
    named: str  # its tokens by app.narration's rule (up to 5, then "and N more")
    context: int  # how many tokens its predictions see (its query-mask row: the lower groups)
    brief: str = ""  # the narration's first part alone (what is decided), shown while the stage plays fast


@dataclass
class Cell:
    """What one position shows at one step; the Python twin of an entry of `A3Core.cells`."""

    p: int
    state: str  # "given", "decided" or "open"
    text: str  # in a grid cell: the short label, OPEN_LABEL ("?") while open (`figures.position_texts`)
    label: str  # in the text: the display label, OPEN_LABEL while open
    color: str  # fill
    ink: str  # text colour on that fill
    current: bool  # decided by this very step (outlined)
    group: int
    decided_at: int  # the step that decides it (-1: given, or never)
    run: int = -1  # index into TraceView.runs of the split character it is part of, or -1


@dataclass
class Chip:
    """One piece of the text at one step: a token, or the tokens of a split character read as one
    (`A3Core.sentence`)."""

    p: int  # its first position
    positions: list[int]
    state: str  # "given", "decided" or "open" (a split character with an open token is open)
    label: str  # the display label, OPEN_LABEL while open
    colors: list[str]  # the fill of each of its tokens
    ink: str
    current: bool  # holds a token decided by this very step
    decided_at: int  # the step that completed it (-1: given, or not yet)


@dataclass
class RunLabel:
    """The label the grid writes once across a split character's cells (`figures.run_label_cells`)."""

    start: int
    end: int
    text: str
    row: int
    c0: int
    c1: int


@dataclass
class TraceView:
    title: str  # names the method once: "A3 dynamic (confidence, k=1)", "A3 plan · left to right"
    method: str
    length: int
    labels: list[str]  # per position: its character run's text as `figures.display_label` shows it
    short: list[str]  # per position: `figures.short_label` of the same (CELL_LABEL_CHARS), for grid cells
    runs: list[list[int]]  # [start, end) of every character split over two or more tokens
    given: list[bool]
    decided: list[int]  # per position: the step that decided it, -1 for given (or never decided)
    groups: list[int]  # per position: the trace's group id
    steps: list[ViewStep]
    before: Caption  # step -1, before decoding
    palette: Palette
    columns: int  # of the order grid: `figures.grid_columns`
    dag: Dag
    hide_start: bool  # position 0 is the start token: not part of the text
    final_text: str  # the tokenizer's decode of the final ids (bytes of no character read "�" there)
    shown_text: str = ""  # the final text as the views show it: bytes that make no character as "‹EF BC›"
    open_label: str = OPEN_LABEL  # what an open chip and an open cell read (stage_core.js draws it)
    about: str = ""  # the method in one line (model.config.METHODS), for the hover on its name
    terms: dict[str, str] | None = None  # what the summary's words mean (app.narration.TERMS)

    def to_dict(self) -> dict:
        """Plain JSON-ready values (the browser's copy of the view)."""
        return asdict(self)

    # ---- the per-step rules; static/stage_core.js applies the same ones in the browser

    def current(self, step: int) -> list[int]:
        return list(self.steps[step].positions) if step >= 0 else []

    def groups_at(self, step: int) -> list[int]:
        """The grouping the model used at `step` (it changes per step in the official dynamic variant)."""
        groups = self.steps[step].groups if step >= 0 else None
        return list(groups) if groups is not None else list(self.groups)

    def caption(self, step: int) -> Caption:
        if step < 0:
            return self.before
        s = self.steps[step]
        return Caption(s.summary, s.verdict, s.narration)

    def known(self, step: int) -> list[bool]:
        return [g or 0 <= d <= step for g, d in zip(self.given, self.decided, strict=True)]

    def cells(self, step: int) -> list[Cell]:
        """Every position at `step` in reading order: given grey, decided in its step's colour, open."""
        now, pal = set(self.current(step)), self.palette
        texts = figures.position_texts(self.short, self._runs(), self.known(step), in_grid=True,
                                       limit=figures.CELL_LABEL_CHARS)
        run_of = self._run_of()
        out = []
        for p in range(self.length):
            d, label, text, run = self.decided[p], self.labels[p], texts[p], run_of[p]
            if self.given[p]:
                out.append(Cell(p, "given", text, label, pal.given, pal.given_ink, False, self.groups[p], -1, run))
            elif 0 <= d <= step:
                out.append(Cell(p, "decided", text, label, pal.steps[d], pal.ink[d], p in now, self.groups[p], d, run))
            else:
                out.append(Cell(p, "open", texts[p], OPEN_LABEL, pal.open, pal.open_ink, False, self.groups[p], d, run))
        return out

    def sentence(self, step: int) -> list[Chip]:
        """The text: every position but the start token, a split character as one chip."""
        cells = [c for c in self.cells(step) if not (c.p == 0 and self.hide_start)]
        return [self._chip(list(group)) for _, group in groupby(cells, key=lambda c: (c.run, c.p if c.run < 0 else 0))]

    def _chip(self, cells: list[Cell]) -> Chip:
        """A token's chip; a split character's is whole once every token is known, one open box until then."""
        first, pal = cells[0], self.palette
        if any(c.state == "open" for c in cells):
            return Chip(first.p, [c.p for c in cells], "open", OPEN_LABEL, [pal.open], pal.open_ink,
                        any(c.current for c in cells), -1)
        state = "given" if all(c.state == "given" for c in cells) else "decided"
        return Chip(first.p, [c.p for c in cells], state, first.label, [c.color for c in cells], first.ink,
                    any(c.current for c in cells), max(c.decided_at for c in cells))

    def run_labels(self, step: int) -> list[RunLabel]:
        """The grid's label of each split character all of whose tokens are known at `step`."""
        known = self.known(step)
        return [RunLabel(start, end, self.short[start], *figures.run_label_cells(start, end, self.columns))
                for start, end in self._runs() if all(known[start:end])]

    def tick_texts(self, step: int) -> list[str]:
        """What each mask tick names after "p:" at `step` (`figures.mask_ticks`)."""
        return figures.position_texts(self.short, self._runs(), self.known(step), in_grid=False)

    def _runs(self) -> list[tuple[int, int]]:
        return [(start, end) for start, end in self.runs]

    def _run_of(self) -> list[int]:
        out = [-1] * self.length
        for i, (start, end) in enumerate(self.runs):
            out[start:end] = [i] * (end - start)
        return out


# --------------------------------------------------------------------------------------------------
# building it


def _title(trace: DecodeTrace, method: str) -> str:
    """A best-of-N candidate is named by its candidate name ("A3 best of N · sampled, T 0.7, seed 2"), not by
    its plan's order, which another candidate may be named after; any other trace by title_for."""
    candidate = (trace.settings or {}).get("candidate")
    if candidate:
        return method if method.endswith(str(candidate)) else f"{method} · {candidate}"
    return title_for(method, trace.mode, trace.plan.name)


def title_for(method: str, mode: str, plan_name: str) -> str:
    """The method, then what the plan name adds, with the method named once.

    "A3 dynamic" + plan "dynamic (confidence, k=1)" -> "A3 dynamic (confidence, k=1)"; "diffusion" +
    "masked diffusion (...)" -> the plan name; "A3 plan" + "left_to_right" -> "A3 plan · left to right".
    """
    name = plan_name.strip()
    if not method or method.lower() in name.lower():
        return name or method
    mode_words = mode.replace("_", " ").lower()
    if mode_words and name.lower().startswith(mode_words):
        rest = name[len(mode_words):].strip()
        return f"{method} {rest}" if rest else method
    return f"{method} · {name.replace('_', ' ')}" if name else method


def _verdicts(trace: DecodeTrace) -> list[str]:
    """The mask checker's verdict per step (index step + 1), computed once per distinct grouping."""
    seen: dict[tuple, str] = {}
    out = []
    for step in range(-1, len(trace.steps)):
        groups = tuple(trace.group_ids_at(step))
        if groups not in seen:
            g = torch.tensor(groups)
            content, query = two_stream_masks(g)
            seen[groups] = check_masks(content, query, g).summary()
        out.append(seen[groups])
    return out


def _dag(trace: DecodeTrace) -> Dag:
    graph = figures.dependency_graph(trace)
    names = figures.node_names(trace)
    index = {name: i for i, name in enumerate(names)}

    def pairs(g) -> list[list[int]]:
        return [[index[u], index[v]] for u, v in g.edges()]

    return Dag(names, 1 if names and names[0] == "given" else 0, pairs(graph),
               pairs(figures.transitive_reduction(graph)))


def method_about(method: str) -> str:
    """The page's one line on a method (its name as the page writes it), or "" for a name it does not list."""
    if method.startswith(BEST_OF_N):
        return BEST_OF_N_ABOUT
    try:
        return method_spec(method).description
    except ValueError:
        return ""


def step_pieces(trace: DecodeTrace, step: int, shown: list[str], runs: list[tuple[int, int]]) -> list[narration.Piece]:
    """What `step` decides, in text order: one piece per token, the tokens of one split character
    together (read whole once all of them are known), each with its probability; bytes that make no
    character are said to be so (their label shows them, `figures.makes_no_character`)."""
    record = trace.steps[step]
    known = figures.known_at(trace, step)
    run_of = {p: (start, end) for start, end in runs for p in range(start, end)}
    logp = dict(zip(record.positions, record.token_logprobs, strict=True))
    passed, laid = passed_over(trace, step), layout_moved(trace, step)
    picked = {p for mark in (trace.settings or {}).get("picked", []) if mark.get("step") == step  # a branch's pick
              for p in mark.get("positions", [])}
    pieces = []
    for span, group in groupby(sorted(record.positions), key=lambda p: run_of.get(p, (p, p + 1))):
        group = list(group)
        text = shown[group[0]]
        pieces.append(narration.Piece(text, float(np.exp(sum(logp[p] for p in group))),
                                      whole=all(known[span[0]:span[1]]),
                                      no_character=figures.makes_no_character(text),
                                      passed_over=any(p in passed for p in group),
                                      picked=any(p in picked for p in group),
                                      laid_out=next((laid[p] for p in group if p in laid), "")))
    return pieces


def layout_moved(trace: DecodeTrace, step: int) -> dict[int, str]:
    """The positions where a greedy step committed a token other than the model's most likely one because the
    typed text's layout (model.layout) ruled that one out, each with the reason in words."""
    record = trace.steps[step]
    layout = trace.plan.layout
    if trace.config.sampler.temperature != 0 or is_teacher_forced(trace) or not layout:
        return {}
    return {p: ("a space is typed before the blank" if p in layout.word_starts else "the text is on one line")
            for p in record.layout_banned or ()}


def passed_over(trace: DecodeTrace, step: int) -> set[int]:
    """The positions where a greedy step committed a token other than the model's most likely one because the
    no-repeat rule (model.repeats) banned that one, as the decoder recorded it (`DecodeStep.rule_banned`)."""
    if trace.config.sampler.temperature != 0 or is_teacher_forced(trace):
        return set()
    return set(trace.steps[step].rule_banned or ())


def step_context(trace: DecodeTrace, step: int) -> int:
    """How many tokens the predictions of `step` see: the positions of lower groups than its first
    position's, under the grouping it used (its query-mask row; the DAG's arcs into it come from them)."""
    groups = np.asarray(trace.group_ids_at(step))
    return int((groups < groups[trace.steps[step].positions[0]]).sum())


def is_teacher_forced(trace: DecodeTrace) -> bool:
    """Whether the trace's tokens were imposed, not chosen (model.orders.teacher_forced_trace marks it)."""
    return bool((trace.settings or {}).get("teacher_forced"))


def _narrations(trace: DecodeTrace, shown: list[str], runs: list[tuple[int, int]],
                panels: tuple[str, ...]) -> tuple[str, list[tuple]]:
    """The start's sentence, and per step (sentence, named tokens, context)."""
    forced = is_teacher_forced(trace)
    n_given = sum(trace.given)
    n_open, n_steps, mode = trace.plan.length - n_given, len(trace.steps), trace.mode
    decided = trace.decided_step()
    out = []
    for t, s in enumerate(trace.steps):
        pieces, context = step_pieces(trace, t, shown, runs), step_context(trace, t)
        n_left = sum(1 for g, d in zip(trace.given, decided, strict=True) if not g and not 0 <= d <= t)
        told = {brief: narration.step_sentence(t, n_steps, pieces, context, mode, rows=len(s.positions),
                                               n_open=n_open, n_left=n_left, panels=panels, forced=forced,
                                               brief=brief)
                for brief in (False, True)}
        out.append((told[False], narration.decided_names(pieces), context, told[True]))
    return narration.start_sentence(n_given, n_open, n_steps, mode, forced=forced), out


def build_view(trace: DecodeTrace, labels: list[str], *, method: str = "", final_text: str = "",
               panels: tuple[str, ...] = narration.STAGE_PANELS) -> TraceView:
    """The view of `trace` whose positions read `labels` (the final token strings, as decoded). `panels`:
    what the narration points at (the stage and the player draw the DAG and the masks; the GIF the masks)."""
    if len(labels) != trace.plan.length:
        raise ValueError(f"labels must name every position: {trace.plan.length} expected, got {len(labels)}.")
    whole, runs = figures.character_labels(labels)
    shown = [figures.display_label(text) for text in whole]
    verdicts = _verdicts(trace)
    start, told = _narrations(trace, shown, runs, panels)
    steps = [ViewStep(positions=list(s.positions), group=int(s.group),
                      groups=list(s.group_ids) if s.group_ids is not None else None,
                      tokens=[shown[p] for p in s.positions], logprob=float(s.logprob),
                      model_calls=int(s.model_calls), summary=figures.step_summary(trace, t, timing=False),
                      verdict=verdicts[t + 1], narration=told[t][0], named=told[t][1], context=told[t][2],
                      brief=told[t][3])
             for t, s in enumerate(trace.steps)]
    given = trace.given
    hide_start = bool(given and given[0] and labels[0] == START_LABEL)
    return TraceView(
        title=_title(trace, method), method=method, length=trace.plan.length,
        labels=shown, short=[figures.short_label(text, figures.CELL_LABEL_CHARS) for text in whole],
        runs=[list(r) for r in runs], given=given,
        decided=trace.decided_step(), groups=trace.group_ids, steps=steps,
        before=Caption(figures.step_summary(trace, -1, timing=False), verdicts[0], start),
        palette=Palette.for_steps(len(trace.steps)), columns=figures.grid_columns(trace.plan.length),
        dag=_dag(trace), hide_start=hide_start, final_text=final_text,
        shown_text=shown_text(whole, runs, hide_start), about=method_about(method), terms=dict(narration.TERMS))


def shown_text(whole: list[str], runs: list[tuple[int, int]], hide_start: bool) -> str:
    """The text as the views show its chips, unescaped (a split character once, bytes that make no
    character as "‹EF BC›"), without the start token."""
    return figures.joined_text(whole, runs, frozenset({0}) if hide_start else frozenset())


def view_of_result(result: Result) -> TraceView:
    """The view of a live run."""
    return build_view(result.trace, result.labels, method=result.method, final_text=result.text)


def method_of(data: dict) -> str:
    """The method a trace dict was decoded with, by its page name: exports name it; older dicts keep it
    in their settings; otherwise the trace's decode config (model.config), or what its mode says."""
    settings = data.get("settings") or {}
    named = data.get("method") or settings.get("method")
    if named:
        return str(named)
    try:
        return DecodeConfig.from_trace_dict(data).label
    except (TypeError, ValueError):
        return str(data.get("mode", ""))


def view_of_dict(data: dict, *, panels: tuple[str, ...] = narration.STAGE_PANELS) -> TraceView:
    """The view of an exported trace (`DecodeTrace.to_dict(tokenizer)`); a dict written without a
    tokenizer has no token strings, and its positions read "#id"."""
    trace = DecodeTrace.from_dict(data)
    ids = trace.final_ids or trace.plan.token_ids.tolist()
    tokens = data.get("final_tokens")
    labels = list(tokens) if tokens and len(tokens) == len(ids) else [f"#{t}" for t in ids]
    return build_view(trace, labels, method=method_of(data), final_text=data.get("final_text", ""), panels=panels)

"""⌕ Step details: the step the stage settled on, drawn by app.render (candidates, log p, the Plotly
figures with hover), the candidates of every open position (computed on first view); branching from
that step (app.branching); and the attention weights the model really used there (app.attention_view)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from app import branching as branch_logic
from app import figures, memory
from app.attention_view import attention_figure
from app.render import clamp_step, render_step
from app.session import Explorer, InputError
from app.stage import stage_payload
from app.ui.model_calls import ModelCalls
from app.ui.shared import SERVER_ERROR, inform, warn
from model.decoding import has_preview

log = logging.getLogger(__name__)

BRANCH_INTRO = (
    "Replace a decision of the step on show, or decode the rest another way, and keep both runs. **Token**: "
    "commit another of this step's candidates at a position (one decided here, or one still open, which "
    "then joins this step). **Order** (A3 plan) or **strategy** (A3 dynamic) and group size: decode the "
    "still-open positions that way from this step on. The first steps are shared with the parent and not "
    "decoded again: their content is rebuilt in one model call the first time a run is branched, then the "
    "branch starts from that cache (*new calls* counts the branch's own calls, that one included). "
    "A branch opens on the stage paused on its first own step, where it leaves its parent (a token branch: on "
    "the token picked); there, decoding the rest keeps that pick and decodes what follows it. "
    "Every branch stays in the table with its log p; show any of them on the stage and branch again.")
ATTENTION_INTRO = (
    "The probabilities each row of this step really put on each key, read out of one forward pass of the "
    "model, averaged over layers and heads or for one of each. **Query** rows are the positions "
    "decided at this step (what made the decision); **content** rows are the same positions' content, what "
    "later steps read. They are drawn over the mask: allowed cells are coloured by weight, blocked cells are "
    "grey and their weight is **exactly 0** (the figure refuses data that is not). Rows of the lowest group see "
    "nothing and are all 0. The AR baseline's step is the base model's row before each position.")
WAITING = ("Pause the stage (space) or step it (← →) to detail a step here: its candidates, the groups' log p, "
           "the figures with hover, and branching from it.")
# the tab's select event reads the step the stage shows into the hidden second input. A stage still
# playing (the first visit's example) is paused there, so the two agree; it then reports that step itself
# (step_settled), and the input stays empty
_COUNTER_STEP = ("const counter = document.querySelector('#stage-counter'); "
                 "inputs[1] = counter && counter.dataset.step !== undefined ? Number(counter.dataset.step) : null; ")
STEP_OF_STAGE = ("(...inputs) => { const s = window.__a3stage; " + _COUNTER_STEP +
                 "if (s && s.state.playing) { s.pause(); inputs[1] = null; } return inputs; }")
# The stage's step when its step_settled event is sent: read from the page as the event leaves, so that a
# listener with trigger_mode="always_last" gets the latest step. (Gradio 6's page keeps no data for an event
# that comes while one runs: it sends the one that ran again, and would hand it that one's stale step.)
SETTLED_STEP = "(...inputs) => { " + _COUNTER_STEP + "return inputs; }"
ATTENTION_STALE = ("The attention drawn before belonged to another step or run. Press **Draw the attention at "
                   "this step** to draw it for the step on show.")


@dataclass(frozen=True)
class BranchPanel:
    position: gr.Dropdown
    token: gr.Dropdown
    token_btn: gr.Button
    order: gr.Dropdown  # an order (plan runs) or a strategy (dynamic runs) for the rest
    size: gr.Slider
    order_btn: gr.Button
    table: gr.Dataframe  # the tree
    pick: gr.Dropdown
    show: gr.Button


@dataclass(frozen=True)
class AttentionPanel:
    stream: gr.Radio
    layer: gr.Dropdown
    head: gr.Dropdown
    button: gr.Button
    note: gr.Markdown  # why no plot shows (the step or run changed since it was drawn)
    plot: gr.Plot


@dataclass(frozen=True)
class DetailsTab:
    tab: gr.Tab
    on_screen: gr.Number  # hidden: the stage's step when the tab is opened, filled in by STEP_OF_STAGE
    summary: gr.Markdown
    candidates_hint: gr.Markdown
    candidates: gr.Dataframe
    logprob: gr.Plot
    grid: gr.Plot
    dag: gr.Plot
    masks: gr.Plot
    reduce: gr.Checkbox  # transitive reduction of the DAG
    sort: gr.Checkbox  # mask rows sorted by group
    verdict: gr.Markdown
    branch: BranchPanel
    attention: AttentionPanel

    def outputs(self, details_step: gr.State) -> list:
        """What a step fills, in `DetailsCallbacks.on_details`' order."""
        return [self.summary, self.candidates_hint, self.candidates, self.logprob, self.grid, self.dag, self.masks,
                self.verdict, details_step, self.branch.position, self.branch.token, self.branch.order]


def build_details_tab(explorer: Explorer) -> DetailsTab:
    with gr.Tab("⌕ Step details", id="details", elem_id="tab-details") as tab:
        summary = gr.Markdown(WAITING, elem_id="details-summary")
        on_screen = gr.Number(None, precision=0, visible="hidden", elem_id="details-on-screen")
        candidates_hint = gr.Markdown("", elem_id="candidates-hint")
        candidates = gr.Dataframe(headers=figures.CANDIDATE_HEADERS, interactive=False, elem_id="candidates",
                                  wrap=True, visible=False, label="Candidates the model weighed at this step")
        branch = build_branch_panel()
        with gr.Row(equal_height=False):
            logprob = gr.Plot(show_label=False, elem_id="logprob-plot")
            grid = gr.Plot(show_label=False, elem_id="grid-plot")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                dag = gr.Plot(show_label=False, elem_id="dag-plot")
                reduce = gr.Checkbox(False, label="chain only", elem_id="reduce",
                                     info="the transitive reduction, as on the stage: each step's nearest dependencies")
            with gr.Column(scale=3):
                masks = gr.Plot(show_label=False, elem_id="mask-plot")
                sort = gr.Checkbox(False, label="sort positions by group", elem_id="sort")
        verdict = gr.Markdown("", elem_id="details-verdict")
        attention = build_attention_panel(explorer.loaded.model.config)
    return DetailsTab(tab, on_screen, summary, candidates_hint, candidates, logprob, grid, dag, masks, reduce, sort,
                      verdict, branch, attention)


def build_branch_panel() -> BranchPanel:
    with gr.Accordion("Branch from this step: another candidate, or another order for the rest", open=False,
                      elem_id="branching"):
        gr.Markdown(BRANCH_INTRO, elem_id="branch-intro")
        with gr.Row(equal_height=True):
            position = gr.Dropdown([], label="position", elem_id="br-position", scale=2)
            token = gr.Dropdown([], label="token (this step's candidates)", elem_id="br-token", scale=2)
            token_btn = gr.Button("Branch with this token", elem_id="br-token-btn", scale=1)
        with gr.Row(equal_height=True):
            order = gr.Dropdown(branch_logic.PLAN_ORDERS, value="left to right", label="order of the rest (A3 plan)",
                                elem_id="br-order", scale=2)
            size = gr.Slider(1, 8, value=1, step=1, label="group size / tokens per step", elem_id="br-size", scale=2)
            order_btn = gr.Button("Branch: decode the rest this way", elem_id="br-order-btn", scale=1)
        table = gr.Dataframe(headers=branch_logic.TREE_HEADERS, interactive=False, wrap=True, elem_id="br-tree",
                             visible=False, label="Branches (▶ = on the stage)",
                             column_widths=["6%", "30%", "7%", "9%", "8%", "9%", "31%"])
        with gr.Row(equal_height=True):
            pick = gr.Dropdown([], label="branch", elem_id="br-pick", scale=2)
            show = gr.Button("Show this branch on the stage", elem_id="br-show", scale=1)
    return BranchPanel(position, token, token_btn, order, size, order_btn, table, pick, show)


def build_attention_panel(config) -> AttentionPanel:
    """The attention controls for a model of `config` (its layers and heads)."""
    with gr.Accordion("Attention weights at this step: what the model really attended to", open=False,
                      elem_id="attention"):
        gr.Markdown(ATTENTION_INTRO, elem_id="attention-intro")
        with gr.Row(equal_height=True):
            stream = gr.Radio(["query", "content"], value="query", label="rows", elem_id="attn-stream", scale=2)
            layer = gr.Dropdown(["mean", *map(str, range(config.num_hidden_layers))], value="mean", label="layer",
                                elem_id="attn-layer", scale=1)
            head = gr.Dropdown(["mean", *map(str, range(config.num_attention_heads))], value="mean", label="head",
                               elem_id="attn-head", scale=1)
            button = gr.Button("Draw the attention at this step", elem_id="attn-btn", scale=2)
        note = gr.Markdown("", elem_id="attn-note")
        plot = gr.Plot(show_label=False, elem_id="attn-plot", visible=False)
    return AttentionPanel(stream, layer, head, button, note, plot)


# ----------------------------------------------------------------------------- callbacks
def branch_controls(result, step):
    """The branch controls for the step on show: its positions, their candidates, what can follow."""
    positions = branch_logic.open_positions(result, step)
    first = positions[0][1] if positions else None
    tokens = branch_logic.token_choices(result, step, first)
    orders, label = branch_logic.continuation_choices(result)
    return (gr.Dropdown(choices=positions, value=first),
            gr.Dropdown(choices=tokens, value=branch_logic.default_token(result, step, first, tokens)),
            gr.Dropdown(choices=orders, value=branch_logic.other_continuation(result), label=label))


def on_position(result, step, position):
    """The candidates of the position picked, the first that is not what the step committed there chosen."""
    step = clamp_step(result, step) if result is not None else -1
    tokens = branch_logic.token_choices(result, step, position)
    return gr.Dropdown(choices=tokens, value=branch_logic.default_token(result, step, position, tokens))


def reset_branches():
    """A new run starts a new tree: the old branches leave the table."""
    return None, gr.Dataframe(value=None, visible=False), gr.Dropdown(choices=[], value=None)


def tree_method(tree) -> str:
    return tree.method  # as the run it grew from was called (A3 best of N, not its kept candidate's decoder)


def run_name(tree, result) -> str:
    """What the details call the run on the stage: its method, or which branch of it."""
    index = branch_logic.branch_index(tree, result)
    return result.method if not index else f"branch {index} of {result.method}"


def shown_at(tree, shown, step: int) -> tuple[dict, int]:
    """(stage payload, step) of a run of the tree put on the stage: paused on a branch's first own step
    (where it was branched; for a token, the token picked), the headline saying which branch it is;
    the main run paused on `step`, the step the details showed."""
    index = branch_logic.branch_index(tree, shown)
    if not index:
        at = clamp_step(shown, step)
        return stage_payload(shown, autoplay=False, start=at), at
    at = branch_logic.landing_step(tree, index)
    return stage_payload(shown, autoplay=False, start=at, terms=branch_logic.BRANCH_TERMS,
                         headline=branch_logic.branch_headline(tree, index, shown.method)), at


def stale_attention(attention_at, shown, step: int):
    """(plot, note, drawn at) once a run is put on the stage at `step`: an attention plot drawn for
    another run or step leaves, with a note."""
    if attention_at is None or (attention_at[0].trace is shown.trace and attention_at[1] == step):
        return gr.skip(), gr.skip(), gr.skip()
    return gr.Plot(value=None, visible=False), ATTENTION_STALE, None


class DetailsCallbacks:
    def __init__(self, calls: ModelCalls):
        self.calls, self.explorer = calls, calls.explorer

    def on_details(self, result, step, reduce, sort, tree=None):
        """The step drawn: the values of `DetailsTab.outputs`."""
        if result is None:
            return (gr.skip(),) * 12
        step = clamp_step(result, step)
        rendered = render_step(result, step, reduce=reduce, sort_by_group=sort)
        headers, rows = rendered.candidates
        hint = ("Before the first step nothing has been predicted yet: step forward (→) on the stage to see "
                "the candidates the model weighed." if not rows else "")
        return (f"**{run_name(tree, result)}** · {rendered.summary}", hint,
                gr.Dataframe(value=rows or None, headers=headers, visible=bool(rows)), rendered.logprob,
                rendered.grid, rendered.dag, rendered.masks, self.explorer.verdict(result, step), step,
                *branch_controls(result, step))

    def on_step_settled(self, result, on_screen, reduce, sort, tree, evt: gr.EventData):
        """The step the stage settled on, detailed. `on_screen` is the stage's step as the page sends the event
        (SETTLED_STEP); the event's own step only where no page filled it in (an API client)."""
        data = getattr(evt, "_data", None) or {}
        step = int(on_screen) if on_screen is not None else data.get("step", -1)
        return self.on_details(result, step, reduce, sort, tree)

    def on_opened(self, result, on_screen, reduce, sort, tree):
        """The tab opened on a paused stage: the step it shows, detailed at once (a stage that was playing
        is paused by STEP_OF_STAGE and reports its step itself)."""
        if result is None or on_screen is None:
            return (gr.skip(),) * 12
        return self.on_details(result, int(on_screen), reduce, sort, tree)

    @staticmethod
    def on_attention_settled(result, drawn, evt: gr.EventData):
        """(plot, note, drawn at) once the stage settles: an attention plot of another step or run
        (a branch, a new run) leaves, with a note; one of the step on show stays."""
        if drawn is None:
            return gr.skip(), gr.skip(), gr.skip()
        step = (getattr(evt, "_data", None) or {}).get("step", -1)
        step = clamp_step(result, step) if result is not None else -1
        if drawn[0] is result and drawn[1] == step:
            return gr.skip(), gr.skip(), gr.skip()
        return gr.Plot(value=None, visible=False), ATTENTION_STALE, None

    def on_preview(self, result, step):
        """After the details render: the other open positions' candidates of a plan run, computed
        on first view (one forward), then the candidates table and the branch controls again."""
        if result is None or not 0 <= step < result.n_steps or has_preview(result.trace, step):
            return gr.skip(), gr.skip(), gr.skip()
        try:
            record = result.trace.steps[step]
            record.candidates, record.entropy, record.confidence, result.vocab = self.calls.preview(result, step)
        except Exception:  # the table keeps the step's own candidates; never a stack trace
            log.exception("preview failed")
            return gr.skip(), gr.skip(), gr.skip()
        headers, rows = figures.candidate_rows(result.trace, step, result.labels, result.token_text)
        positions, tokens, _ = branch_controls(result, step)
        return gr.Dataframe(value=rows or None, headers=headers, visible=bool(rows)), positions, tokens

    def on_attention(self, result, step, stream, layer, head):
        """(plot, note, drawn at, warning): the attention at the step on show."""
        try:
            step = clamp_step(result, step) if result is not None else -1
            weights = self.calls.attention(result, step, stream)
            pick = {name: None if value in (None, "mean") else int(value)
                    for name, value in (("layer", layer), ("head", head))}
            known = [d == -1 or 0 <= d <= step for d in result.trace.decided_step()]
            fig = attention_figure(weights.probs, weights.allowed, result.labels, list(weights.rows),
                                   stream=weights.stream, step=step, known=known, **pick)
        except InputError as err:
            return gr.skip(), gr.skip(), gr.skip(), warn(err)
        except Exception:  # never a stack trace in the page
            log.exception("attention failed")
            return gr.skip(), gr.skip(), gr.skip(), warn(SERVER_ERROR)
        return gr.Plot(value=fig, visible=True), "", (result, step), ""

    def tree_outputs(self, tree, shown):
        """(table, pick) of the tree, the branch on the stage picked."""
        rows = branch_logic.tree_rows(self.explorer, tree, shown)
        picks = [(row[1], i) for i, row in enumerate(rows)]
        current = next((i for i, row in enumerate(rows) if str(row[0]).startswith("▶")), None)
        return (gr.Dataframe(value=rows or None, headers=branch_logic.TREE_HEADERS, visible=bool(rows)),
                gr.Dropdown(choices=picks, value=current))

    def on_branch(self, tree, result, step, change: dict, compared=None, lab=None, attention_at=None):
        """(tree, result, stage, table, pick, tabs, warning, details step, attention plot, its note, drawn
        at) after branching at the step on show. The stage opens on the branch, paused on its first own
        step (`shown_at`), and the details follow it there (the event's next function draws them). What
        else the session holds (the comparison's runs, the lab's result, the run the attention was drawn
        for) counts towards its memory cap (app.memory); the warning line says when caches were dropped or
        one was rebuilt, and when the branch reproduces another run."""
        skip = (gr.skip(),) * 6
        after = (gr.skip(),) * 4
        held = [*(compared or {}).values(), *([attention_at[0]] if attention_at else [])]
        try:
            tree, shown, note = self.calls.branch(tree, result, clamp_step(result, step) if result is not None
                                                  else -1, held=held, lab=lab, **change)
        except InputError as err:
            return (*skip, warn(err), *after)
        except Exception:  # never a stack trace in the page
            log.exception("branch failed")
            return (*skip, warn(SERVER_ERROR), *after)
        stage, at = shown_at(tree, shown, step)
        return (tree, shown, stage, *self.tree_outputs(tree, shown), gr.Tabs(selected="stage"), inform(note), at,
                *stale_attention(attention_at, shown, at))

    def on_branch_token(self, tree, result, step, position, token, compared=None, lab=None, attention_at=None):
        return self.on_branch(tree, result, step, {"position": position, "token": token}, compared, lab,
                              attention_at)

    def on_branch_order(self, tree, result, step, order, size, compared=None, lab=None, attention_at=None):
        return self.on_branch(tree, result, step, {"order": order, "group_size": size}, compared, lab, attention_at)

    def on_show_branch(self, tree, index, step=-1, attention_at=None):
        """(result, stage, table, tabs, warning, details step, attention plot, its note, drawn at): a run
        of the tree onto the stage, paused where `shown_at` says; the details follow it there."""
        skip = (gr.skip(),) * 4
        after = (gr.skip(),) * 4
        if tree is None or index is None:
            return *skip, warn(f"No branch yet: branch from a step first; {memory.not_held('branch')}"), *after
        try:
            shown = branch_logic.branch_result(self.explorer, tree, index, tree_method(tree))
        except InputError as err:
            return *skip, warn(err), *after
        stage, at = shown_at(tree, shown, step)
        return (shown, stage, self.tree_outputs(tree, shown)[0], gr.Tabs(selected="stage"), "", at,
                *stale_attention(attention_at, shown, at))

"""The Gradio page. `build_demo(explorer)` creates components and wiring only; every callback is a
thin adapter over `app.session.Explorer` (the model), `app.stage.stage_payload` (what the stage
draws) or `app.render.render_step` (the reference Plotly figures of the detail tab).

The page opens on the stage (app.stage_component.Stage), already playing an example decoded ahead of
time (app.demo_trace). The stage holds the step in the browser: stepping, scrubbing and playback never
call the server, so playback keeps the speed asked. When the step settles the stage reports it
(`step_settled`), and the detail tab (candidates, log p, Plotly figures with hover) follows.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import gradio as gr

from app import branching as branch_logic
from app import figures
from app import order_lab as lab_logic
from app.attention_view import attention_figure
from app.picker import TokenPicker
from app.render import clamp_step, render_step
from app.session import (
    COMPARE_METHODS,
    METHODS,
    ORDER_NAMES,
    STRATEGIES,
    Comparison,
    Explorer,
    InputError,
    Request,
    Result,
)
from app.stage import stage_payload
from app.stage_component import Stage
from model.decoding import has_preview
from model.flexible import ROW_HEADERS as LENGTH_HEADERS

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"

EXAMPLES = [
    # text, method, order, group size, k, custom group ids
    ["Mia found an old key under the porch. [MASK:14] Inside the box was a letter from her grandmother. "
     "She read it twice and smiled.", "A3 dynamic", "left to right", 1, 1, ""],
    ["The recipe was simple: mix the flour and the sugar, [MASK:8], then bake it for twenty minutes.",
     "A3 plan", "outside-in", 1, 1, ""],
    ["Tom went to the market early in the morning to buy [MASK:10] for the family dinner.",
     "A3 plan", "random", 2, 1, ""],
    # a blank of any length: decoded at several lengths, the best whole text kept (model.flexible)
    ["The old dog slept by the fire. [MASK:?] The children laughed and gave him a treat.",
     "A3 plan", "left to right", 1, 1, ""],
    # the paper's Figure 1: G1 = {1,2,3} given, G2 = {5,6}, G3 = {4} (position 0 is the start token)
    ["The cat sat [MASK:3]", "A3 plan", "custom group ids", 1, 1, "0 1 1 1 3 2 2"],
    ["[MASK:6] the dog barked all night long, so nobody on the street could sleep.",
     "diffusion", "left to right", 1, 2, ""],
    ["[MASK:6] the dog barked all night long, so nobody on the street could sleep.",
     "one-step parallel", "left to right", 1, 2, ""],
]

HOW_A3_WORKS = (STATIC / "how_a3_works.md").read_text()
BRANCH_INTRO = (
    "Replace a decision of the step on show, or decode the rest another way, and keep both runs. **Token**: "
    "commit another of this step's candidates at a position (one decided here, or one still open, which "
    "then joins this step). **Order** (A3 plan) or **strategy** (A3 dynamic) and group size: decode the "
    "still-open positions that way from this step on. The first steps are shared with the parent and not "
    "decoded again: their content is rebuilt in one model call the first time a run is branched, then the "
    "branch starts from that cache (*new calls* counts the branch's own calls, that one included). "
    "Every branch stays in the table with its log p; show any of them on the stage and branch again.")
ATTENTION_INTRO = (
    "The probabilities each row of this step really put on each key, read out of one forward pass "
    "(model.attention), averaged over layers and heads or for one of each. **Query** rows are the positions "
    "decided at this step (what made the decision); **content** rows are the same positions' content, what "
    "later steps read. They are drawn over the mask: allowed cells are coloured by weight, blocked cells are "
    "grey and their weight is **exactly 0** (the figure refuses data that is not). Rows of the lowest group see "
    "nothing and are all 0. The AR baseline's step is the base model's row before each position.")
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

# Keyboard: ← / → step, space plays or pauses, Home / End, P presentation (ignored while typing in a field).
SHORTCUTS = """
<script>
document.addEventListener('keydown', (e) => {
  const t = e.target, tag = (t && t.tagName || '').toLowerCase();
  const typing = tag === 'textarea' || (t && t.isContentEditable) ||
    (tag === 'input' && !['range', 'checkbox', 'radio', 'button'].includes((t.type || '').toLowerCase()));
  if (typing || e.altKey || e.ctrlKey || e.metaKey) return;
  const click = (id) => { const b = document.querySelector('#' + id); if (b) { b.click(); e.preventDefault(); } };
  const keys = {ArrowRight: 'next-btn', ArrowLeft: 'prev-btn', ' ': 'play-btn', Home: 'first-btn', End: 'last-btn',
                p: 'present-btn', P: 'present-btn'};
  const id = keys[e.key] || (e.code === 'Space' ? 'play-btn' : null);
  if (!id) return;
  // a focused button or slider would also act on the key: take the focus away so only the shortcut acts
  if (tag === 'button' || tag === 'input') t.blur();
  click(id);
});
</script>
"""


def launch_kwargs() -> dict:
    """App-level settings that Gradio 6 takes in launch() (tests launch with the same ones)."""
    return {"theme": gr.themes.Soft(), "css": (STATIC / "app.css").read_text(), "head": SHORTCUTS,
            "footer_links": ["gradio", "api", "settings"], "show_error": False}


def slides_module():
    """app.slides (the GIF and HTML-player exports) when it is there; None otherwise."""
    try:
        from app import slides
    except ImportError:
        return None
    return slides if hasattr(slides, "export_gif") and hasattr(slides, "export_player") else None


def build_demo(explorer: Explorer, *, device_note: str = "", gpu=None, demo: tuple[Result | None, str] | None = None,
               ) -> gr.Blocks:
    """The page for one explorer. `gpu` wraps the model calls (spaces.GPU on ZeroGPU); `demo` is the
    example the stage opens with (app.demo_trace.load_demo), decoded before any page loads."""
    gpu = gpu or (lambda fn: fn)
    loaded = explorer.loaded
    demo_result, demo_note = demo if demo is not None else (None, "")
    slides = slides_module()

    @gpu
    def decode(request: Request) -> Result:
        return explorer.decode(request)

    @gpu
    def compare(request: Request) -> Comparison:
        return explorer.compare(request)

    @gpu
    def compute_lab(text_, n_random, size, seed_, custom):
        return lab_logic.compute(explorer, text_, n_random=int(n_random if n_random is not None else 14),
                                 group_size=int(size or 4), seed=int(seed_ or 0), custom_groups=custom or "")

    @gpu
    def stepper(make):
        return make()

    initial_gallery = gallery_outputs(explorer, lab_logic.LAB_TEXT, lab_logic.DEFAULT_GROUP_SIZE, 0)

    with gr.Blocks(title="A3 Explorer") as page:
        result_state = gr.State(demo_result)
        lab_state = gr.State(None)
        compare_state = gr.State({})
        details_step = gr.State(-1)
        tree_state = gr.State(None)  # model.branching.BranchTree of the runs grown from the stage's result
        gr.Markdown(header_markdown(explorer, device_note), elem_id="header")
        warning = gr.Markdown("", elem_id="warning")

        with gr.Tabs(selected="stage", elem_id="tabs") as tabs:
            with gr.Tab("▶ Stage", id="stage", elem_id="tab-stage"):
                stage = Stage(stage_payload(demo_result, autoplay=True, loop=True, note=demo_note), elem_id="stage")

            with gr.Tab("✎ Your text", id="input", elem_id="tab-input"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        text = gr.Textbox(label="Text: [MASK] is one blank token, [MASK:N] is N of them, "
                                                "[MASK:?] any length", lines=3,
                                          value=EXAMPLES[0][0], elem_id="text")
                        with gr.Row():
                            tokenize_btn = gr.Button("Tokenize (then click or drag over tokens to mask them)",
                                                     elem_id="tokenize-btn", size="sm")
                            unmask_btn = gr.Button("Unmask all", elem_id="unmask-btn", size="sm")
                        picker = TokenPicker(elem_id="picker")
                        with gr.Row():
                            run_btn = gr.Button("Run ▶ (opens the stage)", variant="primary", elem_id="run-btn")
                            compare_btn = gr.Button("Compare all methods", elem_id="compare-btn")
                        with gr.Group(visible=False, elem_id="lengths-box") as lengths_box:
                            lengths_note = gr.Markdown("", elem_id="lengths-note")
                            lengths_table = gr.Dataframe(headers=LENGTH_HEADERS, interactive=False, wrap=True,
                                                         elem_id="lengths-table",
                                                         column_widths=["11%", "47%", "15%", "15%", "12%"])
                            with gr.Row():
                                lengths_pick = gr.Dropdown([], label="Length (tokens)", elem_id="lengths-pick",
                                                           scale=1)
                                lengths_btn = gr.Button("Show this length on the stage", elem_id="lengths-btn",
                                                        size="sm", scale=1)
                    with gr.Column(scale=2):
                        method = gr.Radio(list(METHODS), value=EXAMPLES[0][1], label="Decoding", elem_id="method")
                        if explorer.base_note():
                            gr.Markdown(f"⚠️ AR baseline unavailable. {explorer.base_note()}", elem_id="base-note")
                        with gr.Row():
                            order = gr.Dropdown(list(ORDER_NAMES), value="left to right", label="Order (A3 plan)",
                                                elem_id="order")
                            group_size = gr.Slider(1, 8, value=1, step=1, label="Group size s (A3 plan)",
                                                   elem_id="group-size")
                        with gr.Row():
                            strategy = gr.Radio(list(STRATEGIES), value="confidence", label="Dynamic: commit by",
                                                elem_id="strategy")
                            k = gr.Slider(1, 8, value=1, step=1, label="Tokens per step k (dynamic, diffusion)",
                                          elem_id="k")
                        with gr.Accordion("Sampling", open=False):
                            with gr.Row():
                                temperature = gr.Slider(0, 2, value=0, step=0.05, label="temperature (0 = greedy)")
                                seed = gr.Number(value=0, precision=0, label="seed")
                            with gr.Row():
                                top_k = gr.Slider(0, 100, value=0, step=1, label="top-k (0 = off)")
                                top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="top-p (1 = off)")
                        with gr.Accordion("Custom group ids (researchers)", open=False):
                            custom_groups = gr.Textbox(
                                label="One integer per position, start token first (order: custom group ids)",
                                placeholder="e.g. 0 1 1 1 3 2 2", elem_id="custom-groups")
                gr.Examples(EXAMPLES, inputs=[text, method, order, group_size, k, custom_groups],
                            label="Examples (click one, then Run)")

            with gr.Tab("⚖ Compare", id="compare", elem_id="tab-compare"):
                compare_hint = gr.Markdown(
                    "Nothing compared yet: under **✎ Your text**, press **Compare all methods**. Every method "
                    f"({', '.join(COMPARE_METHODS)}) then decodes the same blanks, and each run can be stepped "
                    "through on the stage.", elem_id="compare-hint")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        compare_table = gr.Dataframe(interactive=False, wrap=True, elem_id="compare-table",
                                                     visible=False)
                    with gr.Column(scale=2):
                        compare_plot = gr.Plot(show_label=False, elem_id="compare-plot", visible=False)
                with gr.Row(elem_id="compare-load", visible=False) as load_row:
                    gr.Markdown("**Step through:**")
                    load_btns = [gr.Button(f"▶ {m}", size="sm", elem_id=f"load-{i}", min_width=80)
                                 for i, m in enumerate(COMPARE_METHODS)]
                compare_texts = gr.Markdown("", elem_id="compare-texts")

            with gr.Tab("≋ Order lab", id="orders", elem_id="tab-orders"):
                gr.Markdown(ORDER_LAB_INTRO, elem_id="lab-intro")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        lab_text = gr.Textbox(label="A complete text (no blanks): every order scores these same tokens",
                                              lines=2, value=lab_logic.LAB_TEXT, elem_id="lab-text")
                        lab_btn = gr.Button("Score the text under every order", variant="primary", elem_id="lab-btn")
                    with gr.Column(scale=2):
                        with gr.Row():
                            lab_random = gr.Slider(0, 40, value=lab_logic.DEFAULT_RANDOM, step=1,
                                                   label="random orders N",
                                                   elem_id="lab-random")
                            lab_size = gr.Slider(1, 8, value=lab_logic.DEFAULT_GROUP_SIZE, step=1,
                                                 label="group size s", elem_id="lab-size")
                        with gr.Row():
                            lab_seed = gr.Number(value=0, precision=0, label="seed", elem_id="lab-seed", min_width=80)
                            lab_custom = gr.Textbox(label="your group ids (optional)",
                                                    placeholder="e.g. 0 2 2 1 1 3 ...", elem_id="lab-custom")
                lab_summary = gr.Markdown("Nothing scored yet: press **Score the text under every order**.",
                                          elem_id="lab-summary")
                lab_plot = gr.Plot(show_label=False, elem_id="lab-plot", visible=False)
                with gr.Row(equal_height=True):
                    lab_a = gr.Dropdown([], label="order A", elem_id="lab-a", scale=2)
                    lab_b = gr.Dropdown([], label="order B", elem_id="lab-b", scale=2)
                    lab_load_a = gr.Button("▶ Step through A", elem_id="lab-load-a", size="sm", scale=1)
                    lab_load_b = gr.Button("▶ Step through B", elem_id="lab-load-b", size="sm", scale=1)
                lab_tokens = gr.Plot(show_label=False, elem_id="lab-tokens", visible=False)
                with gr.Accordion("Mask gallery: one rule, many models", open=True, elem_id="gallery"):
                    gr.Markdown(GALLERY_INTRO)
                    gallery_plot = gr.Plot(initial_gallery[0], show_label=False, elem_id="gallery-plot")
                    gallery_table = gr.Markdown(initial_gallery[1], elem_id="gallery-table")
                    with gr.Row(equal_height=True):
                        gallery_scheme = gr.Dropdown(initial_gallery[2], value="paper_figure_1", label="scheme",
                                                     elem_id="gallery-scheme", scale=2)
                        gallery_stage = gr.Button("▶ Step through it on this text", elem_id="gallery-stage",
                                                  size="sm", scale=1)
                        gallery_use = gr.Button("✎ Use it in Your text (custom group ids)", elem_id="gallery-use",
                                                size="sm", scale=1)

            with gr.Tab("⌕ Step details", id="details", elem_id="tab-details"):
                details_summary = gr.Markdown("Step through the stage; the step it stops on is detailed here.",
                                              elem_id="details-summary")
                candidates_hint = gr.Markdown("", elem_id="candidates-hint")
                candidates = gr.Dataframe(headers=figures.CANDIDATE_HEADERS, interactive=False,
                                          elem_id="candidates", wrap=True, visible=False,
                                          label="Candidates the model weighed at this step")
                with gr.Accordion("Branch from this step: another candidate, or another order for the rest",
                                  open=False, elem_id="branching"):
                    gr.Markdown(BRANCH_INTRO, elem_id="branch-intro")
                    with gr.Row(equal_height=True):
                        br_position = gr.Dropdown([], label="position", elem_id="br-position", scale=2)
                        br_token = gr.Dropdown([], label="token (this step's candidates)", elem_id="br-token",
                                               scale=2)
                        br_token_btn = gr.Button("Branch with this token", elem_id="br-token-btn", scale=1)
                    with gr.Row(equal_height=True):
                        br_order = gr.Dropdown(branch_logic.PLAN_ORDERS, value="left to right",
                                               label="order of the rest (A3 plan)", elem_id="br-order", scale=2)
                        br_size = gr.Slider(1, 8, value=1, step=1, label="group size / tokens per step",
                                            elem_id="br-size", scale=2)
                        br_order_btn = gr.Button("Branch: decode the rest this way", elem_id="br-order-btn",
                                                 scale=1)
                    br_table = gr.Dataframe(headers=branch_logic.TREE_HEADERS, interactive=False, wrap=True,
                                            elem_id="br-tree", visible=False, label="Branches (▶ = on the stage)",
                                            column_widths=["6%", "30%", "7%", "9%", "8%", "9%", "31%"])
                    with gr.Row(equal_height=True):
                        br_pick = gr.Dropdown([], label="branch", elem_id="br-pick", scale=2)
                        br_show = gr.Button("Show this branch on the stage", elem_id="br-show", scale=1)
                with gr.Row(equal_height=False):
                    logprob = gr.Plot(show_label=False, elem_id="logprob-plot")
                    grid = gr.Plot(show_label=False, elem_id="grid-plot")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2):
                        dag = gr.Plot(show_label=False, elem_id="dag-plot")
                        reduce_toggle = gr.Checkbox(False, label="transitive reduction", elem_id="reduce")
                    with gr.Column(scale=3):
                        masks = gr.Plot(show_label=False, elem_id="mask-plot")
                        sort_toggle = gr.Checkbox(False, label="sort positions by group", elem_id="sort")
                details_verdict = gr.Markdown("", elem_id="details-verdict")
                with gr.Accordion("Attention weights at this step: what the model really attended to", open=False,
                                  elem_id="attention"):
                    gr.Markdown(ATTENTION_INTRO, elem_id="attention-intro")
                    config = loaded.model.config
                    with gr.Row(equal_height=True):
                        attn_stream = gr.Radio(["query", "content"], value="query", label="rows",
                                               elem_id="attn-stream", scale=2)
                        attn_layer = gr.Dropdown(["mean", *map(str, range(config.num_hidden_layers))], value="mean",
                                                 label="layer", elem_id="attn-layer", scale=1)
                        attn_head = gr.Dropdown(["mean", *map(str, range(config.num_attention_heads))],
                                                value="mean", label="head", elem_id="attn-head", scale=1)
                        attn_btn = gr.Button("Draw the attention at this step", elem_id="attn-btn", scale=2)
                    attn_plot = gr.Plot(show_label=False, elem_id="attn-plot", visible=False)

            with gr.Tab("⤓ Export", id="export", elem_id="tab-export"):
                gr.Markdown("The trace on the stage, and the step the stage stopped on. Each Plotly figure under "
                            "**⌕ Step details** also has a camera button that saves it as PNG.")
                with gr.Row():
                    export_gif = gr.DownloadButton("Animated GIF", elem_id="export-gif", visible=slides is not None)
                    export_player = gr.DownloadButton("HTML player", elem_id="export-player",
                                                      visible=slides is not None)
                    export_trace = gr.DownloadButton("Trace (JSON)", elem_id="export-trace")
                with gr.Row():
                    export_csv = gr.DownloadButton("Masks at this step (CSV, zip)", elem_id="export-csv")
                    export_npy = gr.DownloadButton("Masks at this step (NPY, npz)", elem_id="export-npz")
                    export_html = gr.DownloadButton("Figures at this step (HTML)", elem_id="export-html")

            with gr.Tab("? How A3 works", id="how", elem_id="tab-how"):
                gr.Markdown(HOW_A3_WORKS, latex_delimiters=LATEX, elem_id="how")

        # ------------------------------------------------------------------------- callbacks
        settings = [text, picker, method, order, group_size, strategy, k, temperature, top_k, top_p, seed,
                    custom_groups]

        def request_of(*values) -> Request:
            (text_, picker_, method_, order_, size_, strategy_, k_, temp_, top_k_, top_p_, seed_, groups_) = values
            return Request(text_, picker_, method_, order_, int(size_ or 1), strategy_, int(k_ or 1),
                           float(temp_ or 0), int(top_k_ or 0), float(top_p_ or 1), int(seed_ or 0), groups_ or "")

        def on_tokenize(text_):
            try:
                return explorer.picker_from_text(text_), ""
            except InputError as err:
                return gr.skip(), warn(err)

        def on_typed(text_):
            """Re-chip while typing; a half-typed blank ("[MASK:") waits quietly for the next key or Run."""
            try:
                return explorer.picker_from_text(text_)
            except InputError:
                return gr.skip()

        def on_unmask(picker_):
            if not picker_ or not picker_.get("mask"):
                return gr.skip()
            locked = set(picker_.get("locked", []))
            keep = [m if i in locked else False for i, m in enumerate(picker_["mask"])]
            return {**picker_, "mask": keep}

        def reset_branches():
            """A new run starts a new tree: the old branches leave the table."""
            return None, gr.Dataframe(value=None, visible=False), gr.Dropdown(choices=[], value=None)

        def on_run(*values):
            skip = (gr.skip(),) * 8
            try:
                request = request_of(*values)
                result = decode(request)
                picker_value = (explorer.picker_at_length(request.text, result.flexible.best.length)
                                if result.flexible is not None else explorer.picker_from_text(request.text))
                picker_value["mask"] = [not g for g in result.trace.given]
            except InputError as err:
                return (*skip, warn(err))
            except Exception as err:  # never a stack trace in the page
                log.exception("decode failed")
                return (*skip, warn(f"Something went wrong: {err}"))
            return (result, stage_payload(result), picker_value, *lengths_outputs(result), gr.Tabs(selected="stage"),
                    "")

        def lengths_outputs(result: Result | None):
            """(box, note, table, dropdown) for a [MASK:?] run; hidden otherwise."""
            choice = result.flexible if result is not None else None
            if choice is None:
                return gr.Group(visible=False), gr.skip(), gr.skip(), gr.skip()
            note = f"**Any-length blank:** {choice.summary()}"
            lengths = [c.length for c in choice.candidates]
            return (gr.Group(visible=True), note, gr.Dataframe(value=choice.rows(), headers=LENGTH_HEADERS),
                    gr.Dropdown(choices=lengths, value=choice.best.length))

        def on_length(result, length):
            try:
                shown = explorer.flexible_candidate(result, int(length) if length is not None else -1)
            except InputError as err:
                return gr.skip(), gr.skip(), gr.skip(), warn(err)
            return shown, stage_payload(shown), gr.Tabs(selected="stage"), ""

        def on_compare(*values):
            hidden = (gr.skip(),) * 7
            try:
                comparison = compare(request_of(*values))
            except InputError as err:
                return (*hidden, warn(err))
            except Exception as err:  # never a stack trace in the page
                log.exception("compare failed")
                return (*hidden, warn(f"Something went wrong: {err}"))
            rows = [[("—" if v is None else v) for v in row] for row in comparison.rows]
            ran = [row for row in comparison.rows if row[1] is not None]
            chart = figures.compare_figure([r[0] for r in ran], [r[2] for r in ran], [r[3] for r in ran])
            note = " ".join(f"⚠️ {n}" for n in comparison.notes)
            return (comparison.results, gr.Dataframe(value=rows, headers=comparison.headers, visible=True),
                    gr.Plot(value=chart, visible=True), comparison.texts_markdown(), gr.Row(visible=True),
                    "Each row decoded the same blanks. **Step through** loads a run onto the stage "
                    "without decoding again.", gr.Tabs(selected="compare"), (warn(note) if note else ""))

        def on_load_compared(results, index):
            method_ = COMPARE_METHODS[index]
            result = (results or {}).get(method_)
            if result is None:
                return gr.skip(), gr.skip(), gr.skip(), warn(f"{method_} has no run to show: compare first.")
            return result, stage_payload(result), gr.Tabs(selected="stage"), ""

        @gpu
        def preview_of(result, step_):
            """The step's records with every open position's candidates (returned, not only changed in
            place: on ZeroGPU this runs in another process, on a copy)."""
            explorer.preview(result, step_)
            record = result.trace.steps[step_]
            return record.candidates, record.entropy, record.confidence, result.vocab

        def on_preview(result, step_):
            """After the details render: the other open positions' candidates of a plan run, computed
            on first view (one forward), then the candidates table and the branch controls again."""
            if result is None or not 0 <= step_ < result.n_steps or has_preview(result.trace, step_):
                return gr.skip(), gr.skip(), gr.skip()
            try:
                record = result.trace.steps[step_]
                record.candidates, record.entropy, record.confidence, result.vocab = preview_of(result, step_)
            except Exception:  # the table keeps the step's own candidates; never a stack trace
                log.exception("preview failed")
                return gr.skip(), gr.skip(), gr.skip()
            headers, rows = figures.candidate_rows(result.trace, step_, result.labels, result.token_text)
            positions, tokens, _ = branch_controls(result, step_)
            return gr.Dataframe(value=rows or None, headers=headers, visible=bool(rows)), positions, tokens

        @gpu
        def attention_of(result, step_, stream_):
            return explorer.attention(result, step_, stream_)

        def on_attention(result, step_, stream_, layer_, head_):
            try:
                step_ = clamp_step(result, step_) if result is not None else -1
                weights = attention_of(result, step_, stream_)
                pick = {name: None if value in (None, "mean") else int(value)
                        for name, value in (("layer", layer_), ("head", head_))}
                fig = attention_figure(weights.probs, weights.allowed, result.labels, list(weights.rows),
                                       stream=weights.stream, step=step_, **pick)
            except InputError as err:
                return gr.skip(), warn(err)
            except Exception as err:  # never a stack trace in the page
                log.exception("attention failed")
                return gr.skip(), warn(f"Something went wrong: {err}")
            return gr.Plot(value=fig, visible=True), ""

        def branch_controls(result, step_):
            """The branch controls for the step on show: its positions, their candidates, what can follow."""
            positions = branch_logic.open_positions(result, step_)
            first = positions[0][1] if positions else None
            tokens = branch_logic.token_choices(result, step_, first)
            orders, label = branch_logic.continuation_choices(result)
            return (gr.Dropdown(choices=positions, value=first),
                    gr.Dropdown(choices=tokens, value=tokens[1][1] if len(tokens) > 1 else None),
                    gr.Dropdown(choices=orders, value=orders[0], label=label))

        def tree_outputs(tree, shown):
            rows = branch_logic.tree_rows(explorer, tree, shown)
            picks = [(row[1], i) for i, row in enumerate(rows)]
            current = next((i for i, row in enumerate(rows) if str(row[0]).startswith("▶")), None)
            return (gr.Dataframe(value=rows or None, headers=branch_logic.TREE_HEADERS, visible=bool(rows)),
                    gr.Dropdown(choices=picks, value=current))

        @gpu
        def branch_of(tree, result, step_, **change):
            return branch_logic.branch(explorer, tree, result, step_, **change)

        def on_branch(tree, result, step_, change):
            skip = (gr.skip(),) * 6
            try:
                tree, shown = branch_of(tree, result, clamp_step(result, step_) if result is not None else -1,
                                        **change)
            except InputError as err:
                return (*skip, warn(err))
            except Exception as err:  # never a stack trace in the page
                log.exception("branch failed")
                return (*skip, warn(f"Something went wrong: {err}"))
            return (tree, shown, stage_payload(shown), *tree_outputs(tree, shown), gr.Tabs(selected="stage"), "")

        def on_show_branch(tree, index):
            if tree is None or index is None:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), warn("No branch yet: branch from a step first.")
            try:
                shown = branch_logic.branch_result(explorer, tree, index, tree_method(tree))
            except InputError as err:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), warn(err)
            return shown, stage_payload(shown), tree_outputs(tree, shown)[0], gr.Tabs(selected="stage"), ""

        def tree_method(tree) -> str:
            return next(name for name, mode in METHODS.items() if mode == tree[0].trace.mode)

        def on_details(result, step_, reduce_, sort_):
            if result is None:
                return (gr.skip(),) * 12
            step_ = clamp_step(result, step_)
            rendered = render_step(result, step_, reduce=reduce_, sort_by_group=sort_)
            headers, rows = rendered.candidates
            hint = ("Before the first step nothing has been predicted yet: step forward (→) on the stage to see "
                    "the candidates the model weighed." if not rows else "")
            return (f"**{result.method}** · {rendered.summary}", hint,
                    gr.Dataframe(value=rows or None, headers=headers, visible=bool(rows)), rendered.logprob,
                    rendered.grid, rendered.dag, rendered.masks, explorer.verdict(result, step_), step_,
                    *branch_controls(result, step_))

        def on_step_settled(result, reduce_, sort_, evt: gr.EventData):
            data = getattr(evt, "_data", None) or {}
            return on_details(result, data.get("step", -1), reduce_, sort_)

        model_events = dict(concurrency_id="model", concurrency_limit=2 if loaded.device.type == "cuda" else 1)
        details_outputs = [details_summary, candidates_hint, candidates, logprob, grid, dag, masks, details_verdict,
                           details_step, br_position, br_token, br_order]
        tokenize_btn.click(on_tokenize, text, [picker, warning], api_visibility="private")
        text.submit(on_tokenize, text, [picker, warning], api_visibility="private")
        text.input(on_typed, text, picker, trigger_mode="always_last", show_progress="hidden",
                   api_visibility="private")
        unmask_btn.click(on_unmask, picker, picker, api_visibility="private")
        run_btn.click(on_run, settings, [result_state, stage, picker, lengths_box, lengths_note, lengths_table,
                                         lengths_pick, tabs, warning], api_visibility="private", **model_events
                      ).then(reset_branches, None, [tree_state, br_table, br_pick], api_visibility="private",
                             queue=False)
        lengths_btn.click(on_length, [result_state, lengths_pick], [result_state, stage, tabs, warning],
                          api_visibility="private")
        compare_btn.click(on_compare, settings,
                          [compare_state, compare_table, compare_plot, compare_texts, load_row, compare_hint, tabs,
                           warning],
                          api_visibility="private", **model_events)
        for i, btn in enumerate(load_btns):
            btn.click(lambda results, i=i: on_load_compared(results, i), compare_state,
                      [result_state, stage, tabs, warning], api_visibility="private")
        stage.step_settled(on_step_settled, [result_state, reduce_toggle, sort_toggle], details_outputs,
                           trigger_mode="always_last", show_progress="hidden", concurrency_limit=None,
                           api_visibility="private").then(
            on_preview, [result_state, details_step], [candidates, br_position, br_token], show_progress="hidden",
            api_visibility="private", **model_events)
        stage.edit(lambda: gr.Tabs(selected="input"), None, tabs, api_visibility="private", queue=False)
        gr.on([reduce_toggle.change, sort_toggle.change], on_details,
              [result_state, details_step, reduce_toggle, sort_toggle], details_outputs,
              trigger_mode="always_last", show_progress="hidden", concurrency_limit=None, api_visibility="private")

        def on_position(result, step_, position):
            tokens = branch_logic.token_choices(result, clamp_step(result, step_) if result is not None else -1,
                                                position)
            return gr.Dropdown(choices=tokens, value=tokens[1][1] if len(tokens) > 1 else
                               (tokens[0][1] if tokens else None))

        br_position.change(on_position, [result_state, details_step, br_position], br_token,
                           api_visibility="private", show_progress="hidden")
        branch_outputs = [tree_state, result_state, stage, br_table, br_pick, tabs, warning]
        br_token_btn.click(lambda t, r, s_, p_, k_: on_branch(t, r, s_, {"position": p_, "token": k_}),
                           [tree_state, result_state, details_step, br_position, br_token], branch_outputs,
                           api_visibility="private", **model_events)
        br_order_btn.click(lambda t, r, s_, o_, z_: on_branch(t, r, s_, {"order": o_, "group_size": z_}),
                           [tree_state, result_state, details_step, br_order, br_size], branch_outputs,
                           api_visibility="private", **model_events)
        br_show.click(on_show_branch, [tree_state, br_pick], [result_state, stage, br_table, tabs, warning],
                      api_visibility="private")
        attn_btn.click(on_attention, [result_state, details_step, attn_stream, attn_layer, attn_head],
                       [attn_plot, warning], api_visibility="private", **model_events)

        export_trace.click(lambda r: export(r, "trace.json", explorer.trace_json), result_state, export_trace,
                           api_visibility="private")
        export_csv.click(lambda r, s: export(r, f"masks_step{s}.zip", lambda x: explorer.masks_csv(x, int(s))),
                         [result_state, details_step], export_csv, api_visibility="private")
        export_npy.click(lambda r, s: export(r, f"masks_step{s}.npz", lambda x: explorer.masks_npz(x, int(s))),
                         [result_state, details_step], export_npy, api_visibility="private")
        export_html.click(lambda r, s, red, srt: export(r, f"figures_step{s}.html",
                                                        lambda x: figures_html(x, s, red, srt)),
                          [result_state, details_step, reduce_toggle, sort_toggle], export_html,
                          api_visibility="private")
        if slides is not None:
            export_gif.click(lambda r: export_file(r, "a3-playback.gif", explorer, slides.export_gif), result_state,
                             export_gif, api_visibility="private")
            export_player.click(lambda r: export_file(r, "a3-player.html", explorer, slides.export_player),
                                result_state, export_player, api_visibility="private")

        def infill(text: str, mode: str = "A3 plan", seed: int = 0) -> tuple[str, str]:
            """Fill the [MASK] / [MASK:N] blanks of `text` with the named method (A3 plan, A3 dynamic,
            official dynamic, diffusion, one-step parallel, AR baseline); returns (filled text, trace as JSON)."""
            try:
                return gpu(explorer.infill)(text, mode, int(seed))
            except InputError as err:
                raise gr.Error(str(err)) from None

        gr.api(infill, api_name="infill", **model_events)

        # ------------------------------------------------------------------------- order lab
        def on_lab(text_, n_random, size, seed_, custom):
            skip = (gr.skip(),) * 10
            try:
                lab = compute_lab(text_, n_random, size, seed_, custom)
                shown = gallery_outputs(explorer, text_, int(size or 4), int(seed_ or 0))
            except InputError as err:
                return (*skip, warn(err))
            except Exception as err:  # never a stack trace in the page
                log.exception("order lab failed")
                return (*skip, warn(f"Something went wrong: {err}"))
            best, worst = lab.best(), lab.worst()
            plot = lab_logic.distribution_figure(lab.names, [o.logp for o in lab.orders],
                                                 [o.n_scored for o in lab.orders],
                                                 ar_logp=lab.ar[0] if lab.ar else None)
            tokens_ = lab_logic.per_token_figure(lab.labels, best, worst)
            return (lab, lab_logic.summary_markdown(lab), gr.Plot(value=plot, visible=True),
                    gr.Dropdown(choices=lab.names, value=best.name), gr.Dropdown(choices=lab.names, value=worst.name),
                    gr.Plot(value=tokens_, visible=True), shown[0], shown[1],
                    gr.Dropdown(choices=shown[2]), "")

        def on_pair(lab, a, b):
            if lab is None or not a or not b:
                return gr.skip()
            try:
                return gr.Plot(value=lab_logic.per_token_figure(lab.labels, lab.get(a), lab.get(b)), visible=True)
            except InputError as err:
                warn(err)
                return gr.skip()

        def onto_stage(make_result, what: str):
            """(result, stage, tabs, warning) for a teacher-forced result put on the stage."""
            try:
                result = stepper(make_result)
            except InputError as err:
                return gr.skip(), gr.skip(), gr.skip(), warn(err)
            except Exception as err:  # never a stack trace in the page
                log.exception("%s failed", what)
                return gr.skip(), gr.skip(), gr.skip(), warn(f"Something went wrong: {err}")
            return result, stage_payload(result), gr.Tabs(selected="stage"), ""

        def on_load_order(lab, name):
            return onto_stage(lambda: lab_logic.load_order(explorer, lab, name), "order load")

        def on_gallery_stage(text_, name, size, seed_):
            return onto_stage(lambda: lab_logic.load_scheme(explorer, text_, name, group_size=int(size or 4),
                                                            seed=int(seed_ or 0))[0], "gallery load")

        def on_gallery_use(text_, name, size, seed_):
            skip = (gr.skip(),) * 6
            try:
                _, schemes = lab_logic.gallery_for(explorer, text_, group_size=int(size or 4), seed=int(seed_ or 0))
                scheme = next((s for s in schemes if s.name == name), None)
                if scheme is None:
                    raise InputError(f"Unknown scheme {name!r}: pick one from the list.")
                picker_value = lab_logic.scheme_picker(explorer, text_, scheme)
            except InputError as err:
                return (*skip, warn(err))
            return (text_, picker_value, "A3 plan", "custom group ids", " ".join(map(str, scheme.group_ids)),
                    gr.Tabs(selected="input"), "")

        lab_btn.click(on_lab, [lab_text, lab_random, lab_size, lab_seed, lab_custom],
                      [lab_state, lab_summary, lab_plot, lab_a, lab_b, lab_tokens, gallery_plot, gallery_table,
                       gallery_scheme, warning], api_visibility="private", **model_events)
        gr.on([lab_a.input, lab_b.input], on_pair, [lab_state, lab_a, lab_b], lab_tokens,
              trigger_mode="always_last", api_visibility="private")
        lab_load_a.click(on_load_order, [lab_state, lab_a], [result_state, stage, tabs, warning],
                         api_visibility="private", **model_events)
        lab_load_b.click(on_load_order, [lab_state, lab_b], [result_state, stage, tabs, warning],
                         api_visibility="private", **model_events)
        gallery_stage.click(on_gallery_stage, [lab_text, gallery_scheme, lab_size, lab_seed],
                            [result_state, stage, tabs, warning], api_visibility="private", **model_events)
        gallery_use.click(on_gallery_use, [lab_text, gallery_scheme, lab_size, lab_seed],
                          [text, picker, method, order, custom_groups, tabs, warning], api_visibility="private")

        def order_likelihoods(text: str, orders_json: str = "") -> dict:
            """Exact log-likelihood of `text` (tokenized as the page does, start token first) under each order:
            `orders_json` empty = the default set (left_to_right, right_to_left, outside_in, blocks_of_4,
            random_i, random_groups_of_4_i); else a JSON list of those names and/or {"name", "group_ids"}.
            Returns {"orders": [{"name", "group_ids", "logp", "token_logps"}, ...]}; logp is the log p of every
            token after the first (lowest) group, given that group; token_logps is null there."""
            try:
                return gpu(lab_logic.api)(explorer, text, orders_json or "")
            except InputError as err:
                raise gr.Error(str(err)) from None

        gr.api(order_likelihoods, api_name="order_likelihoods", **model_events)
        page.load(on_tokenize, text, [picker, warning], api_visibility="private")
    page.queue(default_concurrency_limit=4, max_size=64)
    page.loaded_model = loaded
    return page


ORDER_LAB_INTRO = (
    "A3 gives the **exact** likelihood of a text under any grouping and order, in one forward pass. Here the "
    "same tokens are scored under many orders at once: how much does the order matter? Pick two orders to see "
    "which tokens are easy in which, and step through any order on the stage, teacher-forced (each step "
    "commits the true tokens and shows their probabilities).")
GALLERY_INTRO = (
    "Common attention schemes written as A3 group ids, at the length of the text above, each through the same "
    "two-stream rule (content: g[j] ≤ g[i], query: g[j] < g[i]) and the mask checker. Top row: content stream "
    "(the scheme's usual mask); bottom row: query stream (what predicts each token). Blue = may attend.")


def gallery_outputs(explorer: Explorer, text: str, size: int, seed: int):
    """The gallery's figure, table and scheme choices for a text (no model call)."""
    _, schemes = lab_logic.gallery_for(explorer, text, group_size=size, seed=seed)
    return (lab_logic.gallery_figure(schemes), lab_logic.gallery_markdown(schemes),
            [(s.title, s.name) for s in schemes])


def warn(message) -> str:
    gr.Warning(str(message))
    return f"⚠️ {message}"


def export(result: Result | None, name: str, make) -> str | None:
    if result is None:
        gr.Warning("Run a decoding first; there is nothing to export yet.")
        return None
    data = make(result)
    path = Path(tempfile.mkdtemp(prefix="a3-export-")) / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def export_file(result: Result | None, name: str, explorer: Explorer, write) -> str | None:
    """An export that writes its own file: `write(trace_dict, path)` (app.slides)."""
    if result is None:
        gr.Warning("Run a decoding first; there is nothing to export yet.")
        return None
    data = result.trace.to_dict(explorer.loaded.tokenizer)
    data["method"], data["model"] = result.method, result.model
    path = Path(tempfile.mkdtemp(prefix="a3-export-")) / name
    try:
        return str(write(data, path) or path)
    except Exception as err:  # never a stack trace in the page
        log.exception("export failed")
        gr.Warning(f"Export failed: {err}")
        return None


def figures_html(result: Result, step, reduce, sort) -> str:
    rendered = render_step(result, step, reduce=reduce, sort_by_group=sort)
    parts = [f"<h2>A3 Explorer · {result.method} · step {clamp_step(result, step)}</h2><p>{rendered.summary}</p>"]
    for i, fig in enumerate((rendered.grid, rendered.dag, rendered.masks, rendered.logprob)):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    return "<html><head><meta charset='utf-8'></head><body>" + "".join(parts) + "</body></html>"


def header_markdown(explorer: Explorer, device_note: str) -> str:
    loaded = explorer.loaded
    line = ("**A3 Explorer** · any-order, any-subset autoregressive generation "
            "([arXiv 2601.13228](https://arxiv.org/abs/2601.13228)) · "
            f"model: {loaded.description} · given tokens: {explorer.given_grouping} · "
            f"{device_note or 'cpu'}")
    if not loaded.trained:
        line += f"\n\n> ⚠️ {loaded.notes[0] if loaded.notes else 'This model is untrained.'}"
    return line

"""≋ Order lab: one complete text scored under many orders at once (app.order_lab), two orders compared
token by token, any order stepped through on the stage (teacher-forced); and the mask gallery, common
attention schemes written as A3 group ids."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from app import order_lab as lab_logic
from app.session import Explorer, InputError
from app.ui.model_calls import ModelCalls
from app.ui.shared import SERVER_ERROR, to_stage, warn

log = logging.getLogger(__name__)

ORDER_LAB_INTRO = (
    "A3 gives the **exact** likelihood of a text under any grouping and order, in one forward pass. Here the "
    "same tokens are scored under many orders at once: how much does the order matter? Pick two orders to see "
    "which tokens are easy in which, and step through any order on the stage, teacher-forced (each step "
    "commits the true tokens and shows their probabilities).")
GALLERY_INTRO = (
    "Common attention schemes written as A3 group ids, at the length of the text above, each through the same "
    "two-stream rule (content: g[j] ≤ g[i], query: g[j] < g[i]) and the mask checker. Top row: content stream "
    "(the scheme's usual mask); bottom row: query stream (what predicts each token). Blue = may attend.")


@dataclass(frozen=True)
class LabTab:
    text: gr.Textbox
    button: gr.Button
    n_random: gr.Slider
    group_size: gr.Slider
    seed: gr.Number
    custom: gr.Textbox
    summary: gr.Markdown
    plot: gr.Plot  # log p of every order
    order_a: gr.Dropdown
    order_b: gr.Dropdown
    load_a: gr.Button
    load_b: gr.Button
    tokens: gr.Plot  # A against B, token by token
    gallery_plot: gr.Plot
    gallery_table: gr.Markdown
    gallery_scheme: gr.Dropdown
    gallery_stage: gr.Button
    gallery_use: gr.Button

    @property
    def scheme_inputs(self) -> list:
        """(text, scheme, group size, seed): what a gallery scheme is built from."""
        return [self.text, self.gallery_scheme, self.group_size, self.seed]


def build_lab_tab(explorer: Explorer) -> LabTab:
    initial_gallery = gallery_outputs(explorer, lab_logic.LAB_TEXT, lab_logic.DEFAULT_GROUP_SIZE, 0)
    with gr.Tab("≋ Order lab", id="orders", elem_id="tab-orders"):
        gr.Markdown(ORDER_LAB_INTRO, elem_id="lab-intro")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                text = gr.Textbox(label="A complete text (no blanks): every order scores these same tokens",
                                  lines=2, value=lab_logic.LAB_TEXT, elem_id="lab-text")
                button = gr.Button("Score the text under every order", variant="primary", elem_id="lab-btn")
            with gr.Column(scale=2):
                with gr.Row():
                    n_random = gr.Slider(0, 40, value=lab_logic.DEFAULT_RANDOM, step=1, label="random orders N",
                                         elem_id="lab-random")
                    group_size = gr.Slider(1, 8, value=lab_logic.DEFAULT_GROUP_SIZE, step=1, label="group size s",
                                           elem_id="lab-size")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="seed", elem_id="lab-seed", min_width=80)
                    custom = gr.Textbox(label="your group ids (optional)", elem_id="lab-custom",
                                        placeholder="e.g. 0 2 2 1 1 3 ... (one per token, the start token's first and "
                                                    "lowest)")
        summary = gr.Markdown("Nothing scored yet: press **Score the text under every order**.",
                              elem_id="lab-summary")
        plot = gr.Plot(show_label=False, elem_id="lab-plot", visible=False)
        with gr.Row(equal_height=True):
            order_a = gr.Dropdown([], label="order A", elem_id="lab-a", scale=2)
            order_b = gr.Dropdown([], label="order B", elem_id="lab-b", scale=2)
            load_a = gr.Button("▶ Step through A", elem_id="lab-load-a", scale=1)
            load_b = gr.Button("▶ Step through B", elem_id="lab-load-b", scale=1)
        tokens = gr.Plot(show_label=False, elem_id="lab-tokens", visible=False)
        with gr.Accordion("Mask gallery: one rule, many models", open=True, elem_id="gallery"):
            gr.Markdown(GALLERY_INTRO)
            gallery_plot = gr.Plot(initial_gallery[0], show_label=False, elem_id="gallery-plot")
            gallery_table = gr.Markdown(initial_gallery[1], elem_id="gallery-table")
            with gr.Row(equal_height=True):
                gallery_scheme = gr.Dropdown(initial_gallery[2], value="paper_figure_1", label="scheme",
                                             elem_id="gallery-scheme", scale=2)
                gallery_stage = gr.Button("▶ Step through it on this text", elem_id="gallery-stage", scale=1)
                gallery_use = gr.Button("✎ Use it in Your text (custom group ids)", elem_id="gallery-use", scale=1)
    return LabTab(text, button, n_random, group_size, seed, custom, summary, plot, order_a, order_b, load_a, load_b,
                  tokens, gallery_plot, gallery_table, gallery_scheme, gallery_stage, gallery_use)


def gallery_outputs(explorer: Explorer, text: str, size: int, seed: int):
    """The gallery's figure, table and scheme choices for a text (no model call)."""
    _, schemes = lab_logic.gallery_for(explorer, text, group_size=size, seed=seed)
    return (lab_logic.gallery_figure(schemes), lab_logic.gallery_markdown(schemes),
            [(s.title, s.name) for s in schemes])


def on_pair(lab, a, b):
    """Orders A and B token by token."""
    if lab is None or not a or not b:
        return gr.skip()
    try:
        return gr.Plot(value=lab_logic.per_token_figure(lab.labels, lab.get(a), lab.get(b)), visible=True)
    except InputError as err:
        warn(err)
        return gr.skip()


def onto_stage(load, what: str):
    """(result, stage, tabs, warning) for the teacher-forced result `load()` makes, put on the stage."""
    try:
        result = load()
    except InputError as err:
        return gr.skip(), gr.skip(), gr.skip(), warn(err)
    except Exception:  # never a stack trace in the page
        log.exception("%s failed", what)
        return gr.skip(), gr.skip(), gr.skip(), warn(SERVER_ERROR)
    return to_stage(result)


class LabCallbacks:
    def __init__(self, calls: ModelCalls):
        self.calls, self.explorer = calls, calls.explorer

    def on_lab(self, text, n_random, size, seed, custom):
        """(lab, summary, plot, order A, order B, tokens, gallery plot, table, scheme, warning)."""
        skip = (gr.skip(),) * 9
        try:
            lab = self.calls.order_lab(text, n_random, size, seed, custom)
            shown = gallery_outputs(self.explorer, text, int(size or 4), int(seed or 0))
        except InputError as err:
            return (*skip, warn(err))
        except Exception:  # never a stack trace in the page
            log.exception("order lab failed")
            return (*skip, warn(SERVER_ERROR))
        best, worst = lab.best(), lab.worst()
        plot = lab_logic.distribution_figure(lab.names, [o.logp for o in lab.orders], [o.n_scored for o in lab.orders],
                                             ar_logp=lab.ar[0] if lab.ar else None)
        tokens = lab_logic.per_token_figure(lab.labels, best, worst)
        choices = [(lab_logic.order_label(name), name) for name in lab.names]  # the page's words; the ids as values
        return (lab, lab_logic.summary_markdown(lab), gr.Plot(value=plot, visible=True),
                gr.Dropdown(choices=choices, value=best.name), gr.Dropdown(choices=choices, value=worst.name),
                gr.Plot(value=tokens, visible=True), shown[0], shown[1], gr.Dropdown(choices=shown[2]), "")

    def on_load_order(self, lab, name):
        return onto_stage(lambda: self.calls.load_order(lab, name), "order load")

    def on_gallery_stage(self, text, name, size, seed):
        return onto_stage(lambda: self.calls.load_scheme(text, name, size, seed), "gallery load")

    def on_gallery_use(self, text, name, size, seed):
        """(text, picker, chips for, method, order, custom group ids, tabs, warning): the scheme in Your
        text (`chips for`: the text its chips belong to, see TextCallbacks.on_typed)."""
        skip = (gr.skip(),) * 7
        try:
            _, schemes = lab_logic.gallery_for(self.explorer, text, group_size=int(size or 4), seed=int(seed or 0))
            scheme = next((s for s in schemes if s.name == name), None)
            if scheme is None:
                raise InputError(f"Unknown scheme {name!r}: pick one from the list.")
            picker = lab_logic.scheme_picker(self.explorer, text, scheme)
        except InputError as err:
            return (*skip, warn(err))
        return (text, picker, text, "A3 plan", "custom group ids", " ".join(map(str, scheme.group_ids)),
                gr.Tabs(selected="input"), "")

"""✎ Your text: the text with its blanks, the token picker (click or drag to mask), the decoding
settings, Run and Compare; for an any-length blank ([MASK:?]) the lengths tried and the one kept; for A3
best of N the candidates, their scores and the one kept."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace

import gradio as gr

from app import figures
from app.demo_trace import DEMO_TEXT
from app.picker import TokenPicker, carry_mask, empty_value, fresh, stale
from app.session import (
    BEST_OF_N,
    BEST_OF_N_ABOUT,
    CUSTOM_IDS_BOX,
    NO_REPEAT,
    ORDER_NAMES,
    PAGE_METHODS,
    Explorer,
    InputError,
    Request,
    Result,
    markdown_text,
)
from app.stage import stage_payload
from app.ui.model_calls import ModelCalls
from app.ui.shared import SERVER_ERROR, WARNING_MARK, to_stage, warn
from model.config import METHODS, STRATEGIES
from model.flexible import ROW_HEADERS as LENGTH_HEADERS

log = logging.getLogger(__name__)

EXAMPLES = [
    # text, method, order, group size, k, custom group ids
    [DEMO_TEXT, "A3 best of N", "left to right", 1, 1, ""],  # the example the stage opens with
    [DEMO_TEXT, "A3 dynamic", "left to right", 1, 1, ""],
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
# what each example shows, as its button reads (a click sets the text and the settings in the controls)
EXAMPLE_LABELS = [  # at most 60 characters each: Gradio cuts a longer label with "..."
    "Tom's cake · a 14-token blank · A3 best of N, the default",
    "Tom's cake · A3 dynamic: the model picks the next blank",
    "A recipe · A3 plan, outside-in: both ends, then inwards",
    "The market · A3 plan in a random order, 2 tokens a step",
    "The old dog · [MASK:?]: A3 plan tries several lengths",
    "Paper's Figure 1 · A3 plan, custom group ids 0 1 1 1 3 2 2",
    "The barking dog · diffusion, 2 tokens a step",
    "The barking dog · one-step parallel: one model call",
]


# one line per decoding method, under the method list (the page's labels, model.config's descriptions)
def reads(spec) -> str:
    """Which of the settings below the method list a method reads (the others stay set for Compare's runs)."""
    read = [*(["Order", "Group size"] if spec.order else []), *(["Commit by"] if spec.strategy else []),
            *(["k"] if spec.k else []), "Sampling"]
    return "Settings it reads: " + (", ".join(read[:-1]) + " and " if len(read) > 1 else "") + read[-1] + "."


METHOD_ABOUT = {**{spec.label: f"{spec.description} {reads(spec)}" for spec in METHODS.values()},
                BEST_OF_N: f"{BEST_OF_N_ABOUT} Its decodes are fixed: of the settings below it reads only No stutter "
                           "(under Sampling)."}
BEST_HEADERS = ["candidate", "fill", "log p (whole text)", "model calls", "kept"]
METHOD_ABOUT_JS = f"(method) => {{ const about = {json.dumps(METHOD_ABOUT)}; return about[method] || ''; }}"


@dataclass(frozen=True)
class TextTab:
    text: gr.Textbox
    tokenize_btn: gr.Button
    unmask_btn: gr.Button
    picker: TokenPicker
    run_btn: gr.Button
    compare_btn: gr.Button
    lengths_box: gr.Group  # shown for an any-length blank only
    lengths_note: gr.Markdown
    lengths_table: gr.Dataframe
    lengths_pick: gr.Dropdown
    lengths_btn: gr.Button
    best_box: gr.Group  # shown for an A3 best of N run only
    best_note: gr.Markdown
    best_table: gr.Dataframe
    best_pick: gr.Dropdown
    best_btn: gr.Button
    method: gr.Radio
    method_about: gr.Markdown  # the method's one-line description
    best_cost: gr.Markdown  # what A3 best of N will cost for this text, said before it runs
    order: gr.Dropdown
    group_size: gr.Slider
    strategy: gr.Radio
    k: gr.Slider
    temperature: gr.Slider
    seed: gr.Number
    top_k: gr.Slider
    top_p: gr.Slider
    custom_groups: gr.Textbox
    no_repeat: gr.Checkbox

    @property
    def settings(self) -> list:
        """The inputs of a run, in `request_of`'s order."""
        return [self.text, self.picker, self.method, self.order, self.group_size, self.strategy, self.k,
                self.temperature, self.top_k, self.top_p, self.seed, self.custom_groups, self.no_repeat]

    @property
    def lengths(self) -> list:
        """The any-length outputs, in `lengths_outputs`' order."""
        return [self.lengths_box, self.lengths_note, self.lengths_table, self.lengths_pick]

    @property
    def best(self) -> list:
        """The best-of-N outputs, in `best_outputs`' order."""
        return [self.best_box, self.best_note, self.best_table, self.best_pick]


NO_REPEAT_LABEL = ("No stutter: the decoders may not put a word twice in a row, nor a 3-word phrase twice within "
                   "64 tokens (the text you give is left as it is)")


def first_cost(explorer: Explorer) -> str:
    """What the first example costs when its method is best of N (the page's default): said at once, before
    anything is typed ("" otherwise)."""
    if EXAMPLES[0][1] != BEST_OF_N:
        return ""
    try:
        return explorer.best_of_n_cost(EXAMPLES[0][0])
    except InputError:
        return ""


def build_text_tab(explorer: Explorer) -> TextTab:
    with gr.Tab("✎ Your text", id="input", elem_id="tab-input"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                text = gr.Textbox(label="Text: [MASK] is one blank token, [MASK:N] is N of them, [MASK:?] any length",
                                  lines=3, value=EXAMPLES[0][0], elem_id="text")
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
                    with gr.Row(equal_height=True):
                        lengths_pick = gr.Dropdown([], label="Length (tokens)", elem_id="lengths-pick", scale=1)
                        lengths_btn = gr.Button("Show this length on the stage", elem_id="lengths-btn", scale=1)
                with gr.Group(visible=False, elem_id="best-box") as best_box:
                    best_note = gr.Markdown("", elem_id="best-note")
                    # a plain table, not a gr.Dataframe: a Dataframe filled while its tab is hidden (Run opens the
                    # stage) can draw only its first row when the tab is shown again
                    best_table = gr.Markdown("", elem_id="best-table")
                    with gr.Row(equal_height=True):
                        best_pick = gr.Dropdown([], label="Candidate", elem_id="best-pick", scale=1)
                        best_btn = gr.Button("Show this candidate on the stage", elem_id="best-btn", scale=1)
            with gr.Column(scale=2):
                method = gr.Radio(list(PAGE_METHODS), value=EXAMPLES[0][1], label="Decoding", elem_id="method")
                method_about = gr.Markdown(METHOD_ABOUT.get(EXAMPLES[0][1], ""), elem_id="method-about")
                best_cost = gr.Markdown(first_cost(explorer), visible=bool(first_cost(explorer)),
                                        elem_id="best-cost")
                if explorer.base_note():
                    gr.Markdown(f"⚠️ AR baseline unavailable. {explorer.base_note()}", elem_id="base-note")
                with gr.Row():
                    order = gr.Dropdown(list(ORDER_NAMES), value="left to right", label="Order (A3 plan)",
                                        elem_id="order")
                    group_size = gr.Slider(1, 8, value=1, step=1, label="Group size s (A3 plan)",
                                           elem_id="group-size")
                with gr.Row():
                    strategy = gr.Radio(list(STRATEGIES), value="confidence", label="Commit by (dynamic, diffusion)",
                                        elem_id="strategy")
                    k = gr.Slider(1, 8, value=1, step=1, elem_id="k",
                                  label="Tokens per step k (dynamic, diffusion, one-step)")
                with gr.Accordion("Sampling", open=False):
                    with gr.Row():
                        temperature = gr.Slider(0, 2, value=0, step=0.05, label="temperature (0 = greedy)",
                                                elem_id="temperature")
                        seed = gr.Number(value=0, precision=0, label="seed")
                    with gr.Row():
                        top_k = gr.Slider(0, 100, value=0, step=1, label="top-k (0 = off)")
                        top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="top-p (1 = off)", elem_id="top-p")
                    no_repeat = gr.Checkbox(value=bool(NO_REPEAT), elem_id="no-repeat", label=NO_REPEAT_LABEL)
                with gr.Accordion(CUSTOM_IDS_BOX, open=False, elem_id="custom-box") as custom_box:
                    custom_groups = gr.Textbox(
                        label="One integer per position, start token first (order: custom group ids)",
                        placeholder="e.g. 0 1 1 1 3 2 2", elem_id="custom-groups")
                # ids in use are never hidden: choosing the order, an example's ids or the mask gallery's open them
                gr.on([order.change, custom_groups.change], open_custom_ids, order, custom_box,
                      queue=False, show_progress="hidden", api_visibility="private")
        gr.Examples(EXAMPLES, inputs=[text, method, order, group_size, k, custom_groups],
                    example_labels=EXAMPLE_LABELS, label="Examples (click one, then Run)", elem_id="examples")
    return TextTab(text, tokenize_btn, unmask_btn, picker, run_btn, compare_btn, lengths_box, lengths_note,
                   lengths_table, lengths_pick, lengths_btn, best_box, best_note, best_table, best_pick, best_btn,
                   method, method_about, best_cost, order, group_size, strategy, k,
                   temperature, seed, top_k, top_p, custom_groups, no_repeat)


def request_of(*values) -> Request:
    """The Request of the values of `TextTab.settings` (a script that sends no no-repeat switch gets the page's
    default)."""
    (text, picker, method, order, size, strategy, k, temperature, top_k, top_p, seed, groups, *rest) = values
    no_repeat = NO_REPEAT if not rest or rest[0] is None else (NO_REPEAT or 3) * bool(rest[0])
    return Request(text, picker, method, order, int(size or 1), strategy, int(k or 1), float(temperature or 0),
                   int(top_k or 0), float(top_p or 1), int(seed or 0), groups or "", no_repeat)


def open_custom_ids(order):
    """The custom group ids' accordion, open while the order is custom group ids (it would hide the ids the
    run uses, and a wrong count of them could not be seen); left as it is otherwise."""
    return gr.Accordion(open=True) if ORDER_NAMES.get(order) == "custom" else gr.skip()


def hide_run_tables() -> tuple:
    """(lengths box, best of N box), both hidden: the text they were of has been edited."""
    return gr.Group(visible=False), gr.Group(visible=False)


def on_unmask(picker):
    if not picker or not picker.get("mask"):
        return gr.skip()
    locked = set(picker.get("locked", []))
    keep = [m if i in locked else False for i, m in enumerate(picker["mask"])]
    return {**picker, "mask": keep}


def lengths_outputs(result: Result | None):
    """(box, note, table, dropdown) for a [MASK:?] run; hidden otherwise."""
    choice = result.flexible if result is not None else None
    if choice is None:
        return gr.Group(visible=False), gr.skip(), gr.skip(), gr.skip()
    note = f"**Any-length blank:** {choice.summary()}"
    lengths = [c.length for c in choice.candidates]
    rows = [[length, figures.one_line(fill), *rest] for length, fill, *rest in choice.rows()]
    return (gr.Group(visible=True), note, gr.Dataframe(value=rows, headers=LENGTH_HEADERS),
            gr.Dropdown(choices=lengths, value=choice.best.length))


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """Rows as a Markdown table, each cell's text shown as it is (no Markdown or HTML read in a fill)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(markdown_text(v) for v in row) + " |" for row in rows])


def best_outputs(explorer: Explorer, result: Result | None):
    """(box, note, table, dropdown) for an A3 best of N run; hidden otherwise."""
    found = result.best_of_n if result is not None else None
    if found is None:
        return gr.Group(visible=False), gr.skip(), gr.skip(), gr.skip()
    note = (f"**A3 best of N:** {len(found.candidates)} decodes, {found.model_calls} model calls in all; kept "
            f"*{found.best.name}*, the whole text the model finds most likely (exact log p, left to right).")
    _, rows = explorer.best_of_n_rows(result)
    return (gr.Group(visible=True), note, markdown_table(BEST_HEADERS, rows),
            gr.Dropdown(choices=[(c.name, i) for i, c in enumerate(found.candidates)], value=found.best_index))


class TextCallbacks:
    """The tab's callbacks that need the model."""

    def __init__(self, calls: ModelCalls):
        self.calls, self.explorer = calls, calls.explorer

    def on_tokenize(self, text):
        """(picker, warning) for the text."""
        try:
            return self.explorer.picker_from_text(text), ""
        except InputError as err:
            return gr.skip(), warn(err)

    def on_loaded(self, text):
        """(picker, warning) when the page loads: the example's chips. Its warning line is only ever set, never
        cleared: on a busy server the load can answer after a visitor's Run has warned."""
        picker, warning = self.on_tokenize(text)
        return picker, warning or gr.skip()

    def on_typed(self, text, picker, chips_for, warning=""):
        """(picker, chips for, warning) when the text changes (typing, a paste, an example): new chips, the
        masks clicked before kept outside the edit when the new text is an edit of the old one (`carry_mask`).
        An empty text clears the chips. A text that is not valid (a half-typed blank "[MASK:", a blank too
        long) keeps the chips, so they do not flicker while a blank is typed, but marks them out of date
        with the reason (`app.picker.stale`). Chips the server sent with the text itself (`chips_for` is
        that text: Order lab's "use it") stay: this event may read the picker as it was before them. A text
        that is valid again, or empty, clears the warning line: the visitor has moved on from whatever it said
        (most often a Run's warning about the text now corrected). One still not valid puts its own reason in
        place of a warning on show (that warning was about the text before the edit), without a toast, and
        leaves an empty line empty (a half-typed blank is no news: the chips' note says it); a Run that
        answered meanwhile warned of this very text."""
        keep = gr.skip()
        if text == chips_for:
            return gr.skip(), None, keep
        if isinstance(picker, dict) and picker.get("text") == text:  # back to the text of the chips
            return (fresh(picker) if "stale" in picker else gr.skip()), None, ""
        if not (text or "").strip():  # nothing left that a warning could be about
            return empty_value(), None, ""
        try:
            return carry_mask(picker, self.explorer.picker_from_text(text)), None, ""
        except InputError as err:
            return stale(picker, str(err)), None, (f"{WARNING_MARK} {err}" if warning else keep)

    def request(self, *values) -> Request:
        """The Request of `TextTab.settings`' values, its chips moved onto its text when they were made
        for an earlier version of it (a click that came before the chips caught up still counts)."""
        request = request_of(*values)
        picker = request.picker
        if isinstance(picker, dict) and picker.get("text") != request.text:
            request = replace(request, picker=carry_mask(picker, self.explorer.picker_from_text(request.text)))
        return request

    def on_run(self, *values):
        """(result, stage, the run's chips, *lengths, tabs, warning) for the values of `TextTab.settings`; the
        chips go to the picker in `on_ran`, if the text is still the one the run read."""
        skip = (gr.skip(),) * 12
        try:
            request = self.request(*values)
            result = self.calls.decode(request)
            picker = (self.explorer.picker_at_length(request.text, result.flexible.best.length)
                      if result.flexible is not None else self.explorer.picker_from_text(request.text))
            picker["mask"] = [not g for g in result.trace.given]
        except InputError as err:
            return (*skip, warn(err))
        except Exception:  # never a stack trace in the page
            log.exception("decode failed")
            return (*skip, warn(SERVER_ERROR))
        return (result, stage_payload(result), picker, *lengths_outputs(result), *best_outputs(self.explorer, result),
                gr.Tabs(selected="stage"), "")

    @staticmethod
    def on_ran(text, ran_chips):
        """(lengths box, best of N box, picker, ran chips) once a Run has answered with `ran_chips` (the chips of
        the text it read, its masks as decoded; None when it failed). The text still the one it read: those
        chips onto the picker. A text edited while it decoded: the picker keeps the chips it has (of the text
        in the box, and any clicks on them), and the run's tables hide, as after an edit. Either way the
        state is emptied."""
        if not isinstance(ran_chips, dict):
            return gr.skip(), gr.skip(), gr.skip(), None
        if ran_chips.get("text") == text:
            return gr.skip(), gr.skip(), ran_chips, None
        return (*hide_run_tables(), gr.skip(), None)

    def on_best(self, result, index):
        """Another candidate of an A3 best of N run onto the stage."""
        try:
            shown = self.explorer.best_of_n_candidate(result, int(index) if index is not None else -1)
        except InputError as err:
            return gr.skip(), gr.skip(), gr.skip(), warn(err)
        return to_stage(shown)

    def on_cost(self, method, text, picker=None):
        """What A3 best of N will cost for this text and its chips (the tokens clicked open count), shown under
        the method list while it is chosen, and kept up with typing and clicks. A text that is not valid hides
        it: what is wrong is said under the chips, and after a Run above the tabs."""
        if method != BEST_OF_N:
            return gr.Markdown(visible=False)
        try:
            return gr.Markdown(self.explorer.best_of_n_cost(text, picker if isinstance(picker, dict) else None),
                               visible=True)
        except InputError:
            return gr.Markdown(visible=False)

    def on_length(self, result, length):
        """Another length of an any-length blank onto the stage."""
        try:
            shown = self.explorer.flexible_candidate(result, int(length) if length is not None else -1)
        except InputError as err:
            return gr.skip(), gr.skip(), gr.skip(), warn(err)
        return to_stage(shown)

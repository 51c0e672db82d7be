"""Every event of the page, in one place. Each tab module builds its components and holds the callbacks
that serve them; here they are connected. All UI events are private (`api_visibility="private"`): the
public API is the two named endpoints of app.ui.api.

Events that run the model share one queue, `concurrency_id="model"` (`model_events`); the Step details'
renders (no model) share another, `concurrency_id="details"`, of one, so they land in the order they were
asked for (`wire_details_tab`). Tokenize, Enter in the text and the page load share `concurrency_id="tokenize"`
(`TOKENIZE`)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.stage_component import Stage
from app.ui import api
from app.ui.compare_tab import CompareCallbacks, CompareTab, load_compared
from app.ui.details_tab import SETTLED_STEP, STEP_OF_STAGE, DetailsCallbacks, DetailsTab, on_position, reset_branches
from app.ui.export_tab import NAME_THE_STEP, STEP_ON_SCREEN, ExportCallbacks, ExportTab
from app.ui.lab_tab import LabCallbacks, LabTab, on_pair
from app.ui.model_calls import ModelCalls
from app.ui.shared import States
from app.ui.stage_tab import open_text_tab
from app.ui.text_tab import METHOD_ABOUT_JS, TextCallbacks, TextTab, hide_run_tables, on_unmask


@dataclass(frozen=True)
class Page:
    """The components of the page that events read or write."""

    states: States
    warning: gr.Markdown
    tabs: gr.Tabs
    stage: Stage
    text: TextTab
    compare: CompareTab
    lab: LabTab
    details: DetailsTab
    export: ExportTab

    @property
    def onto_stage(self) -> list:
        """The outputs of a callback that puts a result on the stage (app.ui.shared.to_stage)."""
        return [self.states.result, self.stage, self.tabs, self.warning]


TOKENIZE = dict(concurrency_id="tokenize", concurrency_limit=1)  # Tokenize, Enter in the text, the page load


def model_events(calls: ModelCalls) -> dict:
    """The queue of every event that runs the model: one at a time on CPU, two on a GPU."""
    return dict(concurrency_id="model", concurrency_limit=2 if calls.explorer.loaded.device.type == "cuda" else 1)


def wire_events(blocks: gr.Blocks, page: Page, calls: ModelCalls, slides=None) -> None:
    """Connect the page's events (inside `blocks`' context). `slides` is app.slides, or None without it."""
    model = model_events(calls)
    text_calls = TextCallbacks(calls)
    wire_text_tab(page, calls, text_calls.on_tokenize, model)
    wire_compare_tab(page, calls, model)
    wire_details_tab(page, calls, model)
    wire_export_tab(page, ExportCallbacks(calls.explorer, slides))
    gr.api(api.infill_endpoint(calls), api_name="infill", **model)
    wire_lab_tab(page, calls, model)
    gr.api(api.order_likelihoods_endpoint(calls), api_name="order_likelihoods", **model)
    # the page load shares the Tokenize queue; it never clears the warning line (a visitor's Run may have set one
    # while the load waited on a busy server)
    blocks.load(text_calls.on_loaded, page.text.text, [page.text.picker, page.warning], api_visibility="private",
                **TOKENIZE)


def wire_text_tab(page: Page, calls: ModelCalls, tokenize, model: dict) -> None:
    t, states, branch = page.text, page.states, page.details.branch
    on = TextCallbacks(calls)
    t.tokenize_btn.click(tokenize, t.text, [t.picker, page.warning], api_visibility="private", **TOKENIZE)
    t.text.submit(tokenize, t.text, [t.picker, page.warning], api_visibility="private", **TOKENIZE)
    # .change, not .input: a paste and an example click change the text too
    t.text.change(on.on_typed, [t.text, t.picker, states.chips_for, page.warning],
                  [t.picker, states.chips_for, page.warning],
                  trigger_mode="always_last", show_progress="hidden", api_visibility="private")
    # the lengths' and best of N's tables are of the last run's text: an edited text hides them (they read as
    # the new text's, a browser walk said); the next Run shows its own
    t.text.change(hide_run_tables, None, [t.lengths_box, t.best_box], show_progress="hidden", queue=False,
                  api_visibility="private")
    t.method.change(None, t.method, t.method_about, js=METHOD_ABOUT_JS, api_visibility="private", queue=False)
    # a change of order or ids clears the warning line: most often its warning was about them ("Order is set to
    # custom group ids: …"); nothing but a click (or the gallery's "use it", which clears it too) changes them
    gr.on([t.order.change, t.custom_groups.change], None, None, page.warning, js="() => ''",
          api_visibility="private", queue=False, show_progress="hidden")
    t.unmask_btn.click(on_unmask, t.picker, t.picker, api_visibility="private")
    # the run's chips go to the picker only if the text is still the one the run read (`on_ran`): a text edited
    # while it decoded keeps the chips it has (and any clicks on them), and the run's tables hide
    t.run_btn.click(on.on_run, t.settings,
                    [states.result, page.stage, states.ran_chips, *t.lengths, *t.best, page.tabs, page.warning],
                    api_visibility="private", **model
                    ).then(reset_branches, None, [states.tree, branch.table, branch.pick], api_visibility="private",
                           queue=False
                           ).then(on.on_ran, [t.text, states.ran_chips], [t.lengths_box, t.best_box, t.picker,
                                                                          states.ran_chips],
                                  show_progress="hidden", api_visibility="private", queue=False)
    t.lengths_btn.click(on.on_length, [states.result, t.lengths_pick], page.onto_stage, api_visibility="private")
    t.best_btn.click(on.on_best, [states.result, t.best_pick], page.onto_stage, api_visibility="private")
    # outside the queue: a tokenization per keystroke or click must never take a visitor's place in it
    gr.on([t.method.change, t.text.change, t.picker.change], on.on_cost, [t.method, t.text, t.picker], t.best_cost,
          show_progress="hidden", trigger_mode="always_last", api_visibility="private", queue=False)


def wire_compare_tab(page: Page, calls: ModelCalls, model: dict) -> None:
    c, states = page.compare, page.states
    page.text.compare_btn.click(CompareCallbacks(calls).on_compare, page.text.settings,
                                [states.compared, *c.outputs, page.tabs, page.warning],
                                api_visibility="private", **model)
    for i, button in enumerate(c.load_btns):
        button.click(load_compared(i), states.compared, page.onto_stage, api_visibility="private")


def wire_details_tab(page: Page, calls: ModelCalls, model: dict) -> None:
    d, b, a, states = page.details, page.details.branch, page.details.attention, page.states
    on = DetailsCallbacks(calls)
    # The details' renders (no model) run one at a time, in the order they were asked for, apart from the
    # model's queue: run side by side, a render of an earlier step could land after a later one's and leave
    # the tab on a step the stage has left (a browser walk: stage at step 3, details at step 1).
    in_order = dict(concurrency_id="details", concurrency_limit=1)
    outputs = d.outputs(states.details_step)
    preview = dict(fn=on.on_preview, inputs=[states.result, states.details_step],
                   outputs=[d.candidates, b.position, b.token], show_progress="hidden", api_visibility="private",
                   **model)
    # The step comes from the page as the event is sent (SETTLED_STEP), not from the event's data: with
    # "always_last" Gradio's page keeps only that an event is due while one runs, then sends the one that ran
    # again, with its own data: quick steps (Home, then → →) left the details on "Before decoding" while the
    # stage showed step 2, and a branch from there was refused. Read as it leaves, that resend has the latest.
    page.stage.step_settled(on.on_step_settled, [states.result, d.on_screen, d.reduce, d.sort, states.tree],
                            outputs, js=SETTLED_STEP, trigger_mode="always_last", show_progress="hidden", **in_order,
                            api_visibility="private").then(**preview)
    # opening the tab details the step on the stage at once (the example plays until someone stops it)
    d.tab.select(on.on_opened, [states.result, d.on_screen, d.reduce, d.sort, states.tree], outputs,
                 js=STEP_OF_STAGE, trigger_mode="always_last", show_progress="hidden", **in_order,
                 api_visibility="private").then(**preview)
    page.stage.edit(open_text_tab, None, page.tabs, api_visibility="private", queue=False)
    details = [states.result, states.details_step, d.reduce, d.sort, states.tree]
    gr.on([d.reduce.change, d.sort.change], on.on_details, details, outputs, trigger_mode="always_last",
          show_progress="hidden", **in_order, api_visibility="private")
    # the visitor's pick only: a change made by a render (a new step's positions) must not come back with a
    # value the step on show no longer offers ("Value: 5 is not in the list of choices: [6]")
    b.position.input(on_position, [states.result, states.details_step, b.position], b.token,
                     api_visibility="private", show_progress="hidden")
    # a branch (or a run of the tree put back) lands on the stage paused where it was branched, and the
    # details follow it there at once, before the stage reports its step
    stale = [a.plot, a.note, states.attention_at]
    branched = [states.tree, states.result, page.stage, b.table, b.pick, page.tabs, page.warning, states.details_step,
                *stale]
    held = [states.compared, states.lab, states.attention_at]  # what else the tab keeps: counted towards its cap
    follow = dict(fn=on.on_details, inputs=details, outputs=outputs, show_progress="hidden", **in_order,
                  api_visibility="private")
    b.token_btn.click(on.on_branch_token,
                      [states.tree, states.result, states.details_step, b.position, b.token, *held],
                      branched, api_visibility="private", **model).then(**follow).then(**preview)
    b.order_btn.click(on.on_branch_order, [states.tree, states.result, states.details_step, b.order, b.size, *held],
                      branched, api_visibility="private", **model).then(**follow).then(**preview)
    b.show.click(on.on_show_branch, [states.tree, b.pick, states.details_step, states.attention_at],
                 [states.result, page.stage, b.table, page.tabs, page.warning, states.details_step, *stale],
                 api_visibility="private").then(**follow).then(**preview)
    a.button.click(on.on_attention, [states.result, states.details_step, a.stream, a.layer, a.head],
                   [a.plot, a.note, states.attention_at, page.warning], api_visibility="private", **model)
    page.stage.step_settled(on.on_attention_settled, [states.result, states.attention_at],
                            [a.plot, a.note, states.attention_at], trigger_mode="multiple", show_progress="hidden",
                            concurrency_limit=None, api_visibility="private")


def wire_export_tab(page: Page, on: ExportCallbacks) -> None:
    e, result = page.export, page.states.result
    e.tab.select(None, None, None, js=NAME_THE_STEP, queue=False, api_visibility="private")
    e.trace.wire(on.trace_json, [result])
    e.csv.wire(on.masks_csv, [result, e.step], js=STEP_ON_SCREEN)
    e.npy.wire(on.masks_npz, [result, e.step], js=STEP_ON_SCREEN)
    e.html.wire(on.step_figures, [result, e.step, page.details.reduce, page.details.sort], js=STEP_ON_SCREEN)
    if on.slides is not None:
        e.gif.wire(on.gif, [result])
        e.player.wire(on.player, [result, e.step], js=STEP_ON_SCREEN)


def wire_lab_tab(page: Page, calls: ModelCalls, model: dict) -> None:
    lab, states, t = page.lab, page.states, page.text
    on = LabCallbacks(calls)
    lab.button.click(on.on_lab, [lab.text, lab.n_random, lab.group_size, lab.seed, lab.custom],
                     [states.lab, lab.summary, lab.plot, lab.order_a, lab.order_b, lab.tokens, lab.gallery_plot,
                      lab.gallery_table, lab.gallery_scheme, page.warning], api_visibility="private", **model)
    gr.on([lab.order_a.input, lab.order_b.input], on_pair, [states.lab, lab.order_a, lab.order_b], lab.tokens,
          trigger_mode="always_last", api_visibility="private")
    lab.load_a.click(on.on_load_order, [states.lab, lab.order_a], page.onto_stage, api_visibility="private", **model)
    lab.load_b.click(on.on_load_order, [states.lab, lab.order_b], page.onto_stage, api_visibility="private", **model)
    lab.gallery_stage.click(on.on_gallery_stage, lab.scheme_inputs, page.onto_stage, api_visibility="private",
                            **model)
    lab.gallery_use.click(on.on_gallery_use, lab.scheme_inputs,
                          [t.text, t.picker, states.chips_for, t.method, t.order, t.custom_groups, page.tabs,
                           page.warning],
                          api_visibility="private")

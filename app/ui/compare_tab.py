"""⚖ Compare: every method of app.session.COMPARE_METHODS decodes the same blanks; the table, the chart
and the texts side by side, and a button per method that loads its run onto the stage."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from app import figures, memory
from app.session import COMPARE_HEADERS, COMPARE_METHODS, InputError
from app.ui.model_calls import ModelCalls
from app.ui.shared import SERVER_ERROR, inform, to_stage, warn
from app.ui.text_tab import TextCallbacks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompareTab:
    hint: gr.Markdown
    table: gr.Dataframe
    plot: gr.Plot
    load_row: gr.Row
    load_btns: list[gr.Button]  # one per COMPARE_METHODS, in its order
    texts: gr.Markdown

    @property
    def outputs(self) -> list:
        """What a comparison fills, in `CompareCallbacks.on_compare`'s order (states and tabs aside)."""
        return [self.table, self.plot, self.texts, self.load_row, self.hint]


# the method's name wraps in a column of its own size, so that every column fits a 1366 px screen
COLUMN_WIDTHS = {"method": "25%", "steps": "8%", "model calls": "10%", "seconds": "11%", "tokens/s": "13%",
                 "log p (own order)": "15%", "log p, whole text": "18%"}


def build_compare_tab() -> CompareTab:
    with gr.Tab("⚖ Compare", id="compare", elem_id="tab-compare"):
        hint = gr.Markdown(
            "Nothing compared yet: under **✎ Your text**, press **Compare all methods**. Every method "
            f"({', '.join(COMPARE_METHODS)}) then decodes the same blanks, and each run can be stepped "
            f"through on the stage. {LEFT_OUT}", elem_id="compare-hint")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                table = gr.Dataframe(interactive=False, wrap=True, elem_id="compare-table", visible=False,
                                     column_widths=[COLUMN_WIDTHS[h] for h in COMPARE_HEADERS])
            with gr.Column(scale=2):
                plot = gr.Plot(show_label=False, elem_id="compare-plot", visible=False)
        with gr.Row(elem_id="compare-load", visible=False) as load_row:
            gr.Markdown("**Step through:**")
            load_btns = [gr.Button(f"▶ {m}", size="sm", elem_id=f"load-{i}", min_width=80)
                         for i, m in enumerate(COMPARE_METHODS)]
        texts = gr.Markdown("", elem_id="compare-texts")
    return CompareTab(hint, table, plot, load_row, load_btns, texts)


# the method list's one method that Compare does not run, and why (model.config: `compared`)
LEFT_OUT = ("Left out: **official dynamic**, diffusion with every known token in one bidirectional group, the "
            "official code's layout (diffusion lays them out as the loaded model reads context: for a model "
            "trained the official way, the same runs); choose it in the method list and Run to see it.")
# what the table's columns mean, under it once a comparison ran
COMPARED = ("Each row decoded the same blanks, with the settings in its name. **log p (own order)**: how likely "
            "the run found its own fill, each step's tokens given what that step saw; **log p, whole text**: the "
            "whole text, fill and what follows, scored by the A3 model left to right (what best of N keeps its "
            "fill by). For both, nearer 0 is more likely. **seconds** follow the machine and its load. **Step "
            "through** loads a run onto the stage without decoding again. " + LEFT_OUT)


class CompareCallbacks:
    def __init__(self, calls: ModelCalls):
        self.calls = calls

    def on_compare(self, *values):
        """(compared, table, plot, texts, load row, hint, tabs, warning) for the values of TextTab.settings."""
        hidden = (gr.skip(),) * 7
        try:
            comparison = self.calls.compare(TextCallbacks(self.calls).request(*values))
        except InputError as err:
            return (*hidden, warn(err))
        except Exception:  # never a stack trace in the page
            log.exception("compare failed")
            return (*hidden, warn(SERVER_ERROR))
        rows = [[("—" if v is None else v) for v in row] for row in comparison.rows]
        ran = [row for row in comparison.rows if row[1] is not None]
        chart = figures.compare_figure([r[0] for r in ran], [r[2] for r in ran], [r[3] for r in ran])
        # what could not run is a warning; what the runs share (the [MASK:?] length kept) is a note
        said = warn(" ".join(comparison.warnings + comparison.notes)) if comparison.warnings else \
            inform(" ".join(comparison.notes))
        return (comparison.results, gr.Dataframe(value=rows, headers=comparison.headers, visible=True),
                gr.Plot(value=chart, visible=True), comparison.texts_markdown(), gr.Row(visible=True),
                COMPARED, gr.Tabs(selected="compare"), said)


def on_load_compared(results, index: int):
    """(result, stage, tabs, warning): the compared run of COMPARE_METHODS[index] onto the stage."""
    method = COMPARE_METHODS[index]
    result = (results or {}).get(method)
    if result is None:
        return gr.skip(), gr.skip(), gr.skip(), warn(
            f"{method} has no run to show: compare first; {memory.not_held('comparison')}")
    return to_stage(result)


def load_compared(index: int):
    """The callback of the load button of COMPARE_METHODS[index]."""
    def on_load_run(results):
        return on_load_compared(results, index)

    return on_load_run

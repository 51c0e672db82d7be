"""▶ Stage: the stage component (app.stage_component), opening on the example decoded ahead of time
(app.demo_trace), already playing. The stage holds the step in the browser; it reports the step it
settles on (`step_settled`) and its "your text" button (`edit`)."""

from __future__ import annotations

import gradio as gr

from app.session import Result
from app.stage import stage_payload
from app.stage_component import Stage


def build_stage_tab(demo_result: Result | None, demo_note: str) -> Stage:
    with gr.Tab("▶ Stage", id="stage", elem_id="tab-stage"):
        return Stage(stage_payload(demo_result, autoplay=True, loop=True, note=demo_note), elem_id="stage")


def open_text_tab():
    """The stage's "your text" button."""
    return gr.Tabs(selected="input")

"""The stage component: a `gr.HTML` whose value is a stage payload (app/stage.py) and whose script
(app/static/stage_core.js + stage.js) draws the text, the order grid, the DAG and both masks for any
step in the browser, with the step controls, playback, scrubbing and the presentation toggle.

Custom events (Python listeners: `stage.step_settled(fn, ...)`, `stage.edit(fn, ...)`):
    step_settled  {step, id}: the step stopped changing (never fired during playback), or a payload
                  opened the stage on its "start" step
    edit          {}: the "your text" button
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

STATIC = Path(__file__).resolve().parent / "static"


def stage_script() -> str:
    return (STATIC / "stage_core.js").read_text() + "\n" + (STATIC / "stage.js").read_text()


class Stage(gr.HTML):
    """The one-screen stage; its value is `app.stage.stage_payload(...)`."""

    def __init__(self, value=None, **kwargs):
        super().__init__(
            value=value or {"id": 0, "empty": True, "note": ""},
            html_template=(STATIC / "stage.html").read_text(),
            css_template=(STATIC / "stage.css").read_text(),
            js_on_load=stage_script(),
            **kwargs,
        )

    def api_info(self):
        return {"type": "object", "description": "a stage payload (app.stage.stage_payload)"}

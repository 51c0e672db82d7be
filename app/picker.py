"""The token picker: the text as chips; click or drag over chips to mask (open) or unmask them.

A `gr.HTML` subclass (Gradio 6's route to custom components, no npm build). Its value is a dict:
    {"text": source text, "ids": token ids, "tokens": display strings, "mask": open flags,
     "locked": positions that cannot be masked (the start token)}
Values coming back from the browser are user-controlled: `app.session` validates them.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

STATIC = Path(__file__).resolve().parent / "static"



class TokenPicker(gr.HTML):
    """Chips for the tokens of a text; masked chips are open positions the model will fill."""

    def __init__(self, value=None, **kwargs):
        super().__init__(
            value=value or empty_value(),
            html_template=(STATIC / "picker.html").read_text(),
            css_template=(STATIC / "picker.css").read_text(),
            js_on_load=(STATIC / "picker.js").read_text(),
            **kwargs,
        )

    def api_info(self):
        return {"type": "object", "properties": {
            "text": {"type": "string"}, "ids": {"type": "array", "items": {"type": "integer"}},
            "tokens": {"type": "array", "items": {"type": "string"}},
            "mask": {"type": "array", "items": {"type": "boolean"}},
            "locked": {"type": "array", "items": {"type": "integer"}}}}


def empty_value() -> dict:
    return {"text": "", "ids": [], "tokens": [], "mask": [], "locked": []}

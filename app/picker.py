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


def carry_mask(old: dict | None, new: dict) -> dict:
    """The chips `new` of an edited text, with the masks clicked on the chips `old` kept where the text
    did not change: the tokens before the edit (the common start of both) and after it (the common end)
    keep their flags; the tokens of the edit take `new`'s, and so do locked chips (the start token,
    blanks). `old` comes from the browser: anything malformed counts as no clicks."""
    old = old if isinstance(old, dict) else {}
    ids, mask = old.get("ids"), old.get("mask")
    if not (isinstance(ids, list) and isinstance(mask, list) and len(ids) == len(mask)
            and all(isinstance(i, int) for i in ids)):
        return new
    new_ids, carried, locked = new["ids"], list(new["mask"]), set(new.get("locked", []))
    head = 0
    while head < min(len(ids), len(new_ids)) and ids[head] == new_ids[head]:
        head += 1
    tail = 0  # the common end, not overlapping the common start in either
    while tail < min(len(ids), len(new_ids)) - head and ids[-1 - tail] == new_ids[-1 - tail]:
        tail += 1
    kept = [(i, i) for i in range(head)] + [(len(ids) - 1 - k, len(new_ids) - 1 - k) for k in range(tail)]
    for i, j in kept:
        if j not in locked:
            carried[j] = bool(mask[i])
    return {**new, "mask": carried}

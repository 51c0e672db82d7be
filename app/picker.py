"""The token picker: the text as chips; click or drag over chips to mask (open) or unmask them.

A `gr.HTML` subclass (Gradio 6's route to custom components, no npm build). Its value is a dict:
    {"text": source text, "ids": token ids, "tokens": display strings, "mask": open flags,
     "locked": positions that cannot be masked (the start token)}
and, on its way to the browser, "labels": what each chip shows (`chip_labels`: whole characters, the
chips after the first of a character split over several tokens null).
Values coming back from the browser are user-controlled: `app.session` validates them.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from app.figures import display_label
from model.text import character_runs

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

    def postprocess(self, value):
        """The value as the browser gets it: with what each chip shows (`chip_labels`). A value sent back
        from the browser can hold anything: chips it cannot read show their tokens as they are."""
        if isinstance(value, dict) and isinstance(value.get("tokens"), list):
            try:
                value = {**value, "labels": chip_labels(value["tokens"])}
            except (UnicodeError, ValueError):  # a lone surrogate, say: no character to decode
                value = {k: v for k, v in value.items() if k != "labels"}
        return value

    def api_info(self):
        return {"type": "object", "properties": {
            "text": {"type": "string"}, "ids": {"type": "array", "items": {"type": "integer"}},
            "tokens": {"type": "array", "items": {"type": "string"}},
            "mask": {"type": "array", "items": {"type": "boolean"}},
            "locked": {"type": "array", "items": {"type": "integer"}}}}


def chip_labels(tokens: list[str]) -> list[str | None]:
    """What each chip shows: its token as the text reads it (`figures.display_label`: a line break "↵");
    a character split over several tokens ("🧩" is three byte tokens) whole on its first chip, and None on
    the chips after it, which the picker draws as slivers joined to it (never "<0xF0>")."""
    out: list[str | None] = []
    for start, end, text in character_runs([str(t) for t in tokens]):
        out += [display_label(text)] + [None] * (end - start - 1)
    return out


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

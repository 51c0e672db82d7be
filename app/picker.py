"""The token picker: the text as chips; click or drag over chips to mask (open) or unmask them.

A `gr.HTML` subclass (Gradio 6's route to custom components, no npm build). Its value is a dict:
    {"text": source text, "ids": token ids, "tokens": display strings, "mask": open flags,
     "locked": positions that cannot be masked (the start token),
     "stale": (only while the text in the box is not valid) why: the chips are still the last valid text's,
     "flexible_guess" / "flexible_length": (a [MASK:?] text only) the blank's length the chips show, a guess
     before a run or the length the run kept (the count under the chips says which)}
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
            "locked": {"type": "array", "items": {"type": "integer"}}, "stale": {"type": "string"},
            "flexible_guess": {"type": "integer"}, "flexible_length": {"type": "integer"}}}


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


def stale(picker: dict | None, why: str) -> dict:
    """The chips `picker` marked out of date: the text in the box is not valid (`why`), so they are still
    the last valid text's (the picker says so under them). Kept rather than cleared, so that a blank
    being typed ("[MASK:") does not make the chips flicker. `picker` comes from the browser: anything
    malformed counts as no chips."""
    picker = picker if isinstance(picker, dict) and isinstance(picker.get("tokens"), list) else empty_value()
    return {**picker, "stale": str(why)}


def fresh(picker: dict) -> dict:
    """`picker` without its out-of-date mark (its text is the one in the box again)."""
    return {k: v for k, v in picker.items() if k != "stale"}


def carry_mask(old: dict | None, new: dict) -> dict:
    """The chips `new` of an edited text, with the masks clicked on the chips `old` kept where the text
    did not change: the tokens before the edit (the common start of both) and after it (the common end)
    keep their flags; the tokens of the edit take `new`'s, and so do locked chips (the start token,
    blanks). `old` comes from the browser: anything malformed counts as no clicks.

    Only an *edit* of the old text carries (`is_edit`): a text pasted over it that merely shares a
    leading "The" or a final "." starts fresh, with its own blanks only."""
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
    start = 1 if head and 0 in locked else 0  # the start token: every text has it, so it says nothing
    if not is_edit(len(ids) - start, len(new_ids) - start, head + tail - start):
        return new
    kept = [(i, i) for i in range(head)] + [(len(ids) - 1 - k, len(new_ids) - 1 - k) for k in range(tail)]
    for i, j in kept:
        if j not in locked:
            carried[j] = bool(mask[i])
    return {**new, "mask": carried}


def is_edit(old_n: int, new_n: int, kept: int) -> bool:
    """Whether a text of `new_n` tokens is an edit of one of `old_n` tokens that share `kept` tokens as a
    common start and end (the start token not counted), so that the masks clicked on the kept tokens
    still mean the same tokens. It is when
    - nothing was replaced: the new text only adds tokens to the old one, or only removes some (typing
      on, pasting a sentence in, deleting one), so every kept token sits where it did among the others; or
    - what was replaced is the smaller part of both: the kept tokens are at least half of the old text's
      and at least half of the new text's (typing over a word, a few keys at a time).
    A text pasted over the whole box shares at most a word or a "." at either end with the old one: that
    is a new text, and it keeps no click."""
    if kept <= 0:
        return False
    removed, added = old_n - kept, new_n - kept
    return removed == 0 or added == 0 or (2 * kept >= old_n and 2 * kept >= new_n)

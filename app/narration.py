"""The stage's narration: one plain sentence per step, and the short explanations its labels hover with.

Plain values in, strings out; nothing here imports gradio or reads a trace. `app.trace_view` works out,
from the trace, what each step decides (`Piece`: the token as the text shows it and its probability),
how many tokens it sees and in which decoding mode, and keeps the sentences in the view, so the stage,
the offline player and the GIF only display them.

    start_sentence(...)   before decoding: what is given, what is open, how it will be decided
    step_sentence(...)    one step: the tokens it decides (up to 5, then "and N more"), their
                          probabilities (and, where the no-repeat rule passed over the model's first
                          choice, that it did), what it sees and where that is drawn (the orange marks); in a
                          teacher-forced trace (the order lab's and the gallery's "Step through"), the
                          tokens the model is given and the probability it gave them
    named(items)          the "up to 5, then and N more" rule, wherever a step's tokens are named
    TERMS                 what the words of the stage's summary line mean, for its hover texts

The colour words name what the stage draws for the current step: `figures.HIGHLIGHT_COLOR`, an orange,
on the DAG's arcs into the step and on the masks' rows of the step's positions.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_NAMED = 5  # a step names this many of its tokens, then "and N more"
MAX_NAME_CHARS = 16
HIGHLIGHT_WORD = "orange"  # figures.HIGHLIGHT_COLOR, as a visitor would call it
OPEN_MARK = "?"  # an open position, in every view: a grid cell, a mask tick, a chip of the text (app.figures)
PART_OF_A_CHARACTER = "part of a character"  # some, not all, tokens of a split character: not readable yet
NO_CHARACTER = "a byte that makes no character"  # byte tokens that never complete a character, when not shown

# what a step sees, by decoding mode (model.decoding's trace modes); {n} is the number of tokens
SEEING = {
    "plan": "the {n} {tokens} in earlier groups",
    "dynamic": "the {n} {tokens} in earlier groups",
    "official_dynamic": "all {n} {tokens} known so far",
    "diffusion": "all {n} {tokens} known so far",
    "one_step_parallel": "only the {n} given {tokens}",
    "ar_baseline": "the {n} {tokens} to its left",
}
# what a step does with its tokens, by mode: one-step parallel predicts every blank in one call and its steps
# only reveal them, k at a time (its headline counts that one call, its first sentence says so: HOW)
VERB = {"one_step_parallel": "reveals"}
# how the open tokens will be decided, by mode (before decoding)
HOW = {
    "plan": "one group at a time, in the plan's order",
    "dynamic": "choosing at each step which to decide",
    "official_dynamic": "choosing at each step which to decide",
    "diffusion": "each step seeing every known token",
    "one_step_parallel": "all predicted at once in one model call, then revealed",
    "ar_baseline": "left to right",
}

NO_STUTTER = "No\u00a0stutter"  # the headline's name of the no-repeat switch (one unbreakable phrase)


def rule_status(trace) -> str:
    """" · No stutter: on" (or off) for a headline: whether the no-repeat rule held the trace's choices."""
    return f" · {NO_STUTTER}: {'on' if trace.config.sampler.no_repeat else 'off'}"


# the words of the summary line ("Step 3/12 · group 5 · at positions 8, 9 · log p = -2.10 ·
# model calls 3", app.figures.step_summary) and of the stage's headline, by how each part starts
TERMS = {
    "Before decoding": "Given: tokens of the text the model reads. Open: the blanks it will fill.",
    "Step": "Which step is on screen, of how many. Each step decides one group of tokens.",
    "group": "The group id of the tokens decided now. Groups are decided in increasing order; "
             "a token sees every token of a lower group. Given tokens have group ids too (read left to right, "
             "each given token is a group of its own; read as one group, they are all group 0), so the open "
             "groups' ids start after theirs: the step number counts only the open groups.",
    "at position": "Where the tokens decided now sit in the text, counting from 0 (the start token).",
    "log p": "How likely the model found the tokens decided now: the log of their probability. "
             "0 is certain; the more negative, the less likely.",
    "model calls": "How many times the model ran: in the step line, up to this step; in the headline, for the "
                   "whole run (best of N: its decodes run together, one call a step for all of them, and their "
                   "scoring takes one more).",
    "model call": "How many times the model ran: in the step line, up to this step; in the headline, for the "
                  "whole run.",
    "groups of 4 would take": "The model calls the same blanks would need if 4 tokens were decided per call.",
    "AR needs": "The model calls an ordinary left-to-right (autoregressive) model needs: one per token.",
    NO_STUTTER: "The “No stutter” switch under Sampling. On: no word is put right next to itself and no "
                       "3-word phrase twice within 64 tokens (a greedy step that could not take the model's "
                       "first choice says so). Off: nothing is ruled out, stutters and all.",
}


@dataclass(frozen=True)
class Piece:
    """What one step decides at one place in the text: a token, or the tokens of one split character."""

    text: str  # as the text shows it: whole characters, "↵" for a line break, "·" for a space
    p: float  # its probability given what the step sees (of all its tokens decided at this step)
    whole: bool = True  # False: only some tokens of a split character are known yet (it cannot be read)
    no_character: bool = False  # its bytes make no character: `text` shows them ("‹EF BC›", app.figures)
    passed_over: bool = False  # greedy, yet not the model's first choice: the no-repeat rule banned that one
    picked: bool = False  # a branch's token the user picked (Step details), not one the model chose
    laid_out: str = ""  # greedy, yet not the model's first choice: the typed text's layout ruled it out (why)


def named(items: list[str], limit: int = MAX_NAMED) -> str:
    """"a", "a and b", "a, b and c"; past `limit` items: "a, b, c, d, e and 3 more"."""
    items = list(items)
    if len(items) > limit:
        return ", ".join(items[:limit]) + f" and {len(items) - limit} more"
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def probability(p: float) -> str:
    """Two decimals; a small one with three, or "<0.001"."""
    p = float(p)
    if p >= 0.01:
        return f"{p:.2f}"
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def quoted(text: str) -> str:
    """A token as the narration names it: without its surrounding spaces, cut to MAX_NAME_CHARS, in quotes."""
    text = text.strip() or text
    if len(text) > MAX_NAME_CHARS:
        text = text[: MAX_NAME_CHARS - 1] + "…"
    return f"“{text}”"


def bytes_name(text: str) -> str:
    """Bytes that make no character, by the label the views show ("‹EF BC›"): "the bytes ‹EF BC› that make
    no character"; with whole characters beside them, the label quoted and said to hold such bytes."""
    label = text.strip() or text
    if label.startswith("‹") and label.endswith("›") and label.count("‹") == 1:
        many = " " in label
        return f"the {'bytes' if many else 'byte'} {label} that {'make' if many else 'makes'} no character"
    return f"{quoted(text)} (with bytes that make no character)"


def piece_name(piece: Piece) -> str:
    if not piece.whole:
        return PART_OF_A_CHARACTER
    if piece.no_character:
        return bytes_name(piece.text)
    return NO_CHARACTER if "\ufffd" in piece.text else quoted(piece.text)


def decided_names(pieces: list[Piece]) -> str:
    """The tokens of a step by the rule of `named`: what the DAG's hover and the narration say."""
    return named([piece_name(piece) for piece in pieces])


def seeing(context: int, mode: str) -> str:
    """What a step sees, in words: "the 18 tokens in earlier groups", "only the 15 given tokens"."""
    if context == 0:
        return "no other token"
    phrase = SEEING.get(mode, SEEING["plan"])
    if context == 1:
        return phrase.replace("all ", "the ").format(n="one", tokens="token")
    return phrase.format(n=context, tokens="tokens")


def subject(mode: str) -> str:
    return "the base model" if mode == "ar_baseline" else "the model"


def start_sentence(n_given: int, n_open: int, n_steps: int, mode: str, *, forced: bool = False) -> str:
    """Before decoding: what is given and what is open, and how it will be decided (`forced`: a
    teacher-forced trace, whose open tokens are the text's own, given to the model group by group)."""
    steps = "1 step" if n_steps == 1 else f"{n_steps} steps"
    how = HOW.get(mode)
    them = "it" if n_open == 1 else "them"
    head = (f"Before decoding: {n_given} {'token is' if n_given == 1 else 'tokens are'} given (grey), "
            f"{n_open} {'is' if n_open == 1 else 'are'} open (marked {OPEN_MARK}); ")
    if forced:
        return head + (f"{subject(mode)} reads {them} from the text in {steps}" + (f", {how}" if how else "") +
                       f", and says how likely it found {them} (teacher forcing).")
    return head + f"{subject(mode)} decides {them} in {steps}" + (f", {how}." if how else ".")


STAGE_PANELS = ("DAG", "masks")  # what the stage and the player draw the step's marks on (the GIF: masks only)


def marks(context: int, rows: int, panels: tuple[str, ...] = STAGE_PANELS) -> str:
    """Where the step's context is drawn: "orange arcs in the DAG, orange row in the masks" (no arcs into
    a step that sees nothing)."""
    said = {"DAG": f"{HIGHLIGHT_WORD} arcs in the DAG" if context else "",
            "masks": f"{HIGHLIGHT_WORD} {'rows' if rows > 1 else 'row'} in the masks"}
    return ", ".join(said[panel] for panel in panels if said.get(panel))


def _odds(pieces: list[Piece]) -> str:
    """"(p = 0.41, 0.30)", the first MAX_NAMED then ", …"; "(p < 0.001)" (", each" for several); among others
    a small one reads "under 0.001" ("(p = under 0.001, 0.03)"), never "p = <"."""
    chances = [probability(piece.p) for piece in pieces[:MAX_NAMED]]
    if not chances:
        return ""
    if all(c.startswith("<") for c in chances):
        return f"(p < {chances[0][1:]}{' each' if len(pieces) > 1 else ''})"
    chances = [f"under {c[1:]}" if c.startswith("<") else c for c in chances]
    return f"(p = {', '.join(chances)}{', …' if len(pieces) > MAX_NAMED else ''})"


def _decided(pieces: list[Piece]) -> str:
    """What the model decides: the tokens, "at once" for several, their odds, and which the no-repeat rule moved."""
    what = f"{named([piece_name(piece) for piece in pieces])}{' at once' if len(pieces) > 1 else ''} {_odds(pieces)}"
    moved = [piece for piece in pieces if piece.passed_over or piece.laid_out]
    if moved:
        why = " and ".join(dict.fromkeys([*(["that would repeat nearby text"] if any(p.passed_over for p in moved)
                                            else []), *(p.laid_out for p in moved if p.laid_out)]))
        what = what.strip() + (f", not its first choice ({why})" if len(pieces) == 1 else
                               f" ({len(moved)} of them not its first choice: {why})")
    return what.strip()


def step_sentence(step: int, n_steps: int, pieces: list[Piece], context: int, mode: str, *,
                  rows: int = 1, n_open: int = 0, n_left: int = 0, panels: tuple[str, ...] = STAGE_PANELS,
                  forced: bool = False, brief: bool = False) -> str:
    """One step (0-based `step`, shown 1-based as the counter shows it) in one sentence.

    `pieces`: what it decides, in text order; `context`: how many tokens its predictions see (the
    query mask's row: the positions of lower groups under the grouping the step used); `rows`: how
    many positions it decides (the masks' highlighted rows); `panels`: which of the DAG and the masks
    the sentence points at. At the last step, `n_open` and `n_left` (open positions in all, still open
    after it) say whether the text is complete. `forced`: the trace is teacher-forced, the step's tokens
    are imposed ("“found” is read from the text (the model gave it p < 0.001); the model sees ..."), not chosen.
    `brief`: only what is decided, a line read at a glance while the stage plays ("Step 4: the model decides
    “small” (p = 0.28)."; at the last step also whether the text is complete)."""
    shown = [piece_name(piece) for piece in pieces]
    odds = _odds(pieces)
    last = step == n_steps - 1
    head = f"Step {step + 1}" + ((", the only step" if n_steps == 1 else ", the last") if last else "")
    if forced:
        it = "them" if len(pieces) > 1 else "it"
        odds = odds.replace("(p ", f"({subject(mode)} gave {it} p ", 1)
        # "read from the text", not "given": on the page "given" is the grey text the visitor typed
        verb = "are read from the text at once" if len(pieces) > 1 else "is read from the text"
        sentence = f"{head}: {named(shown)} {verb} {odds}".rstrip()
        if not brief:
            sentence += f"; {subject(mode)} sees {seeing(context, mode)}"
    elif any(piece.picked for piece in pieces):  # a branch's step: the user's token, and what the model added
        picked = [piece for piece in pieces if piece.picked]
        rest = [piece for piece in pieces if not piece.picked]
        it = "them" if len(picked) > 1 else "it"
        gave = _odds(picked).replace("(p ", f"({subject(mode)} gave {it} p ", 1)
        sentence = f"{head}: you picked {named([piece_name(piece) for piece in picked])} {gave}"
        if rest:
            sentence += f", and {subject(mode)} decides {_decided(rest)}"
        if not brief:
            sentence += f", {subject(mode)} seeing {seeing(context, mode)}"
    else:
        sentence = f"{head}: {subject(mode)} {VERB.get(mode, 'decides')} {_decided(pieces)}"
        if not brief:
            sentence += f", seeing {seeing(context, mode)}"
    if last:
        done = "the text is complete" if n_left == 0 else f"{n_open - n_left} of {n_open} open tokens are decided"
        return f"{sentence}; {done}."
    where = "" if brief else marks(context, rows, panels)
    return f"{sentence}: {where}." if where else f"{sentence}."

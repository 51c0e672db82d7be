"""What the explainer does, without the UI: inputs -> plan -> decoded trace -> what to draw.

`Explorer` wraps one loaded model (shared by every user of the process). Every method takes plain
values and returns plain values or raises `InputError` with a message meant for the page; the Gradio
layer (app.layout) only wires components to these methods. Nothing here imports gradio.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch

from app import memory
from app.figures import one_line, readable_text
from app.narration import OPEN_MARK
from model.config import LABELS, DecodeConfig, Sampler, method_spec
from model.decoding import DecodeTrace, collect, decode, fill_preview, sequence_log_likelihood
from model.flexible import (
    FlexibleBlank,
    FlexibleChoice,
    blank_span,
    candidate_lengths,
    find_flexible,
    flexible_infill,
    with_length,
)
from model.layout import Layout
from model.loading import BaseUnavailableError, LoadedModel
from model.masks import check_masks, two_stream_masks
from model.plans import ORDERS, GroupIdCountError, PlanError, custom_plan, make_plan, parse_group_ids
from model.rerank import BEST_OF_N_LABEL, CANDIDATES, BestOfN, best_of_n, candidates_with, planned_calls
from model.text import BlankSyntaxError, decode_text, encode_masked_text, token_strings

BEST_OF_N = BEST_OF_N_LABEL  # not one decoder: several, the whole text the model finds most likely kept
BEST_OF_N_ABOUT = ("Several decodes of the blank (left to right, ends first, dynamic, three sampled); "
                   "the whole text the model itself finds most likely is kept.")
PAGE_METHODS = (*LABELS, BEST_OF_N)  # the page's method list, in its order
COMPARE_METHODS = (*(label for label in LABELS if method_spec(label).compared), BEST_OF_N)  # the page's names
# "whole text": every token after the start, each given everything before it (the A3 model, left-to-right
# grouping): how well the fill reads on into what follows, the very score A3 best of N keeps its fill by
COMPARE_HEADERS = ["method", "steps", "model calls", "seconds", "tokens/s", "log p (own order)",
                   "log p, whole text"]
ORDER_NAMES = {"left to right": "left_to_right", "right to left": "right_to_left", "outside-in": "outside_in",
               "random": "random", "blocks": "blocks", "spans left to right": "span_left_to_right",
               "ends first": "ends_first", "custom group ids": "custom"}
assert set(ORDER_NAMES.values()) - {"custom"} == set(ORDERS)
ORDER_WORDS = {name: words for words, name in ORDER_NAMES.items()}  # the page's words: "outside_in" -> "outside-in"
CUSTOM_IDS_BOX = "Custom group ids (researchers)"  # where the page keeps them (app.ui.text_tab)
# The page's no-repeat rule (model.repeats, Sampler.no_repeat): no word right next to itself, no 3-word phrase
# twice within 64 tokens; 0 turns it off. The Sampling box's "No stutter" switch.
NO_REPEAT = 3
MAX_TOKENS = 256  # what the figures stay readable and fast at

# Size limits on what a visitor sends, checked before any work (tokenizing, parsing JSON, decoding), at the
# top of every public method below that takes text, and by the API endpoints before a model call
# (app.ui.api): a request built by hand gets the page's message. Each is far above what the page needs.
MAX_TEXT_CHARS = 4_000  # a text, in characters: 256 tokens are ~1,000 characters of English
MAX_BLANKS = 128  # [MASK] / [MASK:N] / [MASK:?] markers in one text (each one is at least one token)
MAX_GROUP_IDS_CHARS = 4_000  # custom group ids as typed: 256 ids of up to 11 characters, separated
MAX_ORDERS = 256  # orders in one order_likelihoods call
MAX_ORDERS_JSON_CHARS = 400_000  # its orders JSON: MAX_ORDERS orders of 256 group ids each, and room to spare
SEED_RANGE = (-(2**63), 2**63)  # seeds lie in [lo, hi): what torch's generators take
MAX_REQUEST_BYTES = 4 * 2**20  # one HTTP request's body (app.py refuses more): the largest orders JSON, escaped
_BLANK_MARKER = re.compile(r"\[\s*mask\b", re.IGNORECASE)  # where a blank starts (as model.text finds them)


class InputError(ValueError):
    """Bad user input; the message is shown in the page as it is."""


def check_string(value, limit: int, *, wrong_type: str, too_long: str) -> str:
    """`value` if it is a string of at most `limit` characters (None: ""); else InputError with `wrong_type`
    (formatted with {kind}, the type's name) or `too_long` (with {n}, the length)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(wrong_type.format(kind=type(value).__name__))
    if len(value) > limit:
        raise InputError(too_long.format(n=len(value)))
    return value


def check_text(text) -> str:
    """`text` if it is a string within the size limits (characters, blanks); else InputError. None, an
    empty box, passes (the methods say the text is empty)."""
    text = check_string(text, MAX_TEXT_CHARS, wrong_type="The text must be a string; got {kind}.",
                        too_long=f"The text is too long: {{n:,}} characters (at most {MAX_TEXT_CHARS:,}). "
                                 "Shorten the text.")
    blanks = len(_BLANK_MARKER.findall(text))
    if blanks > MAX_BLANKS:
        raise InputError(f"Too many blanks: {blanks} [MASK] markers (at most {MAX_BLANKS} per text). Use [MASK:N] "
                         "for N tokens in a row.")
    return text


def check_group_ids(groups) -> str:
    """Custom group ids as typed, if they are a string within MAX_GROUP_IDS_CHARS; else InputError."""
    return check_string(groups, MAX_GROUP_IDS_CHARS,
                        wrong_type="Custom group ids must be text (integers separated by spaces); got {kind}.",
                        too_long=f"Custom group ids are too long: {{n:,}} characters (at most "
                                 f"{MAX_GROUP_IDS_CHARS:,}): one integer per token, start token first.")


def check_seed(seed) -> int:
    """The seed as an int: a whole number (an int, an integral float, or its digits as text) in SEED_RANGE."""
    value = seed
    digits = isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,20}\s*", value)
    if digits or (isinstance(value, float) and value.is_integer()):
        value = int(value)
    lo, hi = SEED_RANGE
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value < hi:
        shown = (f"a number of {value.bit_length()} bits" if isinstance(value, int) and value.bit_length() > 128
                 else repr(seed) if len(repr(seed)) <= 40 else repr(seed)[:40] + "…")
        raise InputError(f"The seed must be a whole number from {lo} to {hi - 1}; got {shown}.")
    return value


def custom_count_message(got: int, expected: int) -> str:
    """What the page says when the custom group ids do not fit the text: where they are and what to do."""
    ids = "1 id" if got == 1 else f"{got} ids"
    return (f"Order is set to custom group ids, which has {ids} for a text of {expected} positions (one id per "
            f"token, the start token first): edit them under {CUSTOM_IDS_BOX}, or choose another order.")


def refuse_custom_ids_with_flexible(request: Request) -> None:
    """InputError when a text with a [MASK:?] blank is to be decoded with custom group ids: it is decoded at
    several lengths, and one list of ids fits one length only."""
    if ORDER_NAMES.get(request.order) == "custom":
        raise InputError("Order is set to custom group ids, which need blanks of a fixed length: a [MASK:?] blank "
                         "is decoded at several lengths, and one list of ids (one per position) fits one length "
                         "only. Give the blank a length, e.g. [MASK:5], or choose another order.")


def check_request(request: Request) -> Request:
    """A decoding request whose text, custom group ids and seed are within the limits; else InputError."""
    check_text(request.text)
    check_group_ids(request.custom_groups)
    check_seed(request.seed)
    return request


def blank_message(err: ValueError) -> str:
    """A blank's message for the page, as the library says it ("Malformed blank '[MASK:x]' at character 7:
    write …", "2 blanks of flexible length ([MASK:?]): use one per text …"), capitalised."""
    message = str(err)  # model.text's and model.flexible's messages say what is wrong with which blank
    return message[:1].upper() + message[1:]


@dataclass
class Request:
    """One decoding request, as the page sends it."""

    text: str
    picker: dict | None = None
    method: str = "A3 plan"
    order: str = "left to right"
    group_size: int = 1
    strategy: str = "confidence"
    k: int = 1
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    custom_groups: str = ""
    no_repeat: int = NO_REPEAT  # the no-repeat rule's n-gram size (model.repeats; 0: off)


@dataclass
class Result:
    """A decoded trace plus what drawing it needs (kept per session in gr.State)."""

    trace: DecodeTrace
    labels: list[str]  # display string per position (final sequence)
    vocab: dict[int, str] = field(default_factory=dict)  # candidate token id -> display string
    method: str = "A3 plan"
    text: str = ""  # the final text
    model: str = ""
    flexible: FlexibleChoice | None = None  # for a [MASK:?] blank: every length tried, and the one kept
    best_of_n: BestOfN | None = None  # for A3 best of N: every candidate with its score, and the one kept
    search_calls: int | None = None  # for a [MASK:?] search: every length's decode and scoring together

    @property
    def model_calls(self) -> int:
        """Every model call the run made (best of N: all its candidates' and the scoring; a [MASK:?] search:
        every length's, each scored once more)."""
        if self.search_calls is not None:
            return self.search_calls
        return self.best_of_n.model_calls if self.best_of_n is not None else self.trace.model_calls

    @property
    def seconds(self) -> float:
        return self.best_of_n.seconds if self.best_of_n is not None else self.trace.elapsed_s

    @property
    def name(self) -> str:
        """The method with the settings that made this run, as the stage's headline and Compare name it: "A3
        plan (right to left)", "A3 plan (random, groups of 2)", "A3 dynamic (confidence, k = 2)", "one-step
        parallel (k = 1)"; best of N (whose headline names its candidate), the AR baseline and a teacher-forced
        run (Order lab) by the method alone."""
        config = self.trace.config
        if self.best_of_n is not None or self.method == BEST_OF_N or config is None or \
                (self.trace.settings or {}).get("teacher_forced"):  # (a [MASK:?] search keeps a candidate's trace)
            return self.method
        spec, parts = config.spec, []
        if spec.order:
            parts.append(ORDER_WORDS.get(config.order, config.order))
            if config.group_size > 1 and config.order != "custom":  # custom ids make their own groups
                parts.append(f"groups of {config.group_size}")
        if spec.strategy:
            parts.append(config.strategy)
        if spec.k:
            parts.append(f"k = {config.k}")
        return f"{self.method} ({', '.join(parts)})" if parts else self.method

    def token_text(self, token_id: int) -> str:
        return self.vocab.get(int(token_id), f"#{token_id}")

    @property
    def shown_text(self) -> str:
        """The final text as the views show it (bytes that make no character as "‹EF BC›", never "�"),
        without the start token; `text` is the tokenizer's decode (what /infill returns)."""
        return readable_text(self.labels[1:])

    @property
    def n_steps(self) -> int:
        return len(self.trace.steps)


@dataclass
class Comparison:
    """Every method's run on one input: the table's rows, the runs themselves, and what could not run."""

    headers: list[str] = field(default_factory=lambda: list(COMPARE_HEADERS))
    rows: list[list] = field(default_factory=list)
    results: dict[str, Result] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the runs share ("[MASK:?] searched …"): information
    warnings: list[str] = field(default_factory=list)  # what could not run

    def texts_markdown(self) -> str:
        """The final texts, one per method, below the table, then the notes and the warnings."""
        lines = [f"- **{markdown_text(result.name)}:** {markdown_text(result.shown_text)}"
                 for result in self.results.values()]
        return "\n".join(lines + [f"- ℹ️ {note}" for note in self.notes] + [f"- ⚠️ {w}" for w in self.warnings])


def markdown_text(text) -> str:
    """`text` on one line of Markdown, shown as it is (no Markdown or HTML read in a fill): its line breaks
    and tabs marked "↵", "⇥" as the stage marks them (a space would join a fill to the text after it)."""
    text = str(text)
    for ch in "\\`*_[]<>#|$~":
        text = text.replace(ch, "\\" + ch)
    return one_line(text)


class Explorer:
    def __init__(self, loaded: LoadedModel, *, max_tokens: int = MAX_TOKENS):
        self.loaded = loaded
        self.max_tokens = min(max_tokens, loaded.max_length)

    # ---------------------------------------------------------------------------------------- input

    def picker_from_text(self, text: str) -> dict:
        """Chips for a text with optional [MASK] / [MASK:N] blanks (blanks become masked chips); a
        [MASK:?] blank shows at its guessed length."""
        check_text(text)
        blank = self._flexible(text)
        if blank is None:
            return self._picker(text, text)
        return {**self._picker(with_length(text, blank, blank.guess), text), "flexible_guess": blank.guess}

    def _picker(self, fixed_text: str, text: str) -> dict:
        """Chips of a text whose blanks all have a length; `text` is what the page's box holds."""
        masked = self.encode(fixed_text)
        tok = self.loaded.tokenizer
        strings = token_strings(tok, masked.token_ids, start_token_id=self.loaded.start_token_id)
        blanks = (~masked.given).nonzero(as_tuple=True)[0].tolist()
        for p in blanks:
            strings[p] = OPEN_MARK  # as every view marks an open position
        # the start token is always given and a blank always open: neither can be toggled
        return {"text": text, "ids": masked.token_ids.tolist(), "tokens": strings,
                "mask": (~masked.given).tolist(), "locked": [0, *blanks]}

    @staticmethod
    def _flexible(text: str) -> FlexibleBlank | None:
        try:
            return find_flexible(text or "")
        except ValueError as err:
            raise InputError(blank_message(err)) from None

    def encode(self, text: str):
        check_text(text)
        try:
            return encode_masked_text(self.loaded.tokenizer, text or "", start_token_id=self.loaded.start_token_id,
                                      max_length=self.max_tokens)
        except BlankSyntaxError as err:
            raise InputError(blank_message(err)) from None
        except ValueError as err:
            raise InputError(str(err)[:1].upper() + str(err)[1:]) from None

    def layout(self, text: str) -> Layout:
        """What the typed text says of its fills (model.layout): a space before a blank begins a word there,
        a text without a line break gets none."""
        return self.encode(text).layout

    def sequence(self, request: Request) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and the given mask. The ids always come from tokenizing the text here; from the
        browser only the chips' mask is taken, and only when it belongs to this very text."""
        fresh = self.picker_from_text(request.text)
        ids, mask = fresh["ids"], fresh["mask"]
        picker = request.picker or {}
        sent = picker.get("mask")
        if picker.get("text") == request.text and isinstance(sent, list) and len(sent) == len(mask):
            mask = [bool(m) for m in sent]
            for p in fresh["locked"]:  # the start token stays given, blanks stay open
                mask[p] = fresh["mask"][p]
        given = torch.tensor([not bool(m) for m in mask])
        if bool(given.all()):
            raise InputError("Nothing is masked: add [MASK] or [MASK:N] to the text, or click tokens to mask them.")
        if bool(given.sum() == 1):
            raise InputError("Everything is masked: leave some of the text given so the model has context.")
        return torch.tensor(ids), given

    def plan(self, request: Request):
        check_request(request)
        ids, given = self.sequence(request)
        order = ORDER_NAMES.get(request.order)
        if order is None:
            raise InputError(f"Unknown order {request.order!r}; choose one of {', '.join(ORDER_NAMES)}.")
        try:
            if order == "custom":
                groups = parse_group_ids(request.custom_groups, len(ids))
                return custom_plan(ids, given=given, group_ids=groups).with_layout(self.layout(request.text))
            return make_plan(ids, given=given, order=order, group_size=int(request.group_size),
                             given_grouping=self.given_grouping,
                             generator=torch.Generator().manual_seed(int(request.seed))
                             ).with_layout(self.layout(request.text))
        except GroupIdCountError as err:
            raise InputError(custom_count_message(err.got, err.expected)) from None
        except PlanError as err:
            fix = (f" Order is set to custom group ids: edit them under {CUSTOM_IDS_BOX}, or choose another order."
                   if order == "custom" else "")
            raise InputError(f"Invalid plan: {err}{fix}") from None

    # --------------------------------------------------------------------------------------- decode

    def decode(self, request: Request) -> Result:
        check_request(request)
        blank = self._flexible(request.text)
        if blank is not None:
            return self.decode_flexible(request, blank)
        return self._decode_fixed(request)

    def decode_flexible(self, request: Request, blank: FlexibleBlank) -> Result:
        """A [MASK:?] blank: decoded at every candidate length with the request's method; the result
        on show is the best whole text (model.flexible), and it carries every candidate."""
        check_request(request)
        if request.method != BEST_OF_N:  # best of N makes its own orders: no custom ids
            refuse_custom_ids_with_flexible(request)
        tok, start = self.loaded.tokenizer, self.loaded.start_token_id
        # the room left for the blank, from the text around it (a 1-token blank), so that shorter lengths
        # are still tried when the guess itself does not fit
        around = self.encode(with_length(request.text, blank, 1)).token_ids.numel() - 1
        room = self.max_tokens - around
        lengths = [n for n in candidate_lengths(blank.guess) if n <= room]
        if not lengths:
            raise InputError(f"The text is too long for a blank of flexible length: it leaves room for {room} "
                             f"blank tokens (at most {self.max_tokens} tokens in all). Shorten the text.")
        clicked, shown = self._flexible_clicks(request, blank, lengths[-1] if blank.guess > room else blank.guess)
        lo, _ = blank_span(tok, request.text, blank, 1, start_token_id=start)
        hi = lo + shown  # the blank's chips in the picker the clicks came from

        calls = []  # each length's decode (best of N: all its candidates and their scoring)

        def decode_one(text_n: str, length: int):
            mask = [*clicked[:lo], *([True] * length), *clicked[hi:]]  # the user's clicks, shifted
            result = self._decode_fixed(Request(**{**request.__dict__, "text": text_n,
                                                   "picker": {"text": text_n, "mask": mask}}))
            calls.append(result.model_calls)
            final = result.trace.final_ids
            return result.trace, final, result.text, tok.decode(final[lo : lo + length], skip_special_tokens=True)

        try:
            choice = flexible_infill(self.loaded.model, request.text, decode_one, lengths=lengths)
        except ValueError as err:
            raise InputError(str(err)) from None
        result = self.result(choice.best.trace, request.method, flexible=choice)
        result.search_calls = sum(calls) + len(calls)  # and one scoring pass per length (model.flexible)
        return result

    def picker_at_length(self, text: str, length: int) -> dict:
        """Chips of a [MASK:?] text with its blank at `length` tokens (what a run kept); the picker says
        which length it shows, so the next run can carry the clicks over."""
        check_text(text)
        blank = self._flexible(text)
        if blank is None:
            return self.picker_from_text(text)
        return {**self._picker(with_length(text, blank, length), text), "flexible_length": int(length)}

    def _flexible_clicks(self, request: Request, blank: FlexibleBlank, guess: int) -> tuple[list[bool], int]:
        """(the chips' mask the user sent, the blank's length in it): the picker of the last run's kept
        length or of the guess; anything else (another text, a stale picker) counts as no clicks."""
        picker = request.picker or {}
        shown = picker.get("flexible_length", guess)
        sent = picker.get("mask")
        if picker.get("text") == request.text and isinstance(shown, int) and isinstance(sent, list):
            try:
                expected = self._picker(with_length(request.text, blank, shown), request.text)["mask"]
            except InputError:
                expected = None
            if expected is not None and len(sent) == len(expected):
                return [bool(m) for m in sent], shown
        return self._picker(with_length(request.text, blank, guess), request.text)["mask"], guess

    def config(self, request: Request) -> DecodeConfig:
        """The request's decode config (model.config): method, order or strategy, group size or k, sampler,
        seed. The page previews a step's other candidates on demand, so plan decoding scores only the
        rows it decides."""
        try:
            sampler = Sampler(float(request.temperature), int(request.top_k), float(request.top_p),
                              int(request.no_repeat))
        except (TypeError, ValueError) as err:
            raise InputError(f"Invalid sampling setting: {err}") from None
        try:
            config = DecodeConfig(request.method, order=ORDER_NAMES.get(request.order, request.order),
                                  group_size=int(request.group_size), strategy=request.strategy, k=int(request.k),
                                  sampler=sampler, seed=int(request.seed), preview_open=False)
        except (TypeError, ValueError) as err:
            raise InputError(str(err)) from None
        # what the method does not read keeps its default, so a trace's config says only what made it (a dynamic
        # run's once read "order": "random", the order box's value, which it never used)
        spec, default, unread = config.spec, DecodeConfig(), {}
        if not spec.order:
            unread["order"] = default.order
        if not spec.order or config.order == "custom":  # custom ids make their own groups
            unread["group_size"] = default.group_size
        if not spec.strategy:
            unread["strategy"] = default.strategy
        if not spec.k:
            unread["k"] = default.k
        return dataclasses.replace(config, **unread)

    def _decode_fixed(self, request: Request) -> Result:
        if request.method == BEST_OF_N:
            return self._decode_best_of_n(request)
        plan = self.plan(request)
        config = self.config(request)
        base = self.base() if config.spec.needs_base else None
        try:
            trace = collect(decode(self.loaded.model, plan, config, base=base))
        except (PlanError, ValueError) as err:
            raise InputError(str(err)) from None
        return self.result(trace, config.label)

    def _decode_best_of_n(self, request: Request) -> Result:
        """Every candidate of model.rerank decoded, the whole text the model finds most likely on show;
        the result carries every candidate (any can go onto the stage: `best_of_n_candidate`)."""
        ids, given = self.sequence(request)
        try:
            found = best_of_n(self.loaded.model, ids, given, given_grouping=self.given_grouping,
                              layout=self.layout(request.text),
                              candidates=candidates_with(int(request.no_repeat)))
        except (PlanError, ValueError) as err:
            raise InputError(str(err)) from None
        return self.result(found.best.trace, BEST_OF_N, best_of_n=found)

    def best_of_n_candidate(self, result: Result, index: int) -> Result:
        """Another candidate of a best-of-N run, as a result of its own (no decoding: its trace is kept)."""
        if result is None:
            raise InputError(f"Run A3 best of N first: {memory.not_held()}")
        found = result.best_of_n
        if found is None:
            raise InputError("This run has no candidates: choose A3 best of N and run it.")
        if not 0 <= int(index) < len(found.candidates):
            raise InputError(f"There is no candidate {index}; this run has {len(found.candidates)}.")
        candidate = found.candidates[int(index)]
        return self.result(candidate.trace, f"{BEST_OF_N} · {candidate.name}", best_of_n=found,
                           flexible=result.flexible)

    def best_of_n_rows(self, result: Result | None) -> tuple[list[str], list[list]]:
        """The candidates table of a best-of-N run: each candidate, its fill, its score and its calls."""
        headers = ["candidate", "fill", "log p (whole text)", "model calls", "kept"]
        found = result.best_of_n if result is not None else None
        if found is None:
            return headers, []
        tok = self.loaded.tokenizer
        blanks: list[list[int]] = []  # the open positions, blank by blank (runs of neighbours)
        for p in found.best.trace.plan.open_positions:
            if blanks and p == blanks[-1][-1] + 1:
                blanks[-1].append(p)
            else:
                blanks.append([p])
        rows = []
        for i, c in enumerate(found.candidates):
            fill = " … ".join(one_line(readable_text(token_strings(tok, [c.trace.final_ids[p] for p in blank],
                                                                   start_token_id=self.loaded.start_token_id)))
                              for blank in blanks)
            calls = f"{c.calls} (shared)" if c.together else str(c.calls)
            rows.append([c.name, fill, round(c.logp, 2), calls, "✓" if i == found.best_index else ""])
        return headers, rows

    def best_of_n_cost(self, text: str, picker: dict | None = None) -> str:
        """What a best-of-N run of `text` will cost, said before it runs: its blanks and, where `picker` holds
        chips of this very text, the tokens clicked open too."""
        check_text(text)
        blank = self._flexible(text)
        if blank is not None:
            lengths = candidate_lengths(blank.guess)
            calls = sum(planned_calls(n) for n in lengths) + len(lengths)
            return (f"A3 best of N decodes each of {len(lengths)} lengths {len(CANDIDATES)} ways: about {calls} "
                    "model calls.")
        n_open = int((~self.sequence(Request(text=text, picker=picker))[1]).sum())
        tokens = "the blank token" if n_open == 1 else f"the {n_open} blank tokens"
        return (f"A3 best of N decodes {tokens} {len(CANDIDATES)} ways and keeps the most likely "
                f"text: {planned_calls(n_open)} model calls.")

    @property
    def given_grouping(self) -> str:
        """How given tokens are grouped: the model layout's own convention ("causal" for ours, "joint",
        one bidirectional group, for checkpoints of the official code, as its inference does)."""
        return self.loaded.given_grouping

    def base_note(self) -> str:
        """Why the AR baseline cannot run with this model ("" when it can)."""
        if self.loaded.has_base:
            return ""
        reason = self.loaded.no_base_reason or "this model names no AR base model."
        return f"The AR baseline needs the plain AR model this one was adapted from: {reason}"

    def base(self):
        note = self.base_note()
        if note:
            raise InputError(note)
        try:
            return self.loaded.base()
        except BaseUnavailableError as err:
            raise InputError(f"The AR baseline is not available for this model: {err}") from None

    def result(self, trace: DecodeTrace, method: str, *, flexible: FlexibleChoice | None = None,
               best_of_n: BestOfN | None = None) -> Result:
        tok = self.loaded.tokenizer
        ids = {int(c[0]) for s in trace.steps for cands in s.candidates.values() for c in cands}
        start = self.loaded.start_token_id
        vocab = dict(zip(sorted(ids), token_strings(tok, sorted(ids), start_token_id=start), strict=True))
        return Result(trace, token_strings(tok, trace.final_ids, start_token_id=start), vocab, method,
                      decode_text(tok, trace.final_ids), self.loaded.name, flexible, best_of_n)

    def flexible_candidate(self, result: Result, length: int) -> Result:
        """Another length of a [MASK:?] search, as a result of its own (no decoding: its trace is kept)."""
        if result is None:
            raise InputError(f"Run a text with [MASK:?] first: {memory.not_held()}")
        choice = result.flexible
        if choice is None:
            raise InputError("This run has no blank of flexible length: write [MASK:?] in the text and run it.")
        for candidate in choice.candidates:
            if candidate.length == int(length):
                shown = self.result(candidate.trace, result.method, flexible=choice)
                shown.search_calls = result.search_calls  # the search that made it: its calls are the run's
                return shown
        lengths = ", ".join(str(c.length) for c in choice.candidates)
        raise InputError(f"Length {length} was not tried; the search tried {lengths} tokens.")

    def infill(self, text: str, method: str = BEST_OF_N, seed: int = 0) -> tuple[str, str]:
        """The named API endpoint: (filled text, trace JSON with a top-level `steps` list). It decodes as the
        page does by default, the no-repeat rule (NO_REPEAT) on; the trace's config says so."""
        check_text(text)
        seed = check_seed(seed)
        result = self.decode(Request(text=text, method=method, seed=int(seed)))
        data = self.export_dict(result)  # as the page's trace export: the run's calls and candidates too
        data["method"] = method
        return result.text, json.dumps(data)

    def compare(self, request: Request) -> Comparison:
        """The same input under every method of COMPARE_METHODS, side by side. Each run's result is kept,
        so the page can step through any of them without decoding again."""
        check_request(request)
        comparison = Comparison()
        blank = self._flexible(request.text)
        if blank is not None:  # one search (the request's method), then every method at the length it kept
            refuse_custom_ids_with_flexible(request)  # every method but best of N would read them
            kept = self.decode_flexible(request, blank).flexible.best.length
            comparison.notes.append(f"[MASK:?] searched with {request.method}, which kept {kept} tokens: every "
                                    f"method decoded a blank of {kept}.")
            request = Request(**{**request.__dict__, "text": with_length(request.text, blank, kept), "picker": None})
        for method in COMPARE_METHODS:
            try:
                result = self.decode(Request(**{**request.__dict__, "method": method}))
            except InputError as err:
                if not method_spec(method).needs_base:
                    raise
                comparison.warnings.append(f"AR baseline not run: {err}")
                comparison.rows.append([method, None, None, None, None, None, None])
                continue
            trace = result.trace
            reference, _ = sequence_log_likelihood(self.loaded.model, trace.final_ids,
                                                   torch.arange(len(trace.final_ids)))
            n_open, seconds = len(trace.plan.open_positions), result.seconds
            comparison.results[method] = result
            comparison.rows.append([result.name, len(trace.steps), result.model_calls, round(seconds, 3),
                                    round(n_open / seconds, 1) if seconds > 0 else None,
                                    round(trace.logprob, 2), round(reference, 2)])
        return comparison

    def preview(self, result: Result | None, step: int) -> None:
        """Candidates for every position open at a step, computed the first time the step is shown (plan
        runs decode without them: model.decoding.fill_preview); their tokens join the result's vocab."""
        if result is None or not 0 <= int(step) < result.n_steps:
            return
        record = fill_preview(self.loaded.model, result.trace, int(step))
        missing = sorted({int(t) for c in record.candidates.values() for t, _ in c} - set(result.vocab))
        if missing:
            strings = token_strings(self.loaded.tokenizer, missing, start_token_id=self.loaded.start_token_id)
            result.vocab.update(zip(missing, strings, strict=True))

    def preview_all(self, result: Result | None) -> None:
        for step in range(result.n_steps if result is not None else 0):
            self.preview(result, step)

    # ------------------------------------------------------------------------------------ attention

    def attention(self, result: Result | None, step: int, stream: str = "query"):
        """The attention probabilities behind one step of a result (model.attention.AttentionWeights):
        one uncached forward with the tap open; the query rows the step decided, or their content rows.
        The AR baseline's step is the base model's content row before each position (shown as is)."""
        from model.attention import step_attention

        if result is None:
            raise InputError("Run a decoding first, then step to the step whose attention you want to see: "
                             f"{memory.not_held()}")
        if not 0 <= int(step) < result.n_steps:
            raise InputError("Before the first step nothing has been predicted: step forward (→) on the stage, "
                             "then draw the attention again.")
        trace = result.trace
        model = self.base() if trace.mode == "ar_baseline" else self.loaded.model
        try:
            return step_attention(model, trace, int(step), stream=None if trace.mode == "ar_baseline" else stream)
        except ValueError as err:
            raise InputError(str(err)) from None

    # --------------------------------------------------------------------------------------- export

    @staticmethod
    def masks_of(result: Result, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        groups = torch.tensor(result.trace.group_ids_at(step))
        content, query = two_stream_masks(groups)
        return groups.numpy(), content.numpy().astype(np.uint8), query.numpy().astype(np.uint8)

    def verdict(self, result: Result, step: int) -> str:
        groups, content, query = self.masks_of(result, step)
        return check_masks(content, query, groups).summary()

    @staticmethod
    def step_rows(result: Result, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(decided at this step, known at this step) per position: the rows the stage outlines, and the
        positions given or decided by then. A plan's masks are the same at every step; these say which of
        their rows the step on show is about (step -1: before the first, nothing decided yet)."""
        decided = np.array(result.trace.decided_step())
        given = np.array(result.trace.given, dtype=bool)
        return (decided == step) & ~given, given | ((decided >= 0) & (decided <= step))

    @staticmethod
    def masks_csv(result: Result, step: int) -> bytes:
        """A zip of content.csv, query.csv (rows = query positions, columns = keys) and groups.csv: per
        position its group, whether it is decided at this step and whether it is known by then."""
        groups, content, query = Explorer.masks_of(result, step)
        now, known = Explorer.step_rows(result, step)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, matrix in (("content", content), ("query", query)):
                text = io.StringIO()
                np.savetxt(text, matrix, fmt="%d", delimiter=",")
                zf.writestr(f"{name}.csv", text.getvalue())
            rows = zip(groups, now, known, strict=True)
            zf.writestr("groups.csv", f"position,group,decided_at_step_{step + 1},known_at_step_{step + 1}\n" +
                        "".join(f"{i},{g},{int(n)},{int(k)}\n" for i, (g, n, k) in enumerate(rows)))
        return buffer.getvalue()

    @staticmethod
    def masks_npz(result: Result, step: int) -> bytes:
        """group_ids, content, query, and this_step / known (`step_rows`) with the step's number (from 1; 0 before
        the first)."""
        groups, content, query = Explorer.masks_of(result, step)
        now, known = Explorer.step_rows(result, step)
        buffer = io.BytesIO()
        np.savez(buffer, group_ids=groups, content=content.astype(bool), query=query.astype(bool), this_step=now,
                 known=known, step=np.int64(step + 1))
        return buffer.getvalue()

    def export_dict(self, result: Result) -> dict:
        """The run as the trace JSON export and /infill give it (the GIF and the player draw the trace from it):
        the trace on the stage (DecodeTrace.to_dict: its own `model_calls`), the method and model, and the
        run's accounting as the page's headline counts it: `run_model_calls` (best of N: every candidate's
        decode and the scoring; a [MASK:?] search: every length's), and for best of N each candidate (its
        config, score, calls, tokens in the open positions, and whether it was kept) with the decode and
        scoring calls; for [MASK:?] every length tried."""
        data = result.trace.to_dict(self.loaded.tokenizer)
        data["method"], data["model"] = result.method, result.model
        data["run_model_calls"] = result.model_calls
        found = result.best_of_n
        if found is not None:
            data["best_of_n"] = {
                "candidates": [{**c.to_dict(), "kept": i == found.best_index,
                                "open_tokens": [c.trace.final_ids[p] for p in c.trace.plan.open_positions]}
                               for i, c in enumerate(found.candidates)],
                "on_stage": (result.trace.settings or {}).get("candidate", found.best.name),
                "decode_calls": found.decode_calls, "scoring_calls": found.scoring_calls,
                "model_calls": found.model_calls}
        if result.flexible is not None:
            data["flexible"] = result.flexible.to_dict()
        return data

    def trace_json(self, result: Result) -> str:
        return json.dumps(self.export_dict(result), indent=1)

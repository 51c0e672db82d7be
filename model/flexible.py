"""Blanks of flexible length: `[MASK:?]` decoded at several lengths, the best whole text kept.

An A3 model fills a blank of a fixed number of tokens. When the length is not known, `[MASK:?]` (guess
6 tokens) or `[MASK:?N]` (guess N) asks for a search: the blank is decoded at every length of
`candidate_lengths(guess)` (the guess times 1/2, 3/4, 1, 5/4, 3/2 and 2), each complete text is scored
by its exact log-likelihood under the model, left to right from the start token (one forward pass), and
the candidate with the best score under the named normalisation is kept:

    per token  the mean log-probability per token of the whole text: a longer fill adds tokens to the
               count as well as to the sum, and a fill that does not lead into the text after it is
               paid for by that text's tokens; but a fill more predictable than the text around it
               raises the mean, so it leans to longer fills where the model is confident
    total      the sum (leans to short fills: every extra token costs log-probability)

Every candidate is returned with its fill and both scores, so the choice can be shown, not hidden.
One flexible blank per text; fixed blanks (`[MASK]`, `[MASK:N]`) may sit beside it and are decoded
in every candidate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from model.text import MAX_BLANK, BlankSyntaxError, check_text

DEFAULT_GUESS = 6
FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
NORMALISATIONS = {"per token": "mean log p per token of the whole text (exact, left to right)",
                  "total": "total log p of the whole text (exact, left to right; favours short fills)"}
_FLEXIBLE = re.compile(r"\[\s*mask\s*:\s*\?\s*([0-9]*)\s*\]", re.IGNORECASE)


@dataclass(frozen=True)
class FlexibleBlank:
    start: int  # character span of the marker in the text
    end: int
    guess: int


@dataclass
class Candidate:
    length: int
    text: str  # the whole text with this length's fill
    fill: str  # the fill alone
    logp: float  # exact log p of every token after the start token, left to right
    n_tokens: int  # how many tokens that sum covers
    trace: object = None  # the decoder's trace for this length (model.decoding.DecodeTrace)

    @property
    def per_token(self) -> float:
        return self.logp / max(1, self.n_tokens)

    def score(self, normalisation: str) -> float:
        return self.per_token if normalisation == "per token" else self.logp


@dataclass
class FlexibleChoice:
    candidates: list[Candidate]
    chosen: int  # index into candidates
    normalisation: str

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen]

    def rows(self) -> list[list]:
        """One table row per length: length, fill, mean log p per token, total log p, kept."""
        return [[c.length, c.fill, round(c.per_token, 3), round(c.logp, 2), "✓" if i == self.chosen else ""]
                for i, c in enumerate(self.candidates)]

    def summary(self) -> str:
        """One line for the page: what was tried, what was kept, and by which rule."""
        tried = ", ".join(str(c.length) for c in self.candidates)
        best = self.best
        score = f"{best.score(self.normalisation):.3f}"
        return (f"[MASK:?] tried {tried} tokens and kept {best.length}: the best {NORMALISATIONS[self.normalisation]}"
                f", {score}.")

    def to_dict(self) -> dict:
        return {"normalisation": self.normalisation, "rule": NORMALISATIONS[self.normalisation],
                "chosen_length": self.best.length,
                "candidates": [{"length": c.length, "fill": c.fill, "text": c.text, "logp": c.logp,
                                "logp_per_token": c.per_token, "n_tokens": c.n_tokens}
                               for c in self.candidates]}


ROW_HEADERS = ["tokens", "fill", "log p / token", "log p (total)", "kept"]


def find_flexible(text: str) -> FlexibleBlank | None:
    """The text's one flexible blank, or None. More than one is an input error."""
    check_text(text)
    matches = list(_FLEXIBLE.finditer(text))
    if not matches:
        return None
    if len(matches) > 1:
        raise BlankSyntaxError(f"{len(matches)} blanks of flexible length ([MASK:?]): use one per text (the "
                               "search decodes every candidate length); give the others a length, e.g. [MASK:5].")
    match = matches[0]
    digits = match.group(1)
    guess = DEFAULT_GUESS if not digits else (int(digits) if len(digits) <= 4 else MAX_BLANK + 1)
    if not 1 <= guess <= MAX_BLANK // 2:
        raise BlankSyntaxError(f"malformed blank {match.group(0)!r}: the length guess must be between 1 and "
                               f"{MAX_BLANK // 2}.")
    return FlexibleBlank(match.start(), match.end(), guess)


def candidate_lengths(guess: int) -> list[int]:
    """The lengths tried around a guess: guess x (1/2, 3/4, 1, 5/4, 3/2, 2), rounded, distinct, >= 1."""
    if guess < 1:
        raise ValueError(f"the length guess must be at least 1; got {guess}.")
    return sorted({max(1, int(guess * f + 0.5)) for f in FACTORS})


def with_length(text: str, blank: FlexibleBlank, length: int) -> str:
    """The text with its flexible blank replaced by a fixed blank of `length` tokens."""
    return text[: blank.start] + f"[MASK:{length}]" + text[blank.end :]


def blank_span(tokenizer, text: str, blank: FlexibleBlank, length: int, *, start_token_id: int) -> tuple[int, int]:
    """Token positions [lo, hi) of the flexible blank once it is `length` tokens long (text pieces are
    tokenized one by one, so the tokens before a blank do not depend on what follows it)."""
    from model.text import encode_masked_text

    before = encode_masked_text(tokenizer, text[: blank.start] + "[MASK:1]", start_token_id=start_token_id)
    lo = before.token_ids.numel() - 1
    return lo, lo + length


@torch.no_grad()
def whole_text_logp(model, token_ids) -> tuple[float, int]:
    """Exact log p of every token after the start token under left-to-right grouping, and their count."""
    from model.decoding import sequence_log_likelihood

    ids = torch.as_tensor(token_ids, dtype=torch.long)
    total, _ = sequence_log_likelihood(model, ids, torch.arange(ids.numel()))
    return total, ids.numel() - 1


def choose(candidates: list[Candidate], normalisation: str = "per token") -> int:
    """Index of the best candidate under the normalisation (the shortest wins a tie)."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; choose one of {', '.join(NORMALISATIONS)}.")
    if not candidates:
        raise ValueError("no candidates to choose from.")
    return max(range(len(candidates)), key=lambda i: (candidates[i].score(normalisation), -candidates[i].length))


def flexible_infill(model, text: str, decode: Callable[[str, int], tuple[object, list[int], str, str]], *,
                    normalisation: str = "per token", lengths: list[int] | None = None) -> FlexibleChoice:
    """Decode the text's flexible blank at every candidate length and keep the best whole text.

    decode(text with a fixed blank, its length) -> (trace, final token ids, final text, the flexible blank's fill):
    the caller's decoder (any method); scoring is always the model's exact left-to-right likelihood."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; choose one of {', '.join(NORMALISATIONS)}.")
    blank = find_flexible(text)
    if blank is None:
        raise BlankSyntaxError("the text has no blank of flexible length: write [MASK:?] (or [MASK:?N] to guess "
                               "N tokens) where the fill of unknown length goes.")
    candidates = []
    for length in lengths or candidate_lengths(blank.guess):
        trace, final_ids, final_text, fill = decode(with_length(text, blank, length), length)
        logp, n = whole_text_logp(model, final_ids)
        candidates.append(Candidate(length, final_text, fill, logp, n, trace))
    return FlexibleChoice(candidates, choose(candidates, normalisation), normalisation)

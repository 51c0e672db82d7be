"""What a typed text says of the shape of its fills: a space before a blank, a text on one line.

`encode_masked_text` gives a space typed before a blank to the fill's first token (the tokenizer writes a
word with its space, "Ġword"), so the tokens alone no longer say that there was one: a model that often
starts a paragraph after a sentence fills "by the fire. [MASK:8] The children" with "\\n\\nThe children were
happy." and the space the user typed is gone. The Layout keeps what the text said:

    word_starts  the open positions right after a typed space (a blank's first token): the token there
                 must be a word after a space (" He"; not "\\n", "he", or a token of spaces alone, " ", " \\n")
    one_line     the text has no line break: no open position may take a token holding one ("\\n", " \\n\\n")

The decoders read it as they read the no-repeat rule: the step records keep the model's own probabilities
(so a trace's log p stays the likelihood of its text), and the choice (the sampler's draw, and for the
dynamic decoders which position goes next, by the allowed tokens' probabilities renormalised) reads the
logits with the ruled-out tokens at -inf. Where a word start would leave no token (a tokenizer whose token
strings lose their leading space), only the line breaks stay ruled out; where nothing at all would be left,
the row is left as it is. Plans made from token ids (the evaluation's blanks) have no layout: there is no
typed text to read it from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Layout:
    word_starts: tuple[int, ...] = ()  # open positions whose token must begin with a space
    one_line: bool = False  # no open position may take a token with a line break

    def __bool__(self) -> bool:
        return bool(self.word_starts) or self.one_line

    def to_dict(self) -> dict:
        return {"word_starts": list(self.word_starts), "one_line": self.one_line}

    @classmethod
    def from_dict(cls, d: dict | None) -> Layout | None:
        if d is None:
            return None
        if not isinstance(d, dict):
            raise ValueError(f"a layout must be an object with word_starts and one_line; got {d!r:.60}.")
        starts, one_line = d.get("word_starts", []), d.get("one_line", False)
        if not isinstance(starts, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in starts):
            raise ValueError(f"layout word_starts must be a list of positions; got {starts!r:.60}.")
        if not isinstance(one_line, bool):
            raise ValueError(f"layout one_line must be true or false; got {one_line!r:.60}.")
        return cls(tuple(sorted(set(starts))), one_line) or None

    def check(self, given: torch.Tensor) -> None:
        """A ValueError unless every word start is an open position of a sequence with this `given` mask."""
        bad = [p for p in self.word_starts if not 0 <= p < given.numel() or bool(given[p])]
        if bad:
            raise ValueError(f"layout word_starts {bad[:8]} are not open positions of the plan.")

class LayoutTokens:
    """The vocabulary as the layout reads it: which tokens are a word after a space, which hold a line break."""

    def __init__(self, word: list[bool], breaks: list[bool]):
        self.breaks = torch.tensor(breaks, dtype=torch.bool)
        self.not_word = ~torch.tensor(word, dtype=torch.bool) | self.breaks

    @classmethod
    def of_texts(cls, texts: list[str]) -> LayoutTokens:
        """From each token's text ("" for special tokens, which begin no word and hold no line break)."""
        return cls([t[:1] == " " and bool(t.strip()) for t in texts], [("\n" in t or "\r" in t) for t in texts])

    def banned(self, layout: Layout, positions: list[int], width: int) -> torch.Tensor:
        """(Q, width) bool: the tokens `layout` rules out at each of `positions`, in a vocabulary of `width`
        (tokens past the tokenizer's are never ruled out); a word start left with no token keeps the line
        breaks' ban alone, a row left with no token at all is not ruled."""
        n = min(width, self.breaks.numel())
        out = torch.zeros(len(positions), width, dtype=torch.bool)
        if layout.one_line:
            out[:, :n] = self.breaks[:n]
        starts = [row for row, p in enumerate(positions) if p in layout.word_starts]
        if starts:
            word = out[starts].clone()
            word[:, :n] |= self.not_word[:n]
            full = word.all(-1)
            out[[r for r, f in zip(starts, full.tolist(), strict=True) if not f]] = word[~full]
        out[out.all(-1)] = False
        return out


def ruled_logits(logits: torch.Tensor, positions: list[int], layout: Layout | None,
                 tokens: LayoutTokens | None) -> tuple[torch.Tensor, set[int]]:
    """The logits (Q, V) of `positions` the choice reads: the tokens the layout rules out at -inf (the input
    itself when nothing is ruled), and the positions whose most likely token was ruled out."""
    if not layout or tokens is None or not positions:
        return logits, set()
    mask = tokens.banned(layout, positions, logits.shape[-1])
    if not bool(mask.any()):
        return logits, set()
    top = logits.argmax(-1).cpu()
    moved = {p for p, hit in zip(positions, mask.gather(1, top[:, None])[:, 0].tolist(), strict=True) if hit}
    return logits.masked_fill(mask.to(logits.device), float("-inf")), moved

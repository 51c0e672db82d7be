"""Which tokens would make a fill stutter: the decoders' no-repeat rule (`Sampler(no_repeat=n)`).

A greedy fill of a small model likes to repeat itself: "is is", "the sea, the sea, and the sea". With
`Sampler.no_repeat = n` (0: off), a decoder never commits, at position i, a token that would

  - stand next to the same word: the nearest word on either side of i, looking past up to SKIP tokens
    without a letter, a sentence end or a line break ("one, one"; not "said no. No"), has the same form
    (see below); or
  - complete an n-gram of forms, all of whose other tokens are known, that already occurs, fully known,
    within WINDOW tokens of i (an n-gram of tokens without letters is let through).

A token that would continue the word before it (no leading space after a word: "wood" in "Thistle|wood",
"mur" in "mur|mur") is never banned, so a long name or word may appear twice.

A token's form is its text without surrounding spaces, lower-cased (" They" and "they" are one form);
tokens without a letter (punctuation, spaces, digits: "2001" is "2 0 0 1" to SmolLM2's tokenizer) are
never banned for standing next to themselves. "Known" is the text as the decoder has it when it commits
the token: the given tokens and those decided so far, on either side of i (the AR baseline knows only
what lies before i). The banned tokens get probability 0 before the sampler draws (greedy: the most
likely token left); the step records keep the model's own probabilities. Were every token banned, the
rule would give way.

The forms are read off the tokenizer once, when a model is loaded (`mark_forms`, which model.loading
calls); a model without them (no tokenizer known) gives every token its own form, all words.
"""

from __future__ import annotations

from functools import partial

import torch

RULE = "forms, window 24, skip 2, word pieces free"  # names this version of the rule (model.eval's fills cache)
WINDOW = 24  # tokens on each side of a committed position that an n-gram may repeat from
SKIP = 2  # letterless tokens the doubled-word check looks past ("one, one")
FORMS = "a3_token_forms"  # the model attribute that `mark_forms` sets: a TokenForms


class TokenForms:
    """The vocabulary as the no-repeat rule reads it: each token's form (its text without surrounding spaces,
    lower-cased: " They" and "they" are one form; a token of bytes that make no character is its own form),
    which tokens hold no letter, which of those the doubled-word check may look past (no sentence end, no
    line break: "one, one" is a doubled word, "said no. No" is not), and which tokens attach to the word before
    them (no leading space: "wood" in "Thistle|wood")."""

    def __init__(self, forms: list[int], letterless: list[bool], skippable: list[bool] | None = None,
                 attaches: list[bool] | None = None):
        self.form, self.letterless = forms, letterless
        self.skippable = skippable if skippable is not None else letterless
        self.attaches = attaches if attaches is not None else [False] * len(forms)
        self.tokens: dict[int, list[int]] = {}  # form -> the tokens of that form
        for token, form in enumerate(forms):
            self.tokens.setdefault(form, []).append(token)

    @classmethod
    def identity(cls, size: int) -> TokenForms:
        """Every token its own form, all words (a model whose tokenizer is unknown)."""
        return cls(list(range(size)), [False] * size)

    @classmethod
    def of(cls, tokenizer, size: int) -> TokenForms:
        pieces = tokenizer.convert_ids_to_tokens(list(range(min(size, len(tokenizer)))))
        first: dict[str, int] = {}
        forms, letterless = list(range(size)), [False] * size
        skippable, attaches = [False] * size, [False] * size
        for i, piece in enumerate(pieces):
            text = tokenizer.convert_tokens_to_string([piece]) if piece is not None else ""
            key = text.strip().lower()
            forms[i] = first.setdefault(key, i) if key and "\ufffd" not in key else i
            letterless[i] = not any(ch.isalpha() for ch in text)
            skippable[i] = letterless[i] and not any(ch in ".!?\n" for ch in text)
            attaches[i] = bool(text) and text[0].isalnum()
        return cls(forms, letterless, skippable, attaches)


def mark_forms(model: torch.nn.Module, tokenizer) -> None:
    """Keep on `model` how the no-repeat rule reads its vocabulary (model.loading calls this). The forms are
    read off the tokenizer when a decode first needs them (about 0.2 s for SmolLM2's 49,152 tokens)."""
    setattr(model, FORMS, partial(TokenForms.of, tokenizer, int(model.config.vocab_size)))


def forms_of(model: torch.nn.Module) -> TokenForms | None:
    """The forms `mark_forms` kept on `model` (read once, then kept), or None."""
    forms = getattr(model, FORMS, None)
    if callable(forms):
        forms = forms()
        setattr(model, FORMS, forms)
    return forms


class RepeatGuard:
    """The no-repeat rule for one decode: `banned(tokens, known, i)` -> the tokens position i may not take."""

    def __init__(self, n: int, forms: TokenForms | None = None, vocab_size: int | None = None,
                 window: int = WINDOW):
        if n < 2:
            raise ValueError(f"the no-repeat n-gram size must be at least 2; got {n}.")
        if forms is None and vocab_size is None:
            raise ValueError("a RepeatGuard needs the vocabulary's forms or its size.")
        self.n, self.window = n, window
        self.forms = forms if forms is not None else TokenForms.identity(vocab_size)

    @classmethod
    def of(cls, model: torch.nn.Module, n: int) -> RepeatGuard | None:
        """The guard for a decode of `model` with `Sampler.no_repeat == n` (None when n is 0)."""
        if not n:
            return None
        return cls(n, forms_of(model), int(model.config.vocab_size))

    def _neighbour(self, tokens: list[int], known: list[bool], i: int, step: int) -> int | None:
        """The form of the nearest word on one side of i, past up to SKIP skippable tokens (all known); None
        where there is none, or where the token after i attaches to it (it is part of i's word)."""
        j = i + step
        if step > 0 and 0 <= j < len(tokens) and known[j] and self.forms.attaches[tokens[j]]:
            return None
        for _ in range(SKIP + 1):
            if not 0 <= j < len(tokens) or not known[j]:
                return None
            if not self.forms.letterless[tokens[j]]:
                return self.forms.form[tokens[j]]
            if not self.forms.skippable[tokens[j]]:
                return None
            j += step
        return None

    def banned(self, tokens: list[int], known: list[bool], i: int) -> set[int]:
        """Tokens that position i may not take, given the sequence `tokens` and which positions are `known`."""
        length, n, form, letterless = len(tokens), self.n, self.forms.form, self.forms.letterless
        out_forms = {f for f in (self._neighbour(tokens, known, i, -1), self._neighbour(tokens, known, i, 1))
                     if f is not None}
        lo, hi = max(0, i - self.window), min(length, i + self.window + 1)
        seen: dict[tuple, set[int]] = {}  # n-grams of forms with one slot blanked -> the forms in that slot
        for s in range(lo, hi - n + 1):
            if s <= i < s + n or not all(known[s : s + n]) or all(letterless[t] for t in tokens[s : s + n]):
                continue
            gram = tuple(form[t] for t in tokens[s : s + n])
            for hole in range(n):
                seen.setdefault(gram[:hole] + (None,) + gram[hole + 1 :], set()).add(gram[hole])
        for s in range(max(0, i - n + 1), min(i, length - n) + 1):
            if all(known[j] for j in range(s, s + n) if j != i):
                out_forms |= seen.get(tuple(None if j == i else form[tokens[j]] for j in range(s, s + n)), set())
        banned = {t for f in out_forms for t in self.forms.tokens.get(f, ())}
        if banned and i > 0 and known[i - 1] and not letterless[tokens[i - 1]]:
            banned = {t for t in banned if not self.forms.attaches[t]}  # a piece of the word before i: let it be
        return banned
    def choose(self, row: torch.Tensor, tokens: list[int], known: list[bool], i: int, sampler,
               generator) -> tuple[int, bool]:
        """The token the sampler draws for position i from its logits `row` (V,) with the banned tokens left
        out, and whether the model's most likely token was among them. Were every token banned, the rule
        would give way."""
        from model.decoding import choose_tokens

        banned = self.banned(tokens, known, i)
        if not banned or len(banned) >= row.numel():
            return int(choose_tokens(row.view(1, -1), sampler, generator)[0]), False
        top = int(row.argmax())
        if sampler.temperature == 0:  # greedy: the most likely token left
            ranked = row.topk(len(banned) + 1).indices.tolist()
            return next(t for t in ranked if t not in banned), top in banned
        masked = row.clone()
        masked[sorted(banned)] = float("-inf")
        return int(choose_tokens(masked.view(1, -1), sampler, generator)[0]), top in banned

"""Which tokens would make a fill stutter: the decoders' no-repeat rule (`Sampler.no_repeat`).

A greedy fill of a small model likes to repeat itself: "is is", "the sea, the sea, and the sea". With
`Sampler.no_repeat = n` (0: off), a decoder never commits, at position i, a token that would

  - stand next to the same word: the nearest word on either side of i, looking past up to SKIP tokens
    without a letter (commas, quotes, sentence ends, line breaks: "one, one", "about it. It"), has the same
    form (see below); or
  - complete an n-gram of words, all of whose other words are known, that already occurs, fully known,
    within WINDOW tokens of i. The window is read as words: the known tokens without a letter (punctuation,
    spaces) are left out, so "the door. He" repeats "the door, he"; a piece that attaches to the one before
    it, maybe across a bare apostrophe, joins its word ("Sam|'s", "did|n|’|t": "Sam's dad" is two words, and
    "didn’t know what" does not repeat "don’t know what"). Only a word of one token is banned at i.

This is what model.eval counts as a repeat (`has_repeat`: a doubled word or a word 3-gram twice, punctuation
not a word), read in tokens: a fill of up to about 60 tokens lies within one WINDOW. The rule reads the given
text within WINDOW too (the measure only 3 words each side of a fill), and a repeat whose words were apart
when it was decided (an order other than left to right) can be closed later by punctuation ("the door _ He
went … the door, he _" -> "the door. He"), though a doubled word cannot ("years _ years"); digits are not words
to it (they are to the measure).

A token that would continue the word before it (no leading space after a word: "wood" in "Thistle|wood",
"mur" in "mur|mur") is never banned, so a long name or word may appear twice.

A token's form is its text without surrounding spaces, lower-cased (" They" and "they" are one form);
tokens without a letter (punctuation, spaces, digits: "2001" is "2 0 0 1" to SmolLM2's tokenizer) are
banned only between two of the same word ("years _ years": a full stop there would make "years. years");
special tokens ("<|im_start|>", before the text's first word) are not words. "Known" is the text as the
decoder has it when it commits the token: the given tokens and those decided so far, on either side of i (the
AR baseline knows only what lies before i). The banned tokens get probability 0 before the sampler draws
(greedy: the most likely token left); the step records keep the model's own probabilities. Were every token
banned, the rule would give way.

The forms are read off the tokenizer once, when a model is loaded (`mark_forms`, which model.loading
calls); a model without them (no tokenizer known) gives every token its own form, all words.
"""

from __future__ import annotations

from functools import partial

import torch

from model.layout import LayoutTokens

# this version of the rule (part of model.eval's fills-cache key and of a run's options)
RULE = ("forms, words of joined pieces, window 64, skip 3 past sentence ends, none between a doubled word, "
        "special tokens not words, word pieces free")
WINDOW = 64  # tokens on each side of a committed position that an n-gram may repeat from
SKIP = 3  # letterless tokens the doubled-word check looks past ("one, one", "it. It", "it.\n\nIt")
APOSTROPHES = ("'", "\u2019")
FORMS = "a3_token_forms"  # the model attribute that `mark_forms` sets: a TokenForms


class TokenForms:
    """The vocabulary as the no-repeat rule reads it: each token's form (its text without surrounding spaces,
    lower-cased: " They" and "they" are one form; a token of bytes that make no character is its own form),
    which tokens hold no letter (not words: the rule looks past them), which tokens attach to the word
    before them (no leading space: "wood" in "Thistle|wood", "'s" in "Sam|'s"), and which are a bare
    apostrophe, which joins the pieces on either side into one word ("didn|’|t")."""

    def __init__(self, forms: list[int], letterless: list[bool], attaches: list[bool] | None = None,
                 apostrophe: list[bool] | None = None, layout: LayoutTokens | None = None):
        self.form, self.letterless = forms, letterless
        self.layout = layout  # which tokens begin with a space or hold a line break (model.layout); None: unknown
        self.attaches = attaches if attaches is not None else [False] * len(forms)
        self.apostrophe = apostrophe if apostrophe is not None else [False] * len(forms)
        self.letterless_ids = frozenset(t for t, no_letter in enumerate(letterless) if no_letter)
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
        attaches, apostrophe, texts = [False] * size, [False] * size, [""] * size
        special = set(getattr(tokenizer, "all_special_ids", None) or [])  # "<|im_start|>": not a word
        for i, piece in enumerate(pieces):
            text = tokenizer.convert_tokens_to_string([piece]) if piece is not None and i not in special else ""
            texts[i] = text
            key = text.strip().lower()
            forms[i] = first.setdefault(key, i) if key and "\ufffd" not in key else i
            letterless[i] = not any(ch.isalpha() for ch in text)
            attaches[i] = bool(text) and (text[0].isalnum() or text[0] in APOSTROPHES and text[1:2].isalpha())
            apostrophe[i] = text in APOSTROPHES
        return cls(forms, letterless, attaches, apostrophe, LayoutTokens.of_texts(texts))


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


AT_I = "i"  # position i's slot among the words of the window (RepeatGuard._words)


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

    def _neighbour(self, tokens: list[int], known: list[bool], i: int, step: int) -> tuple[int | None, int]:
        """(the form of the nearest word on one side of i, past up to SKIP tokens without a letter, all known,
        when that word is one token; the tokens without a letter passed). None where there is none, where it is
        a word of several pieces ("Sam|'s"), or where the token after i attaches to i (it is part of i's word)."""
        forms, length = self.forms, len(tokens)
        j = i + step
        if step > 0 and 0 <= j < length and known[j] and forms.attaches[tokens[j]]:
            return None, 0
        for passed in range(SKIP + 1):
            if not 0 <= j < length or not known[j]:
                return None, passed
            if not forms.letterless[tokens[j]]:
                whole = (not forms.attaches[tokens[j]] if step < 0
                         else not self._continues(tokens, known, j + 1))
                return (forms.form[tokens[j]] if whole else None), passed
            j += step
        return None, SKIP + 1

    def _continues(self, tokens: list[int], known: list[bool], j: int) -> bool:
        """Whether the known token at j (maybe after a bare apostrophe) continues the word before it."""
        forms = self.forms
        if j < len(tokens) and known[j] and forms.apostrophe[tokens[j]]:
            j += 1
        return j < len(tokens) and known[j] and forms.attaches[tokens[j]]

    def _words(self, tokens: list[int], known: list[bool], i: int) -> tuple[list, bool]:
        """The window around i read as words: a list of slots, each a known word (the tuple of its pieces'
        forms), None (a token not known yet, or a piece of a word not known yet) or AT_I (position i); and
        whether a known piece right after i continues i's word. Known tokens without a letter are left out,
        a bare apostrophe joining the pieces on either side ("didn|’|t" is one word, as the measure reads it)."""
        forms = self.forms
        lo, hi = max(0, i - self.window), min(len(tokens), i + self.window + 1)
        slots: list = []
        last, joined = None, False  # last: where the word in slots[-1] ends, when it is a known word
        for j in range(lo, hi):
            if j == i or not known[j]:
                slots.append(AT_I if j == i else None)
                last = None
                continue
            t = tokens[j]
            if forms.letterless[t]:
                continue
            if forms.attaches[t] and j > lo:
                prev = j - 2 if known[j - 1] and forms.apostrophe[tokens[j - 1]] and j - 1 > lo else j - 1
                if prev == i or not known[prev]:  # a piece of a word not known yet
                    joined = joined or prev == i
                    continue
                if last == prev:
                    slots[-1] = slots[-1] + (forms.form[t],)
                    last = j
                    continue
            slots.append((forms.form[t],))
            last = j
        return slots, joined

    def banned(self, tokens: list[int], known: list[bool], i: int) -> set[int]:
        """Tokens that position i may not take, given the sequence `tokens` and which positions are `known`."""
        n = self.n
        (left, before), (right, after) = self._neighbour(tokens, known, i, -1), self._neighbour(tokens, known, i, 1)
        out_forms = {f for f in (left, right) if f is not None}
        # the same word on both sides of i ("years _ years"): punctuation at i would double it ("years. years")
        between = self.forms.letterless_ids if left is not None and left == right and before + after < SKIP else ()
        slots, joined = self._words(tokens, known, i)
        if not joined:  # i starts a word of one token (a piece continuing the word before i is let be below)
            at = slots.index(AT_I)
            seen: dict[tuple, set] = {}  # n-grams of words with one slot blanked -> the words in that slot
            for s in range(len(slots) - n + 1):
                gram = slots[s : s + n]
                if s <= at < s + n or any(w is None for w in gram):
                    continue
                for hole in range(n):
                    seen.setdefault(tuple(gram[:hole]) + (None,) + tuple(gram[hole + 1 :]), set()).add(gram[hole])
            for s in range(max(0, at - n + 1), min(at, len(slots) - n) + 1):
                gram = slots[s : s + n]
                if all(w is not None for w in gram):
                    out_forms |= {w[0] for w in seen.get(tuple(None if w is AT_I else w for w in gram), ())
                                  if len(w) == 1}
        banned = {t for f in out_forms for t in self.forms.tokens.get(f, ())} | set(between)
        letterless = self.forms.letterless
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

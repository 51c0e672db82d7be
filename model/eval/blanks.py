"""The evaluation's blanks: a text cut into prefix, masked middle and suffix, as token ids and a given
mask."""

from __future__ import annotations

import torch

from model.data.stories import split_sentences

# --------------------------------------------------------------------------------------------------
# infilling examples: ids, which are given, and the blank's span


def make_example(prefix: list[int], middle: list[int], suffix: list[int], reference: str) -> dict:
    ids = prefix + middle + suffix
    given = torch.ones(len(ids), dtype=torch.bool)
    given[len(prefix) : len(prefix) + len(middle)] = False
    return {"ids": torch.tensor(ids), "given": given, "reference": reference,
            "span": (len(prefix), len(prefix) + len(middle)), "prefix": prefix, "suffix": suffix}


def infill_example(tokenizer, start_id: int, text: str, rng: torch.Generator, k: int | None = None) -> dict | None:
    """Mask one sentence (not the first: there is always a prefix) as a blank of its exact length: the
    k-th, or one drawn with `rng`."""
    sentences = split_sentences(text)
    if len(sentences) < 3:
        return None
    if k is None:
        k = int(torch.randint(1, len(sentences), (1,), generator=rng))
    before, target, after = " ".join(sentences[:k]), " " + sentences[k], " ".join(sentences[k + 1 :])
    prefix = [start_id] + tokenizer(before, add_special_tokens=False).input_ids
    middle = tokenizer(target, add_special_tokens=False).input_ids
    suffix = tokenizer(" " + after, add_special_tokens=False).input_ids if after else []
    return {**make_example(prefix, middle, suffix, target.strip()), "sentence": k}


def story_blanks(tokenizer, start_id: int, text: str, rng: torch.Generator, n: int = 1,
                 extra_rng: torch.Generator | None = None) -> list[dict]:
    """Up to n blanks of one story, each a different sentence, each its own example. The first is drawn
    with `rng` exactly as with n = 1 (so the default evaluation never changes); the others with
    `extra_rng`, which leaves `rng`'s stream (and the perplexities drawn from it) as it was."""
    if n > 1 and extra_rng is None:
        raise ValueError("several blanks per story need their own generator (extra_rng), for reproducible draws")
    first = infill_example(tokenizer, start_id, text, rng)
    if first is None or n <= 1:
        return [first] if first is not None else []
    sentences = split_sentences(text)
    others = [k for k in (torch.randperm(len(sentences) - 1, generator=extra_rng) + 1).tolist()
              if k != first["sentence"]]
    return [first] + [infill_example(tokenizer, start_id, text, rng, k) for k in others[: n - 1]]


def middle_infill_example(tokenizer, start_id: int, sentence: str) -> dict | None:
    """Mask the middle 40% of a sentence's tokens (the sentence alone is the context)."""
    from model.data.general import middle_span

    tokens = tokenizer(sentence, add_special_tokens=False).input_ids
    if len(tokens) < 5:
        return None
    lo, hi = middle_span(len(tokens))
    reference = tokenizer.decode(tokens[lo:hi], skip_special_tokens=True).strip()
    return make_example([start_id] + tokens[:lo], tokens[lo:hi], tokens[hi:], reference)


def prefix_only(example: dict) -> dict:
    """The same blank with everything after it removed."""
    lo, hi = example["span"]
    return {**example, "ids": example["ids"][:hi], "given": example["given"][:hi], "suffix": []}


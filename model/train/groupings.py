"""The groupings a batch is trained under: the curriculum stages, short spans, whole sentences.

Pure functions of lengths and a seeded generator (tested without a trainer); `staged_batch` turns a
batch and a stage into the model's inputs (group ids, and which positions the loss scores).
"""


from __future__ import annotations

import torch

from model.plans import CURRICULUM, make_plan, sample_training_groups

STAGES = (*CURRICULUM, "span", "sentences", "whole_sentences", "whole_outside_in")
# stages whose loss scores only the open positions (the given ones are context, as at inference)
FOCUS_STAGES = ("sentences", "whole_sentences", "whole_outside_in")
# the whole-sentence stages and the one order each fills its sentences in (one token per group)
WHOLE_SENTENCE_ORDERS = {"whole_sentences": "left_to_right", "whole_outside_in": "outside_in"}
SENTENCE_STAGES = FOCUS_STAGES  # stages that need the sentence-ending tokens


def sample_span_groups(length: int, generator: torch.Generator | None = None, max_span: int = 16) -> torch.Tensor:
    """A short-span infill grouping: 1..max_span open tokens anywhere after the start token, the rest
    given (left to right); the span decoded left to right (half the time) or in a random or
    outside-in order, one token per group half the time. This is the shape of a blank in the app
    and in the evaluation, where the plan decoder fills it left to right with both sides given."""
    given = sample_span(length, generator, max_span)
    return _open_order_groups(given, generator)


def _open_order_groups(given: torch.Tensor, generator: torch.Generator | None,
                       fixed_order: str | None = None) -> torch.Tensor:
    """Given positions left to right, then the open ones: left to right half the time, else random or
    outside-in; one token per group half the time, else groups of 2 or 4. fixed_order: always that
    order, one token per group (left_to_right: the evaluation's `a3_plan`; outside_in: its `a3_outside_in`)."""
    if fixed_order is not None:
        return make_plan(torch.zeros(given.numel(), dtype=torch.long), given=given, order=fixed_order).group_ids
    r = float(torch.rand(1, generator=generator))
    order = "left_to_right" if r < 0.5 else ("random" if r < 0.75 else "outside_in")
    size = 1 if float(torch.rand(1, generator=generator)) < 0.5 else (2, 4)[int(torch.randint(0, 2, (1,),
                                                                                  generator=generator))]
    plan = make_plan(torch.zeros(given.numel(), dtype=torch.long), given=given, order=order, group_size=size,
                     generator=generator)
    return plan.group_ids


def sample_span(length: int, generator: torch.Generator | None = None, max_span: int = 16) -> torch.Tensor:
    """A given mask (L,) with one open run of 1..max_span tokens anywhere after the start token."""
    n = length - 1
    span = int(torch.randint(1, min(max_span, n) + 1, (1,), generator=generator))
    start = 1 + int(torch.randint(0, n - span + 1, (1,), generator=generator))
    given = torch.ones(length, dtype=torch.bool)
    given[start : start + span] = False
    return given


def sentence_end_ids(tokenizer) -> torch.Tensor:
    """(V,) bool: the tokens that end a sentence (their text ends in . ! or ?, maybe with a quote)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return torch.tensor([t.rstrip().rstrip("\"'”").endswith((".", "!", "?")) for t in texts])


def sample_sentence_spans(ends: torch.Tensor, generator: torch.Generator | None = None,
                          fraction: tuple[float, float] = (0.15, 0.5), max_span: int = 40,
                          whole: bool = False) -> torch.Tensor:
    """A given mask (L,) with several open runs covering about a `fraction` of positions 1..L-1 (a last
    whole sentence may overshoot it): half the attempts place a whole sentence (after a sentence end up to
    the next one, as the evaluation masks them), the others a random run of 2..24 tokens. Runs never touch
    and the last token stays given, so every run has given text on both sides.
    whole: every run is a whole sentence with text after it (random runs only where there is none).

    ends: (L,) bool, True where the token ends a sentence."""
    length = ends.numel()
    n = length - 1
    given = torch.ones(length, dtype=torch.bool)
    if n < 3:  # too short for text on both sides: one open token after the start
        given[1] = False
        return given
    stops = ends.nonzero(as_tuple=True)[0].tolist()
    starts = [0, *stops[:-1]] if stops else []  # the token before each sentence
    sentences = [(a + 1, b + 1) for a, b in zip(starts, stops, strict=True) if 1 <= b - a <= max_span]
    if whole:
        sentences = [(a, b) for a, b in sentences if b <= length - 1]
    sentence_share = 1.0 if whole else 0.5
    lo, hi = fraction
    target = max(1, int(n * (lo + (hi - lo) * float(torch.rand(1, generator=generator)))))
    for _ in range(64):
        if int((~given).sum()) >= target:
            break
        if sentences and float(torch.rand(1, generator=generator)) < sentence_share:
            start, stop = sentences[int(torch.randint(0, len(sentences), (1,), generator=generator))]
        else:
            span = int(torch.randint(2, min(24, n) + 1, (1,), generator=generator))
            start = 1 + int(torch.randint(0, n - span + 1, (1,), generator=generator))
            stop = start + span
        stop = min(stop, length - 1)  # the last token stays given: every run has text after it
        # keep one given token between runs (and after the start token)
        if stop <= start or bool((~given[start - 1 : stop + 1]).any()):
            continue
        given[start:stop] = False
    if bool(given[1:].all()):
        given[1 + int(torch.randint(0, n - 1, (1,), generator=generator))] = False
    return given


def sample_groups(length: int, stage: str, generator: torch.Generator | None = None,
                  ends: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(group ids (L,), open mask (L,) or None): the open positions are returned for the stages that
    score only them (FOCUS_STAGES)."""
    if stage == "span":
        return sample_span_groups(length, generator), None
    if stage in SENTENCE_STAGES:
        # whole_sentences / whole_outside_in: only whole sentences, each filled one token at a time,
        # left to right / outside-in
        order = WHOLE_SENTENCE_ORDERS.get(stage)
        ends = ends if ends is not None else torch.zeros(length, dtype=torch.bool)
        given = sample_sentence_spans(ends[:length], generator, whole=order is not None)
        return _open_order_groups(given, generator, fixed_order=order), ~given
    return sample_training_groups(length, stage, generator), None


def batch_plan(attention_mask: torch.Tensor, stage: str, generator: torch.Generator,
               ends: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One grouping per sequence, over its real tokens; padding gets the largest group (never seen).
    Returns (groups (B, L), the positions to score (B, L) for a focus stage, else None).
    ends: (B, L) bool, the sentence-ending tokens (for the sentence stage)."""
    B, L = attention_mask.shape
    groups = torch.full((B, L), L + 1, dtype=torch.long)
    targets = torch.zeros((B, L), dtype=torch.bool) if stage in FOCUS_STAGES else None
    for b in range(B):
        n = int(attention_mask[b].sum())
        groups[b, :n], open_ = sample_groups(n, stage, generator, None if ends is None else ends[b, :n])
        if targets is not None:
            targets[b, :n] = open_
    return groups, targets


def batch_groups(attention_mask: torch.Tensor, stage: str, generator: torch.Generator,
                 ends: torch.Tensor | None = None) -> torch.Tensor:
    return batch_plan(attention_mask, stage, generator, ends)[0]


def staged_batch(batch: dict, stage: str, generator: torch.Generator, end_ids: torch.Tensor | None) -> dict:
    """The model's inputs for one stage: group ids added; in a focus stage the given labels are -100."""
    mask = batch["attention_mask"].cpu()
    ends = end_ids[batch["input_ids"].cpu()] if end_ids is not None else None
    groups, targets = batch_plan(mask, stage, generator, ends)
    device = batch["input_ids"].device
    out = {**batch, "group_ids": groups.to(device)}
    if targets is not None:
        out["labels"] = batch["labels"].masked_fill(~targets.to(device), -100)
    return out


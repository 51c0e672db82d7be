"""The evaluation's measures: likelihood-based scores under the base AR model (the judge), whether a
fill ends its sentence, and bootstrap intervals (whole clusters resampled) for means and paired
differences."""

from __future__ import annotations

import re

import torch

from model.decoding import causal_log_probs

RESAMPLES = 2000

# --------------------------------------------------------------------------------------------------
# likelihoods


def ar_log_likelihood(base, token_ids) -> float:
    """log p(x_1..n | x_0) under the base AR model."""
    return float(causal_log_probs(base, token_ids).sum())


def continuation_nll(base, prefix: list[int], fill: list[int], suffix: list[int]) -> tuple[float, float]:
    """(suffix_nll, text_nll) under the base AR model, from one forward pass: the mean NLL per token of
    `suffix` given `prefix + fill`, and of `fill + suffix` given `prefix` (nan where empty)."""
    if not suffix and not fill:
        return float("nan"), float("nan")
    logp = causal_log_probs(base, prefix + fill + suffix)
    after = len(fill) + len(suffix)
    suffix_part = float(-logp[-len(suffix):].mean()) if suffix else float("nan")
    return suffix_part, float(-logp[-after:].mean())


def suffix_nll(base, prefix: list[int], fill: list[int], suffix: list[int]) -> float:
    """Mean NLL per token of `suffix` given `prefix + fill` under the base AR model (nan if no suffix)."""
    return continuation_nll(base, prefix, fill, suffix)[0]


def ends_sentence(text: str) -> bool:
    """Whether a fill's text ends a sentence: . ! or ? last, maybe inside a closing quote or bracket."""
    return text.rstrip().rstrip("\"'”’)]").endswith((".", "!", "?"))


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'’]+", text.lower())  # a curly apostrophe belongs to its word, as a straight one


def has_repeat(before: str, fill: str, after: str) -> bool:
    """Whether a fill stutters: an immediately doubled word, or a word 3-gram that occurs twice, in the
    fill plus the 3 words on each side of it, with at least one of the words in the fill. ("that that is
    is", "to the library, he went to the library"). Case-insensitive; punctuation is not a word; an
    apostrophe, straight or curly, is part of one ("didn’t", as "didn't")."""
    left, middle, right = _words(before)[-3:], _words(fill), _words(after)[:3]
    if not middle:
        return False
    words = left + middle + right
    in_fill = range(len(left), len(left) + len(middle))
    if any(words[i] == words[i + 1] and (i in in_fill or i + 1 in in_fill) for i in range(len(words) - 1)):
        return True
    seen: dict[tuple, list[int]] = {}
    for i in range(len(words) - 2):
        seen.setdefault(tuple(words[i : i + 3]), []).append(i)
    return any(len(starts) > 1 and any(set(range(s, s + 3)) & set(in_fill) for s in starts)
               for starts in seen.values())


def bootstrap_ci(values, *, clusters=None, seed: int = 0, resamples: int = RESAMPLES) -> list[float] | None:
    """The 95% percentile bootstrap interval of the mean of `values` (None under two values or clusters).

    clusters: one label per value (e.g. the story of each blank); whole clusters are resampled, so several
    blanks of one story count as the correlated evidence they are. Without it every value is its own."""
    if clusters is not None and len(clusters) != len(values):
        raise ValueError(f"one cluster label per value: {len(clusters)} labels for {len(values)} values")
    labels = list(range(len(values))) if clusters is None else list(clusters)
    order = list(dict.fromkeys(labels))  # clusters in order of first appearance
    if len(order) < 2:
        return None
    index = {label: i for i, label in enumerate(order)}
    sums, counts = torch.zeros(len(order), dtype=torch.float64), torch.zeros(len(order), dtype=torch.float64)
    for value, label in zip(values, labels, strict=True):
        sums[index[label]] += value
        counts[index[label]] += 1
    picks = torch.randint(len(order), (resamples, len(order)), generator=torch.Generator().manual_seed(seed))
    means = sums[picks].sum(1) / counts[picks].sum(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return [round(lo, 3), round(hi, 3)]


def paired_difference(a, b, *, clusters=None, seed: int = 0) -> dict:
    """Mean of a[i] - b[i] over the same examples, with its 95% bootstrap interval (see bootstrap_ci)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same examples: {len(a)} vs {len(b)} values")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    return {"mean": round(sum(diffs) / len(diffs), 3) if diffs else None,
            "ci95": bootstrap_ci(diffs, clusters=clusters, seed=seed), "n": len(diffs)}



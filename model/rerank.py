"""Best of N: decode one blank several ways, keep the text the A3 model itself finds most likely.

What A3 offers and a left-to-right model does not: the exact likelihood of a whole text under any order,
in one forward pass. So a blank can be filled by several decoders (left to right, ends first, dynamic, a few
sampled runs with fixed seeds) and the complete texts compared by the model's own
log p of the whole text (left-to-right grouping: each token given everything before it, the fill and
the text after it included, so a fill that does not lead into what follows pays for it). The plan and
dynamic candidates are decoded together, one model call per step for all of them, each exactly as it
would be alone (`decode_together`: the given tokens' content computed once for all); one forward pass
scores every candidate, computing the rows the texts share (the text before the blank) once
(`left_to_right_log_likelihoods`); the base AR model is never asked.

    result = best_of_n(model, token_ids, given)          # a BestOfN: every candidate with its score
    result.best.trace                                    # the chosen decode (a DecodeTrace)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from model.config import DecodeConfig, Sampler
from model.decoding import (
    TOGETHER_METHODS,
    DecodeTrace,
    collect,
    decode,
    decode_together,
    left_to_right_log_likelihoods,
)
from model.layout import Layout
from model.plans import make_plan

if TYPE_CHECKING:  # a type only: the models run are network.A3Net or this (model.loading)
    from model.modeling import A3ForAnyOrderLM

BEST_OF_N_LABEL = "A3 best of N"  # its name on the page and in the API (app.session.BEST_OF_N)

# The candidates, in the order they are listed (ties go to the earlier one): the paper's left-to-right
# plan first, so a tie keeps the default reading order. "Ends first" decides the blank's last token before
# the rest (model.plans): a blank's length is fixed, and a fill written left to right often runs out of room
# mid-sentence ("... a little piece of,"); with its end chosen first it is written towards that end. Chosen
# on the validation split (docs/evaluation.md, "Ends first"): over left to right, outside-in, dynamic, right to
# left and two sampled runs, these six ended 79% of the story fills' sentences against 46%, with a lower text
# NLL; outside-in and right to left were almost never the most likely and gave their places up.
CANDIDATES: tuple[tuple[str, DecodeConfig], ...] = (
    ("left to right", DecodeConfig("plan", order="left_to_right", preview_open=False)),
    ("ends first", DecodeConfig("plan", order="ends_first", preview_open=False)),
    ("dynamic (confidence)", DecodeConfig("dynamic", strategy="confidence", k=1)),
    ("ends first, sampled, T 0.7, seed 1", DecodeConfig("plan", order="ends_first", sampler=Sampler(0.7), seed=1,
                                                        preview_open=False)),
    ("sampled, T 0.7, seed 1", DecodeConfig("plan", order="left_to_right", sampler=Sampler(0.7), seed=1,
                                            preview_open=False)),
    ("sampled, T 0.7, seed 2", DecodeConfig("plan", order="left_to_right", sampler=Sampler(0.7), seed=2,
                                            preview_open=False)),
)


def candidates_with(no_repeat: int, candidates=CANDIDATES) -> tuple[tuple[str, DecodeConfig], ...]:
    """The candidates, each with the no-repeat rule `no_repeat` (model.repeats; 0: as they are)."""
    return tuple((name, config.with_no_repeat(no_repeat)) for name, config in candidates)


@dataclass
class Candidate:
    name: str
    config: DecodeConfig
    trace: DecodeTrace
    logp: float  # exact log p of the whole text under the A3 model, left-to-right grouping
    calls: int  # model calls its decode took
    together: bool = False  # decoded in lockstep with the other candidates (their calls are shared)

    def to_dict(self) -> dict:
        return {"name": self.name, "config": self.config.to_dict(), "logp": round(self.logp, 4),
                "calls": self.calls, "together": self.together, "final_ids": list(self.trace.final_ids)}


@dataclass
class BestOfN:
    candidates: list[Candidate]
    best_index: int  # the argmax of the scores (the first of equals)
    scoring_calls: int  # forward passes that scored the candidates (one per batch)
    seconds: float = 0.0  # wall time of the whole search: every decode and the scoring

    @property
    def best(self) -> Candidate:
        return self.candidates[self.best_index]

    def to_dict(self, tokenizer=None) -> dict:
        """Every candidate with its whole trace (DecodeTrace.to_dict), its score and calls; from_dict reads it."""
        return {"candidates": [{**c.to_dict(), "trace": c.trace.to_dict(tokenizer)} for c in self.candidates],
                "best_index": self.best_index, "scoring_calls": self.scoring_calls, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, d: dict) -> BestOfN:
        candidates = [Candidate(c["name"], DecodeConfig.from_dict(c["config"]), DecodeTrace.from_dict(c["trace"]),
                                float(c["logp"]), int(c["calls"]), bool(c.get("together", False)))
                      for c in d["candidates"]]
        best = int(d["best_index"])
        if not 0 <= best < len(candidates):
            raise ValueError(f"best_index {best} is not one of the {len(candidates)} candidates")
        return cls(candidates, best, int(d["scoring_calls"]), float(d.get("seconds", 0.0)))

    @property
    def decode_calls(self) -> int:
        """The decodes' forward passes: the lockstep decode (shared: as many calls as its longest candidate)
        and each other candidate's decode."""
        shared = max((c.calls for c in self.candidates if c.together), default=0)
        return shared + sum(c.calls for c in self.candidates if not c.together)

    @property
    def model_calls(self) -> int:
        """Every forward pass: the decodes' (`decode_calls`) and the scoring."""
        return self.decode_calls + self.scoring_calls


def _together(config: DecodeConfig) -> bool:
    """Whether a candidate is decoded in lockstep with the others (`decode_together`): plan and dynamic
    decoding; any other method is decoded alone."""
    return config.method in TOGETHER_METHODS


def _steps(n_open: int, config: DecodeConfig) -> int:
    """Model calls of one decode of `n_open` tokens: one per group (k per step for the dynamic decoders;
    for plans, groups of `group_size`: exact for every order but blocks, span_left_to_right and ends_first,
    whose groups may come out smaller at span edges or between the ends and the rest; exact for all of
    them in groups of 1, as every candidate of CANDIDATES is)."""
    return -(-n_open // (config.k if config.spec.k else config.group_size))


def planned_calls(n_open: int, candidates=CANDIDATES, batch_size: int = 8) -> int:
    """The model calls a best-of-N decode of `n_open` blank tokens takes, known before it runs (what the
    page says it will cost): the lockstep decode's (as many as its longest candidate), one per step of
    each candidate decoded alone, and one scoring pass per `batch_size` candidates."""
    shared = max((_steps(n_open, c) for _, c in candidates if _together(c)), default=0)
    alone = sum(_steps(n_open, c) for _, c in candidates if not _together(c))
    return shared + alone + -(-len(candidates) // batch_size)


def best_of_n(model: A3ForAnyOrderLM, token_ids, given, *, candidates=CANDIDATES,
              given_grouping: str = "causal", batch_size: int = 8, layout: Layout | None = None) -> BestOfN:
    """Decode the open positions with every candidate config and keep the most likely whole text.

    token_ids (L,), given (L,) bool. Every candidate is decoded on a plan made in its own order (its
    config's order and group size) with the given tokens laid out as the model reads context
    (`given_grouping`); the complete texts are scored together, `batch_size` per forward pass. A `layout`
    (model.layout: what a typed text says of its fills) rules every candidate's choices.
    """
    if not candidates:
        raise ValueError("best_of_n needs at least one candidate config.")
    began = time.perf_counter()
    ids = torch.as_tensor(token_ids, dtype=torch.long)
    given = torch.as_tensor(given, dtype=torch.bool)
    plans = []
    for _, config in candidates:
        order = config.order if config.order != "custom" else "left_to_right"  # dynamic: any plan will do
        plans.append(make_plan(ids, given=given, order=order, group_size=config.group_size,
                               given_grouping=given_grouping).with_layout(layout))
    together = [i for i, (_, config) in enumerate(candidates) if _together(config)]
    traces = dict(zip(together, decode_together(model, [plans[i] for i in together],
                                                [candidates[i][1] for i in together]), strict=True)) \
        if together else {}
    for i, (_, config) in enumerate(candidates):
        if i not in traces:
            traces[i] = collect(decode(model, plans[i], config))
    for i, (name, _) in enumerate(candidates):
        traces[i].settings["candidate"] = name  # which of best of N's decodes it is (titles and exports name it)
    decoded = [(name, config, traces[i]) for i, (name, config) in enumerate(candidates)]
    texts = torch.tensor([trace.final_ids for _, _, trace in decoded])
    scores, calls = [], 0
    for start in range(0, len(decoded), batch_size):
        totals, _ = left_to_right_log_likelihoods(model, texts[start : start + batch_size])
        scores += totals.tolist()
        calls += 1
    out = [Candidate(name, config, trace, score, trace.model_calls, _together(config))
           for (name, config, trace), score in zip(decoded, scores, strict=True)]
    best = max(range(len(out)), key=lambda i: (out[i].logp, -i))
    return BestOfN(out, best, calls, time.perf_counter() - began)

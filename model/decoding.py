"""Decoders: each is a generator that yields one `DecodeStep` per model call.

    decode_plan              the paper's Algorithm 1: one group per step, in the plan's order, with a
                             content-stream KV cache (cache=False recomputes everything: what the
                             official code does)
    decode_dynamic           Algorithm 2: each step scores every open position (confidence, entropy or
                             random), commits the best k, and those k become the next group, so the
                             content of committed tokens is cached exactly as in training
    decode_official_dynamic  the official code's variant: all committed tokens in one bidirectional
                             group 0, every blank in group 1, full recompute every step
    decode_diffusion         iterative masked diffusion: every step predicts every blank from the given
                             and all revealed tokens, laid out as the model reads its given text (each its
                             own group in position order for a causal model; one bidirectional group, the
                             official variant's computation, for a joint one), reveals the k most confident
                             and feeds them back; in the causal layout the rows before the first blank are
                             computed once and kept
    decode_one_step_parallel one denoising step: every open token is predicted from the given tokens
                             only (revealed tokens are never fed back); k revealed per step
    decode_ar_baseline       the base AR model left to right: each open token sees its left context only

`collect(gen)` runs a decoder into a `DecodeTrace` (JSON-exportable). `sequence_log_likelihood` gives
the exact log-likelihood of a complete sequence under any grouping in one forward pass.
`decode_together` runs several plan and dynamic decodes of one text in lockstep, one model call per
step for all of them, each giving what it gives alone (model.rerank's candidates), and
`left_to_right_log_likelihoods` scores several texts in one pass, computing what they share once.

Resuming (what model/branching.py builds on): decode_plan and decode_dynamic take `keep_cache=True`,
which leaves the engine's content cache on the returned trace (`trace.cache`), and `prefix=DecodePrefix`,
which starts after steps already decided (their records are copied, their cached keys reused, so the
shared prefix is never recomputed) and may dictate what the first new step commits.

Dynamic decoders (dynamic, official_dynamic, diffusion, one_step_parallel) rank open positions on the
distribution tokens are drawn from, as the official code does: temperature (1 when greedy), then
top-k / top-p (`selection_scores`). Step records keep the model's own temperature-1 statistics too.
Every decoder refuses a plan that would predict an open position from no context (nothing given, or,
for plan decoding, an open position in the lowest group): give at least one token first.

A step is cheap with the cache: the newly committed group's content rows and the next group's query
rows, attending to cached keys/values of all earlier groups. Randomness comes only from the
`torch.Generator` passed in; sampling happens on the CPU so a seed means the same on every device.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from model.config import METHODS, STRATEGIES, DecodeConfig, Sampler
from model.layout import ruled_logits
from model.network import A3Cache, RopeTables
from model.plans import Plan, PlanError, check_context
from model.repeats import RULE, RepeatGuard, forms_of

if TYPE_CHECKING:  # a type only: the models run are network.A3Net or this (model.loading)
    from model.modeling import A3ForAnyOrderLM

MODES = tuple(METHODS)  # the trace modes: one per decoding method


# --------------------------------------------------------------------------------------------------
# sampling


def filtered_logits(logits: torch.Tensor, sampler: Sampler) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) on (N, V) float logits."""
    logits = logits / sampler.temperature
    if sampler.top_k:
        kth = torch.topk(logits, min(sampler.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampler.top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= sampler.top_p  # keep the first token always
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def choose_tokens(logits: torch.Tensor, sampler: Sampler, generator: torch.Generator | None) -> torch.Tensor:
    """(N, V) logits -> (N,) tokens: argmax at temperature 0, else a seeded sample."""
    logits = logits.float().cpu()
    if sampler.temperature == 0:
        return logits.argmax(-1)
    probs = filtered_logits(logits, sampler).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# --------------------------------------------------------------------------------------------------
# the step record and the trace


@dataclass
class DecodeStep:
    step: int  # 0-based
    group: int  # the group id committed by this step
    positions: list[int]  # committed positions
    tokens: list[int]  # committed tokens
    token_logprobs: list[float]  # log p(token) under the model (temperature 1, unfiltered)
    logprob: float  # their sum: log p(x_G | x_<G) for this group
    candidates: dict[int, list[tuple[int, float]]]  # open position -> top-k (token, prob)
    entropy: dict[int, float]  # open position -> entropy (nats)
    confidence: dict[int, float]  # open position -> max probability
    model_calls: int  # so far, this step included
    elapsed_s: float  # since the decoder started
    group_ids: list[int] | None = None  # the grouping this call used, when it differs from the trace's
    selection_scores: dict[int, float] | None = None  # dynamic decoders: open position -> what was ranked by
    rule_banned: list[int] | None = None  # positions whose most likely token the no-repeat rule banned (model.repeats)
    layout_banned: list[int] | None = None  # positions whose likeliest token the typed layout ruled out (model.layout)


@dataclass
class DecodeTrace:
    mode: str
    plan: Plan  # the input: tokens, given mask, group ids (for dynamic modes: the groups realised)
    steps: list[DecodeStep] = field(default_factory=list)
    final_ids: list[int] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # what is not the config: the cache flag, a display label
    config: DecodeConfig = field(default_factory=DecodeConfig)  # how it was decoded (model.config)
    # decode_plan / decode_dynamic with keep_cache=True: the content cache at the end (never exported)
    cache: A3Cache | None = field(default=None, repr=False, compare=False)

    @property
    def group_ids(self) -> list[int]:
        return self.plan.group_ids.tolist()

    @property
    def given(self) -> list[bool]:
        return self.plan.given.tolist()

    @property
    def logprob(self) -> float:
        return float(sum(s.logprob for s in self.steps))

    @property
    def model_calls(self) -> int:
        return self.steps[-1].model_calls if self.steps else 0

    @property
    def elapsed_s(self) -> float:
        return self.steps[-1].elapsed_s if self.steps else 0.0

    def decided_step(self) -> list[int]:
        """Per position: the step that committed it, -1 for given positions."""
        out = [-1] * self.plan.length
        for s in self.steps:
            for p in s.positions:
                out[p] = s.step
        return out

    def tokens_at(self, step: int) -> list[int | None]:
        """The sequence after `step` steps (step = -1: before any): None where still open."""
        initial = self.plan.token_ids.tolist()
        ids: list[int | None] = [t if g else None for t, g in zip(initial, self.given, strict=True)]
        for s in self.steps[: step + 1]:
            for p, t in zip(s.positions, s.tokens, strict=True):
                ids[p] = t
        return ids

    def sequence_at(self, step: int) -> list[int]:
        """The tokens after `step` steps with the plan's placeholder where a position is still open."""
        placeholders = self.plan.token_ids.tolist()
        return [p if t is None else t for t, p in zip(self.tokens_at(step), placeholders, strict=True)]

    def group_ids_at(self, step: int) -> list[int]:
        """The grouping the model used at `step` (it changes per step in the official variant)."""
        if 0 <= step < len(self.steps) and self.steps[step].group_ids is not None:
            return self.steps[step].group_ids
        return self.group_ids

    def to_dict(self, tokenizer=None) -> dict:
        d = {"mode": self.mode, "config": self.config.to_dict(), "settings": self.settings, "plan": self.plan.to_dict(),
             "final_ids": self.final_ids, "logprob": self.logprob, "model_calls": self.model_calls,
             "elapsed_s": self.elapsed_s, "decided_step": self.decided_step(),
             "steps": [_step_dict(s) for s in self.steps]}
        if self.config.sampler.no_repeat:  # which version of the rule chose these tokens (model.repeats)
            d["no_repeat_rule"] = RULE
        if tokenizer is not None:
            from model.text import decode_text, token_strings

            d["final_tokens"] = token_strings(tokenizer, self.final_ids)
            d["final_text"] = decode_text(tokenizer, self.final_ids)
        return d

    def to_json(self, tokenizer=None, **kwargs) -> str:
        return json.dumps(self.to_dict(tokenizer), **kwargs)

    @classmethod
    def from_dict(cls, d: dict) -> DecodeTrace:
        steps = []
        for s in d["steps"]:
            s = dict(s)
            for key in ("candidates", "entropy", "confidence", "selection_scores"):
                if s.get(key) is not None:
                    s[key] = {int(k): v for k, v in s[key].items()}
            s["candidates"] = {k: [tuple(c) for c in v] for k, v in s["candidates"].items()}
            steps.append(DecodeStep(**s))
        return cls(d["mode"], Plan.from_dict(d["plan"]), steps, d["final_ids"], d.get("settings", {}),
                   DecodeConfig.from_trace_dict(d))


def _step_dict(step: DecodeStep) -> dict:
    d = asdict(step)
    d["candidates"] = {str(k): [list(c) for c in v] for k, v in step.candidates.items()}
    d["entropy"] = {str(k): v for k, v in step.entropy.items()}
    d["confidence"] = {str(k): v for k, v in step.confidence.items()}
    if step.selection_scores is not None:
        d["selection_scores"] = {str(k): v for k, v in step.selection_scores.items()}
    for key in ("rule_banned", "layout_banned"):
        if d[key] is None:
            d.pop(key)  # the rule did nothing here (or was off): traces read as before it existed
    return d


@dataclass
class DecodePrefix:
    """Where decode_plan / decode_dynamic start again: after `steps`, decided earlier (by a parent trace).

    steps: the first steps of the new trace, kept as they are (the caller passes copies it may share).
    cache: content keys/values of exactly the context of the first new step (given and decided
      positions in groups before its group), e.g. a parent's kept cache truncated; the decoder appends
      to it, so pass a copy. None: that context is recomputed by the first new call.
    commit: what the first new step commits instead of choosing (position -> token): plan decoding
      forces these tokens in its group (the positions must belong to it; others are sampled), dynamic
      decoding commits exactly these positions whatever its strategy ranks first.
    """

    steps: list[DecodeStep] = field(default_factory=list)
    cache: A3Cache | None = None
    commit: dict[int, int] | None = None


def collect(steps: Iterator[DecodeStep]) -> DecodeTrace:
    """Run a decoder to the end; the generator's return value is the trace."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


# --------------------------------------------------------------------------------------------------
# shared pieces


def _check_plan(model: A3ForAnyOrderLM, plan: Plan, *, own_groups: bool = False) -> None:
    """own_groups: the decoder runs the plan's own grouping (Algorithm 1), so every open group needs a
    given token before it; the others regroup the open positions after the given ones and need one."""
    limit = model.config.max_position_embeddings
    if plan.length > limit:
        raise PlanError(f"the sequence has {plan.length} positions but the model takes at most {limit}; "
                        "shorten the text or the blanks.")
    if not plan.open_positions:
        raise PlanError("the open set is empty: nothing to decode.")
    vocab = model.config.vocab_size
    if int(plan.token_ids.max()) >= vocab or int(plan.token_ids.min()) < 0:
        raise PlanError(f"token_ids must lie in [0, {vocab}) for this model.")
    if own_groups:
        check_context(plan.given, plan.group_ids)
    elif not bool(plan.given.any()):
        raise PlanError("nothing is given, so the first step would predict from no context (a constant output "
                        "the model was never trained on). Give at least one token first, e.g. the start token.")


def _as_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(0 if seed is None else seed)


@dataclass
class _StepStats:
    """Distribution statistics of query rows, all at temperature 1 (what the model believes)."""

    logprobs: torch.Tensor  # (N, V) float32 on CPU
    candidates: dict[int, list[tuple[int, float]]]
    entropy: dict[int, float]
    confidence: dict[int, float]


def _stats(logits: torch.Tensor, positions: list[int], top_k: int) -> _StepStats:
    logprobs = logits.float().log_softmax(-1).cpu()  # (N, V)
    probs = logprobs.exp()
    entropy = -(probs * logprobs).sum(-1)
    top_p, top_i = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    cands = {p: list(zip(top_i[n].tolist(), [round(x, 6) for x in top_p[n].tolist()], strict=True))
             for n, p in enumerate(positions)}
    return _StepStats(logprobs, cands, dict(zip(positions, entropy.tolist(), strict=True)),
                      dict(zip(positions, top_p[:, 0].tolist(), strict=True)))


def _tensor(values, device) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long, device=device).view(1, -1)


class DecodeEngine:
    """Runs query rows against cached (or recomputed) content of a model, counting calls."""

    def __init__(self, model: A3ForAnyOrderLM, plan: Plan, *, cache: bool, full_forward: bool = False):
        self.model, self.device = model, next(model.parameters()).device
        self.tokens = plan.token_ids.clone()
        self.use_cache, self.full_forward = cache, full_forward and not cache
        self.cache = A3Cache(model.config, 1, plan.length, device=self.device,
                             dtype=next(model.parameters()).dtype) if cache else None
        self.cached = torch.zeros(plan.length, dtype=torch.bool)
        self.final = 0  # known_logits: the cache's rows that no later reveal can change
        self.calls = 0

    @torch.no_grad()
    def known_logits(self, groups: torch.Tensor, open_now: list[int], last: int) -> torch.Tensor:
        """Query-stream logits (Q, V) of the open positions, one last group `last`, after every known
        position laid out causally (`groups`: each known token its own group, in position order).

        A known token's content row then sees the known tokens up to its own position only, so the rows
        before the first open position never change again: they stay in the cache (`self.final` of them)
        and only the known rows after it are computed, each call, provisionally after them. Without the
        cache every known row is recomputed."""
        if not self.use_cache:
            return self.query_logits(groups, [], open_now, [last] * len(open_now))
        # (kept apart from query_logits' cache: `self.cached` is not kept up to date here; one engine uses one)
        self.calls += 1
        self.cache.truncate(self.final)  # forget the previous call's provisional rows
        open_set = set(open_now)
        new = [p for p in range(self.final, self.tokens.numel()) if p not in open_set]
        logits = self._forward(groups, new, open_now, [last] * len(open_now))
        self.final = min(open_now)  # every position before it is known: its row is final from now on
        return logits

    def resume(self, prefix: DecodePrefix) -> None:
        """Continue after `prefix`: its tokens are decided, its cache (if any) already holds its context,
        and its model calls count as calls so far (they were made once, by whoever decided the prefix)."""
        for s in prefix.steps:
            self.tokens[s.positions] = torch.as_tensor(s.tokens, dtype=torch.long)
        self.calls = prefix.steps[-1].model_calls if prefix.steps else 0
        if self.use_cache and prefix.cache is not None:
            self.cache = prefix.cache
            self.cached[:] = False
            self.cached[prefix.cache.positions[0, : prefix.cache.length].cpu()] = True

    @torch.no_grad()
    def query_logits(self, groups: torch.Tensor, content_positions: list[int], query_positions: list[int],
                     query_groups: list[int]) -> torch.Tensor:
        """Query-stream logits (Q, V) for query rows, after adding `content_positions` to the context.

        With the cache, only content rows not yet cached are computed; without it, every position's
        content row is recomputed from the current tokens (later groups are masked, so placeholders
        at still-open positions are never seen). full_forward also runs the query stream and the LM
        head on every position, as the official code's generate_two_stream does each step.
        """
        self.calls += 1
        if self.use_cache:
            new = [p for p in content_positions if not self.cached[p]]
            self.cached[new] = True
        else:
            new = list(range(self.tokens.numel()))
        n_rows = len(query_positions)
        if self.full_forward:
            rest = sorted(set(range(self.tokens.numel())) - set(query_positions))
            query_positions, query_groups = query_positions + rest, query_groups + groups[rest].tolist()
        return self._forward(groups, new, query_positions, query_groups)[:n_rows]

    def _forward(self, groups: torch.Tensor, content_positions: list[int], query_positions: list[int],
                 query_groups: list[int]) -> torch.Tensor:
        """One call: these content rows (into the cache, if any) and these query rows; the query rows' logits."""
        dev = self.device
        out = self.model.model(
            content_ids=_tensor(self.tokens[content_positions].tolist(), dev),
            content_positions=_tensor(content_positions, dev),
            content_groups=_tensor(groups[content_positions].tolist(), dev),
            query_positions=_tensor(query_positions, dev), query_groups=_tensor(query_groups, dev), cache=self.cache,
        )
        return self.model.lm_head(out.query[0])  # (Q, V)


def _commit(tokens: torch.Tensor, positions: list[int], logits_rows: torch.Tensor, stats: _StepStats,
            sampler: Sampler, generator, force: torch.Tensor | None, guard: RepeatGuard | None = None,
            open_now: list[int] | None = None) -> tuple[list[int], list[float], list[int]]:
    """Commit tokens at `positions` of `tokens` (a decode's current sequence, written in place): forced ones
    (force >= 0) as given, the others chosen by the sampler. With a `guard` (Sampler.no_repeat), each
    position in turn, left to right, is kept from stuttering against the known text: every position but
    `open_now` (still open before this commit) and what this commit has already placed. Returns the tokens,
    their log-probabilities, and the positions whose most likely token the guard banned."""
    forced = force[positions] if force is not None else None
    banned: list[int] = []
    if forced is not None and bool((forced >= 0).all()):
        chosen = forced  # all forced: the generator is not touched
    elif guard is not None:
        chosen, banned = _guarded_choice(tokens, positions, logits_rows, sampler, generator, forced, guard, open_now)
    else:
        chosen = choose_tokens(logits_rows, sampler, generator)
        if forced is not None:
            chosen = torch.where(forced >= 0, forced, chosen)
    tokens[positions] = chosen
    return chosen.tolist(), [float(stats.logprobs[n, t]) for n, t in enumerate(chosen.tolist())], banned


def _guarded_choice(tokens: torch.Tensor, positions: list[int], logits_rows: torch.Tensor, sampler: Sampler,
                    generator, forced: torch.Tensor | None, guard: RepeatGuard,
                    open_now: list[int]) -> tuple[torch.Tensor, list[int]]:
    """`choose_tokens` one position at a time, in position order, with the no-repeat rule's tokens banned
    (forced positions keep their token); also the positions whose most likely token was banned."""
    sequence = tokens.tolist()
    known = [True] * len(sequence)
    for p in open_now:
        known[p] = False
    rows = logits_rows.float().cpu()
    chosen, banned = torch.empty(len(positions), dtype=torch.long), []
    for n in sorted(range(len(positions)), key=lambda r: positions[r]):
        p = positions[n]
        if forced is not None and int(forced[n]) >= 0:
            token = int(forced[n])
        else:
            token, top_banned = guard.choose(rows[n], sequence, known, p, sampler, generator)
            if top_banned:
                banned.append(p)
        chosen[n], sequence[p], known[p] = token, token, True
    return chosen, sorted(banned)


def _ruled(model, plan: Plan, logits: torch.Tensor, positions: list[int]) -> tuple[torch.Tensor, set[int]]:
    """The logits the choice reads (model.layout: the tokens the text's layout rules out at -inf; the model's
    own ones go to the step's records), and the positions whose most likely token the layout ruled out."""
    if not plan.layout:
        return logits, set()
    forms = forms_of(model)
    if forms is None or forms.layout is None:
        raise PlanError("the plan has a layout (model.layout) but the model knows no tokenizer to read it with: "
                        "load it with model.loading.load_model, or call model.repeats.mark_forms(model, tokenizer).")
    return ruled_logits(logits, positions, plan.layout, forms.layout)


def _make_step(step, group, positions, tokens, logps, stats, calls, start, group_ids=None,
               scores=None, banned=None, moved=None) -> DecodeStep:
    return DecodeStep(step=step, group=int(group), positions=[int(p) for p in positions], tokens=tokens,
                      token_logprobs=logps, logprob=float(sum(logps)), candidates=stats.candidates,
                      entropy=stats.entropy, confidence=stats.confidence, model_calls=calls,
                      elapsed_s=time.perf_counter() - start, group_ids=group_ids, selection_scores=scores,
                      rule_banned=banned or None,
                      layout_banned=sorted(set(moved or ()) & {int(p) for p in positions}) or None)


def _choose_positions(logits, open_now: list[int], strategy: str, k: int, sampler: Sampler, generator):
    """The positions to commit and the scores they were chosen by (open position -> score)."""
    scores = selection_scores(logits, strategy, sampler, generator)
    return _select(scores, open_now, k), dict(zip(open_now, scores.tolist(), strict=True))




def _force(force_tokens, plan: Plan, commit: dict[int, int] | None = None) -> torch.Tensor | None:
    """Full-length forced tokens, -1 where not forced; a prefix's `commit` is forced on top."""
    if force_tokens is None and not commit:
        return None
    if force_tokens is None:
        force = torch.full((plan.length,), -1, dtype=torch.long)
    else:
        force = torch.as_tensor(force_tokens, dtype=torch.long).clone()
        if force.shape != (plan.length,):
            raise PlanError(f"force_tokens must have one token per position ({plan.length}); "
                            f"got {tuple(force.shape)}.")
    for p, t in (commit or {}).items():
        force[p] = t
    return force


def _start(engine: DecodeEngine, trace: DecodeTrace, prefix: DecodePrefix | None) -> tuple[int, float]:
    """Resume the engine and the trace after a prefix: (steps already decided, the clock's start), so
    step numbers, model calls and elapsed times continue from the prefix's last step."""
    if prefix is None:
        return 0, time.perf_counter()
    engine.resume(prefix)
    trace.steps = list(prefix.steps)
    return len(prefix.steps), time.perf_counter() - trace.elapsed_s


def _check_commit(prefix: DecodePrefix | None, allowed: list[int], what: str) -> None:
    extra = sorted(set((prefix.commit or {}) if prefix else ()) - set(allowed))
    if extra:
        raise PlanError(f"prefix.commit names positions {extra[:8]} that are not {what} {allowed[:16]}.")


# --------------------------------------------------------------------------------------------------
# Algorithm 1: plan decoding


def decode_plan(model: A3ForAnyOrderLM, plan: Plan, *, sampler: Sampler = Sampler(),
                generator: torch.Generator | None = None, seed: int | None = None, cache: bool = True,
                full_forward: bool = False, preview_open: bool = True, top_k_candidates: int = 5,
                force_tokens=None, keep_cache: bool = False,
                prefix: DecodePrefix | None = None) -> Iterator[DecodeStep]:
    """Decode the plan's open groups in order, one model call per group.

    cache=False recomputes every content row at every step; with full_forward=True it also runs
    the query stream and LM head on every position, exactly the work of the official code.
    preview_open: also compute query rows for every other still-open position (as if it were decided
    now), so each step carries candidates for all open positions; off, only the group's own rows.
    force_tokens: teacher forcing, commits these tokens instead of sampling (for likelihoods); -1 at a
    position leaves it to the sampler.
    keep_cache: leave the content cache on the trace (`trace.cache`), for branching.
    prefix: start after these steps, which must be the plan's first open groups (see DecodePrefix).
    """
    _check_plan(model, plan, own_groups=True)
    generator = _as_generator(generator, seed)
    force = _force(force_tokens, plan, prefix.commit if prefix else None)
    engine = DecodeEngine(model, plan, cache=cache, full_forward=full_forward)
    groups, still_open = plan.group_ids, plan.open.clone()
    config = DecodeConfig("plan", sampler=sampler, seed=seed, top_k_candidates=top_k_candidates,
                          preview_open=preview_open)  # order "custom": the plan's groups; decode() records the order
    trace = DecodeTrace("plan", plan, settings={"cache": cache}, config=config)
    done, start = _start(engine, trace, prefix)
    guard = RepeatGuard.of(model, sampler.no_repeat)
    for step, target in enumerate(plan.open_groups):
        members = ((groups == target) & plan.open).nonzero(as_tuple=True)[0].tolist()
        if step < done:  # decided by the prefix: its content is cached (or recomputed as context)
            _check_prefix_step(trace.steps[step], target, members)
            still_open[members] = False
            continue
        if step == done:
            _check_commit(prefix, members, "in the first new step's group")
        context = (groups < target).nonzero(as_tuple=True)[0].tolist()
        others = still_open.clone()
        others[members] = False
        rows = members + (others.nonzero(as_tuple=True)[0].tolist() if preview_open else [])
        logits = engine.query_logits(groups, context, rows, [target] * len(rows))
        stats = _stats(logits, rows, top_k_candidates)
        ruled, moved = _ruled(model, plan, logits[: len(members)], members)
        if force is not None:  # a forced token was imposed, not chosen: nothing ruled it
            moved = {p for p in moved if int(force[p]) < 0}
        tokens, logps, banned = _commit(engine.tokens, members, ruled, stats, sampler, generator,
                                        force, guard,
                                        still_open.nonzero(as_tuple=True)[0].tolist() if guard else None)
        still_open[members] = False
        yield _record(trace, _make_step(step, target, members, tokens, logps, stats, engine.calls, start,
                                        banned=banned, moved=moved))
    return _finish(trace, engine, keep_cache)


def _check_prefix_step(step: DecodeStep, group: int, members: list[int]) -> None:
    if step.group != group or sorted(step.positions) != members:
        raise PlanError(f"prefix step {step.step} committed group {step.group} at {step.positions}, but the plan's "
                        f"open group number {step.step} is {group} at {members}: resume a plan that keeps "
                        "the prefix's groups.")


def _record(trace: DecodeTrace, step: DecodeStep) -> DecodeStep:
    trace.steps.append(step)
    return step


def _finish(trace: DecodeTrace, engine: DecodeEngine, keep_cache: bool = False) -> DecodeTrace:
    trace.final_ids = engine.tokens.tolist()
    if keep_cache:
        trace.cache = engine.cache
    return trace


# --------------------------------------------------------------------------------------------------
# Algorithm 2: dynamic decoding, each step's commits become the next group


def selection_scores(logits: torch.Tensor, strategy: str, sampler: Sampler, generator) -> torch.Tensor:
    """(N, V) logits -> (N,) what a dynamic decoder ranks open positions by, higher first.

    Scored, as in the official code, on the distribution tokens are drawn from: temperature (1 when
    greedy), then top-k / top-p, renormalised. confidence = its largest probability, entropy = minus
    its entropy (nats), random = a uniform draw from the seeded generator. The step records keep the
    model's own temperature-1 statistics (`confidence`, `entropy`) next to these (`selection_scores`).
    """
    if strategy == "random":
        return torch.rand(logits.shape[0], generator=generator)
    scoring = Sampler(sampler.temperature or 1.0, sampler.top_k, sampler.top_p)
    logprobs = filtered_logits(logits.float().cpu(), scoring).log_softmax(-1)  # -inf outside the filter
    if strategy == "confidence":
        return logprobs.max(-1).values.exp()
    probs = logprobs.exp()
    return torch.where(probs > 0, probs * logprobs, torch.zeros_like(probs)).sum(-1)  # -H


def _select(scores: torch.Tensor, positions: list[int], k: int) -> list[int]:
    """The k positions with the highest scores (ties: leftmost first), in position order."""
    order = torch.argsort(scores, descending=True, stable=True)[: min(k, len(positions))]
    return sorted(positions[i] for i in order.tolist())


def _check_dynamic(strategy: str, k: int) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {strategy!r}.")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k (tokens per step) must be a positive integer; got {k!r}.")


def decode_dynamic(model: A3ForAnyOrderLM, plan: Plan, *, strategy: str = "confidence", k: int = 1,
                   sampler: Sampler = Sampler(), generator: torch.Generator | None = None, seed: int | None = None,
                   cache: bool = True, top_k_candidates: int = 5, keep_cache: bool = False,
                   prefix: DecodePrefix | None = None) -> Iterator[DecodeStep]:
    """Algorithm 2 with incremental groups: step t scores every open position given everything
    decided so far and commits the best k as group (first open group + t). The plan's order for
    open positions is ignored; its given grouping is kept.

    keep_cache: leave the content cache on the trace (`trace.cache`), for branching.
    prefix: start after these steps (step t committed group first + t); `prefix.commit` overrides
    what the first new step commits (see DecodePrefix)."""
    _check_plan(model, plan)
    _check_dynamic(strategy, k)
    generator = _as_generator(generator, seed)
    engine = DecodeEngine(model, plan, cache=cache)
    groups = plan.group_ids.clone()
    first = int(groups[plan.given].max()) + 1
    open_now = plan.open_positions
    n_open = len(open_now)
    # Undecided positions sit in a group after every step's (a plain number, exact in JSON); decoding never
    # reads it: each step's query rows get the step's own group, content rows are only decided positions.
    groups[plan.open] = first + n_open
    realised = plan.regrouped(groups, f"dynamic ({strategy}, k={k})")
    trace = DecodeTrace("dynamic", realised, settings={"cache": cache},
                        config=DecodeConfig("dynamic", strategy=strategy, k=k, sampler=sampler, seed=seed,
                                            top_k_candidates=top_k_candidates))
    done, start = _start(engine, trace, prefix)
    open_now = _replay_dynamic_prefix(trace.steps, groups, first, open_now)
    _check_commit(prefix, open_now, "open after the prefix:")
    force = _force(None, plan, prefix.commit if prefix else None)
    guard = RepeatGuard.of(model, sampler.no_repeat)
    for step in range(done, n_open):
        if not open_now:
            break
        target = first + step
        decided = (groups < target).nonzero(as_tuple=True)[0].tolist()
        logits = engine.query_logits(groups, decided, open_now, [target] * len(open_now))
        stats = _stats(logits, open_now, top_k_candidates)
        ruled, moved = _ruled(model, plan, logits, open_now)
        chosen, scores = _choose_positions(ruled, open_now, strategy, k, sampler, generator)
        if step == done and force is not None:  # the prefix dictates this step's commits
            chosen, moved = sorted(prefix.commit), set()
        rows = [open_now.index(p) for p in chosen]
        tokens, logps, banned = _commit(engine.tokens, chosen, ruled[rows], _rows(stats, rows), sampler, generator,
                                force if step == done else None, guard, open_now)
        groups[chosen] = target
        open_now = [p for p in open_now if p not in set(chosen)]
        yield _record(trace, _make_step(step, target, chosen, tokens, logps, stats, engine.calls, start,
                                        scores=scores, banned=banned, moved=moved))
    return _finish(trace, engine, keep_cache)


def _replay_dynamic_prefix(steps: list[DecodeStep], groups: torch.Tensor, first: int,
                           open_now: list[int]) -> list[int]:
    """Give a prefix's committed positions their groups (step t: first + t); the positions still open."""
    for t, s in enumerate(steps):
        if s.group != first + t or not set(s.positions) <= set(open_now):
            raise PlanError(f"prefix step {t} committed group {s.group} at {s.positions}; dynamic decoding of this "
                            f"plan commits group {first + t} at positions still open ({open_now[:16]}).")
        groups[s.positions] = s.group
        open_now = [p for p in open_now if p not in set(s.positions)]
    return open_now


def _rows(stats: _StepStats, rows: list[int]) -> _StepStats:
    """The same statistics restricted to some rows (so logprobs line up with the committed tokens)."""
    return _StepStats(stats.logprobs[rows], stats.candidates, stats.entropy, stats.confidence)


def decode_official_dynamic(model: A3ForAnyOrderLM, plan: Plan, *, strategy: str = "confidence", k: int = 1,
                            sampler: Sampler = Sampler(), generator: torch.Generator | None = None,
                            seed: int | None = None, top_k_candidates: int = 5) -> Iterator[DecodeStep]:
    """The official code's dynamic resampling: every step, all committed tokens (given + decided) form
    one bidirectional group 0 and every blank is group 1; everything is recomputed (no cache)."""
    return _decode_joint(model, plan, "official_dynamic", f"official dynamic ({strategy}, k={k})",
                         strategy=strategy, k=k, sampler=sampler, generator=generator, seed=seed,
                         top_k_candidates=top_k_candidates, known_layout="joint")


def decode_diffusion(model: A3ForAnyOrderLM, plan: Plan, *, k: int = 1, strategy: str = "confidence",
                     sampler: Sampler = Sampler(), generator: torch.Generator | None = None,
                     seed: int | None = None, top_k_candidates: int = 5, cache: bool = True) -> Iterator[DecodeStep]:
    """Iterative masked diffusion: every step predicts every blank (one last group) from everything known
    so far, the given tokens and all tokens revealed so far, reveals the k best (by `strategy`) and feeds
    them back; one model call per step. The known tokens are laid out as the plan lays out its given
    tokens, which is how the model was trained to read context: each its own group in position order for
    a causal model (`given_grouping="causal"`), one bidirectional group for a model of the official code
    ("joint"). `decode_official_dynamic` always uses the joint layout.

    cache: in the causal layout, the known rows before the first open position are computed once and
    kept (`DecodeEngine.known_logits`); the rest are recomputed every step. cache=False, or the joint
    layout (where every known row sees every reveal), recomputes every row every step."""
    layout = "causal" if _given_groups_distinct(plan) else "joint"
    return _decode_joint(model, plan, "diffusion", f"masked diffusion ({strategy}, k={k})",
                         strategy=strategy, k=k, sampler=sampler, generator=generator, seed=seed,
                         top_k_candidates=top_k_candidates, known_layout=layout, cache=cache)


def _given_groups_distinct(plan: Plan) -> bool:
    """Whether the plan gives each given token a group of its own (a causal layout of the context)."""
    given_groups = plan.group_ids[plan.given]
    return given_groups.numel() > 1 and given_groups.unique().numel() == given_groups.numel()


def _known_groups(length: int, open_now: list[int], layout: str) -> tuple[torch.Tensor, int]:
    """Group ids for one joint step: the known positions (all but `open_now`) in one group 0 ("joint") or
    each in its own group in position order ("causal"), and every open position in one last group."""
    groups = torch.zeros(length, dtype=torch.long)
    if layout == "causal":
        known = torch.ones(length, dtype=torch.bool)
        known[open_now] = False
        groups[known] = torch.arange(int(known.sum()))
        last = int(known.sum())
    else:
        last = 1
    groups[open_now] = last
    return groups, last


def _decode_joint(model: A3ForAnyOrderLM, plan: Plan, mode: str, name: str, *, strategy: str, k: int,
                  sampler: Sampler, generator: torch.Generator | None, seed: int | None,
                  top_k_candidates: int, known_layout: str, cache: bool = False) -> Iterator[DecodeStep]:
    """Known tokens laid out by `known_layout` (see _known_groups), blanks in one last group; commit k per
    step; recompute (the causal layout with `cache`: the rows after the first open position only)."""
    _check_plan(model, plan)
    _check_dynamic(strategy, k)
    generator = _as_generator(generator, seed)
    engine, start = DecodeEngine(model, plan, cache=cache and known_layout == "causal"), time.perf_counter()
    open_now = plan.open_positions
    # commit order: given 0, step t -> t + 1; still undecided: after every step (until decided)
    order = torch.where(plan.given, 0, len(open_now) + 1)
    realised = plan.regrouped(order, name)
    config = DecodeConfig(mode, strategy=strategy, k=k, sampler=sampler, seed=seed, top_k_candidates=top_k_candidates)
    trace = DecodeTrace(mode, realised, settings={"cache": engine.use_cache}, config=config)
    step, guard = 0, RepeatGuard.of(model, sampler.no_repeat)
    while open_now:
        groups, last = _known_groups(plan.length, open_now, known_layout)
        if known_layout == "causal":
            logits = engine.known_logits(groups, open_now, last)
        else:
            logits = engine.query_logits(groups, [], open_now, [last] * len(open_now))
        stats = _stats(logits, open_now, top_k_candidates)
        ruled, moved = _ruled(model, plan, logits, open_now)
        chosen, scores = _choose_positions(ruled, open_now, strategy, k, sampler, generator)
        rows = [open_now.index(p) for p in chosen]
        tokens, logps, banned = _commit(engine.tokens, chosen, ruled[rows], _rows(stats, rows), sampler, generator,
                                        None, guard, open_now)
        order[chosen] = step + 1
        open_now = [p for p in open_now if p not in set(chosen)]
        yield _record(trace, _make_step(step, step + 1, chosen, tokens, logps, stats, engine.calls, start,
                                        group_ids=groups.tolist(), scores=scores, banned=banned, moved=moved))
        step += 1
    return _finish(trace, engine)


# --------------------------------------------------------------------------------------------------
# baselines


def decode_one_step_parallel(model: A3ForAnyOrderLM, plan: Plan, *, k: int = 1, sampler: Sampler = Sampler(),
                             generator: torch.Generator | None = None, seed: int | None = None,
                             top_k_candidates: int = 5) -> Iterator[DecodeStep]:
    """A one-step parallel baseline (the paper's single-layer dependency): every open position is one
    group after the given ones, so each is predicted from the given tokens only, in one model call. The
    steps then reveal that one prediction, the k most confident still-open positions at a time; what they
    reveal is never fed back, so no open token conditions on another (the no-repeat rule, when on, still
    reads the tokens revealed so far, as it does in every decoder)."""
    _check_plan(model, plan)
    _check_dynamic("confidence", k)
    generator = _as_generator(generator, seed)
    engine, start = DecodeEngine(model, plan, cache=True), time.perf_counter()
    groups = plan.group_ids.clone()
    target = int(groups[plan.given].max()) + 1
    groups[plan.open] = target
    realised = plan.regrouped(groups, f"one-step parallel (k={k})")
    trace = DecodeTrace("one_step_parallel", realised,
                        config=DecodeConfig("one_step_parallel", k=k, sampler=sampler, seed=seed,
                                            top_k_candidates=top_k_candidates))
    given_positions = plan.given.nonzero(as_tuple=True)[0].tolist()
    open_now, step, guard = plan.open_positions, 0, RepeatGuard.of(model, sampler.no_repeat)
    # the one prediction: every open position's query row sees the given tokens only, so a later call would
    # give the same rows again
    predicted = dict(zip(open_now, engine.query_logits(groups, given_positions, open_now, [target] * len(open_now)),
                         strict=True))
    while open_now:
        logits = torch.stack([predicted[p] for p in open_now])
        stats = _stats(logits, open_now, top_k_candidates)
        ruled, moved = _ruled(model, plan, logits, open_now)
        chosen, scores = _choose_positions(ruled, open_now, "confidence", k, sampler, generator)
        rows = [open_now.index(p) for p in chosen]
        tokens, logps, banned = _commit(engine.tokens, chosen, ruled[rows], _rows(stats, rows), sampler, generator,
                                        None, guard, open_now)
        open_now = [p for p in open_now if p not in set(chosen)]
        yield _record(trace, _make_step(step, target, chosen, tokens, logps, stats, engine.calls, start,
                                        scores=scores, banned=banned, moved=moved))
        step += 1
    return _finish(trace, engine)


def decode_ar_baseline(base: A3ForAnyOrderLM, plan: Plan, *, sampler: Sampler = Sampler(),
                       generator: torch.Generator | None = None, seed: int | None = None,
                       top_k_candidates: int = 5) -> Iterator[DecodeStep]:
    """The base AR model left to right: open position p is predicted from positions < p only (the
    content stream under left-to-right grouping is the base LM: row p-1 predicts token p). Given
    tokens to the right are not used; given tokens to the left are kept as they are."""
    _check_plan(base, plan)
    if not bool(plan.given[0]):
        raise PlanError("the AR baseline needs a given first position (the start token) to condition on.")
    generator = _as_generator(generator, seed)
    device = next(base.parameters()).device
    cache = A3Cache(base.config, 1, plan.length, device=device, dtype=next(base.parameters()).dtype)
    tokens, start = plan.token_ids.clone(), time.perf_counter()
    positions = torch.arange(plan.length)
    realised = plan.regrouped(positions.clone(), "AR baseline (left context only)")
    trace = DecodeTrace("ar_baseline", realised,
                        config=DecodeConfig("ar_baseline", sampler=sampler, seed=seed,
                                            top_k_candidates=top_k_candidates))
    done = 0  # positions [0, done) are in the cache
    guard = RepeatGuard.of(base, sampler.no_repeat)  # it knows only the text before each position
    for step, p in enumerate(plan.open_positions):
        new = list(range(done, p))
        with torch.no_grad():
            out = base.model(content_ids=_tensor(tokens[new].tolist(), device), content_positions=_tensor(new, device),
                             content_groups=_tensor(new, device), query_positions=_tensor([], device),
                             query_groups=_tensor([], device), cache=cache, return_content=True)
            logits = base.lm_head(out.content[0, -1:])  # row p-1 predicts token p
        done = p
        stats = _stats(logits, [p], top_k_candidates)
        ruled, moved = _ruled(base, plan, logits, [p])
        banned = []
        if guard is not None:
            token, top_banned = guard.choose(ruled[0].float().cpu(), tokens.tolist(),
                                             [q < p for q in range(plan.length)], p, sampler, generator)
            chosen, banned = torch.tensor([token]), [p] if top_banned else []
        else:
            chosen = choose_tokens(ruled, sampler, generator)
        tokens[p] = chosen[0]
        logps = [float(stats.logprobs[0, int(chosen[0])])]
        yield _record(trace, _make_step(step, p, [p], chosen.tolist(), logps, stats, step + 1, start, banned=banned,
                                        moved=moved))
    trace.final_ids = tokens.tolist()
    return trace


# --------------------------------------------------------------------------------------------------
# several decodes of one text in lockstep (model.rerank's candidates)

TOGETHER_METHODS = ("plan", "dynamic")  # the decoders `decode_together` runs in lockstep

# On the CPU, float32 matrix products of 4 to 15 rows take a slow path (MKL): the LM head took 48 ms on 14
# rows and 22 ms on 16 with one thread, 72 ms and 25 ms with two (2-core machine, torch 2.13). A lockstep
# call with that many query rows is padded to `_FAST_ROWS` with query rows that see nothing (outputs dropped).
_FAST_ROWS = 16


def _padding(n_rows: int, device: torch.device) -> int:
    return _FAST_ROWS - n_rows if device.type == "cpu" and 4 <= n_rows < _FAST_ROWS else 0


@torch.no_grad()
def forward_rows(model: A3ForAnyOrderLM, content_ids: torch.Tensor, content_positions: torch.Tensor,
                 query_positions: torch.Tensor, visible: torch.Tensor, cache: A3Cache | None = None,
                 content_groups: torch.Tensor | None = None) -> torch.Tensor:
    """`A3Model.forward` on one row of rows whose attention mask is given rather than derived from groups.

    content_ids / content_positions (C,) and query_positions (Q,) on the model's device; visible
    (C + Q, P + C) bool: which keys (P in `cache`, then this call's C content rows) each row (the
    content rows first, then the query rows) attends to. Returns the final-normed query rows (Q, H).
    The same embeddings, RoPE and layers as `A3Model.forward`, which builds the mask from group ids
    (content rows see g_key <= g_row, query rows g_key < g_row); a mask of one's own lets several
    decodes, or several texts, share one call, each row seeing only its own keys and the shared ones.
    With a cache, this call's content keys and values are appended to it (with `content_groups` (C,)).
    """
    inner = model.model
    n_content, n_query = content_ids.numel(), query_positions.numel()
    content = inner.embed_tokens(content_ids.view(1, n_content))
    query = inner.query_embed.to(content.dtype).expand(1, n_query, -1)
    rows = torch.cat([content, query], 1)  # (1, C + Q, H)
    rope = RopeTables(inner.rotary_emb(rows, torch.cat([content_positions, query_positions]).view(1, -1)))
    mask = visible.view(1, n_content + n_query, -1)
    for i, layer in enumerate(inner.layers):
        rows = layer(rows, n_content, rope, mask, cache, i)
    if cache is not None:
        cache.advance(content_groups.view(1, n_content), content_positions.view(1, n_content))
    return inner.norm(rows[0, n_content:])


@dataclass
class _Lane:
    """One decode of a lockstep run, and what its own decoder (decode_plan / decode_dynamic) keeps
    between steps."""

    config: DecodeConfig
    trace: DecodeTrace
    groups: torch.Tensor  # the grouping decoded (dynamic: the realised plan's, filled in step by step)
    tokens: torch.Tensor  # the sequence so far
    generator: torch.Generator
    open_now: list[int]  # still open, in position order
    plan_steps: list[tuple[int, list[int]]] | None  # plan decoding: (group, members) of each open group
    first: int = 0  # dynamic decoding: the group its first step commits
    pending: list[int] = field(default_factory=list)  # committed by the last step: content rows not computed
    guard: RepeatGuard | None = None  # the no-repeat rule (config.sampler.no_repeat), as its own decoder keeps it
    model: object = None  # the model decoded (its vocabulary's layout tokens: model.layout)

    def rows(self, step: int) -> tuple[int, list[int]]:
        """This step's group and the positions whose query rows it reads (its own decoder's rows)."""
        if self.plan_steps is None:
            return self.first + step, self.open_now
        target, members = self.plan_steps[step]
        others = [p for p in self.open_now if p not in members] if self.config.preview_open else []
        return target, members + others


def _lane(model: A3ForAnyOrderLM, plan: Plan, config: DecodeConfig) -> _Lane:
    generator = _as_generator(None, config.seed)  # what decode() seeds
    if config.method == "plan":
        _check_plan(model, plan, own_groups=True)
        steps = [(g, ((plan.group_ids == g) & plan.open).nonzero(as_tuple=True)[0].tolist())
                 for g in plan.open_groups]
        trace = DecodeTrace("plan", plan, settings={"cache": True}, config=config)
        return _Lane(config, trace, plan.group_ids, plan.token_ids.clone(), generator, plan.open_positions, steps,
                     guard=RepeatGuard.of(model, config.sampler.no_repeat), model=model)
    _check_plan(model, plan)
    _check_dynamic(config.strategy, config.k)
    groups = plan.group_ids.clone()  # as decode_dynamic lays out its realised plan
    first = int(groups[plan.given].max()) + 1
    groups[plan.open] = first + len(plan.open_positions)
    realised = plan.regrouped(groups, f"dynamic ({config.strategy}, k={config.k})")
    trace = DecodeTrace("dynamic", realised, settings={"cache": True}, config=config)
    return _Lane(config, trace, groups, plan.token_ids.clone(), generator, plan.open_positions, None, first,
                 guard=RepeatGuard.of(model, config.sampler.no_repeat), model=model)


def _lane_step(lane: _Lane, step: int, logits: torch.Tensor, start: float) -> None:
    """What the lane's own decoder does with its step's query logits: choose, commit, record."""
    config, generator = lane.config, lane.generator
    target, rows = lane.rows(step)
    stats = _stats(logits, rows, config.top_k_candidates)
    if lane.plan_steps is not None:  # decode_plan: the group's members, first among the rows
        chosen, scores = lane.plan_steps[step][1], None
        ruled, moved = _ruled(lane.model, lane.trace.plan, logits[: len(chosen)], chosen)
        tokens, logps, banned = _commit(lane.tokens, chosen, ruled, stats, config.sampler,
                                        generator, None, lane.guard, lane.open_now)
    else:  # decode_dynamic: the best k open positions become this step's group
        ruled, moved = _ruled(lane.model, lane.trace.plan, logits, rows)
        chosen, scores = _choose_positions(ruled, rows, config.strategy, config.k, config.sampler, generator)
        picked = [rows.index(p) for p in chosen]
        tokens, logps, banned = _commit(lane.tokens, chosen, ruled[picked], _rows(stats, picked), config.sampler,
                                generator, None, lane.guard, lane.open_now)
        lane.groups[chosen] = target
    lane.open_now = [p for p in lane.open_now if p not in set(chosen)]
    lane.pending = chosen
    lane.trace.steps.append(_make_step(step, target, chosen, tokens, logps, stats, step + 1, start, scores=scores,
                                       banned=banned, moved=moved))


@torch.no_grad()
def decode_together(model: A3ForAnyOrderLM, plans: list[Plan], configs: list[DecodeConfig]) -> list[DecodeTrace]:
    """Several decodes of one text in lockstep, one model call per step for all of them: for each pair,
    what `decode(model, plan, config)` gives alone (the same steps, tokens and statistics, up to float
    rounding), for about the calls of one.

    Plan decoding (Algorithm 1, any groups) and dynamic decoding (Algorithm 2, any strategy and k) both
    commit one group per step against a content cache, so each is one lane of the run: per step its own
    query rows (the group's; dynamic: every open position) and the content rows of what it committed
    the step before. All lanes share one call and one flat cache (`forward_rows`), each row seeing the
    keys of its own lane and the given tokens' content rows, which are computed once, in the first call,
    for every lane. So the plans must share the text, the given positions and their groups, with every
    given group before every open one (as `make_plan` lays them out). A lane with fewer groups finishes
    early; the run takes as many calls as its longest lane, and each trace counts the calls it was in.
    Each config's sampler and seed draw its own lane's tokens (and, for random dynamic, positions).
    """
    if not plans or len(plans) != len(configs):
        raise PlanError("decode_together needs one config per plan, and at least one plan.")
    for config in configs:
        if config.method not in TOGETHER_METHODS:
            raise PlanError(f"decode_together runs plan and dynamic decoding; decode {config.method!r} alone.")
    lanes = [_lane(model, plan, config) for plan, config in zip(plans, configs, strict=True)]
    text = plans[0]
    given_groups = text.group_ids[text.given]
    for plan, lane in zip(plans, lanes, strict=True):
        same = plan.length == text.length and bool((plan.token_ids == text.token_ids).all()) \
            and bool((plan.given == text.given).all()) and bool((plan.group_ids[plan.given] == given_groups).all())
        if not same:
            raise PlanError("plans decoded together must share tokens, given positions and given groups.")
        if int(given_groups.max()) >= int(lane.groups[plan.open].min()):
            raise PlanError("plans decoded together must put every given group before every open one "
                            "(as make_plan does); decode this plan alone.")
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    given = text.given.nonzero(as_tuple=True)[0]
    cache = A3Cache(model.config, 1, given.numel() + sum(len(lane.open_now) for lane in lanes), device=device,
                    dtype=dtype)
    key_lane = key_group = torch.zeros(0, dtype=torch.long)  # per cached key: its lane (-1: shared) and group
    # the first call's content rows: the given tokens, once for every lane
    c_pos, c_ids, c_group, c_lane = given, text.token_ids[given], given_groups, torch.full_like(given, -1)
    start, step = time.perf_counter(), 0
    while active := [(b, lane) for b, lane in enumerate(lanes) if lane.open_now]:
        queries = [lane.rows(step) for _, lane in active]
        q_pos = torch.tensor([p for _, rows in queries for p in rows], dtype=torch.long)
        q_group = torch.tensor([g for g, rows in queries for _ in rows], dtype=torch.long)
        q_lane = torch.tensor([b for (b, _), (_, rows) in zip(active, queries, strict=True) for _ in rows],
                              dtype=torch.long)
        key_lane, key_group = torch.cat([key_lane, c_lane]), torch.cat([key_group, c_group])
        row_lane, row_group = torch.cat([c_lane, q_lane]), torch.cat([c_group, q_group])
        is_query = torch.arange(row_lane.numel()) >= c_lane.numel()
        own = (key_lane[None] == -1) | (key_lane[None] == row_lane[:, None])
        seen = torch.where(is_query[:, None], key_group[None] < row_group[:, None],
                           key_group[None] <= row_group[:, None])
        pad = _padding(q_pos.numel(), device)
        visible = torch.cat([own & seen, torch.zeros(pad, key_lane.numel(), dtype=torch.bool)])
        hidden = forward_rows(model, c_ids.to(device), c_pos.to(device), F.pad(q_pos, (0, pad)).to(device),
                              visible.to(device), cache, c_group.to(device))
        logits = model.lm_head(hidden)[: q_pos.numel()]  # (Q, V)
        offset = 0
        for (_, lane), (_, rows) in zip(active, queries, strict=True):
            _lane_step(lane, step, logits[offset : offset + len(rows)], start)
            offset += len(rows)
        step += 1
        # the next call's content rows: what each lane still decoding committed now
        going = [(b, lane) for b, lane in active if lane.open_now]
        c_pos = torch.tensor([p for _, lane in going for p in lane.pending], dtype=torch.long)
        c_ids = torch.cat([lane.tokens[lane.pending] for _, lane in going]) if going else c_pos
        c_group = torch.cat([lane.groups[lane.pending] for _, lane in going]) if going else c_pos
        c_lane = torch.tensor([b for b, lane in going for _ in lane.pending], dtype=torch.long)
    for lane in lanes:
        lane.trace.final_ids = lane.tokens.tolist()
    return [lane.trace for lane in lanes]


# --------------------------------------------------------------------------------------------------
# exact likelihood


@torch.no_grad()
def causal_log_probs(base: A3ForAnyOrderLM, token_ids) -> torch.Tensor:
    """log p(x_i | x_<i) for i = 1..L-1 under an AR base model, shape (L-1,) on the CPU: its content
    stream under left-to-right grouping, row i-1 predicting token i."""
    ids = torch.as_tensor(token_ids, dtype=torch.long).to(next(base.parameters()).device).view(1, -1)
    logits = base(ids, return_content_logits=True).content_logits[0, :-1].float()
    return logits.log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0].cpu()


def open_at(trace: DecodeTrace, step: int) -> list[int]:
    """The positions still open when step `step` is taken (its own included)."""
    decided = trace.decided_step()
    return [p for p in range(trace.plan.length) if not trace.plan.given[p] and decided[p] >= step]


def has_preview(trace: DecodeTrace, step: int) -> bool:
    """Whether step `step` carries candidates for every position open at it (not only its own)."""
    return set(open_at(trace, step)) <= set(trace.steps[step].candidates)


@torch.no_grad()
def fill_preview(model: A3ForAnyOrderLM, trace: DecodeTrace, step: int, *, top_k_candidates: int = 5) -> DecodeStep:
    """Add, on demand, the candidates decode_plan's `preview_open` would have recorded at one step.

    A plan decoded with preview_open=False computes only each group's own query rows (all the decision
    needs). When a page shows the step, the other open positions' candidates are computed here in one
    uncached forward: the sequence as it stood before the step, every still-open position put in the
    step's group, so each of their query rows sees exactly the step's context (groups below it), as the
    preview rows do. The step's own entries are kept as decoded. Returns the (updated) step record.
    """
    record = trace.steps[step]
    if trace.mode != "plan" or has_preview(trace, step):
        return record  # other decoders score every open position already
    rows = [p for p in open_at(trace, step) if p not in record.candidates]
    tokens = trace.sequence_at(step - 1)
    groups = torch.as_tensor(trace.group_ids, dtype=torch.long).clone()
    groups[rows] = record.group
    device = next(model.parameters()).device
    logits = model(torch.tensor([tokens], device=device), group_ids=groups.view(1, -1).to(device)).logits[0, rows]
    stats = _stats(logits, rows, max(top_k_candidates, max((len(c) for c in record.candidates.values()), default=0)))
    # new dicts, not .update(): a reader iterating the old ones (an export, a branch copying steps) is safe
    record.candidates = {**record.candidates, **stats.candidates}
    record.entropy = {**record.entropy, **stats.entropy}
    record.confidence = {**record.confidence, **stats.confidence}
    return record


@torch.no_grad()
def sequence_log_likelihood(model: A3ForAnyOrderLM, token_ids, group_ids, scored=None) -> tuple[float, torch.Tensor]:
    """log p(x_{G_2..G_K} | x_{G_1}) = sum over groups after the first of log p(x_G | x_<G), in one pass.

    Conditional on the lowest group G_1: its query rows see nothing, so it is never scored (the model
    has no distribution for it). Returns the total over `scored` positions (default: every position
    whose query row sees something, i.e. all but G_1) and the per-position log-probabilities (L,) (NaN
    where not scored). A trace's `logprob` is the same quantity for its open positions: decoders refuse
    to decode positions of the lowest group, so a trace never includes one.
    """
    totals, per_position = batch_log_likelihood(model, torch.as_tensor(token_ids).view(1, -1),
                                                torch.as_tensor(group_ids).view(1, -1), scored)
    return float(totals[0]), per_position[0]


@torch.no_grad()
def batch_log_likelihood(model: A3ForAnyOrderLM, token_ids, group_ids, scored=None) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """`sequence_log_likelihood` of B sequences of one length in one forward pass: token_ids (B, L),
    group_ids (B, L) or (L,) (one grouping for all), scored (L,) or (B, L) or None. Returns the totals
    (B,) and the per-position log-probabilities (B, L), NaN where not scored."""
    from model.network import scored_positions

    device = next(model.parameters()).device
    ids = torch.as_tensor(token_ids, dtype=torch.long, device=device)
    groups = torch.as_tensor(group_ids, dtype=torch.long, device=device).expand_as(ids)
    logits = model(ids, group_ids=groups).logits.float()  # (B, L, V)
    logp = logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0].cpu()  # (B, L)
    keep = scored_positions(groups.cpu())
    if scored is not None:
        keep &= torch.as_tensor(scored, dtype=torch.bool)
    per_position = torch.where(keep, logp, torch.full_like(logp, float("nan")))
    return torch.where(keep, logp, torch.zeros_like(logp)).sum(-1), per_position



@torch.no_grad()
def left_to_right_log_likelihoods(model: A3ForAnyOrderLM, token_ids, *, head_rows: int = 256) -> tuple[torch.Tensor,
                                                                                                     torch.Tensor]:
    """`batch_log_likelihood(model, token_ids, arange(L))` of N texts of one length (N, L) in one forward
    pass that computes what the texts share once.

    Under left-to-right grouping the content row of position i and the query row of position i + 1 both
    see exactly the tokens 0..i: they depend on that prefix alone. So each distinct prefix is one node of
    a prefix tree with those two rows, attending to the content rows of its ancestors and itself
    (`forward_rows`), and texts that share a prefix (the text before a blank; the first tokens of two
    fills; a text listed twice) share its rows. The LM head runs `head_rows` query rows at a time.
    Returns the totals (N,) and the per-position log-probabilities (N, L), NaN at position 0 (the lowest
    group: its query row sees nothing, so it is never scored).
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long).cpu()
    if ids.dim() != 2:
        raise ValueError(f"token_ids must be (N, L); got shape {tuple(ids.shape)}.")
    n, length = ids.shape
    per_position = torch.full((n, length), float("nan"))
    if n == 0 or length < 2:
        return torch.zeros(n), per_position
    nodes: dict[tuple[int, int], int] = {}  # (parent node, token) -> node; a node is one prefix 0..i
    positions: list[int] = []
    path = []  # per text: its node at each position 0..L-2
    for row in ids[:, :-1].tolist():
        parent, here = -1, []
        for i, token in enumerate(row):
            parent = nodes.setdefault((parent, token), len(positions))
            if parent == len(positions):
                positions.append(i)
            here.append(parent)
        path.append(here)
    path = torch.tensor(path, dtype=torch.long)  # (N, L-1)
    m = len(positions)
    ancestors = torch.zeros(m, m, dtype=torch.bool)  # [a, b]: node b is node a or one of its ancestors
    earlier = torch.ones(length - 1, length - 1, dtype=torch.bool).tril()
    for here in path:
        ancestors[here[:, None].expand_as(earlier)[earlier], here[None, :].expand_as(earlier)[earlier]] = True
    tokens = torch.tensor([token for (_, token) in nodes], dtype=torch.long)  # in node order (dicts keep it)
    device = next(model.parameters()).device
    where = torch.tensor(positions, dtype=torch.long)
    hidden = forward_rows(model, tokens.to(device), where.to(device), (where + 1).to(device),
                          torch.cat([ancestors, ancestors]).to(device))  # content rows, then query rows
    rows, targets = path.reshape(-1).to(device), ids[:, 1:].reshape(-1).to(device)  # text b, position i + 1
    logp = torch.empty(rows.numel(), device=device)
    for s in range(0, m, head_rows):
        part = model.lm_head(hidden[s : s + head_rows]).float().log_softmax(-1)
        here = (rows >= s) & (rows < s + head_rows)
        logp[here] = part[rows[here] - s, targets[here]]
    per_position[:, 1:] = logp.view(n, length - 1).cpu()
    return per_position[:, 1:].sum(-1), per_position

# --------------------------------------------------------------------------------------------------
# one entry point: a DecodeConfig (used by the app, branching, the evaluation and the benchmarks)

_DECODERS = {"plan": decode_plan, "dynamic": decode_dynamic, "official_dynamic": decode_official_dynamic,
             "diffusion": decode_diffusion, "one_step_parallel": decode_one_step_parallel,
             "ar_baseline": decode_ar_baseline}
assert set(_DECODERS) == set(METHODS)


def decode(model: A3ForAnyOrderLM, plan: Plan, config: DecodeConfig | None = None, *,
           base: A3ForAnyOrderLM | None = None, generator: torch.Generator | None = None,
           **options) -> Iterator[DecodeStep]:
    """Decode `plan` as `config` says (default: A3 plan, greedy); the trace records the config.

    base: the AR model for "ar_baseline" (default: `model` itself). generator: a torch.Generator to draw
    from (default: one seeded with config.seed). options: the decoder's switches that do not change
    what is decoded (cache, full_forward, keep_cache, prefix, force_tokens). The plan is built by the
    caller (model.plans.make_plan with config.order and config.group_size, or custom group ids).
    """
    config = config or DecodeConfig()
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed if config.seed is not None else 0)
    runner = base if config.spec.needs_base and base is not None else model
    trace = yield from _DECODERS[config.method](runner, plan, generator=generator, **config.decoder_kwargs(),
                                                **options)
    trace.config = config
    return trace


def run_decoder(mode: str, model: A3ForAnyOrderLM, plan: Plan, *, base: A3ForAnyOrderLM | None = None,
                **kwargs) -> Iterator[DecodeStep]:
    """`decode` with the config given as keywords: the config's fields (sampler, seed, strategy, k,
    top_k_candidates, preview_open) go into a DecodeConfig for `mode`, anything else to the decoder."""
    fields = set(DecodeConfig.__dataclass_fields__) - {"method"}
    config = DecodeConfig(mode, **{key: kwargs.pop(key) for key in list(kwargs) if key in fields})
    return decode(model, plan, config, base=base, **kwargs)

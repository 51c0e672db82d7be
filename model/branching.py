"""Branching: decode a trace again from any step with another choice, reusing the shared prefix.

At step k of a decoded trace the user may
  (a) pick another token for a position decided at step k, or for any position still open at step k
      (which is then decided at step k), or
  (b) change how the rest is decoded from step k on: the order and group size of the still-undecided
      positions (plan decoding), or the strategy and tokens per step (dynamic decoding); or only
      re-sample the rest with another seed or sampler.
The branch keeps the first k steps exactly as they are (their records are copied, not recomputed) and
decodes the rest. Its first model call reads the parent's content cache truncated to the context of
step k (the given tokens and the groups committed before step k), so each remaining step costs one call
over new rows only: a branch at step k of an n-step plan makes n - k model calls.

A branch's cache may be dropped to save memory (`BranchTree.drop_cache`, least recently used first:
`cached()`; the app's per-session cap, app.memory, does so); the branch itself stays whole, and the next
branch from it rebuilds the cache in one model call, counted in that branch's `new_model_calls` (and
`rebuilt_parent` set on it), as the first branch of a trace decoded without its cache does.

Branches form a tree (`BranchTree`): the root is a decoded trace; every branch names its parent and the
step it leaves it at, and can itself be branched. `to_dict()` is plain data for the app.

Only the A3 decoders that cache one ordering can branch (modes "plan" and "dynamic"). The others
(official_dynamic, diffusion, one_step_parallel, ar_baseline) regroup the known tokens each step (diffusion
keeps only the rows before its first blank, which a reveal never changes), predict from the given tokens
alone, or run another model, so there is no one grouping's cache to share: they are refused.
"""

from __future__ import annotations

import copy
import numbers
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from model.config import METHODS, STRATEGIES, DecodeConfig, Sampler
from model.decoding import (
    DecodeEngine,
    DecodePrefix,
    DecodeTrace,
    collect,
    decode,
    open_at,
)
from model.network import A3Cache
from model.plans import ORDERS, Plan, PlanError, open_groups_in_order

if TYPE_CHECKING:  # a type only: the models run are network.A3Net or this (model.loading)
    from model.modeling import A3ForAnyOrderLM

BRANCHABLE = tuple(name for name, spec in METHODS.items() if spec.branchable)  # cached: a prefix is shared
_PLAN_NAME = re.compile(r"(?P<order>[a-z_]+)(?: \(groups of (?P<size>[0-9]+)\))?")


@dataclass
class Branch:
    """One decoding in the tree: the first `at_step` steps are its parent's, the rest its own."""

    name: str
    parent: int | None  # index of the parent branch; None for the root
    at_step: int  # steps shared with the parent (0 for the root)
    trace: DecodeTrace
    change: dict = field(default_factory=dict)  # what differs from the parent from at_step on
    new_model_calls: int = 0  # calls this branch made itself (the shared prefix's were made once, earlier;
    # the first branch of a trace decoded without keep_cache also counts the one call rebuilding its cache)
    cache_used: int | None = None  # when its content cache was last built or read, on the tree's clock (None:
    # it holds none); `BranchTree.cached()` lists the least recently used first
    cache_drops: int = 0  # times its cache was dropped (`BranchTree.drop_cache`) to save memory
    rebuilt_parent: bool = False  # whether making this branch rebuilt its parent's cache (one call, counted above)

    @property
    def logprob(self) -> float:
        return self.trace.logprob

    def to_dict(self, tokenizer=None) -> dict:
        return {"name": self.name, "parent": self.parent, "at_step": self.at_step, "change": dict(self.change),
                "logprob": self.logprob, "new_model_calls": self.new_model_calls,
                "final_ids": list(self.trace.final_ids), "trace": self.trace.to_dict(tokenizer)}


class BranchTree:
    """A decoded trace (branch 0) and the branches grown from it, each reusing its parent's cache."""

    def __init__(self, model: A3ForAnyOrderLM, root: DecodeTrace, *, name: str = "main", method: str | None = None):
        """root: a plan or dynamic trace of `model`. Decoded with keep_cache=True its cache is reused
        as is; otherwise (e.g. a trace read from JSON) it is rebuilt once, by one model call, at the
        first branch from it. method: what the root's decoding is called where it is shown (e.g. the kept
        candidate of a best of N); its config's label when not given."""
        _check_mode(root.mode)
        self.model = model
        self.method = method or root.config.label
        self.clock = 0  # counts cache builds and reads: a cache used earlier has a smaller `Branch.cache_used`
        self.branches = [Branch(name, None, 0, root, {}, root.model_calls)]
        if root.cache is not None:
            self.branches[0].cache_used = self._tick()

    @classmethod
    def decode(cls, model: A3ForAnyOrderLM, plan: Plan, config: DecodeConfig | None = None, *, mode: str | None = None,
               name: str = "main", **config_fields) -> BranchTree:
        """Decode the root as `config` says (keeping its cache) and start a tree from it. Instead of a
        config, `mode=` and the config's fields as keywords (sampler=, seed=, k=, ...) may be given."""
        if config is None:
            config = DecodeConfig(mode or "plan", **config_fields)
        elif mode is not None or config_fields:
            raise PlanError("pass either a DecodeConfig or mode= with its fields, not both.")
        _check_mode(config.method)
        return cls(model, collect(decode(model, plan, config, keep_cache=True)), name=name)

    def __len__(self) -> int:
        return len(self.branches)

    def __getitem__(self, index: int) -> Branch:
        return self.branches[self._index(index)]

    def children(self, index: int) -> list[int]:
        return [i for i, b in enumerate(self.branches) if b.parent == index]

    def branch(self, at_step: int, *, parent: int = 0, position: int | None = None, token: int | None = None,
               order: str | None = None, group_size: int | None = None, sampler: Sampler | None = None,
               seed: int | None = None, name: str | None = None) -> int:
        """Decode branch `parent` again from step `at_step` with a change; returns the new branch's index.

        token (with position, which may be left out when step `at_step` commits one position): commit
        this token at step `at_step`. A position decided there keeps the step's other decisions; another
        open position joins that step (plan: its group; dynamic: in place of the step's least preferred
        position). order / group_size: plan decoding re-plans the positions still undecided (after the
        picked step, when a token is picked) in one of model.plans.ORDERS with groups of that size (given
        alone, each keeps the parent's); dynamic decoding continues with that strategy (STRATEGIES) and
        that many tokens per step. sampler / seed: how the rest is sampled (default: the parent's).
        """
        index = self._index(parent)
        parent_trace = self.branches[index].trace
        k = _check_step(at_step, parent_trace, index)
        if token is None and position is None and order is None and group_size is None \
                and sampler is None and seed is None:
            raise PlanError(f"nothing to change at step {k}: pass token= (and position=) to pick another token, "
                            "order= / group_size= to decode the rest differently, or seed= / sampler= to "
                            "re-sample it.")
        commit = _commit_at(parent_trace, k, position, token, self.model.config.vocab_size)
        rest = _continuation(parent_trace, order, group_size)
        if sampler is not None and not isinstance(sampler, Sampler):
            raise PlanError(f"sampler must be a model.config.Sampler; got {type(sampler).__name__}.")
        run_seed = _as_int(seed, "seed") if seed is not None else parent_trace.config.seed
        run_sampler = sampler if sampler is not None else parent_trace.config.sampler
        # everything is checked: only now copy the cache and decode
        cache, rebuilt = self._prefix_cache(index, k)  # rebuilt: one call rebuilt the parent's cache, counted below
        prefix = DecodePrefix(copy.deepcopy(parent_trace.steps[:k]), cache, commit)
        config = _branch_config(parent_trace, rest, run_sampler, run_seed)
        plan = _branch_plan(parent_trace, k, prefix, rest, run_seed) if parent_trace.mode == "plan" \
            else parent_trace.plan  # dynamic: the realised plan; its groups after the prefix are re-decided
        trace = collect(decode(self.model, plan, config, keep_cache=True, prefix=prefix))
        # the tokens the user picked, not the model (views say so): the parent's in the shared prefix, and this one
        picks = [mark for mark in (parent_trace.settings or {}).get("picked", []) if mark["step"] < k]
        if token is not None:
            picks.append({"step": k, "positions": sorted(commit)})
        if picks:
            trace.settings = {**trace.settings, "picked": picks}
        shared_calls = parent_trace.steps[k - 1].model_calls if k else 0
        change = {key: value for key, value in dict(position=_commit_position(commit, position), token=token,
                                                    order=order, group_size=group_size, seed=seed).items()
                  if value is not None}
        if sampler is not None:
            change["sampler"] = sampler.to_dict()
        new_index = len(self.branches)
        self.branches.append(Branch(name or _describe(new_index, k, change), index, k, trace, change,
                                    trace.model_calls - shared_calls + int(rebuilt), self._tick(),
                                    rebuilt_parent=rebuilt))
        return new_index

    def cached(self) -> list[int]:
        """The branches holding a content cache, the least recently used (built or branched from) first."""
        held = [i for i, b in enumerate(self.branches) if b.trace.cache is not None]
        return sorted(held, key=lambda i: (self.branches[i].cache_used or 0, i))

    def drop_cache(self, index: int) -> bool:
        """Free branch `index`'s content cache (the branch itself stays, its trace whole); the next branch
        from it rebuilds the cache in one counted model call, as the first branch of a run does. Returns
        whether there was a cache to drop."""
        branch = self.branches[self._index(index)]
        if branch.trace.cache is None:
            return False
        branch.trace.cache, branch.cache_used = None, None
        branch.cache_drops += 1
        return True

    def to_dict(self, tokenizer=None) -> dict:
        """Plain data: every branch (its trace included) with its index and its children's indices."""
        return {"branches": [{"index": i, "children": self.children(i), **b.to_dict(tokenizer)}
                             for i, b in enumerate(self.branches)]}

    # ----------------------------------------------------------------------------------------------

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def _index(self, index) -> int:
        if not isinstance(index, numbers.Integral) or isinstance(index, bool) or not 0 <= index < len(self.branches):
            raise PlanError(f"parent must be a branch index in [0, {len(self.branches)}); got {index!r}.")
        return int(index)

    def _prefix_cache(self, index: int, k: int) -> tuple[A3Cache, bool]:
        """(a copy of branch `index`'s cache holding exactly the context of its step k, whether that cache
        had to be rebuilt first). Copied, because the branch appends to it and the parent's must stay as it
        is for later branches. The cache is marked as used now (`cached()` drops the least recently used)."""
        branch = self.branches[index]
        trace = branch.trace
        cache = trace.cache  # a local: a drop_cache meanwhile cannot take it from under the copy below
        rebuilt = cache is None
        if rebuilt:
            cache = trace.cache = _rebuild_cache(self.model, trace)
        branch.cache_used = self._tick()
        context = (trace.plan.group_ids < trace.steps[k].group).nonzero(as_tuple=True)[0].tolist()
        return _cache_prefix(cache, context, self.model, trace.plan.length), rebuilt


# --------------------------------------------------------------------------------------------------
# checks


def _check_mode(mode: str) -> None:
    if mode not in BRANCHABLE:
        raise PlanError(f"branching needs a trace of mode {' or '.join(BRANCHABLE)} (cached A3 decoding of one "
                        f"grouping); got {mode!r}, which regroups or recomputes every step, so no prefix can "
                        "be shared. Decode with mode 'plan' or 'dynamic' to branch.")


def _check_step(at_step, trace: DecodeTrace, index: int) -> int:
    n = len(trace.steps)
    if not isinstance(at_step, numbers.Integral) or isinstance(at_step, bool) or not 0 <= at_step < n:
        raise PlanError(f"at_step must be a step of branch {index}, in [0, {n}); got {at_step!r}.")
    return int(at_step)


def _as_int(value, what: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise PlanError(f"{what} must be an integer; got {value!r}.")
    return int(value)


def _commit_at(trace: DecodeTrace, k: int, position, token, vocab: int) -> dict[int, int] | None:
    """What step k commits when the user picks `token` (position -> token), or None (no pick)."""
    step = trace.steps[k]
    if token is None:
        if position is not None:
            raise PlanError(f"position={position!r} was given without a token: pass token= too.")
        return None
    token = _as_int(token, "token")
    if not 0 <= token < vocab:
        raise PlanError(f"token must be a token id in [0, {vocab}) for this model; got {token}.")
    if position is None:
        if len(step.positions) != 1:
            raise PlanError(f"step {k} commits positions {step.positions}: pass position= to say which gets "
                            "the token.")
        position = step.positions[0]
    position = _as_int(position, "position")
    open_at_k = open_at(trace, k)
    if position not in open_at_k:
        raise PlanError(f"position {position} is not open at step {k} (it is given or decided earlier); "
                        f"pick one of the positions open there: {open_at_k}.")
    decided = dict(zip(step.positions, step.tokens, strict=True))
    if position not in decided and trace.mode == "dynamic":
        scores = step.selection_scores or step.confidence
        least = min(decided, key=lambda p: (scores.get(p, 0.0), -p))  # the step commits as many as before
        del decided[least]
    decided[position] = token
    return decided


def _commit_position(commit: dict[int, int] | None, position) -> int | None:
    if commit is None:
        return None
    return int(position) if position is not None else next(iter(commit))


# --------------------------------------------------------------------------------------------------
# the continuation: one decoder call resumed after the shared prefix


def _continuation(trace: DecodeTrace, order, group_size) -> tuple[str, int] | None:
    """How the rest is decoded: plan traces (order, group size), or None to keep the parent's groups;
    dynamic traces (strategy, tokens per step). What is not given is the parent's."""
    if group_size is not None and (not isinstance(group_size, numbers.Integral) or isinstance(group_size, bool)
                                   or group_size < 1):
        raise PlanError(f"group_size must be a positive integer; got {group_size!r}.")
    group_size = int(group_size) if group_size is not None else None
    if trace.mode == "dynamic":
        strategy = order if order is not None else trace.config.strategy
        if strategy not in STRATEGIES:
            raise PlanError(f"order must be a strategy, one of {STRATEGIES}, for a dynamic trace; got {strategy!r}.")
        return strategy, group_size if group_size is not None else trace.config.k
    if order is None and group_size is None:
        return None
    return _plan_order(order, group_size, trace.plan.name)


def _branch_plan(trace: DecodeTrace, k: int, prefix: DecodePrefix, rest: tuple[str, int] | None, seed) -> Plan:
    """The parent's plan, changed from step k on: a picked position joins step k's group; with a new
    order the still-undecided positions get fresh groups after it (given positions keep theirs)."""
    plan, target = trace.plan, trace.steps[k].group
    groups, name = plan.group_ids.clone(), plan.name
    fixed = plan.given.clone()
    for s in trace.steps[:k]:
        fixed[s.positions] = True
    if prefix.commit:
        groups[list(prefix.commit)] = target
        fixed[list(prefix.commit)] = True
    if rest is not None:
        order, size = rest
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        first = target + 1 if prefix.commit else target
        for i, members in enumerate(open_groups_in_order(fixed, order, size, generator, blanks=~plan.given)):
            groups[members] = first + i
        name = order if size == 1 else f"{order} (groups of {size})"
    return plan.regrouped(groups, name)


def _plan_order(order, group_size, parent_name: str) -> tuple[str, int]:
    """The order and group size from step k on; what is not given is read off the parent's plan name."""
    parsed = _PLAN_NAME.fullmatch(parent_name)
    parent_order = parsed["order"] if parsed and parsed["order"] in ORDERS else None
    if order is None:
        if parent_order is None:
            raise PlanError(f"the parent's plan ({parent_name!r}) names no order to keep: pass order= "
                            f"(one of {ORDERS}) with group_size.")
        order = parent_order
    if order not in ORDERS:
        raise PlanError(f"order must be one of {ORDERS} for a plan trace; got {order!r}.")
    if group_size is None:
        group_size = int(parsed["size"] or 1) if parent_order is not None else 1
    return order, group_size


def _branch_config(parent: DecodeTrace, rest: tuple[str, int] | None, sampler: Sampler, seed) -> DecodeConfig:
    """The parent's config with what the branch changed: the order and group size (plan) or the strategy
    and tokens per step (dynamic) it continued with, and its sampler and seed."""
    changed = {"sampler": sampler, "seed": seed}
    if rest is not None:
        changed.update(zip(("strategy", "k") if parent.mode == "dynamic" else ("order", "group_size"), rest,
                           strict=True))
    return parent.config.replace(**changed)


def _describe(index: int, k: int, change: dict) -> str:
    parts = []
    if "token" in change:
        parts.append(f"position {change['position']} = token {change['token']}")
    if "order" in change or "group_size" in change:
        parts.append(", ".join(f"{key} {change[key]}" for key in ("order", "group_size") if key in change))
    if not parts:
        parts.append("re-sampled" + (f" with seed {change['seed']}" if "seed" in change else ""))
    return f"branch {index} (step {k}: {'; '.join(parts)})"


# --------------------------------------------------------------------------------------------------
# the content cache of a prefix


def _cache_prefix(cache: A3Cache, context: list[int], model: A3ForAnyOrderLM, max_len: int) -> A3Cache:
    """A new cache holding the first len(context) slots of `cache`, which must be exactly `context`:
    decoders append one call's context at a time, so any step's context is a prefix of the slots."""
    n = len(context)
    held = cache.positions[0, :n].tolist() if n <= cache.length else None
    if held is None or set(held) != set(context):
        raise PlanError("the trace's kept cache does not hold its steps' context in order (was it decoded by "
                        "another model or changed?); drop trace.cache to have it rebuilt.")
    out = A3Cache(model.config, 1, max_len, device=cache.k[0].device, dtype=cache.k[0].dtype)
    for layer in range(len(cache.k)):
        out.k[layer][:, :, :n] = cache.k[layer][:, :, :n]
        out.v[layer][:, :, :n] = cache.v[layer][:, :, :n]
    out.groups[:, :n] = cache.groups[:, :n]
    out.positions[:, :n] = cache.positions[:, :n]
    out.length = n
    return out


def _rebuild_cache(model: A3ForAnyOrderLM, trace: DecodeTrace) -> A3Cache:
    """One model call that computes the content a branch of `trace` can need (every position in a group
    before the last step's), slots ordered by group so that every step's context is a prefix of them."""
    groups = trace.plan.group_ids
    rows = sorted((groups < trace.steps[-1].group).nonzero(as_tuple=True)[0].tolist(),
                  key=lambda p: (int(groups[p]), p))
    final = Plan(torch.as_tensor(trace.final_ids, dtype=torch.long), trace.plan.given, groups, trace.plan.name)
    engine = DecodeEngine(model, final, cache=True)
    engine.query_logits(groups, rows, [], [])
    return engine.cache

"""Plans: which positions are given, which are open, and the group (hence the order) of each one.

A plan is data computed before any decoding loop: token ids (open positions hold a placeholder),
a `given` mask and `group_ids`. Given positions come first: by default they are grouped left to right
(group = rank among the given positions), which is what our curriculum trains the content stream on;
with `given_grouping="joint"` they form one bidirectional group, as the official code's inference does.
Pass the loaded model's own convention, `LoadedModel.given_grouping` ("joint" for checkpoints of the
official code, "causal" otherwise). Open positions get the groups of an *order*:

    left_to_right   open positions left to right, s per group (s = 1 is ordinary AR order)
    right_to_left   right to left, s per group
    blocks          contiguous position blocks [k*s, (k+1)*s) left to right
    random          random subsets of s in random order (seeded)
    outside_in      nearest to the given context first (both ends of every span), s per group
    span_left_to_right  each masked span left to right in groups of s that never straddle spans
    ends_first      the last position of every span with given text after it first (where each blank ends:
                    often its full stop), then the rest left to right, s per group

plus `custom_plan` for any integer group ids (|id| < 2^31; only their order matters). The training
curriculum's group sampler lives here too.

Every plan needs context: an open position in the lowest group would be predicted by a query row that
sees nothing, i.e. from one constant output that training never scores (every such position would get
the same token). Plans and decoders refuse it (`blind_positions`); give at least one token first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from model.layout import Layout
from model.masks import as_group_ids

ORDERS = ("left_to_right", "right_to_left", "blocks", "random", "outside_in", "span_left_to_right", "ends_first")
GIVEN_GROUPINGS = ("causal", "joint")
GROUP_ID_LIMIT = 2**31  # group ids lie in [-GROUP_ID_LIMIT, GROUP_ID_LIMIT): exact in JSON and JavaScript


class PlanError(ValueError):
    """An invalid plan; the message names the argument and what to do."""


class GroupIdCountError(PlanError):
    """Custom group ids of the wrong count: `got` ids for `expected` positions (a caller that knows where
    the ids were typed can say so: app.session)."""

    def __init__(self, expected: int, got: int):
        super().__init__(f"custom group ids: expected {expected} values (one per position), got {got}.")
        self.expected, self.got = expected, got


@dataclass(eq=False)
class Plan:
    token_ids: torch.Tensor  # (L,) long; open positions hold a placeholder
    given: torch.Tensor  # (L,) bool
    group_ids: torch.Tensor  # (L,) long
    name: str = "custom"
    layout: Layout | None = None  # what the typed text says of its fills (model.layout); None: no text read

    @property
    def length(self) -> int:
        return int(self.token_ids.numel())

    @property
    def open(self) -> torch.Tensor:
        return ~self.given

    @property
    def open_positions(self) -> list[int]:
        return self.open.nonzero(as_tuple=True)[0].tolist()

    @property
    def open_groups(self) -> list[int]:
        """The distinct groups holding open positions, in decoding order."""
        return torch.unique(self.group_ids[self.open]).tolist()

    def with_layout(self, layout: Layout | None) -> Plan:
        """This plan, its fills ruled by `layout` (checked: its word starts are open positions)."""
        if layout:
            try:
                layout.check(self.given)
            except ValueError as err:
                raise PlanError(str(err)) from None
        return Plan(self.token_ids, self.given, self.group_ids, self.name, layout or None)

    def regrouped(self, group_ids: torch.Tensor, name: str) -> Plan:
        """The same text, given tokens and layout under other groups (a decoder's realised plan)."""
        return Plan(self.token_ids, self.given, group_ids, name, self.layout)

    def to_dict(self) -> dict:
        d = {"name": self.name, "token_ids": self.token_ids.tolist(), "given": self.given.tolist(),
             "group_ids": self.group_ids.tolist()}
        if self.layout:  # only when set, so plans without one read as before
            d["layout"] = self.layout.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        plan = make_plan_from_groups(d["token_ids"], d["given"], d["group_ids"], name=d.get("name", "custom"))
        try:
            layout = Layout.from_dict(d.get("layout"))
        except ValueError as err:
            raise PlanError(str(err)) from None
        return plan.with_layout(layout)


# --------------------------------------------------------------------------------------------------
# validation


def _as_tokens(token_ids) -> torch.Tensor:
    t = torch.as_tensor(token_ids)
    if t.dim() != 1 or t.numel() == 0:
        raise PlanError(f"token_ids must be a non-empty 1-D sequence; got shape {tuple(t.shape)}.")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise PlanError(f"token_ids must be integers; got dtype {t.dtype}.")
    return t.long()


def _as_given(given, length: int, open_positions=None) -> torch.Tensor:
    """The given mask, from `given` (bool [L]) and/or `open_positions` (indices), checked to agree."""
    if given is None and open_positions is None:
        raise PlanError("pass `given` (bool mask [L]) or `open_positions` (indices of the open positions).")
    if open_positions is not None:
        idx = torch.as_tensor(list(open_positions), dtype=torch.long)
        if idx.numel() and (idx.min() < 0 or idx.max() >= length):
            raise PlanError(f"open_positions must lie in [0, {length}); got {idx.tolist()[:8]}.")
        if idx.numel() != torch.unique(idx).numel():
            raise PlanError("open_positions lists a position twice.")
        from_open = torch.ones(length, dtype=torch.bool)
        from_open[idx] = False
    if given is None:
        return from_open
    given = torch.as_tensor(given)
    if given.dtype != torch.bool or given.shape != (length,):
        raise PlanError(f"given must be a bool mask of shape ({length},); got {given.dtype} {tuple(given.shape)}.")
    if open_positions is not None:
        neither = (~given & from_open).nonzero(as_tuple=True)[0].tolist()
        both = (given & ~from_open).nonzero(as_tuple=True)[0].tolist()
        if neither:
            raise PlanError(f"positions {neither[:8]} are neither given nor open: every position must be "
                            "exactly one of the two.")
        if both:
            raise PlanError(f"positions {both[:8]} are both given and open: every position must be exactly one.")
    return given


def _check_open(given: torch.Tensor) -> None:
    if bool(given.all()):
        raise PlanError("the open set is empty: mask at least one position (e.g. [MASK] or [MASK:N]) to decode.")


def blind_positions(given: torch.Tensor, group_ids: torch.Tensor) -> list[int]:
    """Open positions in the lowest group: their query rows see nothing (no context to predict from)."""
    lowest = group_ids.min()
    return ((group_ids == lowest) & ~given).nonzero(as_tuple=True)[0].tolist()


def check_context(given: torch.Tensor, group_ids: torch.Tensor) -> None:
    """Refuse plans with open positions that would be decoded from no context (see the module docstring)."""
    blind = blind_positions(given, group_ids)
    if blind:
        where = ("nothing is given" if not bool(given.any()) else
                 f"they are in the lowest group ({int(group_ids.min())}), with no given token before them")
        raise PlanError(f"open positions {blind[:8]} would be predicted from no context ({where}): the model was "
                        "never trained to predict from nothing and gives all such positions the same token. "
                        "Give at least one token first: a given token (such as the start token) in a group "
                        "before every open position.")


def make_plan_from_groups(token_ids, given, group_ids, *, name: str = "custom") -> Plan:
    tokens = _as_tokens(token_ids)
    given = _as_given(given, tokens.numel())
    _check_open(given)
    try:
        groups = as_group_ids(group_ids)
    except (TypeError, ValueError, OverflowError, RuntimeError) as err:
        raise PlanError(str(err)) from None
    if groups.shape != tokens.shape:
        raise PlanError(f"group_ids must give one group per position: expected {tokens.numel()} values, "
                        f"got shape {tuple(groups.shape)}.")
    if bool((groups < -GROUP_ID_LIMIT).any() | (groups >= GROUP_ID_LIMIT).any()):
        raise PlanError(f"group ids must lie in [-{GROUP_ID_LIMIT}, {GROUP_ID_LIMIT}) (only their order matters); "
                        f"got {int(groups.min())} .. {int(groups.max())}.")
    check_context(given, groups)
    return Plan(tokens, given, groups, name)


# --------------------------------------------------------------------------------------------------
# orders of the open positions


def _spans(open_mask: torch.Tensor) -> list[list[int]]:
    """Maximal runs of consecutive open positions."""
    spans: list[list[int]] = []
    for p in open_mask.nonzero(as_tuple=True)[0].tolist():
        if spans and spans[-1][-1] == p - 1:
            spans[-1].append(p)
        else:
            spans.append([p])
    return spans


def _chunks(positions: list[int], size: int) -> list[list[int]]:
    return [positions[i : i + size] for i in range(0, len(positions), size)]


def open_groups_in_order(given: torch.Tensor, order: str, group_size: int, generator=None,
                         blanks: torch.Tensor | None = None) -> list[list[int]]:
    """The open positions split into groups, listed in decoding order. `blanks` (ends_first only): the
    blanks whose last positions go first, when the open positions are what is left of them (a branch
    decoding the rest of a run: an end already decided is not replaced by the position before it)."""
    if order not in ORDERS:
        raise PlanError(f"order must be one of {ORDERS}; got {order!r}.")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise PlanError(f"group_size must be a positive integer; got {group_size!r}.")
    open_mask = ~given
    positions = open_mask.nonzero(as_tuple=True)[0].tolist()
    if order == "left_to_right":
        return _chunks(positions, group_size)
    if order == "right_to_left":
        return _chunks(positions[::-1], group_size)
    if order == "blocks":
        blocks: dict[int, list[int]] = {}
        for p in positions:
            blocks.setdefault(p // group_size, []).append(p)
        return [blocks[b] for b in sorted(blocks)]
    if order == "random":
        perm = torch.randperm(len(positions), generator=generator).tolist()
        return _chunks([positions[i] for i in perm], group_size)
    if order == "span_left_to_right":
        return [chunk for span in _spans(open_mask) for chunk in _chunks(span, group_size)]
    if order == "ends_first":  # a blank's length is fixed: decide how it ends, then write towards that end
        # a blank's end: its last position, when given text follows it (a blank that runs to the end of the
        # text has nothing to end against and is decoded left to right)
        holes = open_mask if blanks is None else blanks.bool()
        last = {span[-1] for span in _spans(holes) if span[-1] + 1 < holes.numel() and not holes[span[-1] + 1]}
        ends, rest = [p for p in positions if p in last], [p for p in positions if p not in last]
        return _chunks(ends, group_size) + _chunks(rest, group_size)
    # outside_in: distance to the nearest given position; nearest first, ties left to right
    length = given.numel()
    given_at = given.nonzero(as_tuple=True)[0].tolist()
    if not given_at:
        depth = {p: min(p + 1, length - p) for p in positions}  # no context: from both sequence ends
    else:
        depth = {p: min(abs(p - q) for q in given_at) for p in positions}
    return _chunks(sorted(positions, key=lambda p: (depth[p], p)), group_size)


def given_group_ids(given: torch.Tensor, grouping: str = "causal") -> torch.Tensor:
    """Groups of the given positions: causal = rank among the given (left to right), joint = all 0."""
    if grouping not in GIVEN_GROUPINGS:
        raise PlanError(f"given_grouping must be one of {GIVEN_GROUPINGS}; got {grouping!r}.")
    groups = torch.zeros(given.numel(), dtype=torch.long)
    if grouping == "causal":
        groups[given] = torch.arange(int(given.sum()))
    return groups


def make_plan(token_ids, *, given=None, open_positions=None, order: str = "left_to_right", group_size: int = 1,
              given_grouping: str = "causal", generator: torch.Generator | None = None) -> Plan:
    """A plan for decoding the open positions of `token_ids` in the named order, s = group_size per group."""
    tokens = _as_tokens(token_ids)
    given = _as_given(given, tokens.numel(), open_positions)
    _check_open(given)
    groups = given_group_ids(given, given_grouping)
    first_open_group = int(groups[given].max()) + 1 if bool(given.any()) else 0
    for k, members in enumerate(open_groups_in_order(given, order, group_size, generator)):
        groups[members] = first_open_group + k
    check_context(given, groups)
    name = order if group_size == 1 else f"{order} (groups of {group_size})"
    return Plan(tokens, given, groups, name)


def custom_plan(token_ids, *, given, group_ids) -> Plan:
    """A plan with researcher-chosen group ids (any integers; only their order matters)."""
    return make_plan_from_groups(token_ids, given, group_ids, name="custom groups")


_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")


def parse_group_ids(text: str, length: int) -> list[int]:
    """Group ids typed as text ("0 0 1 2" or "0,0,1,2") for a sequence of `length` positions."""
    if not isinstance(text, str):
        raise PlanError(f"custom group ids must be text; got {type(text).__name__}.")
    pieces = text.replace(",", " ").split()
    if not pieces:
        raise PlanError("custom group ids are empty: type one integer per position, e.g. '0 0 0 2 1 1'.")
    bad = next((p for p in pieces if not _INTEGER.fullmatch(p)), None)
    if bad is not None:
        raise PlanError(f"custom group ids must be integers (ASCII digits); {bad[:20]!r} is not.")
    values = [int(p) for p in pieces]
    if any(not -GROUP_ID_LIMIT <= v < GROUP_ID_LIMIT for v in values):
        raise PlanError(f"group ids must lie in [-{GROUP_ID_LIMIT}, {GROUP_ID_LIMIT}) (only their order matters).")
    if len(values) != length:
        raise GroupIdCountError(length, len(values))
    return values


# --------------------------------------------------------------------------------------------------
# the training curriculum: one grouping per sequence

CURRICULUM = ("ar", "block2", "block4", "perm4", "perm8", "infill")


def sample_training_groups(length: int, stage: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Group ids (L,) for one training sequence of a curriculum stage; every position is a target.

    Position 0 (the start token) is always alone in the lowest group, so every other row sees it.
    ar: left to right; blockS: contiguous groups of S in order; permS: random S-subsets in random
    order (a shuffled block-of-S id vector); infill: a given prefix and suffix (left to right) and
    an open middle span decoded in a random order (left to right / random / outside-in, s in 1..8).
    """
    if stage not in CURRICULUM:
        raise PlanError(f"stage must be one of {CURRICULUM}; got {stage!r}.")
    if length < 2:
        raise PlanError(f"training sequences need at least 2 positions; got {length}.")
    n = length - 1  # positions 1..L-1
    if stage == "ar":
        rest = torch.arange(n)
    elif stage in ("block2", "block4"):
        rest = torch.arange(n) // int(stage[-1])
    elif stage in ("perm4", "perm8"):
        size = int(stage[-1])
        rest = (torch.arange(n) // size)[torch.randperm(n, generator=generator)]
    else:
        return _sample_infill_groups(length, generator)
    return torch.cat([torch.tensor([-1]), rest])


def _randint(low: int, high: int, generator) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _sample_infill_groups(length: int, generator) -> torch.Tensor:
    n = length - 1
    span = _randint(max(1, n // 10), max(1, n // 2), generator)
    start = 1 + _randint(0, n - span, generator)
    given = torch.ones(length, dtype=torch.bool)
    given[start : start + span] = False
    order = ("left_to_right", "random", "outside_in")[_randint(0, 2, generator)]
    size = (1, 2, 4, 8)[_randint(0, 3, generator)]
    plan = make_plan(torch.zeros(length, dtype=torch.long), given=given, order=order, group_size=size,
                     generator=generator)
    return plan.group_ids

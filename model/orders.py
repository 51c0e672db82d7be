"""Orders of a complete sequence and their exact log-likelihoods, many orders per batched forward pass.

A3 scores a whole sequence under any grouping in one forward pass (`decoding.sequence_log_likelihood`):
the query row of position i sees exactly the groups before g_i, so its logits are p(x_i | x_{G < g_i}).
Batching B groupings of the same tokens is one forward of shape (B, L): only the group ids differ.

Every default order keeps position 0 (the start token) alone in the lowest group, so `logp` is
log p(x_1..x_{L-1} | start) and orders are comparable. A custom grouping is scored the same way:
conditional on its lowest group, every other token scored once.

    left_to_right   one token per group, left to right (ordinary AR order)
    right_to_left   one token per group, right to left
    outside_in      both ends of the text first, then inwards
    blocks_of_s     contiguous blocks of s, left to right (block diffusion's order)
    random_i        one token per group in a seeded random order (an XLNet permutation)
    random_groups_of_s_i  seeded random subsets of s in random order (A3's "perm" curriculum stage)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from model.decoding import DecodeTrace, causal_log_probs, collect, decode_plan
from model.masks import as_group_ids
from model.network import scored_positions
from model.plans import Plan, make_plan_from_groups

if TYPE_CHECKING:  # a type only: the models run are network.A3Net or this (model.loading)
    from model.modeling import A3ForAnyOrderLM

DEFAULT_RANDOM = 14  # random orders and random groupings each: 4 fixed + 2 * 14 = 32 orders
DEFAULT_GROUP_SIZE = 4


@dataclass(frozen=True)
class Order:
    name: str
    group_ids: tuple[int, ...]


@dataclass
class OrderLikelihood:
    name: str
    group_ids: list[int]
    logp: float  # log p of every token after the lowest group, given that group
    token_logps: list[float | None]  # per position; None for the lowest group (not scored)

    @property
    def n_scored(self) -> int:
        return sum(v is not None for v in self.token_logps)

    def to_dict(self) -> dict:
        return {"name": self.name, "group_ids": list(self.group_ids), "logp": self.logp,
                "token_logps": list(self.token_logps)}


# --------------------------------------------------------------------------------------------------
# group ids of one order over L positions; position 0 (the start token) is alone in group 0


def _check_length(length: int) -> int:
    if not isinstance(length, int) or isinstance(length, bool) or length < 2:
        raise ValueError(f"an order needs at least 2 positions (the start token and one token); got {length!r}.")
    return length


def left_to_right(length: int) -> list[int]:
    return list(range(_check_length(length)))


def right_to_left(length: int) -> list[int]:
    _check_length(length)
    return [0] + [length - p for p in range(1, length)]  # position L-1 is group 1, position 1 is group L-1


def outside_in(length: int) -> list[int]:
    """Both ends of the text first (positions 1 and L-1), then inwards; ties left to right."""
    rest = sorted(range(1, _check_length(length)), key=lambda p: (min(p - 1, length - 1 - p), p))
    groups = [0] * length
    for rank, p in enumerate(rest, start=1):
        groups[p] = rank
    return groups


def blocks(length: int, size: int) -> list[int]:
    _check_length(length)
    return [0] + [1 + (p - 1) // size for p in range(1, length)]


def random_order(length: int, generator: torch.Generator) -> list[int]:
    n = _check_length(length) - 1
    return [0] + (torch.randperm(n, generator=generator) + 1).tolist()


def random_groups(length: int, size: int, generator: torch.Generator) -> list[int]:
    n = _check_length(length) - 1
    return [0] + (torch.arange(n)[torch.randperm(n, generator=generator)] // size + 1).tolist()


def default_orders(length: int, *, n_random: int = DEFAULT_RANDOM, group_size: int = DEFAULT_GROUP_SIZE,
                   seed: int = 0, custom: list[int] | None = None) -> list[Order]:
    """The order lab's default set (all names distinct), plus the user's grouping as "custom"."""
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer; got {group_size!r}.")
    if not isinstance(n_random, int) or isinstance(n_random, bool) or n_random < 0:
        raise ValueError(f"n_random must be an integer >= 0; got {n_random!r}.")
    orders = [Order("left_to_right", tuple(left_to_right(length))),
              Order("right_to_left", tuple(right_to_left(length))),
              Order("outside_in", tuple(outside_in(length))),
              Order(f"blocks_of_{group_size}", tuple(blocks(length, group_size)))]
    generator = torch.Generator().manual_seed(int(seed))
    orders += [Order(f"random_{i}", tuple(random_order(length, generator))) for i in range(n_random)]
    orders += [Order(f"random_groups_of_{group_size}_{i}", tuple(random_groups(length, group_size, generator)))
               for i in range(n_random)]
    if custom is not None:
        orders.append(Order("custom", tuple(int(g) for g in custom)))
    return orders


# --------------------------------------------------------------------------------------------------
# exact likelihoods, batched


def _group_matrix(orders: list[Order], length: int) -> torch.Tensor:
    rows = []
    for order in orders:
        groups = as_group_ids(list(order.group_ids), name=f"group ids of {order.name!r}")
        if groups.shape != (length,):
            raise ValueError(f"order {order.name!r} gives {groups.numel()} group ids for a sequence of {length} "
                             "tokens: give one group id per token, start token first.")
        rows.append(groups)
    return torch.stack(rows)  # (N, L)


@torch.no_grad()
def order_likelihoods(model: A3ForAnyOrderLM, token_ids, orders: list[Order], *,
                      batch_size: int = 8) -> list[OrderLikelihood]:
    """Every order's exact log p and per-token log-probabilities, `batch_size` orders per forward pass.

    Equal (up to float rounding) to `sequence_log_likelihood(model, token_ids, order.group_ids)` per
    order. The batch only repeats the tokens: memory grows with batch_size * L * vocabulary (logits).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size!r}.")
    ids = torch.as_tensor(token_ids, dtype=torch.long).view(-1)
    length = ids.numel()
    groups = _group_matrix(list(orders), length)
    keep = scored_positions(groups)  # (N, L): query rows that see something
    device = next(model.parameters()).device
    ids_dev = ids.to(device)
    out: list[OrderLikelihood] = []
    for start in range(0, len(orders), batch_size):
        chunk = groups[start : start + batch_size]
        b = chunk.shape[0]
        logits = model(ids_dev.expand(b, length), group_ids=chunk.to(device)).logits.float()  # (b, L, V)
        # log softmax at the true token only: logit(x_i) - logsumexp(logits_i)
        target = logits.gather(-1, ids_dev.view(1, length, 1).expand(b, length, 1))[..., 0]  # (b, L)
        logp = (target - logits.logsumexp(-1)).cpu()
        del logits
        for row in range(b):
            n = start + row
            scored = keep[n]
            values = [float(v) if k else None for v, k in zip(logp[row].tolist(), scored.tolist(), strict=True)]
            out.append(OrderLikelihood(orders[n].name, groups[n].tolist(), float(logp[row][scored].sum()), values))
    return out


# --------------------------------------------------------------------------------------------------
# an order as a plan: teacher-forced stepping (the true tokens, their probabilities per step)


def order_plan(token_ids, order: Order) -> Plan:
    """The lowest group is given (the condition); every later group is decoded, in group order."""
    groups = as_group_ids(list(order.group_ids))
    return make_plan_from_groups(token_ids, groups == groups.min(), groups, name=order.name)


def teacher_forced_trace(model: A3ForAnyOrderLM, token_ids, order: Order) -> DecodeTrace:
    """Decode the order's plan committing the true tokens: each step's log p is log p(x_G | x_<G), and
    the trace's total equals the order's `logp`."""
    ids = torch.as_tensor(token_ids, dtype=torch.long).view(-1)
    trace = collect(decode_plan(model, order_plan(ids, order), force_tokens=ids))
    trace.settings["teacher_forced"] = True
    return trace


@torch.no_grad()
def ar_log_likelihood(base: A3ForAnyOrderLM, token_ids) -> tuple[float, list[float | None]]:
    """The AR base's log p(x_1..x_{L-1} | x_0): its content stream, left to right, row i-1 predicting
    token i. The same tokens are scored as by `left_to_right`, so the two are directly comparable; they
    differ by how far the A3 query stream is from the AR model it was adapted from (for a model that was
    never adapted, such as the tiny random one, by whatever its random query stream does)."""
    logp = causal_log_probs(base, token_ids)
    return float(logp.sum()), [None] + logp.tolist()

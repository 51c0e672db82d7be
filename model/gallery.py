"""A gallery of attention schemes, each written as A3 group ids: one rule, many models.

Every scheme below is a grouping of L positions (position 0 is the start token). Put through
`masks.two_stream_masks`, its content mask is the scheme's usual attention mask and its query mask is
what predicts each token; `masks.check_masks` confirms both follow the A3 rule. The lowest group is
the condition (given); every later group is predicted from the groups before it.

    causal_ar          one token per group, left to right: a causal language model
    prefix_lm          a bidirectional prefix (one group), then causal: T5 / UniLM prefix-LM
    block_diffusion    contiguous blocks of s in order, parallel inside a block: block diffusion (BD3-LM)
    xlnet_permutation  one token per group in a random order: XLNet's permutation LM
    diffusion_step     two groups, visible then masked: one step of a masked diffusion LM
    a3_random_groups   random subsets of s in random order: A3's any-order, any-subset training
    paper_figure_1     the paper's Figure 1: G1 = {1,2,3}, G2 = {5,6}, G3 = {4}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model import orders
from model.masks import MaskReport, check_masks, two_stream_masks

SCHEMES = ("causal_ar", "prefix_lm", "block_diffusion", "xlnet_permutation", "diffusion_step", "a3_random_groups",
           "paper_figure_1")
FIGURE_1 = [0, 1, 1, 1, 3, 2, 2]  # start token, then the figure's positions 1..6


@dataclass(frozen=True)
class Scheme:
    name: str
    title: str
    about: str
    group_ids: tuple[int, ...]

    def masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        return two_stream_masks(torch.tensor(self.group_ids))

    def report(self) -> MaskReport:
        content, query = self.masks()
        return check_masks(content, query, torch.tensor(self.group_ids))

    @property
    def n_groups(self) -> int:
        return len(set(self.group_ids))


def prefix_lm(length: int, prefix: int | None = None) -> list[int]:
    """Positions [0, prefix) in one group (they see each other), then one token per group."""
    prefix = max(2, length // 3) if prefix is None else prefix
    if not 1 <= prefix < length:
        raise ValueError(f"the prefix must leave at least one token to predict: 1 <= prefix < {length}; got {prefix}.")
    return [0] * prefix + list(range(1, length - prefix + 1))


def diffusion_step(length: int, generator: torch.Generator, masked_ratio: float = 0.5) -> list[int]:
    """The start token and a random part visible (group 0), the rest masked (group 1)."""
    n = length - 1
    n_masked = min(n, max(1, round(n * masked_ratio)))
    masked = torch.randperm(n, generator=generator)[:n_masked] + 1
    groups = torch.zeros(length, dtype=torch.long)
    groups[masked] = 1
    return groups.tolist()


def paper_figure_1(length: int = 7) -> list[int]:
    """Exactly the figure's grouping at length 7; longer texts keep its shape: the first half given
    (G1), then the last third of the rest (G2), then the middle (G3)."""
    if length == len(FIGURE_1):
        return list(FIGURE_1)
    n = length - 1
    first = max(1, n // 2)
    tail = max(1, (n - first) * 2 // 3) if n - first > 1 else 0
    middle = n - first - tail
    return [0] + [1] * first + [3] * middle + [2] * tail


def gallery(length: int, *, group_size: int = 4, seed: int = 0) -> list[Scheme]:
    """Every scheme of SCHEMES over `length` positions (seeded: the same schemes every time)."""
    if not isinstance(length, int) or length < 3:
        raise ValueError(f"the gallery needs at least 3 positions; got {length!r}.")
    generator = torch.Generator().manual_seed(int(seed))
    s = group_size
    schemes = [
        ("causal_ar", "causal AR", "one token per group, left to right", orders.left_to_right(length)),
        ("prefix_lm", "prefix-LM", "a bidirectional prefix in one group, then causal", prefix_lm(length)),
        ("block_diffusion", f"block diffusion (s={s})",
         f"contiguous blocks of {s}, in order; parallel inside a block", orders.blocks(length, s)),
        ("xlnet_permutation", "XLNet permutation", "one token per group, in a random order",
         orders.random_order(length, generator)),
        ("diffusion_step", "one diffusion step", "two groups: visible, then masked (all in parallel)",
         diffusion_step(length, generator)),
        ("a3_random_groups", f"A3 random groups (s={s})", f"random subsets of {s}, in a random order",
         orders.random_groups(length, s, generator)),
        ("paper_figure_1", "paper's Figure 1",
         "G1={1,2,3}, G2={5,6}, G3={4}" if length == len(FIGURE_1) else "Figure 1's shape, stretched",
         paper_figure_1(length)),
    ]
    return [Scheme(name, title, about, tuple(int(g) for g in groups)) for name, title, about, groups in schemes]

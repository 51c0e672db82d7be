"""The mask gallery: common attention schemes as A3 group ids, each through the masks and the checker."""

import pytest
import torch

from model.gallery import FIGURE_1, SCHEMES, gallery, paper_figure_1
from model.masks import check_masks, two_stream_masks


@pytest.fixture(scope="module", params=[7, 12, 33])
def schemes(request):
    return {s.name: s for s in gallery(request.param, group_size=4, seed=3)}


def test_every_scheme_is_there_and_passes_the_checker(schemes):
    assert list(schemes) == list(SCHEMES)
    for scheme in schemes.values():
        report = scheme.report()
        assert report.ok, (scheme.name, report.summary())
        # the lowest group is the condition: only its query rows see nothing
        g = torch.tensor(scheme.group_ids)
        assert report.unreachable_rows == (g == g.min()).nonzero(as_tuple=True)[0].tolist()
        assert 0 in report.unreachable_rows  # the start token is always part of the condition


def test_the_checker_flags_a_planted_leak(schemes):
    for scheme in schemes.values():
        content, query = scheme.masks()
        g = torch.tensor(scheme.group_ids)
        row = int(g.argmax())  # a position of the last group; let its query row see itself
        leaky = query.clone()
        leaky[row, row] = True
        report = check_masks(content, leaky, g)
        assert not report.ok and report.n_leaks == 1 and report.leaks[0].stream == "query"
        assert (report.leaks[0].row, report.leaks[0].col) == (row, row)


def test_each_scheme_has_its_defining_property(schemes):
    g = {name: torch.tensor(s.group_ids) for name, s in schemes.items()}
    n = g["causal_ar"].numel()
    # causal AR: one token per group, in position order; its content mask is the causal mask
    assert g["causal_ar"].tolist() == list(range(n))
    content, _ = two_stream_masks(g["causal_ar"])
    assert torch.equal(content, torch.ones(n, n, dtype=torch.bool).tril())
    # prefix-LM: the prefix is one group (bidirectional), then one token per group left to right
    prefix = g["prefix_lm"]
    p = int((prefix == 0).sum())
    assert p >= 2 and bool((prefix[:p] == 0).all()) and prefix[p:].tolist() == list(range(1, n - p + 1))
    content, _ = two_stream_masks(prefix)
    assert bool(content[:p, :p].all())  # the prefix sees itself both ways
    # block diffusion: contiguous blocks of 4 after the start token, in order
    blocks = g["block_diffusion"][1:]
    assert bool((blocks.diff() >= 0).all()) and torch.bincount(blocks)[1:].max() == 4
    # XLNet permutation: every position its own group, in an order that is not left to right
    xlnet = g["xlnet_permutation"]
    assert len(set(xlnet.tolist())) == n and xlnet[0] == 0 and xlnet[1:].tolist() != list(range(1, n))
    # one diffusion step: exactly two groups, the start token visible, some tokens masked
    step = g["diffusion_step"]
    assert set(step.tolist()) == {0, 1} and step[0] == 0 and 1 <= int(step.sum()) < n
    _, query = two_stream_masks(step)
    masked = step == 1
    assert not bool(query[masked][:, masked].any())  # masked tokens never see each other: all parallel
    # A3 random groups: groups of 4 (one smaller at most), not contiguous in general
    sizes = torch.bincount(g["a3_random_groups"][1:])[1:]
    assert sorted(sizes.tolist())[1:] == [4] * (len(sizes) - 1)
    # the paper's Figure 1
    assert schemes["paper_figure_1"].n_groups == 4


def test_paper_figure_1_is_the_figure_at_its_own_length():
    assert paper_figure_1(7) == FIGURE_1 == [0, 1, 1, 1, 3, 2, 2]  # G1={1,2,3}, G2={5,6}, G3={4}
    _, query = two_stream_masks(torch.tensor(FIGURE_1))
    assert query[4].tolist() == [True, True, True, True, False, True, True]  # position 4 (G3) sees G1 and G2
    assert query[5].tolist() == [True, True, True, True, False, False, False]  # G2 sees G1 only


def test_gallery_is_seeded():
    assert gallery(16, seed=5) == gallery(16, seed=5)

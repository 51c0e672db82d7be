import pytest
import torch
from conftest import random_groups

from model.masks import check_masks, group_order, group_visibility, two_stream_masks


def brute_force(groups: list[int]):
    n = len(groups)
    content = torch.tensor([[groups[j] <= groups[i] for j in range(n)] for i in range(n)])
    query = torch.tensor([[groups[j] < groups[i] for j in range(n)] for i in range(n)])
    return content, query


def test_ar_grouping_gives_causal_and_strictly_causal_masks():
    content, query = two_stream_masks(torch.arange(7))
    assert torch.equal(content, torch.ones(7, 7, dtype=torch.bool).tril())
    assert torch.equal(query, torch.ones(7, 7, dtype=torch.bool).tril(-1))


def test_paper_figure_1_grouping():
    # G1 = {1,2,3}, G2 = {5,6}, G3 = {4} (1-indexed positions), masks from research/paper.md §2
    groups = torch.tensor([1, 1, 1, 3, 2, 2])
    content, query = two_stream_masks(groups)
    expected_content = torch.tensor([
        [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 1, 1], [1, 1, 1, 0, 1, 1]], dtype=torch.bool)
    expected_query = torch.tensor([
        [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(content, expected_content)
    assert torch.equal(query, expected_query)
    report = check_masks(content, query, groups)
    assert report.ok and report.unreachable_rows == [0, 1, 2]


@pytest.mark.parametrize("seed", range(25))
def test_random_non_monotone_groupings_match_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    length = int(torch.randint(1, 40, (1,), generator=g))
    groups = random_groups(length, g)
    content, query = two_stream_masks(groups)
    ref_content, ref_query = brute_force(groups.tolist())
    assert torch.equal(content, ref_content) and torch.equal(query, ref_query)
    assert check_masks(content, query, groups).ok


def test_batched_group_ids_and_huge_labels():
    g = torch.Generator().manual_seed(0)
    groups = torch.stack([random_groups(9, g) * 10**12 for _ in range(6)]).view(2, 3, 9)
    content, query = two_stream_masks(groups)
    assert content.shape == query.shape == (2, 3, 9, 9)
    for idx in [(0, 0), (1, 2)]:
        ref_content, ref_query = brute_force(groups[idx].tolist())
        assert torch.equal(content[idx], ref_content) and torch.equal(query[idx], ref_query)


def test_padding_hides_padded_columns_in_both_streams():
    groups = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])
    padding = torch.tensor([[True, True, True, True], [True, True, False, False]])
    content, query = two_stream_masks(groups, padding)
    assert not content[1, :, 2:].any() and not query[1, :, 2:].any()
    assert torch.equal(content[0], torch.ones(4, 4, dtype=torch.bool).tril())
    with pytest.raises(ValueError, match="padding_mask"):
        two_stream_masks(groups, padding[:, :3])


def test_rectangular_visibility_matches_square_masks():
    groups = torch.tensor([3, 0, 2, 2, 1])
    content, query = two_stream_masks(groups)
    rows = torch.tensor([2, 4])
    assert torch.equal(group_visibility(groups[rows], groups, strict=False), content[rows])
    assert torch.equal(group_visibility(groups[rows], groups, strict=True), query[rows])


def test_sorted_by_group_masks_are_block_triangular():
    g = torch.Generator().manual_seed(3)
    groups = random_groups(30, g, n_groups=7)
    order = group_order(groups)
    assert torch.equal(groups[order], torch.sort(groups, stable=True).values)
    content, query = two_stream_masks(groups)
    sorted_content, sorted_query = content[order][:, order], query[order][:, order]
    sorted_groups = groups[order]
    # nothing above the diagonal blocks; query has empty diagonal blocks
    above = sorted_groups[None, :] > sorted_groups[:, None]
    assert not (sorted_content & above).any()
    same = sorted_groups[None, :] == sorted_groups[:, None]
    assert not (sorted_query & (above | same)).any()


def test_checker_flags_leaks_missing_cells_and_unreachable_rows():
    groups = torch.tensor([0, 0, 1, 2])
    content, query = two_stream_masks(groups)
    leaky_query = query.clone()
    leaky_query[2, 2] = True  # sees its own token
    leaky_query[1, 3] = True  # sees a later group
    leaky_content = content.clone()
    leaky_content[0, 2] = True  # content sees a later group
    blocked = query.clone()
    blocked[3, 0] = False  # the rule allows 3 -> 0
    report = check_masks(leaky_content, leaky_query, groups)
    assert not report.ok and report.n_leaks == 3 and report.n_missing == 0
    whys = " ".join(i.why for i in report.leaks)
    assert "sees its own token" in whys and "later group" in whys
    report = check_masks(content, blocked, groups)
    assert report.n_missing == 1 and report.missing[0].row == 3 and report.missing[0].col == 0
    assert report.unreachable_rows == [0, 1]
    assert "0-1" in report.summary() and report.to_dict()["n_missing"] == 1


@pytest.mark.parametrize("bad, error", [
    (torch.tensor([0.0, 1.0]), TypeError),
    (torch.tensor([True, False]), TypeError),
    (torch.tensor([], dtype=torch.long), ValueError),
    (torch.tensor(3), ValueError),
    ("abc", TypeError),
])
def test_invalid_group_ids_are_rejected_with_a_clear_message(bad, error):
    with pytest.raises(error, match="group_ids"):
        two_stream_masks(bad)


def test_checker_rejects_masks_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"content mask must be \[3, 3\]"):
        check_masks(torch.ones(2, 2), torch.ones(3, 3), torch.arange(3))

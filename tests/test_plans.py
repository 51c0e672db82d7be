import pytest
import torch

from model.plans import (
    CURRICULUM,
    ORDERS,
    GroupIdCountError,
    Plan,
    PlanError,
    custom_plan,
    make_plan,
    open_groups_in_order,
    parse_group_ids,
    sample_training_groups,
)

L = 20


def infill_given():
    given = torch.ones(L, dtype=torch.bool)
    given[4:9] = False  # span 1
    given[13:17] = False  # span 2
    return given


def decoding_order(plan: Plan) -> list[list[int]]:
    return [sorted((plan.group_ids == g).logical_and(plan.open).nonzero(as_tuple=True)[0].tolist())
            for g in plan.open_groups]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("size", [1, 2, 3])
def test_every_order_gives_given_first_and_covers_each_open_position_once(order, size):
    given = infill_given()
    plan = make_plan(torch.arange(L), given=given, order=order, group_size=size,
                     generator=torch.Generator().manual_seed(0))
    groups = plan.group_ids
    assert groups[given].max() < groups[~given].min()  # given positions come first
    assert torch.equal(groups[given], torch.arange(int(given.sum())))  # causal among the given
    members = sum(decoding_order(plan), [])
    assert sorted(members) == plan.open_positions  # each open position exactly once
    assert all(len(m) <= size for m in decoding_order(plan))


def test_named_orders_decode_in_the_expected_sequence():
    given = infill_given()
    tokens = torch.arange(L)
    assert decoding_order(make_plan(tokens, given=given)) == [[p] for p in [4, 5, 6, 7, 8, 13, 14, 15, 16]]
    assert decoding_order(make_plan(tokens, given=given, order="right_to_left")) == [[p] for p in [16, 15, 14, 13, 8, 7, 6, 5, 4]]  # noqa: E501
    # outside-in: nearest to the context first, both ends of every span
    outside_in = decoding_order(make_plan(tokens, given=given, order="outside_in"))
    assert [m[0] for m in outside_in] == [4, 8, 13, 16, 5, 7, 14, 15, 6]
    assert decoding_order(make_plan(tokens, given=given, order="blocks", group_size=4)) == [[4, 5, 6, 7], [8], [13, 14, 15], [16]]  # noqa: E501
    # left to right chunks straddle spans; span_left_to_right does not
    assert [4, 5, 6, 7] in decoding_order(make_plan(tokens, given=given, group_size=4))
    assert [8, 13, 14, 15] in decoding_order(make_plan(tokens, given=given, group_size=4))
    assert decoding_order(make_plan(tokens, given=given, order="span_left_to_right", group_size=4)) == [[4, 5, 6, 7], [8], [13, 14, 15, 16]]  # noqa: E501
    # ends first: the last position of each span (8, 16), then the rest left to right
    assert decoding_order(make_plan(tokens, given=given, order="ends_first")) == [[p] for p in [8, 16, 4, 5, 6, 7, 13, 14, 15]]  # noqa: E501
    assert decoding_order(make_plan(tokens, given=given, order="ends_first", group_size=4)) == [[8, 16], [4, 5, 6, 7], [13, 14, 15]]  # noqa: E501
    # a blank of one token is its own end; the rest is chunked left to right as left_to_right chunks it (across
    # spans); a blank that runs to the end of the text has nothing to end against: left to right
    spans = torch.ones(14, dtype=torch.bool)
    spans[[2, 3, 4, 6, 8, 9, 10, 11, 12, 13]] = False
    assert decoding_order(make_plan(torch.arange(14), given=spans, order="ends_first", group_size=3)) == \
        [[4, 6], [2, 3, 8], [9, 10, 11], [12, 13]]


def test_random_order_is_seeded():
    given = infill_given()
    def plan(seed):
        return make_plan(torch.arange(L), given=given, order="random", group_size=2,
                         generator=torch.Generator().manual_seed(seed))

    a, b, c = plan(1), plan(1), plan(2)
    assert torch.equal(a.group_ids, b.group_ids) and not torch.equal(a.group_ids, c.group_ids)


def test_joint_given_grouping_puts_all_given_in_one_group():
    plan = make_plan(torch.arange(L), given=infill_given(), given_grouping="joint")
    assert (plan.group_ids[plan.given] == 0).all() and plan.group_ids[plan.open].min() == 1


def test_open_positions_and_given_mask_must_agree():
    tokens = torch.arange(6)
    plan = make_plan(tokens, open_positions=[2, 3])
    assert plan.open_positions == [2, 3]
    given = torch.tensor([True, True, False, True, True, True])
    with pytest.raises(PlanError, match="neither given nor open"):
        make_plan(tokens, given=given, open_positions=[3])
    with pytest.raises(PlanError, match="both given and open"):
        make_plan(tokens, given=torch.tensor([True, True, True, True, True, False]), open_positions=[2, 5])


def test_custom_plan_accepts_any_integer_labels():
    tokens = torch.arange(6)
    given = torch.tensor([True, True, True, False, False, False])
    plan = custom_plan(tokens, given=given, group_ids=[1, 1, 1, 30, -5 + 25, 20])  # Figure 1 shape
    assert plan.open_groups == [20, 30]
    assert Plan.from_dict(plan.to_dict()).group_ids.tolist() == plan.group_ids.tolist()


@pytest.mark.parametrize("kwargs, message", [
    (dict(given=torch.ones(6, dtype=torch.bool)), "open set is empty"),
    (dict(given=torch.ones(5, dtype=torch.bool)), "given must be a bool mask of shape"),
    (dict(given=torch.zeros(6, dtype=torch.bool), order="sideways"), "order must be one of"),
    (dict(given=torch.zeros(6, dtype=torch.bool), group_size=0), "group_size must be a positive integer"),
    (dict(given=torch.zeros(6, dtype=torch.bool), given_grouping="x"), "given_grouping"),
    (dict(open_positions=[7]), "open_positions must lie in"),
    (dict(), "pass `given`"),
])
def test_bad_plans_raise_errors_that_name_the_argument(kwargs, message):
    with pytest.raises(PlanError, match=message):
        make_plan(torch.arange(6), **kwargs)


@pytest.mark.parametrize("groups, message", [
    ([0.5, 1, 2, 3], "integers"),
    ([0, 1, 2], "one group per position"),
    ([[0, 1, 2, 3]], "one group per position"),
])
def test_bad_custom_group_ids_are_rejected(groups, message):
    with pytest.raises(PlanError, match=message):
        custom_plan(torch.arange(4), given=torch.tensor([True, False, False, False]), group_ids=groups)


def test_parse_group_ids_from_text():
    assert parse_group_ids("0 0, 1 -2", 4) == [0, 0, 1, -2]
    with pytest.raises(PlanError, match="expected 3 values") as err:
        parse_group_ids("0 1", 3)
    # the count as numbers too, for a caller that says where the ids were typed (app.session)
    assert isinstance(err.value, GroupIdCountError) and (err.value.expected, err.value.got) == (3, 2)
    with pytest.raises(PlanError, match="'x' is not"):
        parse_group_ids("0 x 1", 3)
    with pytest.raises(PlanError, match="empty"):
        parse_group_ids("  ", 3)


@pytest.mark.parametrize("stage", CURRICULUM)
def test_curriculum_groupings(stage):
    g = torch.Generator().manual_seed(0)
    groups = sample_training_groups(33, stage, g)
    assert groups.shape == (33,)
    assert (groups[1:] > groups[0]).all()  # the start token alone in the lowest group
    sizes = torch.unique(groups[1:], return_counts=True)[1]
    if stage == "ar":
        assert torch.equal(groups[1:], torch.arange(32))
    elif stage.startswith("block"):
        s = int(stage[-1])
        assert torch.equal(groups[1:], torch.arange(32) // s)
    elif stage.startswith("perm"):
        s = int(stage[-1])
        assert (sizes == s).all() and not torch.equal(groups[1:], torch.sort(groups[1:]).values)
    else:  # infill: a contiguous open span after a causal given prefix/suffix
        first_open = int(torch.unique(groups).numel() - 1)
        assert sizes.max() <= 8 and first_open > 0


def test_training_groups_are_seeded_and_vary():
    a = [sample_training_groups(20, "perm4", torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(a[0], a[1]) and not torch.equal(a[0], a[2])
    with pytest.raises(PlanError, match="stage must be one of"):
        sample_training_groups(20, "diffusion")


def test_open_groups_helper_validates_group_size_type():
    with pytest.raises(PlanError, match="group_size"):
        open_groups_in_order(torch.tensor([True, False]), "left_to_right", 1.5)


def test_plans_refuse_open_positions_with_no_context():
    tokens = torch.arange(6)
    with pytest.raises(PlanError, match=r"nothing is given.*Give at least one token first"):
        make_plan(tokens, given=torch.zeros(6, dtype=torch.bool))
    given = torch.tensor([False, True, True, False, False, True])
    with pytest.raises(PlanError, match=r"open positions \[0\] .*lowest group \(-3\)"):
        custom_plan(tokens, given=given, group_ids=[-3, -3, 0, 1, 1, 0])
    # a given token before every open group is all it takes; any labels
    assert custom_plan(tokens, given=given, group_ids=[-2, -3, 0, 1, 1, 0]).open_groups == [-2, 1]
    assert make_plan(tokens, given=given, order="outside_in").open_groups == [3, 4, 5]


def test_group_ids_are_bounded_and_parsed_strictly():
    tokens, given = torch.arange(3), torch.tensor([True, False, False])
    with pytest.raises(PlanError, match=r"group ids must lie in \[-2147483648, 2147483648\)"):
        custom_plan(tokens, given=given, group_ids=[0, 1, 2**40])
    with pytest.raises(PlanError, match="must be an integer tensor"):
        custom_plan(tokens, given=given, group_ids=[[0, 1], [2]])
    with pytest.raises(PlanError, match="could not convert"):
        custom_plan(tokens, given=given, group_ids=[0, 1, 2**70])
    assert parse_group_ids("+1, -2 3", 3) == [1, -2, 3]
    for text in ("1 ² 3", "1 1_0 3", "1 ٣ 3", "1 0x1 3", "1 - 3", "1 " + "9" * 5000 + " 3"):
        with pytest.raises(PlanError, match="must be integers"):
            parse_group_ids(text, 3)
    with pytest.raises(PlanError, match="must lie in"):
        parse_group_ids("1 99999999999999999999999 3", 3)
    with pytest.raises(PlanError, match="must be text"):
        parse_group_ids(None, 3)


def test_the_given_grouping_convention_of_each_layout():
    """Checkpoints of the official code were run with the given tokens in one joint group, ours causally:
    `LoadedModel.given_grouping` names the convention and make_plan applies it."""
    from model.loading import LoadedModel, tiny_model

    def loaded(layout):
        return LoadedModel(tiny_model(11, block_layout=layout), None, layout, "", True, 0)

    for layout, grouping in (("prenorm", "causal"), ("official", "joint")):
        assert loaded(layout).given_grouping == grouping
        plan = make_plan(torch.arange(L), given=infill_given(), given_grouping=loaded(layout).given_grouping)
        n_given = int(infill_given().sum())
        assert torch.unique(plan.group_ids[plan.given]).numel() == (1 if grouping == "joint" else n_given)

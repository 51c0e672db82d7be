"""The order lab's library: the default order set and batched exact log-likelihoods (tiny model)."""

import math

import pytest
import torch

from model.decoding import sequence_log_likelihood
from model.orders import (
    Order,
    ar_log_likelihood,
    default_orders,
    order_likelihoods,
    order_plan,
    outside_in,
    right_to_left,
    teacher_forced_trace,
)


@pytest.fixture(scope="module")
def sequence(tiny_loaded):
    text = "The cat sat on the mat and looked at the birds in the old tree."
    return torch.tensor([tiny_loaded.start_token_id] + tiny_loaded.tokenizer(text).input_ids)


def test_default_set_names_and_shapes():
    orders = default_orders(10, n_random=3, group_size=4, seed=1, custom=[0, 1, 1, 2, 2, 3, 3, 4, 4, 4])
    names = [o.name for o in orders]
    assert names[:4] == ["left_to_right", "right_to_left", "outside_in", "blocks_of_4"]
    assert len(names) == len(set(names)) == 4 + 3 + 3 + 1 and names[-1] == "custom"
    for order in orders[:-1]:  # the start token is alone in the lowest group of every default order
        g = torch.tensor(order.group_ids)
        assert g.numel() == 10 and int(g[0]) == 0 and bool((g[1:] > 0).all())
    assert right_to_left(5) == [0, 4, 3, 2, 1]
    assert outside_in(6) == [0, 1, 3, 5, 4, 2]  # 1 and 5 first, then 2 and 4, then 3
    random_groups = [o for o in orders if o.name.startswith("random_groups_of_4_")]
    for order in random_groups:
        sizes = torch.bincount(torch.tensor(order.group_ids[1:]))[1:]
        assert sorted(sizes.tolist()) == [1, 4, 4]  # 9 positions in groups of 4
    again = default_orders(10, n_random=3, group_size=4, seed=1)
    assert [o.group_ids for o in again] == [o.group_ids for o in orders[:-1]]  # seeded


def test_values_equal_sequence_log_likelihood_for_each_order(tiny_loaded, sequence):
    orders = default_orders(len(sequence), n_random=3, group_size=3)
    orders.append(Order("custom", tuple([5] * 3 + [9] * (len(sequence) - 3))))  # a non-singleton condition
    results = order_likelihoods(tiny_loaded.model, sequence, orders, batch_size=4)
    assert [r.name for r in results] == [o.name for o in orders]
    for order, result in zip(orders, results, strict=True):
        reference, per_position = sequence_log_likelihood(tiny_loaded.model, sequence, order.group_ids)
        assert result.logp == pytest.approx(reference, abs=1e-3)
        lowest = min(order.group_ids)
        for g, value, ref in zip(order.group_ids, result.token_logps, per_position.tolist(), strict=True):
            assert (value is None) == (g == lowest) == math.isnan(ref)
            if value is not None:
                assert value == pytest.approx(ref, abs=1e-4)
        assert result.logp == pytest.approx(sum(v for v in result.token_logps if v is not None), abs=1e-3)


def test_batching_gives_the_same_numbers_as_one_at_a_time(tiny_loaded, sequence):
    orders = default_orders(len(sequence), n_random=4)
    batched = order_likelihoods(tiny_loaded.model, sequence, orders, batch_size=len(orders))
    uneven = order_likelihoods(tiny_loaded.model, sequence, orders, batch_size=3)
    single = order_likelihoods(tiny_loaded.model, sequence, orders, batch_size=1)
    for a, b, c in zip(batched, uneven, single, strict=True):
        assert a.name == b.name == c.name and a.group_ids == c.group_ids
        assert a.logp == pytest.approx(c.logp, abs=1e-3) and b.logp == pytest.approx(c.logp, abs=1e-3)
        for x, y in zip(a.token_logps, c.token_logps, strict=True):
            assert (x is None and y is None) or x == pytest.approx(y, abs=1e-4)


def test_left_to_right_scores_what_the_content_stream_scores_causally(tiny_loaded, sequence):
    """The AR reference is the content stream's causal log-likelihood (row i-1 predicts token i), on
    exactly the tokens left_to_right scores. The tiny model is its own AR base."""
    base = tiny_loaded.base()
    assert base is tiny_loaded.model
    total, per_token = ar_log_likelihood(base, sequence)
    with torch.no_grad():
        content = base(sequence[None], return_content_logits=True).content_logits[0].float().log_softmax(-1)
    by_hand = [float(content[i - 1, sequence[i]]) for i in range(1, len(sequence))]
    assert total == pytest.approx(sum(by_hand), abs=1e-3)
    assert per_token[0] is None and per_token[1:] == pytest.approx(by_hand, abs=1e-4)
    (ltr,) = order_likelihoods(tiny_loaded.model, sequence, default_orders(len(sequence), n_random=0)[:1])
    assert [v is None for v in ltr.token_logps] == [v is None for v in per_token]
    # the query stream under left-to-right grouping is what A3 is trained to make equal to this; a random
    # model's is not, but both are log-likelihoods of the same tokens: finite and negative
    assert math.isfinite(ltr.logp) and ltr.logp < 0 and total < 0


def test_order_plan_and_teacher_forced_trace_give_the_order_logp(tiny_loaded, sequence):
    orders = default_orders(len(sequence), n_random=1, group_size=3)
    results = order_likelihoods(tiny_loaded.model, sequence, orders)
    for order, result in zip(orders, results, strict=True):
        plan = order_plan(sequence, order)
        assert plan.given.tolist() == [g == min(order.group_ids) for g in order.group_ids]
        trace = teacher_forced_trace(tiny_loaded.model, sequence, order)
        assert trace.final_ids == sequence.tolist()  # the true tokens, committed
        assert len(trace.steps) == len(set(order.group_ids)) - 1
        assert trace.logprob == pytest.approx(result.logp, abs=1e-3)


def test_bad_orders_are_refused_with_a_message(tiny_loaded, sequence):
    with pytest.raises(ValueError, match="one group id per token"):
        order_likelihoods(tiny_loaded.model, sequence, [Order("short", (0, 1, 2))])
    with pytest.raises(ValueError, match="at least 2 positions"):
        default_orders(1)


# --------------------------------------------------------------------------------------------------
# the page's side (app.order_lab): no gradio, same code path as the Order lab tab


@pytest.fixture(scope="module")
def explorer(tiny_loaded):
    from app.session import Explorer

    return Explorer(tiny_loaded)


LAB_TEXT = "The cat sat on the mat and looked at the birds in the old tree."


def test_order_lab_computes_marks_best_and_worst_and_compares_two_orders(explorer):
    from app import order_lab

    n = len(explorer.picker_from_text(LAB_TEXT)["ids"])
    lab = order_lab.compute(explorer, LAB_TEXT, n_random=3, group_size=2, seed=0,
                            custom_groups=" ".join(["0"] + ["1"] * (n - 1)))
    assert lab.names[0] == "left_to_right" and lab.names[-1] == "custom" and len(lab.names) == 4 + 3 + 3 + 1
    assert lab.ar is not None and lab.ar[1][0] is None  # the tiny model is its own base
    fig = order_lab.distribution_figure(lab.names, [o.logp for o in lab.orders], [o.n_scored for o in lab.orders],
                                        ar_logp=lab.ar[0])
    assert fig.layout.meta["best"] == lab.best().name and fig.layout.meta["worst"] == lab.worst().name
    assert lab.best().logp >= max(o.logp for o in lab.orders) and "Best" in order_lab.summary_markdown(lab)
    plotted = sorted(x for trace in fig.data[:-2] for x in trace.x)
    assert plotted == pytest.approx(sorted(o.logp for o in lab.orders))
    tokens = order_lab.per_token_figure(lab.labels, lab.get("left_to_right"), lab.get("right_to_left"))
    assert len(tokens.data) == 2 and len(tokens.data[0].y) == len(lab.token_ids)
    assert tokens.data[0].y[0] is None
    assert tokens.data[1].y[1] == pytest.approx(-lab.get("right_to_left").token_logps[1])
    assert len(lab.labels) <= 40 and tokens.layout.xaxis.tickfont.size == 12  # a short text's labels at the page's size


@pytest.mark.parametrize("ids", ["all zero", "start late", "negative", "tied with the start"])
def test_the_lab_refuses_custom_ids_that_would_score_fewer_tokens_than_the_other_orders(explorer, ids):
    """A grouping that gives more than the start token scores fewer tokens, so its log p is higher for
    having less to predict: the lab would crown it best. It is refused, saying what to type instead."""
    from app import order_lab
    from app.session import InputError

    n = len(explorer.picker_from_text(LAB_TEXT)["ids"])
    groups = {"all zero": [0] * n, "start late": [5] + list(range(1, n)), "negative": [0, -1] + list(range(1, n - 1)),
              "tied with the start": [0, 0] + [1] * (n - 2)}[ids]
    with pytest.raises(InputError) as said:
        order_lab.compute(explorer, LAB_TEXT, n_random=1, custom_groups=" ".join(map(str, groups)))
    assert str(said.value).startswith("Custom group ids: the first id (the start token's) must be lower")
    assert f"scores all {n - 1} tokens" in str(said.value) and f"Give {n} ids, the first 0" in str(said.value)
    assert "[" not in str(said.value)  # positions as the page lists them, not a Python list


def test_the_lab_summary_ranks_your_own_group_ids_among_the_orders(explorer):
    from app import order_lab

    n = len(explorer.picker_from_text(LAB_TEXT)["ids"])
    groups = [0] + [1 + (p % 3) for p in range(n - 1)]
    lab = order_lab.compute(explorer, LAB_TEXT, n_random=2, custom_groups=" ".join(map(str, groups)))
    custom = lab.get("custom")
    assert custom.n_scored == n - 1 == lab.get("left_to_right").n_scored  # scored on the same tokens
    rank = sorted((o.logp for o in lab.orders), reverse=True).index(custom.logp) + 1
    summary = order_lab.summary_markdown(lab)
    assert f"Your group ids: log p {custom.logp:.2f}" in summary and f"rank {rank} of {len(lab.orders)}" in summary
    assert f"log p of the {n - 1} tokens after the start token" in summary
    plain = order_lab.summary_markdown(order_lab.compute(explorer, LAB_TEXT, n_random=1))
    assert "Your group ids" not in plain


def test_loading_an_order_gives_a_teacher_forced_trace_of_the_true_tokens(explorer):
    from app import order_lab
    from app.stage import stage_payload

    lab = order_lab.compute(explorer, LAB_TEXT, n_random=1, group_size=3)
    result = order_lab.load_order(explorer, lab, "outside_in")
    assert result.trace.final_ids == lab.token_ids and result.text.strip() == LAB_TEXT
    assert result.trace.logprob == pytest.approx(lab.get("outside_in").logp, abs=1e-3)
    assert result.trace.steps[0].positions == [1] and result.trace.steps[1].positions == [len(lab.token_ids) - 1]
    payload = stage_payload(result)
    assert not payload["empty"] and len(payload["steps"]) == len(lab.token_ids) - 1


def test_order_lab_bad_input_is_an_input_error(explorer):
    from app import order_lab
    from app.session import InputError

    with pytest.raises(InputError, match="remove the .MASK. blanks"):
        order_lab.compute(explorer, "The cat [MASK:2] sat.")
    with pytest.raises(InputError, match="Custom group ids"):
        order_lab.compute(explorer, LAB_TEXT, custom_groups="0 1 x")
    with pytest.raises(InputError) as said:  # the lab's own words: a complete text, no blanks asked for
        order_lab.compute(explorer, "  \n")
    assert "complete text (no blanks)" in str(said.value) and "[MASK" not in str(said.value)
    with pytest.raises(InputError) as said:
        order_lab.compute(explorer, LAB_TEXT, custom_groups="0 1 2")
    assert str(said.value).startswith("Custom group ids: expected ") and "ids: custom" not in str(said.value)
    with pytest.raises(InputError) as said:
        order_lab.compute(explorer, LAB_TEXT, custom_groups="0 1 x")
    assert str(said.value).startswith("Custom group ids must be integers") and "ids custom" not in str(said.value)
    with pytest.raises(InputError, match="Compute the order lab first"):
        order_lab.load_order(explorer, None, "left_to_right")
    lab = order_lab.compute(explorer, LAB_TEXT, n_random=0)
    with pytest.raises(InputError, match="No order named"):
        order_lab.load_order(explorer, lab, "random_99")
    with pytest.raises(InputError, match="Unknown order name"):
        order_lab.api(explorer, LAB_TEXT, '["nope"]')


def test_gallery_schemes_load_onto_the_stage_and_into_your_text(explorer):
    from app import order_lab
    from app.session import Request

    ids, schemes = order_lab.gallery_for(explorer, LAB_TEXT)
    fig = order_lab.gallery_figure(schemes)
    assert fig.layout.meta["schemes"] == [s.name for s in schemes] and len(fig.data) == 2 * len(schemes)
    assert "✓" in order_lab.gallery_markdown(schemes) and "✗" not in order_lab.gallery_markdown(schemes)
    for scheme in schemes:
        result, _ = order_lab.load_scheme(explorer, LAB_TEXT, scheme.name)
        assert result.trace.final_ids == ids.tolist() and len(result.trace.steps) == scheme.n_groups - 1
        # "use in Your text": the same grouping decodes through the normal page path
        picker = order_lab.scheme_picker(explorer, LAB_TEXT, scheme)
        request = Request(text=LAB_TEXT, picker=picker, order="custom group ids",
                          custom_groups=" ".join(map(str, scheme.group_ids)))
        assert explorer.plan(request).group_ids.tolist() == list(scheme.group_ids)


def test_the_lab_words_orders_as_the_page_does_and_keeps_their_ids(explorer):
    from app import order_lab
    from app.order_lab import order_label

    assert [order_label(n) for n in ("left_to_right", "right_to_left", "outside_in", "blocks_of_3", "random_2",
                                     "random_groups_of_2_0", "custom")] == [
        "left to right", "right to left", "outside-in", "blocks of 3", "random #2", "random groups of 2 #0",
        "custom group ids"]
    lab = order_lab.compute(explorer, LAB_TEXT, n_random=2, group_size=2, seed=0)
    summary = order_lab.summary_markdown(lab)
    assert "_" not in summary.split("Best:")[1].split("·")[0]  # "left to right", never "left_to_right"
    ltr = lab.get("left_to_right").logp
    assert f"A3 left to right {ltr:.2f}" in summary and ("more likely" in summary or "less likely" in summary)
    fig = order_lab.distribution_figure(lab.names, [o.logp for o in lab.orders], [o.n_scored for o in lab.orders])
    assert fig.layout.meta["names"] == lab.names  # the ids, for whoever reads the figure's data
    assert all("_" not in t.text[0] for t in fig.data if t.text)
    shown = order_lab.load_order(explorer, lab, "outside_in")
    assert shown.method == "teacher-forced outside-in"

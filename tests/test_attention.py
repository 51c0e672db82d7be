"""Captured attention weights are what the model used, and the attention figure draws exactly them."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import VOCAB, random_groups

from app.attention_view import attention_figure, reduction_label
from model.attention import (
    BLOCKED_NOTE,
    attention_layers,
    attention_probabilities,
    attention_weights,
    capture_attention,
    select_weights,
    step_attention,
    step_inputs,
)
from model.decoding import MODES, collect, run_decoder
from model.masks import two_stream_masks
from model.modeling import attend
from model.plans import make_plan

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTH = 14


def sequence(seed: int, length: int = LENGTH, n_groups: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (length,), generator=g), random_groups(length, g, n_groups)


@pytest.fixture(scope="module")
def traces(tiny):
    """One short trace per decoding mode: a given start token and two blank spans."""
    ids, _ = sequence(0)
    given = torch.ones(LENGTH, dtype=torch.bool)
    given[3:8] = False
    given[-2:] = False
    plan = make_plan(ids, given=given, order="random", group_size=2, generator=torch.Generator().manual_seed(1))
    extra = {"dynamic": {"k": 2}, "official_dynamic": {"k": 2}, "diffusion": {"k": 3}, "one_step_parallel": {"k": 2}}
    return {mode: collect(run_decoder(mode, tiny, plan, **extra.get(mode, {}))) for mode in MODES}


# --------------------------------------------------------------------------------------------------
# the tap changes nothing


def test_capture_leaves_the_outputs_bit_identical_and_removes_itself(tiny):
    ids, groups = sequence(1)
    with torch.no_grad():
        plain = tiny(ids[None], group_ids=groups, return_content_logits=True)
        with capture_attention(tiny) as captured:
            tapped = tiny(ids[None], group_ids=groups, return_content_logits=True)
    assert torch.equal(plain.logits, tapped.logits)
    assert torch.equal(plain.content_logits, tapped.content_logits)
    assert [len(calls) for calls in captured] == [1] * tiny.config.num_hidden_layers  # one call per layer
    assert all(layer.self_attn.observer is None for layer in tiny.model.layers)
    with pytest.raises(KeyError), capture_attention(tiny):
        raise KeyError("an error inside the capture")
    assert all(layer.self_attn.observer is None for layer in tiny.model.layers)


def test_captures_do_not_nest_and_ignore_other_threads(tiny):
    ids, groups = sequence(2)
    with capture_attention(tiny) as captured:
        with pytest.raises(RuntimeError, match="nest"), capture_attention(tiny):
            pass
        other = threading.Thread(target=lambda: tiny(ids[None], group_ids=groups))
        other.start()
        other.join()
        assert all(len(calls) == 0 for calls in captured)  # another request's forward is not ours
        with torch.no_grad():
            tiny(ids[None], group_ids=groups)
    assert all(len(calls) == 1 for calls in captured)


def test_captures_from_two_threads_at_once_both_get_their_own(tiny):
    """Two users drawing attention at the same moment: the second waits for the first, neither fails."""
    ids, groups = sequence(3)
    alone = attention_weights(tiny, ids, groups)
    results, errors = [None, None], []

    def draw(i):
        try:
            results[i] = attention_weights(tiny, ids, groups)
        except Exception as err:  # noqa: BLE001 - a failure in a thread must reach the test
            errors.append(err)

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(np.array_equal(r.probs, alone.probs) for r in results)
    assert all(layer.observer is None for layer in attention_layers(tiny))


# --------------------------------------------------------------------------------------------------
# the weights are distributions over the allowed cells


@pytest.mark.parametrize("stream", ["query", "content"])
def test_rows_sum_to_one_over_allowed_cells_and_blocked_cells_are_exactly_zero(tiny, stream):
    for seed in range(4):
        ids, groups = sequence(10 + seed)
        weights = attention_weights(tiny, ids, groups, stream=stream)
        config = tiny.config
        assert weights.probs.shape == (config.num_hidden_layers, config.num_attention_heads, LENGTH, LENGTH)
        assert weights.probs.dtype == np.float32
        content, query = two_stream_masks(groups)
        assert np.array_equal(weights.allowed, (query if stream == "query" else content).numpy())
        blocked = np.broadcast_to(~weights.allowed, weights.probs.shape)
        assert np.all(weights.probs[blocked] == 0.0)
        sees = weights.allowed.any(-1)  # (L,)
        sums = weights.probs.sum(-1)  # (layers, heads, L)
        assert np.allclose(sums[..., sees], 1.0, atol=1e-5)
        assert np.all(weights.probs[:, :, ~sees] == 0.0)  # rows that see nothing: all zeros
        if stream == "query":
            assert np.array_equal(~sees, (groups == groups.min()).numpy())  # exactly the lowest group
        else:
            assert sees.all()  # a content row always sees itself


def test_probabilities_times_values_equal_attend_with_gqa_and_empty_rows():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, h, n, 8, generator=g) for h, n in ((6, 5), (2, 7), (2, 7)))
    visible = torch.rand(2, 5, 7, generator=g) < 0.5
    visible[0, 1] = False  # a row that sees nothing
    probs = attention_probabilities(q, k, visible)  # (B, Hq, R, K)
    assert torch.all(probs[0, :, 1] == 0)
    expected = attend(q, k, v, visible)
    assert torch.allclose(probs @ v.repeat_interleave(3, dim=1), expected, atol=1e-6)


@pytest.mark.parametrize("layout", ["prenorm", "official"])
def test_weights_times_the_layers_values_reproduce_what_each_layer_computed(layout):
    from model.loading import tiny_model

    model = tiny_model(VOCAB, seed=2, block_layout=layout)
    ids, groups = sequence(4)
    attn_inputs, attn_outputs = {}, {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        hooks.append(attn.register_forward_pre_hook(lambda _m, args, i=i: attn_inputs.__setitem__(i, args[0])))
        hooks.append(attn.o_proj.register_forward_pre_hook(lambda _m, args, i=i: attn_outputs.__setitem__(i, args[0])))
    try:
        streams = {s: attention_weights(model, ids, groups, stream=s) for s in ("content", "query")}
    finally:
        for hook in hooks:
            hook.remove()
    config = model.config
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            normed = attn_inputs[i][0, :LENGTH]  # (L, H): the content rows, the only keys and values
            values = layer.self_attn.v_proj(normed).view(LENGTH, kv_heads, dim).transpose(0, 1)  # (Hkv, L, D)
            values = values.repeat_interleave(heads // kv_heads, dim=0)  # (Hq, L, D)
            computed = attn_outputs[i][0].view(2 * LENGTH, heads, dim).transpose(0, 1)  # (Hq, 2L, D)
            for s, rows in (("content", slice(0, LENGTH)), ("query", slice(LENGTH, 2 * LENGTH))):
                mixed = torch.from_numpy(streams[s].probs[i]) @ values  # (Hq, L, D)
                assert torch.allclose(mixed, computed[:, rows], atol=1e-5), (layout, i, s)


def test_select_and_mean_average_layers_and_heads(tiny):
    ids, groups = sequence(5)
    weights = attention_weights(tiny, ids, groups)
    probs = weights.probs
    assert np.allclose(weights.select(), probs.mean(axis=(0, 1)), atol=1e-7)
    assert np.array_equal(weights.select(1, 2), probs[1, 2])
    assert np.allclose(weights.select(head=3), probs[:, 3].mean(0), atol=1e-7)
    assert weights.mean(("heads",)).shape == (probs.shape[0], LENGTH, LENGTH)
    assert np.allclose(weights.mean(), weights.select(), atol=1e-7)
    mean = weights.select()
    assert np.all(mean[~weights.allowed] == 0.0)
    sees = weights.allowed.any(-1)
    assert np.allclose(mean[sees].sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="layer"):
        select_weights(probs, layer=probs.shape[0])
    with pytest.raises(ValueError, match="average"):
        weights.mean(("rows",))


# --------------------------------------------------------------------------------------------------
# the current step of a trace


def test_step_inputs_replay_the_call_each_decoder_made(tiny, traces):
    for mode, trace in traces.items():
        for record in trace.steps:
            inputs = step_inputs(trace, record.step)
            with torch.no_grad():
                out = tiny(torch.tensor([inputs.token_ids]), group_ids=torch.tensor(inputs.group_ids),
                           return_content_logits=True)
            logits = (out.content_logits if inputs.stream == "content" else out.logits)[0]
            logprobs = logits.log_softmax(-1)[inputs.rows, record.tokens]
            assert torch.allclose(logprobs, torch.tensor(record.token_logprobs), atol=1e-4), (mode, record.step)
            expected_rows = [p - 1 for p in record.positions] if mode == "ar_baseline" else record.positions
            assert inputs.rows == expected_rows


def test_tokens_still_undecided_at_a_step_are_invisible_to_its_rows(tiny, traces):
    g = torch.Generator().manual_seed(6)
    for mode, trace in traces.items():
        decided = np.asarray(trace.decided_step())
        for record in trace.steps:
            weights = step_attention(tiny, trace, record.step)
            rows = list(weights.rows)
            assert np.array_equal(weights.group_ids, trace.group_ids_at(record.step)) or mode == "ar_baseline"
            # the step's own tokens and everything after it: anything at all
            noisy = torch.tensor(weights.token_ids)
            later = torch.from_numpy(decided >= record.step)
            noisy[later] = torch.randint(0, VOCAB, (int(later.sum()),), generator=g)
            again = attention_weights(tiny, noisy, weights.group_ids, stream=weights.stream)
            assert np.array_equal(weights.probs[:, :, rows], again.probs[:, :, rows]), (mode, record.step)


def test_content_rows_of_a_plan_step_read_only_tokens_committed_by_then(tiny, traces):
    trace = traces["plan"]
    decided = np.asarray(trace.decided_step())
    g = torch.Generator().manual_seed(7)
    for record in trace.steps:
        weights = step_attention(tiny, trace, record.step, stream="content")
        assert weights.stream == "content" and list(weights.rows) == record.positions
        noisy = torch.tensor(weights.token_ids)
        later = torch.from_numpy(decided > record.step)
        noisy[later] = torch.randint(0, VOCAB, (int(later.sum()),), generator=g)
        again = attention_weights(tiny, noisy, weights.group_ids, stream="content")
        assert np.array_equal(weights.probs[:, :, record.positions], again.probs[:, :, record.positions])


def test_step_inputs_refuse_steps_without_a_model_call(traces):
    trace = traces["plan"]
    for step in (-1, len(trace.steps)):
        with pytest.raises(ValueError, match="step"):
            step_inputs(trace, step)


# --------------------------------------------------------------------------------------------------
# the figure


def heatmap(fig, name: str) -> np.ndarray:
    return np.asarray(next(t for t in fig.data if t.name == name).z, dtype=np.float32)


@pytest.mark.parametrize(("layer", "head"), [(None, None), (1, None), (None, 2), (0, 3)])
def test_figure_draws_the_weights_over_the_mask(tiny, layer, head):
    ids, groups = sequence(8, n_groups=4)
    weights = attention_weights(tiny, ids, groups)
    lowest = int(torch.nonzero(groups == groups.min())[0])
    rows = sorted({lowest, 5, 9})
    labels = [f"w{t}" for t in ids.tolist()]
    fig = attention_figure(weights.probs, weights.allowed, labels, rows, layer=layer, head=head)
    expected = select_weights(weights.probs, layer=layer, head=head)[rows]  # (R, L)
    blocked = ~weights.allowed[rows]
    shown, grey = heatmap(fig, "weight"), heatmap(fig, "blocked")
    assert shown.shape == grey.shape == (len(rows), LENGTH)
    assert np.array_equal(shown[~blocked], expected[~blocked])  # the values are the weights
    assert np.all(np.isnan(shown[blocked]))
    assert np.all(grey[blocked] == 0.0) and np.all(np.isnan(grey[~blocked]))  # blocked: exact zeros
    assert np.all(expected[blocked] == 0.0)
    meta = fig.layout.meta
    assert meta["figure"] == "attention" and meta["stream"] == "query"
    assert meta["layer"] == layer and meta["head"] == head and meta["rows"] == rows
    assert meta["note"] == BLOCKED_NOTE and meta["rows_seeing_nothing"] == [lowest]
    assert reduction_label(layer, head) in fig.layout.title.text
    assert fig.layout.height and fig.layout.uirevision == "attention"
    fig.to_json()  # plotly accepts everything in it


def test_figure_refuses_weight_on_blocked_cells_and_bad_slices(tiny):
    ids, groups = sequence(9, n_groups=3)
    weights = attention_weights(tiny, ids, groups, stream="content")
    labels = [str(t) for t in ids.tolist()]
    fig = attention_figure(weights.probs, weights.allowed, labels, [0, 1], stream="content")
    assert "mean of all layers and heads" in fig.layout.title.text
    leaky = weights.probs.copy()
    i, j = np.argwhere(~weights.allowed)[0]
    leaky[0, 0, i, j] = 0.1
    with pytest.raises(ValueError, match="blocked"):
        attention_figure(leaky, weights.allowed, labels, [int(i)], stream="content")
    with pytest.raises(ValueError, match="head"):
        attention_figure(weights.probs, weights.allowed, labels, [0], head=99)
    with pytest.raises(ValueError, match="rows"):
        attention_figure(weights.probs, weights.allowed, labels, [LENGTH])
    empty = attention_figure(weights.probs, weights.allowed, labels, [])
    assert heatmap(empty, "weight").size == 0 and empty.layout.meta["rows"] == []


def test_figure_names_no_token_that_is_still_open(tiny):
    """With `known`, the axes read "p:?" for positions not decided by the step: nothing is given away."""
    ids, groups = sequence(8, n_groups=4)
    weights = attention_weights(tiny, ids, groups)
    labels = [f"w{t}" for t in ids.tolist()]
    known = [p < 6 for p in range(LENGTH)]
    fig = attention_figure(weights.probs, weights.allowed, labels, [5], known=known)
    columns = list(next(t for t in fig.data if t.name == "weight").x)
    assert columns[:6] == [f"{p}:{labels[p]}" for p in range(6)]
    assert columns[6:] == [f"{p}:?" for p in range(6, LENGTH)]

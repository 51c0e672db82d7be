"""model.packed_linear: oneDNN-packed float32 weights give F.linear's results, fall back where they must,
follow weight changes, and decode the tokens the plain model decodes."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import VOCAB, two_span_plan
from torch import nn

from model import packed_linear
from model.decoding import collect, decode_dynamic, decode_plan
from model.loading import load_model, tiny_model
from model.packed_linear import (
    PACKED_MAX_ROWS,
    PackedLinear,
    pack_linears,
    packed_count,
    repack,
    unpack_linears,
)
from model.quant import Int8Linear, quantize_model

pytestmark = pytest.mark.skipif(not packed_linear.available(), reason="this torch has no oneDNN linear")


def layers(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(48, 40, bias=bias), nn.Linear(40, 24, bias=bias)).eval()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 2, 3, 65, PACKED_MAX_ROWS, PACKED_MAX_ROWS + 1, 300])
def test_packed_products_are_f_linear_within_float32_rounding(bias, rows):
    model = layers(bias)
    x = torch.randn(rows, 48)
    with torch.no_grad():
        expected = model(x)
        assert pack_linears(model) == 2
        assert all(type(m) is PackedLinear and isinstance(m, nn.Linear) for m in model)
        got = model(x)
    if rows > PACKED_MAX_ROWS:  # F.linear itself: the same bits
        assert torch.equal(got, expected)
    else:
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    x3 = x[None].expand(2, rows, 48)  # a batch dimension: rows are counted over all of it
    with torch.no_grad():
        assert torch.allclose(model(x3), expected[None].expand(2, rows, 24), atol=1e-5, rtol=1e-5)


def test_gradients_go_through_f_linear():
    model = layers()
    pack_linears(model)
    x = torch.randn(2, 48, requires_grad=True)
    model(x).sum().backward()  # the packed product has no backward: it must not be used here
    assert x.grad is not None and model[0].weight.grad is not None
    reference = layers()
    x2 = x.detach().clone().requires_grad_(True)
    reference(x2).sum().backward()
    assert torch.allclose(x.grad, x2.grad) and torch.equal(model[0].weight.grad, reference[0].weight.grad)


def test_a_changed_weight_is_packed_again():
    model = layers()
    pack_linears(model)
    x = torch.randn(2, 48)
    with torch.no_grad():
        before = model(x)
        model[1].weight.mul_(-2.0)  # in place: the version moves
        after = model(x)
        model[0].weight = nn.Parameter(torch.zeros(40, 48))  # replaced: another tensor
        zeroed = model(x)
    assert torch.allclose(after, -2.0 * before + 3.0 * model[1].bias, atol=1e-5)
    assert torch.allclose(zeroed, F.linear(F.linear(x, model[0].weight, model[0].bias), model[1].weight,
                                           model[1].bias), atol=1e-5)


def test_packing_changes_neither_parameters_nor_state_dict():
    model = tiny_model(VOCAB, seed=0)
    keys, params = list(model.state_dict()), sum(p.numel() for p in model.parameters())
    count = pack_linears(model)
    assert count == packed_count(model) == sum(isinstance(m, nn.Linear) for m in model.modules()) > 0
    assert list(model.state_dict()) == keys and sum(p.numel() for p in model.parameters()) == params
    assert unpack_linears(model) == count and packed_count(model) == 0
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    assert all(m.fused is None for m in model.modules() if hasattr(m, "FUSABLE"))


def packed_product(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The layer's product on its own packed copy, made here (a fused member never keeps one)."""
    packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), 2)
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def test_fused_projections_are_the_separate_products_bit_for_bit():
    model = tiny_model(VOCAB, seed=0)
    pack_linears(model)
    attention, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert attention.fused is not None and mlp.fused is not None
    x = torch.randn(1, 3, attention.q_proj.in_features)
    qkv = (attention.q_proj, attention.k_proj, attention.v_proj)
    with torch.no_grad():
        fused = attention.fused(x)
        assert torch.equal(fused, torch.cat([packed_product(m, x) for m in qkv], -1))
        assert torch.equal(mlp.fused(x), torch.cat([packed_product(m, x) for m in (mlp.gate_proj, mlp.up_proj)], -1))
        # called alone (the fused product declined), a member uses F.linear and packs no copy of its own
        assert torch.equal(attention.k_proj(x), F.linear(x, attention.k_proj.weight))
        assert all(m._packing is None for m in qkv)
        attention.k_proj.weight.add_(1.0)  # one of the three changed: the fused product follows
        start = attention.q_proj.out_features
        assert torch.equal(attention.fused(x)[..., start:start + attention.k_proj.out_features],
                           packed_product(attention.k_proj, x))
    x.requires_grad_(True)
    assert attention.fused(x) is None  # with gradients the layers are called one by one


@pytest.mark.parametrize("order", ["left_to_right", "random"])
def test_a_packed_model_decodes_the_plain_models_tokens(order):
    plain, packed = tiny_model(VOCAB, seed=0), tiny_model(VOCAB, seed=0)
    assert pack_linears(packed) > 0
    plan = two_span_plan(order, 2)
    for decode in (lambda m: decode_plan(m, plan), lambda m: decode_plan(m, plan, cache=False),
                   lambda m: decode_dynamic(m, plan, k=2)):
        a, b = collect(decode(plain)), collect(decode(packed))
        assert a.final_ids == b.final_ids
        for sa, sb in zip(a.steps, b.steps, strict=True):
            assert max(abs(x - y) for x, y in zip(sa.token_logprobs, sb.token_logprobs, strict=True)) < 1e-5


def test_load_model_packs_a_float32_cpu_model_unless_told_not_to(monkeypatch):
    monkeypatch.delenv(packed_linear.ENV, raising=False)
    assert packed_count(load_model("tiny", device="cpu").model) > 0
    monkeypatch.setenv(packed_linear.ENV, "0")
    assert packed_count(load_model("tiny", device="cpu").model) == 0
    assert packed_count(load_model("tiny", device="cpu", dtype="bfloat16").model) == 0
    monkeypatch.setenv(packed_linear.ENV, "sometimes")
    monkeypatch.setattr("model.loading._load_tiny", lambda: pytest.fail("the model loaded before the check"))
    with pytest.raises(ValueError, match="A3_PACKED_LINEAR='sometimes': use 1 .* or 0"):
        load_model("tiny", device="cpu")


def test_the_switch_reads_the_usual_spellings():
    assert packed_linear.enabled({}) and packed_linear.enabled({"A3_PACKED_LINEAR": " On "})
    assert not any(packed_linear.enabled({"A3_PACKED_LINEAR": v}) for v in ("0", "false", "no", "OFF"))


def test_a_copy_packs_afresh_and_a_quantized_copy_never_uses_the_float_products():
    model = tiny_model(VOCAB, seed=0)
    pack_linears(model)
    ids = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids).logits
        twin = copy.deepcopy(model)
        assert torch.equal(twin(ids).logits, expected)
        quantized = quantize_model(copy.deepcopy(model))
        attention = quantized.model.layers[0].self_attn
        assert isinstance(attention.q_proj, Int8Linear)
        assert attention.fused(torch.zeros(1, 2, attention.q_proj.in_features)) is None
        assert not torch.equal(quantized(ids).logits, expected)  # int8 ran, not the packed float32 weights


def test_a_fused_product_follows_its_biases():
    model = tiny_model(VOCAB, seed=0, attention_bias=True)
    pack_linears(model)
    attention = model.model.layers[0].self_attn
    x = torch.randn(1, 2, attention.q_proj.in_features)
    with torch.no_grad():
        attention.fused(x)
        attention.k_proj.bias.add_(5.0)  # in place
        assert torch.allclose(attention.fused(x), torch.cat([F.linear(x, m.weight, m.bias) for m in (
            attention.q_proj, attention.k_proj, attention.v_proj)], -1), atol=1e-5)
        attention.v_proj.bias = nn.Parameter(torch.ones_like(attention.v_proj.bias))  # replaced
        assert torch.allclose(attention.fused(x)[..., -attention.v_proj.out_features:],
                              F.linear(x, attention.v_proj.weight, attention.v_proj.bias), atol=1e-5)


def test_a_cast_and_back_packs_afresh_and_writes_through_data_need_repack():
    model = layers()
    pack_linears(model)
    x = torch.randn(2, 48)
    with torch.no_grad():
        model(x)
        model.to(torch.bfloat16)
        assert all(m._packing is None for m in model)  # the old copies went with the cast
        assert model(x.bfloat16()).dtype == torch.bfloat16  # F.linear in bf16
        model.to(torch.float32)
        model[0].weight.data.mul_(-1.0)  # unseen by the version counter
        repack(model)
        expected = F.linear(F.linear(x, model[0].weight, model[0].bias), model[1].weight, model[1].bias)
        assert torch.allclose(model(x), expected, atol=1e-5)

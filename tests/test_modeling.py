import math

import pytest
import torch
import torch.nn.functional as F
from conftest import VOCAB, random_groups
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

from model.loading import tiny_model
from model.masks import two_stream_masks
from model.modeling import A3Cache, A3Config, A3ForAnyOrderLM


def test_content_stream_under_ar_grouping_equals_the_base_llama(tiny_llama):
    llama, a3 = tiny_llama
    ids = torch.randint(0, VOCAB, (3, 29), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = llama(ids).logits
        content = a3(ids, return_content_logits=True).content_logits
    assert (content - reference).abs().max() < 1e-4
    # and therefore the same greedy continuation
    prompt = ids[:1, :5]
    greedy_llama = llama.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    tokens = prompt[0].tolist()
    for _ in range(12):
        with torch.no_grad():
            logits = a3(torch.tensor([tokens]), return_content_logits=True).content_logits
        tokens.append(int(logits[0, -1].argmax()))
    assert tokens == greedy_llama[0].tolist()


@pytest.mark.slow
def test_content_stream_equals_the_real_smollm2_base(base_llama, base_a3):
    llama, tokenizer = base_llama
    ids = tokenizer("Once upon a time, a shy boy named Leo found a lost key in the park.",
                    return_tensors="pt").input_ids
    with torch.no_grad():
        reference = llama(ids).logits
        content = base_a3(ids, return_content_logits=True).content_logits
    assert (content - reference).abs().max() < 1e-4
    assert torch.equal(content.argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize("layout", ["prenorm", "official"])
def test_no_leak_changing_later_groups_never_changes_earlier_query_logits(layout):
    model = tiny_model(VOCAB, seed=1, block_layout=layout)
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        length = 24
        groups = random_groups(length, g, n_groups=int(torch.randint(2, 9, (1,), generator=g)))
        ids = torch.randint(0, VOCAB, (1, length), generator=g)
        for k in torch.unique(groups).tolist():
            changed = ids.clone()
            later = groups >= k
            changed[0, later] = torch.randint(0, VOCAB, (int(later.sum()),), generator=g)
            with torch.no_grad():
                before = model(ids, group_ids=groups).logits[0]
                after = model(changed, group_ids=groups).logits[0]
            assert torch.equal(before[groups <= k], after[groups <= k]), (seed, k)


def test_changing_an_earlier_group_does_change_later_query_logits(tiny):
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    changed = ids.clone()
    changed[0, 0] = 50
    with torch.no_grad():
        a, b = tiny(ids, group_ids=groups).logits, tiny(changed, group_ids=groups).logits
    assert not torch.allclose(a[0, 2:], b[0, 2:])
    assert torch.equal(a[0, :2], b[0, :2])  # the first group sees nothing at all


def _rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rope(x, pos, theta, dim):
    inv = 1.0 / theta ** (torch.arange(0, dim, 2).float() / dim)
    ang = pos[:, None].float() * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    half = dim // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def _hand_forward_official(model: A3ForAnyOrderLM, ids: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """The official block written out by hand, one stream at a time (research/paper.md §6.2):
    c' = c + Attn(N1 c); c'' = N2(c'); out = c'' + MLP(c''), the same for q with K/V from N1(c)."""
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    L, H, Hkv, D = ids.numel(), cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    theta, eps = cfg.rope_parameters["rope_theta"], cfg.rms_norm_eps
    pos = torch.arange(L)
    content_mask, query_mask = two_stream_masks(groups)
    c = sd["model.embed_tokens.weight"][ids]
    q = sd["model.query_embed"].view(1, -1).expand(L, -1)

    def attention(x, kv_source, mask, p):
        Q = (x @ sd[p + "q_proj.weight"].T).view(L, H, D).transpose(0, 1)
        K = (kv_source @ sd[p + "k_proj.weight"].T).view(L, Hkv, D).transpose(0, 1)
        V = (kv_source @ sd[p + "v_proj.weight"].T).view(L, Hkv, D).transpose(0, 1)
        Q, K = _rope(Q, pos, theta, D), _rope(K, pos, theta, D)
        K, V = K.repeat_interleave(H // Hkv, 0), V.repeat_interleave(H // Hkv, 0)
        scores = (Q @ K.transpose(1, 2)) / math.sqrt(D)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)  # rows seeing nothing -> 0
        out = (weights @ V).transpose(0, 1).reshape(L, H * D)
        return out @ sd[p + "o_proj.weight"].T

    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w = {name: sd[p + name] for name in ("input_layernorm.weight", "post_attention_layernorm.weight",
                                             "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")}

        def n1(x, w=w):
            return _rms(x, w["input_layernorm.weight"], eps)

        def n2(x, w=w):
            return _rms(x, w["post_attention_layernorm.weight"], eps)

        def mlp(x, w=w):
            gate, up = x @ w["mlp.gate_proj.weight"].T, x @ w["mlp.up_proj.weight"].T
            return (F.silu(gate) * up) @ w["mlp.down_proj.weight"].T

        kv = n1(c)
        c_new = n2(c + attention(n1(c), kv, content_mask, p + "self_attn."))
        q_new = n2(q + attention(n1(q), kv, query_mask, p + "self_attn."))
        c, q = c_new + mlp(c_new), q_new + mlp(q_new)
    q = _rms(q, sd["model.norm.weight"], eps)
    return q @ sd["model.embed_tokens.weight"].T


def test_official_layout_reproduces_a_hand_computed_forward():
    model = tiny_model(VOCAB, seed=2, block_layout="official")
    with torch.no_grad():  # make the norms non-trivial so the layout matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    groups = torch.tensor([1, 1, 1, 3, 2, 2, 0, 4])
    ids = torch.tensor([3, 14, 15, 92, 65, 35, 89, 79])
    with torch.no_grad():
        logits = model(ids[None], group_ids=groups).logits[0].double()
    expected = _hand_forward_official(model, ids, groups)
    assert (logits - expected).abs().max() < 1e-4
    prenorm = tiny_model(VOCAB, seed=2)
    prenorm.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (prenorm(ids[None], group_ids=groups).logits[0].double() - expected).abs().max() > 1e-3


def test_rows_that_see_nothing_get_zero_attention_and_no_nan(tiny):
    ids = torch.randint(0, VOCAB, (2, 10))
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 3, 3])
    logits = tiny(ids, group_ids=groups, labels=ids).logits
    assert torch.isfinite(logits).all()
    # first-group query rows depend on nothing but the query vector: identical, token-independent
    assert torch.allclose(logits[0, 0], logits[1, 2])
    model = tiny_model(VOCAB, seed=0)
    model.train()
    out = model(ids, group_ids=groups, labels=ids)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_loss_scores_position_i_against_token_i_and_skips_unreachable_rows(tiny):
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(4))
    groups = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4, 5])
    labels = ids.clone()
    labels[1, 8] = -100
    out = tiny(ids, group_ids=groups, labels=labels)
    keep = (groups > 0).expand(2, 9) & (labels != -100)
    expected = F.cross_entropy(out.logits[keep], ids[keep])
    assert torch.allclose(out.loss, expected) and int(out.n_scored) == int(keep.sum())


def test_padding_does_not_change_real_positions(tiny):
    ids = torch.randint(0, VOCAB, (1, 8))
    groups = torch.tensor([0, 3, 1, 2, 5, 4, 6, 7])
    padded = torch.cat([ids, torch.randint(0, VOCAB, (1, 4))], 1)
    padded_groups = torch.cat([groups, torch.tensor([1, 2, 3, 9])])
    mask = torch.tensor([[1] * 8 + [0] * 4])
    with torch.no_grad():
        plain = tiny(ids, group_ids=groups).logits
        with_pad = tiny(padded, group_ids=padded_groups, attention_mask=mask).logits
    assert (plain - with_pad[:, :8]).abs().max() < 1e-5


def test_cached_rows_equal_the_full_forward(tiny):
    """Feeding content group by group through A3Cache gives the same query logits as one forward."""
    g = torch.Generator().manual_seed(5)
    groups = random_groups(16, g, n_groups=5)
    ids = torch.randint(0, VOCAB, (1, 16), generator=g)
    with torch.no_grad():
        full = tiny(ids, group_ids=groups).logits[0]
        cache = A3Cache(tiny.config, 1, 16)
        for k in torch.unique(groups).tolist():
            rows = (groups == k).nonzero(as_tuple=True)[0]
            out = tiny.model(ids[:, rows], rows[None], groups[rows][None], rows[None], groups[rows][None], cache=cache)
            assert (tiny.lm_head(out.query[0]) - full[rows]).abs().max() < 1e-5


def test_save_and_load_round_trip_with_safetensors_and_auto_classes(tmp_path):
    import model.modeling  # noqa: F401  (importing it registers A3 with the Auto classes)

    original = tiny_model(VOCAB, seed=3, block_layout="official")
    original.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    assert isinstance(AutoConfig.from_pretrained(tmp_path), A3Config)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, A3ForAnyOrderLM) and loaded.config.block_layout == "official"
    ids = torch.randint(0, VOCAB, (1, 12))
    groups = torch.tensor([2, 0, 1, 1, 3, 3, 0, 2, 4, 4, 5, 1])
    with torch.no_grad():
        assert torch.equal(original(ids, group_ids=groups).logits, loaded(ids, group_ids=groups).logits)


def test_query_vector_starts_at_token_embedding_scale_even_when_missing_from_a_checkpoint(tmp_path):
    model = tiny_model(VOCAB, seed=0)
    std = float(model.model.query_embed.detach().std())
    assert 0.005 < std < 0.05  # initializer_range 0.02, not randn's 1.0
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["model.query_embed"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = A3ForAnyOrderLM.from_pretrained(tmp_path)
    q = loaded.model.query_embed
    assert q.device.type == "cpu" and torch.isfinite(q).all() and 0.005 < float(q.detach().std()) < 0.05


def test_config_and_input_errors_name_the_problem():
    with pytest.raises(Exception, match="block_layout"):
        A3Config(hidden_size=32, num_attention_heads=4, block_layout="postnorm")
    model = tiny_model(VOCAB, max_position_embeddings=8)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_forward_refuses_unknown_keyword_arguments(tiny):
    ids = torch.arange(6)[None]
    with pytest.raises(TypeError, match=r"'group_id' \(did you mean 'group_ids'\?\)"):
        tiny(ids, group_id=torch.zeros(6, dtype=torch.long))
    with pytest.raises(TypeError, match="unknown keyword"):
        tiny(ids, attn_mask=torch.ones(1, 6))
    with pytest.raises(ValueError, match="does not return attentions"):
        tiny(ids, output_attentions=True)
    # what transformers callers pass routinely still works, and changes nothing
    plain = tiny(ids, group_ids=torch.zeros(6, dtype=torch.long)).logits
    same = tiny(ids, group_ids=torch.zeros(6, dtype=torch.long), return_dict=True, use_cache=False,
                output_attentions=False, output_hidden_states=None).logits
    assert torch.equal(plain, same)


@pytest.mark.parametrize("shape", [(1, 1, 64), (1, 2, 576), (3, 7, 96), (2, 129, 576)])
def test_the_fused_rms_norm_gives_llamas_bits_in_float32(shape):
    """A3RMSNorm calls F.rms_norm in float32 (one op instead of six, for decoding steps of 1-2 rows); it must
    compute exactly LLaMA's spelled-out norm, bit for bit, so the content stream stays the base model."""
    from model.modeling import A3RMSNorm

    g = torch.Generator().manual_seed(sum(shape))
    norm = A3RMSNorm(shape[-1], eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(shape[-1], generator=g) + 0.5)
    x = torch.randn(*shape, generator=g) * torch.logspace(-3, 2, shape[1])[None, :, None]
    with torch.no_grad():
        by_hand = norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
        assert torch.equal(norm(x), by_hand)
        half = norm.to(torch.bfloat16)(x.bfloat16())  # other dtypes keep LLaMA's own steps
        assert half.dtype == torch.bfloat16 and (half.float() - by_hand).abs().max() < 0.05 * by_hand.abs().max()


def test_attend_prepares_a_mask_once_per_forward_and_again_when_it_changes():
    """Every layer of a forward attends with the same mask, which attend prepares once (model.network's
    _PREPARED_MASK); another mask, or the same one changed in place, is prepared again."""
    from model import network as modeling

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 3, 8, generator=g), torch.randn(1, 2, 5, 8, generator=g),
               torch.randn(1, 2, 5, 8, generator=g))

    def by_hand(visible):
        scores = (q @ k.repeat_interleave(2, 1).transpose(-1, -2)) / math.sqrt(8)
        weights = scores.masked_fill(~visible[:, None], float("-inf")).softmax(-1).nan_to_num(0.0)
        return weights @ v.repeat_interleave(2, 1)

    visible = torch.tensor([[[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]], dtype=torch.bool)
    with torch.no_grad():
        first = modeling.attend(q, k, v, visible)
        assert modeling._PREPARED_MASK[0] is visible
        assert torch.allclose(first, by_hand(visible), atol=1e-6) and first[0, :, 1].abs().max() == 0
        assert torch.equal(modeling.attend(q, k, v, visible), first)  # the prepared mask, reused
        visible[0, 1, 0] = True  # in place: the row that saw nothing now sees one key
        changed = modeling.attend(q, k, v, visible)
        assert torch.allclose(changed, by_hand(visible), atol=1e-6) and changed[0, :, 1].abs().max() > 0
        other = visible.clone()
        other[0, 0, 1] = False
        assert torch.allclose(modeling.attend(q, k, v, other), by_hand(other), atol=1e-6)

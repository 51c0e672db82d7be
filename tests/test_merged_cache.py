"""The default model's merged float32 weights on disk (model.merged_cache): the next start reads them without
peft or a merge and gets the very model a merge makes (tensors, buffers, flags, LoadedModel fields); a changed
adapter, another config or version makes another file; a torn, foreign or stale file is merged afresh and
replaced; a read-only directory and A3_MERGED_CACHE=0 only cost the merge; a write never leaves half a file
under the real name, and a new file removes the old ones. A tiny random model stands in for SmolLM2."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from adapter_fixture import write_adapter
from safetensors.torch import save_file

import model.base as base_module
import model.loading as loading
from model import merged_cache
from model.loading import apply_adapter, load_model, tiny_config, tiny_model
from model.network import A3Net

pytestmark = pytest.mark.usefixtures("one_thread")

GROUPS = torch.tensor([0, 1, 1, 2, 3, 3, 3, 4, 5])


@pytest.fixture
def default(tmp_path, tokenizer, monkeypatch):
    """load_model("default") on a tiny base with an adapter of its own, kept in a temporary 'converted base'
    directory (its config.json as the real one: LLaMA hyperparameters)."""
    vocab = len(tokenizer)

    def fake_base(dtype=torch.float32):  # stands in for SmolLM2
        return tiny_model(vocab, seed=3).to(dtype)

    adapter, cache = tmp_path / "adapter", tmp_path / "converted-base"
    cache.mkdir()
    llama = {k: v for k, v in tiny_config(vocab).to_dict().items() if k not in ("block_layout", "a3_base")}
    (cache / "config.json").write_text(json.dumps(llama))
    write_adapter(adapter, fake_base(), seed=0)
    monkeypatch.setattr(loading, "base_a3", fake_base)
    monkeypatch.setattr(loading, "DEFAULT_ADAPTER", adapter)
    monkeypatch.setattr(base_module, "base_weights", lambda: SimpleNamespace(checkpoint=cache, sha256="b" * 64))
    monkeypatch.delenv(merged_cache.ENV, raising=False)
    # bit for bit against a fresh merge: both unpacked (model.packed_linear agrees with F.linear to rounding)
    monkeypatch.setenv("A3_PACKED_LINEAR", "0")
    merges = []

    def counted(model, adapter_dir):
        merges.append(adapter_dir)
        return apply_adapter(model, adapter_dir)

    monkeypatch.setattr(loading, "apply_adapter", counted)
    return SimpleNamespace(base=fake_base, adapter=adapter, cache=cache, merges=merges,
                           fresh=lambda: apply_adapter(fake_base(), adapter),
                           load=lambda: load_model("default", device="cpu"))


def kept(cache):
    return sorted(p.name for p in cache.glob("a3-merged-f32-*.safetensors"))


def logits(model):
    ids = torch.randint(0, 1000, (1, 9), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        return model(ids, group_ids=GROUPS).logits


def assert_same_model(got, want):
    """Bit for bit: parameters, buffers (rotary tables), dtypes, frozen-ness, tying, config, eval mode. The model
    the default loads is a network.A3Net, whether read from the file or merged (a merge is a transformers model)."""
    assert type(got) is A3Net
    for kind in ("named_parameters", "named_buffers"):
        a, b = dict(getattr(got, kind)()), dict(getattr(want, kind)())
        assert a.keys() == b.keys(), kind
        for name in a:
            assert a[name].dtype == b[name].dtype == torch.float32 and torch.equal(a[name], b[name]), name
            assert a[name].requires_grad == b[name].requires_grad, name
    assert got.state_dict().keys() == want.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), want.state_dict().values(), strict=True))
    tied = [m.lm_head.weight is m.model.embed_tokens.weight for m in (got, want)]
    assert tied[0] == tied[1]
    assert merged_cache.config_json(got.config) == merged_cache.config_json(want.config)
    assert not got.training and not any(m.training for m in got.modules())
    assert torch.equal(logits(got), logits(want))


def fields(loaded):
    skip = {"model", "tokenizer", "base_loader", "_base"}
    own = {f.name: getattr(loaded, f.name) for f in dataclasses.fields(loaded) if f.name not in skip}
    return {**own, **{p: getattr(loaded, p) for p in ("dtype", "weight_dtype", "quantization", "max_length",
                                                      "has_base", "given_grouping", "device")}}


def test_the_next_start_reads_the_merged_weights_without_peft_or_a_merge(default, monkeypatch):
    first, fresh = default.load(), default.fresh()
    assert default.merges == [default.adapter] and len(kept(default.cache)) == 1
    assert_same_model(first.model, fresh)

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    again = default.load()
    assert default.merges == [default.adapter]  # no second merge
    assert_same_model(again.model, fresh)
    assert fields(again) == fields(first)
    base = again.base()  # the AR base is still the unadapted base, loaded on first use
    assert base is not again.model
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), default.base().state_dict().values(),
                                                 strict=True))
    assert again.given_grouping == "causal" and again.trained


def test_the_cached_model_equals_a_fresh_merge_loaded_with_the_cache_off(default, monkeypatch):
    default.load()
    cached = default.load()
    monkeypatch.setenv(merged_cache.ENV, "0")
    merged = default.load()
    assert len(default.merges) == 2  # the first start, and the one with the cache off
    assert_same_model(cached.model, merged.model)
    assert fields(cached) == fields(merged)


def test_a3_merged_cache_0_neither_reads_nor_writes(default, monkeypatch):
    monkeypatch.setenv(merged_cache.ENV, "0")
    weights = base_module.base_weights
    monkeypatch.setattr(base_module, "base_weights", lambda: pytest.fail("hashed the sources of a cache that is off"))
    default.load()
    assert kept(default.cache) == [] and len(default.merges) == 1
    monkeypatch.setattr(base_module, "base_weights", weights)
    monkeypatch.delenv(merged_cache.ENV)
    default.load()  # writes
    (name,) = kept(default.cache)
    monkeypatch.setenv(merged_cache.ENV, "0")
    default.load()  # a usable file, not read
    assert len(default.merges) == 3 and kept(default.cache) == [name]
    model = merged_cache.load_merged(default.cache / name, default.base().config)  # the module alone, too
    assert merged_cache.cached_model(default.cache / name, model.config, lambda: "merged") == "merged"
    monkeypatch.delenv(merged_cache.ENV)
    assert isinstance(merged_cache.cached_model(default.cache / name, model.config, lambda: "merged"), type(model))
    assert [merged_cache.enabled({merged_cache.ENV: v}) for v in ("0", " off ", "False", "no", "", "1", "yes")] == \
        [False, False, False, False, True, True, True]
    assert merged_cache.enabled({})


def test_a_changed_adapter_makes_another_file_and_removes_the_old_one(default, monkeypatch):
    first = default.load()
    (old,) = kept(default.cache)
    int8 = default.cache / "a3-int8-0123456789abcdef.safetensors"  # the int8 cache beside it is not ours
    int8.write_bytes(b"int8")
    dead = default.cache / f".{old}.dead.tmp"  # left by a start killed while writing, long ago
    dead.write_bytes(b"half")
    os.utime(dead, (time.time() - 2 * merged_cache.STALE_TMP_S,) * 2)
    writing = default.cache / f".{old}.writing.tmp"  # another start writing now
    writing.write_bytes(b"half")

    write_adapter(default.adapter, default.base(), seed=1)  # the adapter changes: other weights, another file
    changed = default.load()
    (new,) = kept(default.cache)
    assert new != old and len(default.merges) == 2
    assert int8.is_file() and writing.is_file() and not dead.exists()
    assert not torch.equal(logits(changed.model), logits(first.model))
    assert_same_model(changed.model, default.fresh())
    assert_same_model(default.load().model, changed.model) and len(default.merges) == 2


def test_the_name_changes_with_every_source_the_config_and_the_versions(tmp_path, monkeypatch):
    config = tiny_config(100)
    name = merged_cache.cache_file(tmp_path, config, "base", "adapter")
    assert name.parent == tmp_path and name.name.startswith("a3-merged-f32-") and name.suffix == ".safetensors"
    assert len(name.stem) == len("a3-merged-f32-") + 16
    assert merged_cache.cache_file(tmp_path, tiny_config(100), "base", "adapter") == name  # deterministic
    others = {merged_cache.cache_file(tmp_path, config, "base2", "adapter"),
              merged_cache.cache_file(tmp_path, config, "base", "adapter2"),
              merged_cache.cache_file(tmp_path, tiny_config(100, num_hidden_layers=3), "base", "adapter")}
    monkeypatch.setattr(merged_cache, "VERSION", merged_cache.VERSION + 1)
    others.add(merged_cache.cache_file(tmp_path, config, "base", "adapter"))
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    others.add(merged_cache.cache_file(tmp_path, config, "base", "adapter"))
    monkeypatch.undo()
    monkeypatch.setattr(merged_cache, "_peft_version", lambda: "0.0.0")
    others.add(merged_cache.cache_file(tmp_path, config, "base", "adapter"))
    assert len(others) == 6 and name not in others


def _torn(path, model):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path, model):
    path.write_bytes(os.urandom(4096))


def _pickle(path, model):
    torch.save(model.state_dict(), path)


def _foreign(path, model):  # a valid safetensors file of another kind
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}, str(path),
              metadata={"format": "pt"})


def _old_version(path, model):
    import safetensors

    with safetensors.safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(state, str(path), metadata={**meta, "version": "0"})


def _other_config(path, model):  # the right name, but made for another config (another base's shapes)
    merged_cache.save_merged(tiny_model(1000, seed=0, num_hidden_layers=1), path)


def _missing_tensor(path, model):
    import safetensors

    with safetensors.safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys() if k != "model.query_embed"}  # noqa: SIM118
    save_file(state, str(path), metadata=meta)


def _bfloat16(path, model):
    import safetensors

    with safetensors.safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k).bfloat16() for k in f.keys()}  # noqa: SIM118
    save_file(state, str(path), metadata=meta)


@pytest.mark.parametrize("spoil", [_torn, _garbage, _pickle, _foreign, _old_version, _other_config, _missing_tensor,
                                   _bfloat16])
def test_an_unusable_file_is_merged_afresh_with_a_warning_and_replaced(default, spoil, caplog):
    first = default.load()
    (name,) = kept(default.cache)
    path = default.cache / name
    good = path.read_bytes()
    spoil(path, first.model)
    assert path.read_bytes() != good
    with caplog.at_level(logging.WARNING, logger="model.merged_cache"):
        again = default.load()
    assert len(default.merges) == 2
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and "unusable" in caplog.records[0].getMessage()
    assert_same_model(again.model, first.model)
    assert kept(default.cache) == [name]  # replaced by the merge
    assert_same_model(merged_cache.load_merged(path, first.model.config), first.model)
    caplog.clear()
    default.load()
    assert len(default.merges) == 2 and not caplog.records


def test_a_read_only_directory_costs_a_merge_per_start_and_nothing_else(default, monkeypatch, caplog):
    default.cache.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: refuse as a read-only directory would
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(default.cache))

        monkeypatch.setattr(merged_cache.tempfile, "mkstemp", refuse)
    try:
        with caplog.at_level(logging.WARNING, logger="model.merged_cache"):
            first = default.load()
            again = default.load()
    finally:
        default.cache.chmod(0o755)
    assert len(default.merges) == 2 and kept(default.cache) == [] and list(default.cache.glob(".*")) == []
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("could not keep the merged weights" in m for m in messages)
    assert_same_model(first.model, default.fresh())
    assert_same_model(again.model, first.model)


def test_a_write_that_dies_halfway_leaves_nothing_under_the_real_name(default, monkeypatch, caplog):
    import safetensors.torch

    def dies(state, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", dies)
    with caplog.at_level(logging.WARNING, logger="model.merged_cache"):
        first = default.load()
    assert kept(default.cache) == [] and list(default.cache.glob(".*")) == []  # the temporary file is gone too
    assert "No space left" in caplog.records[0].getMessage()
    monkeypatch.undo()
    assert_same_model(first.model, default.fresh())


def test_the_merged_file_is_safetensors_with_its_config_and_a_tied_head_once(default):
    model = default.load().model
    (name,) = kept(default.cache)
    path = default.cache / name
    head = path.read_bytes()[:16]
    assert head[8:9] == b"{" and not head.startswith((b"PK", b"\x80"))  # safetensors, not zip or pickle
    import safetensors

    with safetensors.safe_open(str(path), framework="pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert meta["format"] == "a3-merged-f32" and meta["version"] == str(merged_cache.VERSION)
    assert meta["tied_lm_head"] == "1" and "lm_head.weight" not in keys and "model.query_embed" in keys
    assert json.loads(meta["config"]) == model.config.to_dict()
    assert keys == set(model.state_dict()) - {"lm_head.weight"}


def test_an_untied_head_is_kept_and_read_back(tmp_path):
    model = tiny_model(1000, seed=1, tie_word_embeddings=False)
    model.requires_grad_(False)
    path = merged_cache.save_merged(model, tmp_path / "a3-merged-f32-x.safetensors")
    back = merged_cache.load_merged(path, model.config)
    assert back.lm_head.weight is not back.model.embed_tokens.weight
    assert_same_model(back, model)
    with pytest.raises(ValueError, match="another config"):
        merged_cache.load_merged(path, tiny_config(1000))  # tied: another config

"""The default dtype: bf16 on a GPU, float32 on a CPU unless asked (bf16 or int8); bf16 decoding on a CPU still
caches exactly on the tiny model."""

from __future__ import annotations

import pytest
import torch

from model.decoding import collect, decode_plan
from model.precision import auto_dtype, cpu_native_bf16

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def no_override(monkeypatch):
    monkeypatch.delenv("A3_CPU_DTYPE", raising=False)


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_native_bf16(frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert cpu_native_bf16(frozenset({"avx2", "amx_bf16", "amx_tile"}))
    assert not cpu_native_bf16(frozenset({"avx2", "f16c", "avx512f"}))
    assert not cpu_native_bf16(frozenset())


def test_auto_dtype_is_bf16_on_a_gpu_and_float32_on_any_cpu(no_override, monkeypatch):
    from model import precision

    assert auto_dtype(CUDA) == torch.bfloat16
    assert auto_dtype(CPU) == torch.float32
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    assert auto_dtype(CPU) == torch.float32  # native bf16 is faster but changes greedy fills


def test_the_environment_opts_in_to_bf16_and_a_typo_says_what_to_use(monkeypatch):
    monkeypatch.setenv("A3_CPU_DTYPE", "bf16")
    assert auto_dtype(CPU) == torch.bfloat16
    monkeypatch.setenv("A3_CPU_DTYPE", "auto")
    assert auto_dtype(CPU) == torch.float32
    monkeypatch.setenv("A3_CPU_DTYPE", "float32")
    assert auto_dtype(CUDA) == torch.bfloat16  # a GPU is not a CPU
    monkeypatch.setenv("A3_CPU_DTYPE", "int8")
    assert auto_dtype(CPU) == torch.int8  # model.quant's scheme, opt-in
    assert auto_dtype(CUDA) == torch.bfloat16
    monkeypatch.setenv("A3_CPU_DTYPE", "half")
    with pytest.raises(ValueError, match="float32, bfloat16, int8 or auto"):
        auto_dtype(CPU)


def test_dtype_names_and_the_int8_note_say_what_runs():
    from model.precision import INT8_NOTE, as_dtype, precision_note

    assert as_dtype("int8") == as_dtype(torch.int8) == torch.int8
    assert as_dtype("bf16") == torch.bfloat16 and as_dtype(None) is None and as_dtype(torch.float32) == torch.float32
    with pytest.raises(ValueError, match="float32, bfloat16, float16 or int8"):
        as_dtype("int4")
    with pytest.raises(ValueError, match="float32, bfloat16, float16 or int8"):
        as_dtype(torch.int32)
    assert precision_note(CPU, torch.int8) == INT8_NOTE
    assert INT8_NOTE.startswith("int8 (per-channel weights, per-token activations)")
    assert "greedy fills differ from float32" in INT8_NOTE  # until bench.int8_gate passes
    assert precision_note(CPU, torch.float32) == "float32"


@pytest.mark.parametrize(("choice", "dtype", "note"), [
    ("bfloat16", torch.bfloat16, "bfloat16: greedy fills may differ from float32"),
    ("", torch.float32, "float32"),
])
def test_load_model_picks_the_dtype_and_the_page_says_so(monkeypatch, choice, dtype, note):
    from app import device_note
    from model.loading import load_model

    monkeypatch.setenv("A3_CPU_DTYPE", choice)
    loaded = load_model("tiny", device="cpu")
    assert loaded.dtype == dtype and next(loaded.model.parameters()).dtype == dtype
    assert device_note(loaded).endswith(f"({note})")
    assert load_model("tiny", device="cpu", dtype=torch.float32).dtype == torch.float32  # asked for wins


def test_bf16_decoding_on_the_cpu_caches_exactly_on_the_tiny_model():
    """The cache holds what a recompute computes, in bf16 too: same tokens, log p within bf16 rounding (on
    the real model rounding can flip a near-tie: bench.precision measures it)."""
    from conftest import two_span_plan

    from model.loading import load_model

    model = load_model("tiny", device="cpu", dtype=torch.bfloat16).model  # its own copy: casts are lossy
    plan = two_span_plan(length=24)
    cached = collect(decode_plan(model, plan, cache=True))
    recomputed = collect(decode_plan(model, plan, cache=False))
    assert cached.final_ids == recomputed.final_ids
    diffs = [abs(a - b) for s, r in zip(cached.steps, recomputed.steps, strict=True)
             for a, b in zip(s.token_logprobs, r.token_logprobs, strict=True)]
    assert max(diffs) < 0.05

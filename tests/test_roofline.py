"""bench.roofline: the weight bytes a cached decode step reads, the bound they set, and the benchmarks'
JSON. No time is asserted: only that the numbers are counted right and reported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bench import roofline
from model.loading import load_model, tiny_model
from model.modeling import A3RMSNorm

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 1000


def by_hand(model) -> tuple[int, int]:
    """(matrix elements, vector elements) a cached step reads, counted module by module: every linear
    (weight; bias a vector), every RMS norm, the query vector, the LM head once (tied to the embedding,
    so the embedding matrix is not counted again) and one embedding row for the new token."""
    matrices = vectors = 0
    seen = set()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            if id(module.weight) not in seen:
                seen.add(id(module.weight))
                matrices += module.weight.numel()
            vectors += module.bias.numel() if module.bias is not None else 0
        elif isinstance(module, A3RMSNorm):
            vectors += module.weight.numel()
    vectors += model.model.query_embed.numel() + model.config.hidden_size  # query vector + one embedding row
    return matrices, vectors


def tiny_by_formula(model) -> int:
    """The same from the config alone: what a reader would write on paper."""
    c = model.config
    head = c.hidden_size // c.num_attention_heads
    attention = 2 * c.hidden_size * c.num_attention_heads * head + 2 * c.hidden_size * c.num_key_value_heads * head
    mlp = 3 * c.hidden_size * c.intermediate_size
    norms = 2 * c.hidden_size
    return (c.num_hidden_layers * (attention + mlp + norms) + c.hidden_size  # final norm
            + c.hidden_size + c.vocab_size * c.hidden_size + c.hidden_size)  # query vector, LM head, one row


@pytest.mark.parametrize("overrides", [{}, {"attention_bias": True, "mlp_bias": True}])
def test_the_weight_bytes_are_every_linear_norm_and_the_lm_head(overrides):
    model = tiny_model(VOCAB, **overrides)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied: read once, for the logits
    matrices, vectors = by_hand(model)
    counted = roofline.decode_step_weight_bytes(model)
    assert counted["float32"] == 4 * (matrices + vectors)
    rows = sum(m.out_features for m in model.modules() if isinstance(m, nn.Linear))  # the LM head once
    assert counted["int8"] == matrices + 4 * vectors + 4 * rows  # a byte a weight, a float32 scale a row
    if not overrides:
        assert matrices + vectors == tiny_by_formula(model)
    elements = roofline.decode_step_elements(model)
    assert elements["lm_head"] == VOCAB * model.config.hidden_size
    assert elements["embedding_rows"] == model.config.hidden_size
    assert sum(elements.values()) == matrices + vectors
    assert (elements["layers_bias"] > 0) == bool(overrides)


def test_bfloat16_halves_the_bytes_and_the_bound():
    model = tiny_model(VOCAB)
    counted = roofline.decode_step_weight_bytes(model)
    assert counted["bfloat16"] * 2 == counted["float32"]
    assert roofline.weight_bytes_for(model, torch.bfloat16) == counted["bfloat16"]
    assert roofline.weight_bytes_for(model, torch.float16) == counted["bfloat16"]
    assert roofline.weight_bytes_for(model, torch.float32) == counted["float32"]
    bound = roofline.step_bound_s(counted["float32"], 10)
    assert roofline.step_bound_s(counted["bfloat16"], 10) * 2 == pytest.approx(bound)


def test_an_int8_model_is_bound_by_its_weights_as_stored():
    """model.quant's weights (int8 matrices, a float32 scale per row, vectors in float32) are the bytes the
    "int8" projection counts; a model that keeps a matrix in float32 reads that matrix at four bytes."""
    from model.quant import quantize_model

    model = tiny_model(VOCAB)
    projected = roofline.decode_step_weight_bytes(model)
    assert roofline.weight_bytes_for(model, torch.int8) == projected["int8"]  # float model: the projection
    quantized = quantize_model(tiny_model(VOCAB))
    assert roofline.decode_step_elements(quantized) == roofline.decode_step_elements(model)
    assert roofline.stored_weight_bytes(quantized) == projected["int8"]
    assert roofline.weight_bytes_for(quantized, torch.int8) == projected["int8"]
    assert roofline.stored_weight_bytes(model) == projected["float32"]  # tied LM head counted once
    kept = quantize_model(tiny_model(VOCAB), keep=("lm_head",))
    head = model.lm_head.weight.numel()
    assert roofline.weight_bytes_for(kept, torch.int8) == projected["int8"] + 3 * head - 4 * VOCAB
    fields = roofline.roofline_fields(quantized, torch.int8, 0.01, {"gbs": 5.0, "what": "w"})
    assert fields["dtype"] == "int8" and fields["weight_bytes"] == projected["int8"]


def test_the_bound_is_bytes_over_bandwidth_and_the_multiple_step_over_bound():
    assert roofline.step_bound_s(2e9, 4.0) == pytest.approx(0.5)
    assert roofline.step_bound_s(540e6, 10.0) == pytest.approx(0.054)
    model = tiny_model(VOCAB)
    bandwidth = {"gbs": 5.0, "what": "read (a sum), 2 threads, 8 MB, best of 3"}
    fields = roofline.roofline_fields(model, torch.float32, 0.01, bandwidth)
    bytes_ = roofline.decode_step_weight_bytes(model)["float32"]
    assert fields["dtype"] == "float32" and fields["weight_bytes"] == bytes_
    assert fields["bound_s"] == pytest.approx(bytes_ / 5e9, abs=1e-5)
    assert fields["roofline_multiple"] == pytest.approx(0.01 / (bytes_ / 5e9), rel=1e-2)
    assert fields["roofline_bandwidth"] == bandwidth["what"]


def test_the_bandwidth_kernels_report_positive_rates_and_leave_the_threads_alone():
    threads = torch.get_num_threads()
    rates = roofline.measure_bandwidth(4, threads=1, repeats=1)
    assert set(rates) == set(roofline.KERNELS) and all(v > 0 for v in rates.values())
    assert torch.get_num_threads() == threads
    quick = roofline.read_bandwidth(4, repeats=1)
    assert quick["gbs"] > 0 and quick["threads"] == min(2, os.cpu_count() or 1)
    assert "read" in quick["what"] and "best of 1" in quick["what"]
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="kernels"):
        roofline.measure_bandwidth(4, kernels=("scale",))
    with pytest.raises(ValueError, match="positive"):
        roofline.measure_bandwidth(0)


def run_json(*args: str, timeout: int = 600) -> dict:
    """A benchmark's command line in a fresh interpreter; its last line parsed as JSON."""
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1])


ROOFLINE_KEYS = {"model", "cpu_count", "llc_mb", "array_mb", "repeats", "bandwidth_gbs", "weight_elements",
                 "embedding_rows_note", "weight_bytes", "kv_cache_bytes", "bound_bandwidth", "read_gbs",
                 "bound_s_by_precision", "dtype", "threads", "length", "open", "steps", "step_s", "bound_s",
                 "roofline_multiple"}


def test_bench_roofline_prints_one_json_object_with_the_documented_keys():
    out = run_json("bench.roofline", "--json", "--model", "tiny", "--mb", "4", "--repeats", "1")
    assert set(out) >= ROOFLINE_KEYS
    assert set(out["bandwidth_gbs"]) == {str(t) for t in range(1, (os.cpu_count() or 1) + 1)}
    assert all(set(rates) == {"copy", "triad", "read"} for rates in out["bandwidth_gbs"].values())
    assert set(out["weight_bytes"]) == {"float32", "bfloat16", "int8"}
    tiny = load_model("tiny", device="cpu").model
    assert out["weight_bytes"] == roofline.decode_step_weight_bytes(tiny)
    assert out["read_gbs"] == out["bandwidth_gbs"][str(min(2, os.cpu_count() or 1))]["read"]
    assert out["dtype"] == "float32" and out["open"] == 64 and out["steps"] == 64 and out["length"] == 128
    assert out["bound_s_by_precision"]["float32"] == out["bound_s"]
    assert out["roofline_multiple"] > 0


def test_bench_roofline_runs_the_int8_model_and_bounds_it_by_its_bytes():
    out = run_json("bench.roofline", "--json", "--model", "tiny", "--mb", "4", "--repeats", "1", "--dtype", "int8")
    assert out["dtype"] == "int8" and out["steps"] == 64
    assert out["bound_s"] == out["bound_s_by_precision"]["int8"] < out["bound_s_by_precision"]["float32"]


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("name, extra", [("app", ["--decode-only", "--length", "48", "--open", "16"]),
                                         ("decode", ["--length", "32"])])
def test_app_and_decode_report_their_roofline_multiple_and_dtype(name, extra, dtype):
    out = run_json(f"bench.{name}", "--json", "--model", "tiny", "--bandwidth-mb", "4", "--dtype", dtype, *extra)
    assert out["dtype"] == dtype
    if dtype == "int8":  # the int8 model ran: its own bytes bound it
        assert out["weight_bytes"] == roofline.decode_step_weight_bytes(load_model("tiny", device="cpu").model)["int8"]
        assert "int8" in out["device"] if name == "app" else out["device"] == "cpu"
    assert out["roofline_multiple"] > 0 and out["bound_s"] > 0
    steps = out["steps"]
    run_s = out["decode_s"] if name == "app" else out["cached_s"]
    assert out["step_s"] == pytest.approx(run_s / steps, abs=0.0006 / steps + 1e-5)  # both rounded
    assert "2 threads" in out["roofline_bandwidth"] or (os.cpu_count() or 1) < 2

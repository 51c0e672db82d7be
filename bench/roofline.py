"""Roofline: how far a cached decode step is from the time it takes just to read the weights once.

    python -m bench.roofline --json [--model default|tiny] [--mb 1024] [--repeats 5] [--dtype bfloat16|int8]

On a CPU one cached decode step (one committed token's content row and one query row through every
layer, then the LM head) does little arithmetic per weight: it is bound by reading the weights from
memory. This benchmark measures
    bandwidth_gbs   the machine's memory bandwidth per thread count 1..os.cpu_count(), best of
                    `repeats`, in GB/s (1e9 bytes): STREAM's copy (b = a) and triad (a = b + s*c), counting
                    bytes read + written as STREAM does, and a pure read (a sum over all the arrays). The
                    arrays (float32, `--mb` in all) should be much larger than the last-level cache
                    (`llc_mb`): a warning says when they are not.
    weight_bytes    the bytes of weights one cached decode step reads, per precision: every decoder
                    layer's linear weights (and biases) and norms, the final norm, the query vector, the
                    LM head (tied to the embedding: the whole vocab x hidden matrix is read once per step
                    for the logits) and one embedding row per new token (negligible). "int8" is
                    model.quant's scheme (`--dtype int8`, A3_CPU_DTYPE=int8): every matrix at one byte a
                    weight plus one float32 scale per output channel, the vectors left in float32 (the
                    bytes of the model.quant weights as stored, DEFAULT_KEEP: nothing kept in float32).
                    For a model that ran in int8 the bound counts its weights as stored (what it kept in
                    float32 at four bytes).
    bound_s         the lower bound on a step's time: weight bytes / the best read bandwidth at
                    min(2, cpu_count) threads (`bound_bandwidth` names it), per precision and for the
                    precision that ran (`dtype`)
    step_s          a real cached decode through model.decoding.decode (A3 plan, left to right, groups of
                    1, 64 open tokens in the middle of a 128-token text): seconds per step, the mean
    roofline_multiple  step_s / bound_s: 1 would be a step that only reads its weights at full speed.
The KV cache a step also reads is reported (`kv_cache_bytes`, at the text's length) but left out of the
bound (about 1% of the default model's float32 weights at 128 positions).

bench.app and bench.decode import `read_bandwidth`, `decode_step_weight_bytes` and `step_bound_s` from
here for their own `roofline_multiple`. Prints one JSON object on its last line; asserts nothing.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from bench import _positive_int, arg_parser, report, synchronize

KERNELS = ("copy", "triad", "read")
ARRAYS = {"copy": 2, "triad": 3, "read": 1}  # arrays each kernel touches (bytes counted per element)
MB = 1e6  # array sizes and bandwidths in decimal units (GB/s = 1e9 bytes a second)
PRECISIONS = {"float32": 4, "bfloat16": 2, "int8": 1}  # bytes per matrix element
VECTOR_BYTES = {"float32": 4, "bfloat16": 2, "int8": 4}  # norms, biases, vectors: left in float32
SCALE_BYTES = {"float32": 0, "bfloat16": 0, "int8": 4}  # per matrix row (output channel): model.quant's scales
DEFAULT_MB = 1024  # --mb: the arrays of bench.roofline in all
QUICK_READ_MB = 256  # bench.app / bench.decode: one read array, at least twice the last-level cache
QUICK_READ_REPEATS = 3


# --------------------------------------------------------------------------------------------------
# memory bandwidth


def last_level_cache_bytes() -> int | None:
    """The largest CPU cache this machine reports (Linux sysfs), or None where it says nothing."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        try:
            scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * scale)
        except ValueError:
            continue
    return max(sizes) if sizes else None


def quick_read_mb() -> float:
    """The read array of bench.app / bench.decode: QUICK_READ_MB, or twice the last-level cache if that
    is larger (a smaller array is partly read from the cache, and the bound would come out too low)."""
    llc = last_level_cache_bytes()
    return max(QUICK_READ_MB, 2 * llc / MB if llc else 0)


def measure_bandwidth(total_mb: float, *, threads: int | None = None, repeats: int = 5, kernels=KERNELS,
                      device="cpu") -> dict[str, float]:
    """GB/s per kernel ("copy", "triad", "read"), the best of `repeats` timed runs after a warm-up.

    One float32 buffer of `total_mb`, cut into the arrays the kernels need (a, b, c: thirds with triad,
    halves with copy): copy b = a, triad a = b + 3c, and the read sums the whole buffer, so each
    kernel's working set is most of `total_mb`. Bytes are counted as STREAM does: read + written, no
    write-allocate. threads: torch's CPU threads for the measurement (restored after); ignored on a GPU."""
    if not kernels or set(kernels) - set(KERNELS):
        raise ValueError(f"kernels must be among {KERNELS}; got {kernels!r}")
    if not total_mb > 0 or repeats < 1:
        raise ValueError(f"total_mb must be positive and repeats at least 1; got {total_mb}, {repeats}")
    device = torch.device(device)
    n_arrays = max(ARRAYS[k] for k in kernels)
    n = max(1024, int(total_mb * MB / 4 / n_arrays))  # elements per array
    previous = torch.get_num_threads()
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        buffer = torch.empty(n * n_arrays, dtype=torch.float32, device=device)
        buffer.fill_(1.0)  # touch every page before timing
        a, b, c = (buffer[i * n:(i + 1) * n] if i < n_arrays else None for i in range(3))
        ops = {"copy": (lambda: b.copy_(a), 2 * n), "triad": (lambda: torch.add(b, c, alpha=3.0, out=a), 3 * n),
               "read": (lambda: buffer.sum(), n_arrays * n)}
        out = {}
        for kernel in kernels:
            op, elements = ops[kernel]
            op()  # warm-up
            times = []
            for _ in range(repeats):
                synchronize(device)
                start = time.perf_counter()
                op()
                synchronize(device)
                times.append(time.perf_counter() - start)
            out[kernel] = round(elements * 4 / min(times) / 1e9, 2)
        return out
    finally:
        torch.set_num_threads(previous)


def read_bandwidth(total_mb: float | None = None, *, threads: int | None = None,
                   repeats: int = QUICK_READ_REPEATS, device="cpu") -> dict:
    """The quick read bandwidth bench.app and bench.decode bound their steps by: `measure_bandwidth`'s read
    at min(2, cpu_count) threads (on a GPU: the device's own), over one array of `total_mb`
    (default `quick_read_mb()`). Returns {"gbs", "threads", "mb", "repeats", "what"}."""
    device = torch.device(device)
    total_mb = quick_read_mb() if total_mb is None else total_mb
    threads = bound_threads() if threads is None else threads
    gbs = measure_bandwidth(total_mb, threads=threads, repeats=repeats, kernels=("read",), device=device)["read"]
    where = (f"{torch.cuda.get_device_name(device)} memory" if device.type == "cuda"
             else f"{threads} thread{'s' * (threads != 1)}")
    return {"gbs": gbs, "threads": threads if device.type == "cpu" else None, "mb": round(total_mb),
            "repeats": repeats, "what": f"read (a sum), {where}, {total_mb:.0f} MB, best of {repeats}"}


def bound_threads() -> int:
    """The thread count the bound is taken at: 2, or fewer where the machine has fewer cores."""
    return min(2, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------
# the weights a step reads


def decode_step_elements(model, new_tokens: int = 1) -> dict[str, int]:
    """Weight elements one cached decode step reads, by part: matrices (decoder layers' linear weights,
    the LM head) and vectors (norms, biases, the query vector, the embedding rows of the new tokens).

    The LM head is read whole once per step for the logits; tied to the embedding (as in SmolLM2) it is
    the embedding matrix, counted once. The embedding rows of `new_tokens` come on top (negligible)."""
    inner = model.model
    linear = norms = biases = 0
    for layer in inner.layers:
        for name, param in layer.named_parameters():
            if name.endswith("layernorm.weight"):
                norms += param.numel()
            elif name.endswith(".bias"):
                biases += param.numel()
            elif not name.endswith(".weight_scale"):  # an int8 model's scales: see matrix_rows
                linear += param.numel()
    hidden = model.config.hidden_size
    return {
        "layers_linear": linear,
        "layers_norm": norms,
        "layers_bias": biases,
        "final_norm": inner.norm.weight.numel(),
        "query_vector": inner.query_embed.numel(),
        "lm_head": model.lm_head.in_features * model.lm_head.out_features,
        "embedding_rows": new_tokens * hidden,
    }


def _step_linears(model) -> list:
    """The Linear modules (float or model.quant's Int8Linear) a cached step multiplies by: every decoder
    layer's and the LM head."""
    from model.quant import Int8Linear

    kinds = (nn.Linear, Int8Linear)
    return [m for layer in model.model.layers for m in layer.modules() if isinstance(m, kinds)] + [model.lm_head]


def matrix_rows(model) -> int:
    """Output channels of the matrices a step reads: int8 keeps one float32 scale for each."""
    return sum(m.out_features for m in _step_linears(model))


def stored_weight_bytes(model, new_tokens: int = 1) -> int:
    """Bytes of the weights one cached step reads, as the model holds them (each tensor at its own element
    size: an int8 model's int8 matrices and float32 scales, whatever it kept in float32 at four bytes)."""
    inner = model.model
    tensors = [*inner.layers.parameters(), inner.norm.weight, inner.query_embed, *model.lm_head.parameters()]
    seen, total = set(), 0
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total + new_tokens * model.config.hidden_size * inner.embed_tokens.weight.element_size()


MATRICES = ("layers_linear", "lm_head")


def decode_step_weight_bytes(model, new_tokens: int = 1) -> dict[str, int]:
    """Bytes of weights one cached decode step reads, per precision (PRECISIONS): matrices at the
    precision's bytes per element, vectors at its VECTOR_BYTES (int8 keeps them in float32) and, for int8,
    one float32 scale per matrix row (SCALE_BYTES)."""
    elements = decode_step_elements(model, new_tokens)
    matrices = sum(elements[k] for k in MATRICES)
    vectors = sum(v for k, v in elements.items() if k not in MATRICES)
    rows = matrix_rows(model)
    return {name: matrices * size + vectors * VECTOR_BYTES[name] + rows * SCALE_BYTES[name]
            for name, size in PRECISIONS.items()}


def precision_name(dtype) -> str:
    """The precision's name: "float32" for torch.float32."""
    return str(dtype).removeprefix("torch.")


def weight_bytes_for(model, dtype) -> int:
    """Bytes of weights one cached step reads with the model's weights in `dtype` (float16: as bfloat16;
    int8: the model's own bytes as stored where model.quant quantized it, else decode_step_weight_bytes's)."""
    from model.quant import quantization_of

    name = precision_name(dtype)
    if name == "float16":
        name = "bfloat16"
    if name == "int8" and quantization_of(model) is not None:
        return stored_weight_bytes(model)
    return decode_step_weight_bytes(model)[name]


def step_bound_s(weight_bytes: float, bandwidth_gbs: float) -> float:
    """The lower bound on a step's time: its weight bytes read once at `bandwidth_gbs` (GB/s)."""
    return weight_bytes / (bandwidth_gbs * 1e9)


def roofline_fields(model, dtype, step_s: float, bandwidth: dict) -> dict:
    """What bench.app and bench.decode add to their JSON: the step, its bound and their ratio."""
    weight_bytes = weight_bytes_for(model, dtype)
    bound = step_bound_s(weight_bytes, bandwidth["gbs"])
    return {"dtype": precision_name(dtype), "step_s": round(step_s, 5), "weight_bytes": weight_bytes,
            "read_gbs": bandwidth["gbs"], "roofline_bandwidth": bandwidth["what"], "bound_s": round(bound, 5),
            "roofline_multiple": round(step_s / bound, 2)}


def kv_cache_bytes(model, length: int, dtype) -> int:
    """Bytes of cached keys and values a step reads at `length` positions (not in the bound)."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    size = torch.tensor([], dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * length * size


# --------------------------------------------------------------------------------------------------
# a real step


def roofline_plan(tokenizer, start_token_id: int, length: int = 128, n_open: int = 64):
    """bench.decode's corpus text of `length` tokens (start token first) with `n_open` open tokens in the
    middle, as bench.app's blank: the A3 plan left to right, groups of 1."""
    from bench.decode import bench_input
    from model.plans import make_plan

    ids = bench_input(tokenizer, start_token_id, length)
    first = (length - n_open) // 2
    given = torch.ones(length, dtype=torch.bool)
    given[first:first + n_open] = False
    return make_plan(ids, given=given, order="left_to_right", group_size=1)


def time_decode_step(model, plan) -> tuple[float, int]:
    """(mean seconds per step, steps) of one cached A3 plan decode of `plan` after a short warm-up; the
    page's config: only each group's own rows (no preview of the other open positions)."""
    from model.config import DecodeConfig
    from model.decoding import collect, decode
    from model.plans import make_plan

    device = next(model.parameters()).device
    config = DecodeConfig("plan", order="left_to_right", group_size=1, preview_open=False)
    first_open = plan.open_positions[0]
    warm = make_plan(plan.token_ids[: first_open + 8], given=plan.given[: first_open + 8], group_size=1)
    collect(decode(model, warm, config))
    synchronize(device)
    start = time.perf_counter()
    trace = collect(decode(model, plan, config))
    synchronize(device)
    return (time.perf_counter() - start) / len(trace.steps), len(trace.steps)


# --------------------------------------------------------------------------------------------------


def run(model_name: str = "default", *, total_mb: float = DEFAULT_MB, repeats: int = 5, threads: int | None = None,
        dtype=None, length: int = 128, n_open: int = 64) -> dict:
    from model.loading import load_model

    cpus = os.cpu_count() or 1
    llc = last_level_cache_bytes()
    if llc and total_mb * 2 / 3 * MB < 2 * llc:  # copy's working set, the smallest
        warnings.warn(f"--mb {total_mb:g}: the kernels' working sets are under twice the last-level cache "
                      f"({llc / MB:.0f} MB): part of each pass may come from the cache, and the bandwidths out "
                      "too high.", stacklevel=2)
    # the bandwidths first, before the model is loaded (less memory in use, nothing else in the caches)
    bandwidth = {str(t): measure_bandwidth(total_mb, threads=t, repeats=repeats) for t in range(1, cpus + 1)}
    at = str(bound_threads())
    read_gbs = bandwidth[at]["read"]

    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(model_name, device="cpu", dtype=dtype)  # None: the library's choice (float32 on a CPU)
    model = loaded.model
    elements = decode_step_elements(model)
    weight_bytes = decode_step_weight_bytes(model)
    plan = roofline_plan(loaded.tokenizer, loaded.start_token_id, length, n_open)
    step_s, steps = time_decode_step(model, plan)
    name = precision_name(loaded.weight_dtype)  # "int8" for a model.quant model (it computes in float32)
    bound = step_bound_s(weight_bytes_for(model, loaded.weight_dtype), read_gbs)
    total_elements = sum(elements.values())
    return {
        "model": model_name, "cpu_count": cpus, "llc_mb": round(llc / MB, 1) if llc else None,
        "array_mb": total_mb, "repeats": repeats, "torch": torch.__version__,
        "bandwidth_gbs": bandwidth,
        "weight_elements": elements,
        "embedding_rows_note": (f"one embedding row per new token: {elements['embedding_rows']} elements, "
                                f"{100 * elements['embedding_rows'] / total_elements:.2g}% of the step's "
                                "weights: negligible"),
        "weight_bytes": weight_bytes,
        "kv_cache_bytes": kv_cache_bytes(model, plan.length, loaded.dtype),
        "bound_bandwidth": f"read (a sum), {at} thread{'s' * (at != '1')}, {total_mb:g} MB, best of {repeats}",
        "read_gbs": read_gbs,
        "bound_s_by_precision": {k: round(step_bound_s(v, read_gbs), 5) for k, v in weight_bytes.items()},
        "dtype": name, "threads": torch.get_num_threads(), "length": plan.length,
        "open": len(plan.open_positions), "steps": steps,
        "step_s": round(step_s, 5), "bound_s": round(bound, 5), "roofline_multiple": round(step_s / bound, 2),
    }


def add_bandwidth_flag(ap) -> None:
    """bench.app's and bench.decode's --bandwidth-mb: the quick read array's size."""
    ap.add_argument("--bandwidth-mb", type=_positive_mb, default=None,
                    help=f"the read array of the roofline bound, MB (default {QUICK_READ_MB}, or twice the "
                         "last-level cache if larger)")


def _positive_mb(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of MB; got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 MB; got {text}")
    return value


def main(argv: list[str] | None = None) -> None:
    ap = arg_parser(__doc__, dtype=True)
    ap.add_argument("--mb", type=_positive_mb, default=DEFAULT_MB,
                    help=f"the bandwidth arrays' size in all, MB (default {DEFAULT_MB}; keep it well above the "
                         "last-level cache)")
    ap.add_argument("--repeats", type=_positive_int, default=5,
                    help="timed runs per kernel and thread count, the best kept (default 5)")
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    result = run(args.model, total_mb=args.mb, repeats=args.repeats, threads=args.threads, dtype=dtype)
    report(result, as_json=args.json)


if __name__ == "__main__":
    main()

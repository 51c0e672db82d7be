"""Decoding speed: A3 plan decoding with the content KV cache vs full recompute vs the base AR model.

    python -m bench.decode --json [--model default|tiny] [--length 256] [--group-size 4] [--device cuda]
                               [--dtype float32|bfloat16|int8]

One input of `length` tokens (stories from the corpus, concatenated): the first quarter given, the rest
open, decoded greedily in left-to-right groups of `group_size` three ways on this machine:
    cached_s        A3 plan decoding, content keys/values cached (each step: one group's rows)
    recompute_s     the same plan with every step a full two-stream forward over every position and
                    the LM head on every position: what the official code's generate_two_stream does
    recompute_rows_s  a leaner recompute: every content row, but only the group's query rows
    ar_generate_s   transformers' `generate` on the base AR model (its own KV cache), same new tokens
`roofline_multiple`: the cached run's mean step (`step_s`) over the time it takes to read the weights a
step reads once (`bound_s`: bench.roofline's weight bytes in `dtype` at bench.roofline's quick read
bandwidth, 2 threads, best of 3, measured first; on a GPU the device's own). `--dtype int8` runs
model.quant's int8 weights (the AR baseline stays float32); `dtype` names the weights' precision that ran.
Prints one JSON object on its last line. Numbers, not assertions: nothing here fails on a slow machine.
"""

from __future__ import annotations

import time

import torch

from bench import arg_parser, device_and_dtype, peak_memory_mb, report, synchronize
from bench.roofline import add_bandwidth_flag, read_bandwidth, roofline_fields
from model.config import DecodeConfig
from model.decoding import collect, decode
from model.loading import llama_from_a3
from model.plans import make_plan


def bench_input(tokenizer, start_id: int, length: int) -> torch.Tensor:
    from model.data.stories import SPLITS, read_stories

    ids = [start_id]
    for split in SPLITS[::-1]:
        try:
            stories = read_stories(split)
        except FileNotFoundError:
            continue
        for story in stories:
            ids += tokenizer(" " + story["text"], add_special_tokens=False).input_ids
            if len(ids) >= length:
                return torch.tensor(ids[:length])
    text = "The quick brown fox jumps over the lazy dog while the children watch and laugh. "
    while len(ids) < length:
        ids += tokenizer(text, add_special_tokens=False).input_ids
    return torch.tensor(ids[:length])


def timed(fn, device="cpu"):
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def run(model_name: str, length: int, group_size: int, threads: int | None = None, *,
        device="cpu", dtype=None, bandwidth_mb: float | None = None) -> dict:
    from model.loading import load_model

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    bandwidth = read_bandwidth(bandwidth_mb, device=device)  # first: before the models take the memory
    if dtype is None and device.type == "cpu":
        dtype = torch.float32
    loaded = load_model(model_name, device=device, dtype=dtype)
    model, tok = loaded.model, loaded.tokenizer
    ids = bench_input(tok, loaded.start_token_id, length)
    n_given = length // 4
    given = torch.zeros(length, dtype=torch.bool)
    given[:n_given] = True
    plan = make_plan(ids, given=given, order="left_to_right", group_size=group_size)
    if model_name == "default":
        from model.base import load_base_causal_lm

        ar_model = load_base_causal_lm()[0]
    elif loaded.quantization is not None and loaded.base_is_model:  # int8 tiny: its base is the float32 model
        ar_model = llama_from_a3(load_model(model_name, device=device, dtype=torch.float32).model)
    else:
        ar_model = llama_from_a3(loaded.base())
    ar_model = ar_model.to(device=device, dtype=loaded.dtype)
    prompt = ids[None, :n_given].to(device)

    # warm-up (allocator, thread pool) on a short plan
    warm = make_plan(ids[: n_given + 8], given=given[: n_given + 8], group_size=group_size)
    config = DecodeConfig("plan", order="left_to_right", group_size=group_size, preview_open=False)
    collect(decode(model, warm, config))
    with torch.no_grad():
        ar_model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)

    cached, cached_s = timed(lambda: collect(decode(model, plan, config)), device)
    recomputed, recompute_s = timed(lambda: collect(decode(model, plan, config, cache=False, full_forward=True)),
                                    device)
    rows_only, recompute_rows_s = timed(lambda: collect(decode(model, plan, config, cache=False)), device)
    new_tokens = length - n_given
    with torch.no_grad():
        _, ar_s = timed(lambda: ar_model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                                  do_sample=False, pad_token_id=0), device)
    return {
        "model": model_name, "length": length, "given": n_given, "group_size": group_size,
        "new_tokens": new_tokens, "steps": len(cached.steps),
        "cached_s": round(cached_s, 3), "recompute_s": round(recompute_s, 3),
        "speedup_vs_recompute": round(recompute_s / cached_s, 2),
        "same_tokens": cached.final_ids == recomputed.final_ids == rows_only.final_ids,
        "recompute_rows_s": round(recompute_rows_s, 3),
        "speedup_vs_recompute_rows": round(recompute_rows_s / cached_s, 2),
        "max_logprob_diff": round(max(abs(a.logprob - b.logprob)
                                      for a, b in zip(cached.steps, recomputed.steps, strict=True)), 6),
        "ar_generate_s": round(ar_s, 3), "speedup_vs_ar": round(ar_s / cached_s, 2),
        **peak_memory_mb(device), "threads": torch.get_num_threads(), "device": device_name(device),
        "torch": torch.__version__,
        **roofline_fields(model, loaded.weight_dtype, cached_s / len(cached.steps), bandwidth),
    }


def device_name(device) -> str:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> None:
    ap = arg_parser(__doc__, device=True, dtype=True)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--group-size", type=int, default=4)
    add_bandwidth_flag(ap)
    args = ap.parse_args(argv)
    device, dtype = device_and_dtype(args)
    result = run(args.model, args.length, args.group_size, args.threads, device=device, dtype=dtype,
                 bandwidth_mb=args.bandwidth_mb)
    report(result, as_json=args.json)


if __name__ == "__main__":
    main()

"""bf16 against float32 on this machine: does bf16 keep greedy outputs, and is it faster here?

    python -m bench.precision --json [--model default] [--examples 24] [--threads 2] [--device cpu]

The same checkpoint loaded twice, in float32 and in bfloat16, on `--device`:
    next_token_agreement   share of positions whose greedy (argmax) next token is the same in both,
                           teacher-forced: left-to-right A3 logits over the story test split's first
                           `--examples` stories, every position scored
    max_abs_logprob_diff   the largest |log p_bf16 - log p_fp32| of the reference token there
    infill_exact_fills     share of story-infilling blanks (one sentence of each of those stories, masked by
                           model.eval's infill_example from a seed-0 generator; A3 plan, greedy) filled
                           with exactly the same tokens in both
    infill_token_agreement share of the blanks' tokens that agree
    bf16_cached_equals_recomputed   bf16 plan decoding with the content cache and with every step
                           recomputed chose the same tokens on every blank (the cache is exact in bf16 too)
    bf16_cache_max_logprob_diff     the largest |log p| difference between those two runs
    step_ms_fp32 / step_ms_bf16     mean time per decoding step of the infilling runs
plus `native_bf16` (the CPU's flags) and `auto_dtype`, what `load_model` picks here without a dtype
(model.precision). Prints one JSON object on its last line; asserts nothing.
"""

from __future__ import annotations

import time

import torch

from bench import arg_parser, device_and_dtype, report


def _teacher_forced(model, stories: list[list[int]]) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for ids in stories:
            logits = model(torch.tensor([ids], device=device)).logits[0, 1:].float()  # query rows predict i
            out.append(logits.log_softmax(-1).cpu())
    return out


def _fills(model, examples: list[dict], *, cache: bool = True) -> tuple[list[list[int]], list[list[float]], float]:
    """Greedy A3-plan fills (tokens, per-token log p) and the mean seconds per decoding step."""
    from model.config import DecodeConfig
    from model.decoding import collect, decode
    from model.plans import make_plan

    config = DecodeConfig("plan", order="left_to_right", preview_open=False)
    fills, logps, seconds, steps = [], [], 0.0, 0
    for ex in examples:
        plan = make_plan(ex["ids"], given=ex["given"], order="left_to_right")
        start = time.perf_counter()
        trace = collect(decode(model, plan, config, cache=cache))
        seconds += time.perf_counter() - start
        steps += len(trace.steps)
        lo, hi = ex["span"]
        fills.append(trace.final_ids[lo:hi])
        logps.append([lp for s in trace.steps for lp in s.token_logprobs])
    return fills, logps, seconds / max(1, steps)


def run(model_name: str, n_examples: int, device: str) -> dict:
    from model.data.stories import read_stories
    from model.eval.blanks import infill_example
    from model.loading import load_model
    from model.precision import auto_dtype, cpu_native_bf16

    dev = torch.device(device)
    fp32 = load_model(model_name, device=dev, dtype=torch.float32)
    tok, start_id = fp32.tokenizer, fp32.start_token_id
    texts = [s["text"] for s in read_stories("test")][:n_examples]
    stories = [[start_id] + tok(t, add_special_tokens=False).input_ids for t in texts]
    rng = torch.Generator().manual_seed(0)
    examples = [ex for t in texts if (ex := infill_example(tok, start_id, t, rng)) is not None]

    ref_lp = _teacher_forced(fp32.model, stories)
    ref_fills, _, step_fp32 = _fills(fp32.model, examples)
    del fp32
    bf16 = load_model(model_name, device=dev, dtype=torch.bfloat16)
    lp = _teacher_forced(bf16.model, stories)
    fills, cached_lp, step_bf16 = _fills(bf16.model, examples)
    recomputed, recomputed_lp, _ = _fills(bf16.model, examples, cache=False)

    agree = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(ref_lp, lp, strict=True))
    positions = sum(a.shape[0] for a in ref_lp)
    gold = [torch.tensor(ids[1:]) for ids in stories]
    diff = max(float((a.gather(-1, g[:, None]) - b.gather(-1, g[:, None])).abs().max())
               for a, b, g in zip(ref_lp, lp, gold, strict=True))
    tokens = sum(len(f) for f in ref_fills)
    same_tokens = sum(x == y for f, g in zip(ref_fills, fills, strict=True) for x, y in zip(f, g, strict=True))
    cache_diff = max((abs(x - y) for a, b in zip(cached_lp, recomputed_lp, strict=True)
                      for x, y in zip(a, b, strict=True)), default=0.0)
    return {
        "model": model_name, "device": str(dev), "threads": torch.get_num_threads(),
        "native_bf16": cpu_native_bf16() if dev.type == "cpu" else None,
        "auto_dtype": str(auto_dtype(dev)).removeprefix("torch."),
        "stories": len(stories), "positions": positions,
        "next_token_agreement": round(agree / positions, 4),
        "max_abs_logprob_diff": round(diff, 4),
        "blanks": len(examples), "blank_tokens": tokens,
        "infill_exact_fills": round(sum(f == g for f, g in zip(ref_fills, fills, strict=True)) / len(examples), 4),
        "infill_token_agreement": round(same_tokens / max(1, tokens), 4),
        "bf16_cached_equals_recomputed": fills == recomputed,
        "bf16_cache_max_logprob_diff": round(cache_diff, 4),
        "step_ms_fp32": round(1000 * step_fp32, 1), "step_ms_bf16": round(1000 * step_bf16, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = arg_parser(__doc__, device=True)  # no --dtype: it always compares float32 with bfloat16
    ap.add_argument("--examples", type=int, default=24)
    args = ap.parse_args(argv)
    if args.examples < 1:
        ap.error("--examples must be at least 1")
    device, _ = device_and_dtype(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    report(run(args.model, args.examples, str(device)), as_json=args.json)


if __name__ == "__main__":
    main()

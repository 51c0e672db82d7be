"""The library's core properties, checked on a real model on any device and dtype.

    python -m model.selfcheck [--model default|tiny|DIR] [--device cpu|cuda] [--dtype float32|bfloat16|int8] [--json]

The tests prove these on the CPU; this runs the same checks where the tests do not run (a GPU, bf16, a
researcher's own checkpoint) and prints one JSON object on its last line:

    content_vs_base       the content stream under left-to-right grouping is the AR base: logits against
                          transformers' LlamaForCausalLM with the base's weights (for the default model the
                          base loaded by transformers itself), max |difference| and argmax agreement
    no_leak               changing the tokens of groups >= k never changes the query logits of groups <= k,
                          over random groupings; compared with the change on later rows (the check's power)
                          and with run-to-run noise (the same input twice)
    cached_vs_recomputed  greedy plan decoding with the content cache, recomputed rows, and the official
                          code's full forward: the same tokens, and per-step log-probs within tolerance
                          (also teacher-forced, so one near-tie cannot hide a larger difference)
    likelihood_identity   sequence_log_likelihood in one pass equals the sum of a teacher-forced decode's
                          step log-probs

Tolerances. In float32: log-probs within 1e-3 (teacher-forced, so a near-tie between two tokens cannot
fail the check; greedy agreement is reported beside it), logits within 1e-3 per 10 units of the largest
logit, and no_leak exact up to the run-to-run noise of the same input. In bf16 two correct computations
differ by rounding (8 mantissa bits; a step's log-prob can move by nats), so there the decoding checks
compare the mean gap between two ways with one way's own mean error against the same weights in float32
(the gap may be at most twice that error): a cache or mask bug shows as a gap beyond rounding.
In int8 (model.quant: int8 weights per output channel, int8 activations per token, float32 everywhere
else) every row is quantized on its own and the integer products are exact, so a row never reads another
row: no_leak must hold bit for bit (no allowance beyond the run-to-run noise, which is 0 on a CPU). The
decoding checks are judged as in bf16, against the same model in float32 (loaded again, not quantized):
cached, recomputed and one-pass results differ by more than float32 rounding, because a rounding-sized
difference in attention can move a value across a quantization step in the next layer (on the 2-layer tiny
model the ways still agree within 1e-4; on the 30-layer default model by tenths of a nat), so the gap
between two ways may be at most twice the int8 model's own mean error against float32, and that error at
most a nat per token. content_vs_base checks the AR base, which stays float32 in int8 (the int8 model's
own fills: `python -m bench.int8_gate`).
Exit status: 0 every check passed, 1 one failed, 2 a bad command line, 3 the model could not be loaded,
4 the device is missing. A check that cannot run (no AR base, a block layout transformers does not have) is reported as
skipped with the reason.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch

from model.decoding import collect, decode_plan, sequence_log_likelihood
from model.loading import BaseUnavailableError, LoadedModel, ModelLoadError, llama_from_a3, load_model
from model.plans import custom_plan, make_plan

# tolerance on logits (per 10 units of the largest logit) per dtype; on log-probs only float32 has one:
# below it the decoding checks measure rounding against a float32 copy (see _reduced_precision_verdict)
LOGIT_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 0.25, torch.float16: 0.05}
LOGPROB_TOLERANCE = 1e-3
TEXT = ("Once upon a time, a little fox named Pip lived at the edge of a quiet forest. Every morning he "
        "ran to the river to drink, and every evening he told the owl what he had seen.")


def _tokens(loaded: LoadedModel) -> torch.Tensor:
    ids = [loaded.start_token_id] + loaded.tokenizer(TEXT, add_special_tokens=False).input_ids
    return torch.tensor(ids[: min(len(ids), loaded.max_length)])


def _random_groups(length: int, generator: torch.Generator, n_groups: int) -> torch.Tensor:
    labels = torch.randperm(1000, generator=generator)[:n_groups] - 300  # arbitrary, some negative
    return labels[torch.randint(0, n_groups, (length,), generator=generator)]


def check_content_vs_base(loaded: LoadedModel) -> dict:
    """The content stream of the AR base, as an A3 model, against transformers' causal LM."""
    if loaded.quantization is not None and loaded.base_is_model:  # its base is the model before quantizing
        return {"status": "skipped", "why": "an int8 model that is its own AR base: the base is the float32 "
                "model before quantizing (run the check without --dtype int8)"}
    try:
        base = loaded.base()
    except BaseUnavailableError as err:
        return {"status": "skipped", "why": str(err)}
    if base.config.block_layout != "prenorm":
        return {"status": "skipped", "why": f"the base's block layout is {base.config.block_layout!r}, which "
                "transformers' LlamaForCausalLM does not have: there is no reference to compare with"}
    if loaded.name == "default":
        from model.base import load_base_causal_lm

        reference_model, source = load_base_causal_lm(dtype=loaded.dtype, device=loaded.device)[0], "transformers"
    else:
        reference_model, source = llama_from_a3(base), "transformers (the base's weights)"
    ids = _tokens(loaded)[None].to(loaded.device)
    with torch.no_grad():
        reference = reference_model(ids).logits[0].float()
        content = base(ids, return_content_logits=True).content_logits[0].float()
    diff = float((content - reference).abs().max())
    agree = float((content.argmax(-1) == reference.argmax(-1)).float().mean())
    atol = LOGIT_TOLERANCE.get(loaded.dtype, LOGIT_TOLERANCE[torch.float32])
    scale = float(reference.abs().max())
    passed = diff <= atol * max(1.0, scale / 10) and agree >= (1.0 if loaded.dtype == torch.float32 else 0.9)
    return {"status": "pass" if passed else "fail", "reference": source, "positions": ids.shape[1],
            "max_abs_diff": diff, "logit_scale": scale, "argmax_agreement": agree}


def check_no_leak(loaded: LoadedModel, cases: int = 8, length: int = 32) -> dict:
    model, vocab = loaded.model, loaded.model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    earlier_diff, later_diff, noise = 0.0, 0.0, 0.0
    for _ in range(cases):
        groups = _random_groups(length, g, int(torch.randint(3, 9, (1,), generator=g)))
        ids = torch.randint(0, vocab, (1, length), generator=g)
        def run(x, groups=groups):
            return model(x.to(loaded.device), group_ids=groups.to(loaded.device)).logits[0].float().cpu()

        with torch.no_grad():
            before = run(ids)
            noise = max(noise, float((run(ids) - before).abs().max()))
            for k in torch.unique(groups).tolist()[1:]:
                changed = ids.clone()
                later = groups >= k
                changed[0, later] = torch.randint(0, vocab, (int(later.sum()),), generator=g)
                after = run(changed)
                earlier_diff = max(earlier_diff, float((after[groups <= k] - before[groups <= k]).abs().max()))
                if (groups > k).any():
                    later_diff = max(later_diff, float((after[groups > k] - before[groups > k]).abs().max()))
    slack = 0.0 if loaded.quantization is not None else 1e-6  # int8: bit for bit (module docstring)
    passed = earlier_diff <= noise + slack and later_diff > 10 * (noise + 1e-6)
    return {"status": "pass" if passed else "fail", "cases": cases, "length": length,
            "earlier_rows_max_change": earlier_diff, "later_rows_max_change": later_diff,
            "run_to_run_noise": noise}


def _infill_plan(loaded: LoadedModel):
    ids = _tokens(loaded)
    given = torch.ones(len(ids), dtype=torch.bool)
    third = len(ids) // 3
    given[third: 2 * third] = False
    return make_plan(ids, given=given, order="random", group_size=2, generator=torch.Generator().manual_seed(0),
                     given_grouping=loaded.given_grouping)


def _per_token(trace) -> dict[int, float]:
    return {p: lp for step in trace.steps for p, lp in zip(step.positions, step.token_logprobs, strict=True)}


def _mean_gap(a: dict[int, float], b: dict[int, float]) -> float:
    return sum(abs(a[p] - b[p]) for p in a) / max(1, len(a))


def _max_gap(a: dict[int, float], b: dict[int, float]) -> float:
    return max((abs(a[p] - b[p]) for p in a), default=0.0)


def _reduced_precision_verdict(gap: float, noise: float) -> bool:
    """In bf16 two correct computations differ by rounding, as each differs from float32: the mean gap
    between two ways may be up to twice one way's own mean error against float32 (1e-4 guards only
    against an exact zero), never more; and that error itself stays under a nat per token (a model broken
    in bf16 is off by several). A bug of a few rounding errors' size fails: on the tiny model a cache that
    stores v x 1.1 gives a gap 5.6 times the rounding error."""
    return gap <= 2 * noise + 1e-4 and noise <= 1.0


def check_cached_vs_recomputed(loaded: LoadedModel, reference=None) -> dict:
    """reference: the model in float32 (for a reduced dtype), the yardstick of rounding error."""
    model, plan = loaded.model, _infill_plan(loaded)
    ways = {"cached": dict(cache=True), "recomputed": dict(cache=False),
            "full_forward": dict(cache=False, full_forward=True)}
    greedy = {name: collect(decode_plan(model, plan, preview_open=False, **kw)) for name, kw in ways.items()}
    forced_ids = greedy["cached"].final_ids
    forced = {name: _per_token(collect(decode_plan(model, plan, preview_open=False, force_tokens=forced_ids, **kw)))
              for name, kw in ways.items()}
    open_positions = plan.open_positions
    agreement = {name: sum(t.final_ids[p] == forced_ids[p] for p in open_positions) / len(open_positions)
                 for name, t in greedy.items() if name != "cached"}
    out = {"open_positions": len(open_positions), "steps": len(greedy["cached"].steps),
           "greedy_token_agreement": agreement, "model_calls": {name: t.model_calls for name, t in greedy.items()},
           "teacher_forced_max_logprob_diff": max(_max_gap(forced["cached"], forced[n]) for n in ways),
           "teacher_forced_mean_logprob_diff": max(_mean_gap(forced["cached"], forced[n]) for n in ways)}
    if reference is None:
        passed = out["teacher_forced_max_logprob_diff"] <= LOGPROB_TOLERANCE
        out["tolerance"] = LOGPROB_TOLERANCE
    else:
        exact = _per_token(collect(decode_plan(reference, plan, preview_open=False, force_tokens=forced_ids,
                                               cache=False, full_forward=True)))
        noise = _mean_gap(forced["full_forward"], exact)
        out["full_forward_vs_float32_mean_logprob_diff"] = noise
        out["cached_vs_float32_mean_logprob_diff"] = _mean_gap(forced["cached"], exact)
        passed = _reduced_precision_verdict(out["teacher_forced_mean_logprob_diff"], noise)
    return {"status": "pass" if passed else "fail", **out}


def check_likelihood_identity(loaded: LoadedModel, reference=None, cases: int = 4) -> dict:
    model = loaded.model
    ids = _tokens(loaded)
    g = torch.Generator().manual_seed(1)
    gaps, worst, noises = [], 0.0, []
    for _ in range(cases):
        groups = _random_groups(len(ids), g, 7)
        given = groups == groups.min()
        plan = custom_plan(ids, given=given, group_ids=groups)
        total, per_position = sequence_log_likelihood(model, ids, groups, scored=~given)
        trace = collect(decode_plan(model, plan, force_tokens=ids, preview_open=False))
        one_pass = {p: float(per_position[p]) for p in plan.open_positions}
        gaps.append(_mean_gap(_per_token(trace), one_pass))
        worst = max(worst, abs(trace.logprob - total) / max(1, len(plan.open_positions)))
        if reference is not None:
            _, exact = sequence_log_likelihood(reference, ids, groups, scored=~given)
            noises.append(_mean_gap(one_pass, {p: float(exact[p]) for p in one_pass}))
    out = {"cases": cases, "total_diff_per_token": worst, "mean_token_diff": max(gaps)}
    if reference is None:
        passed = worst <= LOGPROB_TOLERANCE and max(gaps) <= LOGPROB_TOLERANCE
        out["tolerance"] = LOGPROB_TOLERANCE
    else:
        out["one_pass_vs_float32_mean_token_diff"] = max(noises)
        passed = _reduced_precision_verdict(max(gaps), max(noises))
    return {"status": "pass" if passed else "fail", **out}


CHECKS = {"content_vs_base": check_content_vs_base, "no_leak": check_no_leak,
          "cached_vs_recomputed": check_cached_vs_recomputed, "likelihood_identity": check_likelihood_identity}
NEEDS_REFERENCE = ("cached_vs_recomputed", "likelihood_identity")


def run(model_name: str = "default", device: str = "cpu", dtype: str | None = None,
        checks: list[str] | None = None) -> dict:
    """Every check (or the named ones) on one model; {"passed": bool, "checks": {name: result}, ...}."""
    device_ = torch.device(device)
    dtype_ = getattr(torch, dtype) if dtype else (torch.float32 if device_.type == "cpu" else torch.bfloat16)
    loaded = load_model(model_name, device=device_, dtype=dtype_)
    # below float32, rounding is measured against the same weights in float32 on the same device (int8:
    # the model loaded again in float32, LoRA merged, not quantized)
    if dtype_ == torch.int8:
        reference = load_model(model_name, device=device_, dtype=torch.float32).model
    else:
        reference = None if dtype_ == torch.float32 else copy.deepcopy(loaded.model).float()
    results = {}
    for name in checks or list(CHECKS):
        start = time.perf_counter()
        results[name] = CHECKS[name](loaded, reference) if name in NEEDS_REFERENCE else CHECKS[name](loaded)
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
    device_name = torch.cuda.get_device_name(device_) if device_.type == "cuda" else "cpu"
    return {"model": model_name, "device": device_name, "dtype": str(dtype_).removeprefix("torch."),
            "torch": torch.__version__, "passed": all(r["status"] != "fail" for r in results.values()),
            "checks": results}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.selfcheck", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="default | tiny | a checkpoint directory")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "int8"],
                    help="default: float32 on a CPU, bfloat16 on a GPU; int8: model.quant's weights")
    ap.add_argument("--check", action="append", choices=list(CHECKS), help="run only this check (repeatable)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be at least 1; got {args.threads}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: this machine has no CUDA device (torch.cuda.is_available() is False).", file=sys.stderr)
        return 4
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = run(args.model, args.device, args.dtype, args.check)
    except ModelLoadError as err:
        print(f"--model {args.model}: {err}", file=sys.stderr)
        return 3
    if not args.json:
        for name, r in result["checks"].items():
            detail = ", ".join(f"{k}={v}" for k, v in r.items() if k != "status")
            print(f"{r['status']:>7}  {name}: {detail}")
    print(json.dumps(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

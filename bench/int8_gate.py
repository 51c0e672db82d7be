"""The gate for 8-bit weights: on the evaluation's own blanks, are the int8 model's greedy fills the float32 ones?

    python -m bench.int8_gate --json [--model default] [--limit N] [--general-infill N] [--general-limit N]
                              [--keep lm_head,first] [--methods a3_plan,a3_outside_in,a3_dynamic]
                              [--fp32-fills FILE.jsonl] [--fills-cache FILE.jsonl] [--timing-rounds 3]

The model is loaded once in float32 and copied into model.quant's int8 scheme (`--keep` names the Linear
modules left in float32: "lm_head", "first", "last", or globs such as "*.k_proj"; default
model.quant.DEFAULT_KEEP, what `load_model(..., dtype="int8")` does). Both decode the same blanks, greedy:
  - the story test split (its first `--limit` stories; all by default), 4 blanks per story, drawn exactly as
    `python -m model.eval --blanks-per-story 4` draws them (model.eval.blanks.story_blanks with the
    evaluation's generators, interleaved with the perplexity's draws as evaluate() does);
  - the general split: the middle 40% of a sentence of each of the first `--general-infill` documents that
    have one, among the evaluation's `--general-limit` documents (interleaved over the sources).
For every method of `--methods` (default: the page's decoders a3_plan, a3_outside_in, a3_dynamic) it reports
    identical_fills       share of (blank, method) fills that are token for token the float32 fill: pooled,
                          per split, and per split and method
    token_agreement       share of fill tokens equal at the same place (how far apart the others are)
    paired                int8 minus float32 per split and method: rougeL, suffix_nll and text_nll (the base
                          model judging in float32, model.eval.metrics), with story-clustered 95% intervals
    perplexity            per split, of float32 and int8 (left to right, and random groups of 4 with the
                          evaluation's draws), and int8 / float32
    step_ms               the mean decoding step of bench.app's decode (A3 plan, left to right, groups of 1,
                          128 tokens with 64 open), float32 and int8 interleaved `--timing-rounds` times, the
                          fastest round of each (other processes on the machine slow both alike)
and the gate (GATE): at least 90% identical fills pooled and 85% on each split, every paired interval
holding 0, and every perplexity within 2% of float32. `passed` is True only if every check passes; a check
that could not be measured (no blanks in a split, fewer than two stories for an interval) fails.

The float32 fills can be read from a `python -m model.eval --fills-cache FILE` file (`--fp32-fills`, read
only, for the same weights and blanks), so the full gate need not decode them again; `--fills-cache` keeps
this run's fills (float32 and int8, each under its own weights' checksum) and reads them back when rerun.
Prints one JSON object on its last line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

GATE = {"identical_pooled": 0.90, "identical_per_split": 0.85, "perplexity_tolerance": 0.02}
GATE_METHODS = ("a3_plan", "a3_outside_in", "a3_dynamic")
SPLITS = ("stories", "general")
PAIRED_METRICS = ("rougeL", "suffix_nll", "text_nll")
PERPLEXITIES = ("ppl_a3_ar_order", "ppl_a3_random_s4")
BLANKS_PER_STORY = 4  # the gate's blanks: model.eval --blanks-per-story 4
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _progress(what: str) -> None:
    print(f"[int8_gate {time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# the gate's rule


def interval_holds_zero(ci95) -> bool | None:
    """True / False, or None where there is no interval (under two clusters)."""
    if not ci95:
        return None
    return ci95[0] <= 0.0 <= ci95[1]


def verdict(identical: dict, paired: dict, perplexity: dict, gate: dict = GATE) -> dict:
    """The gate's checks on measured numbers (see the module docstring).

    identical: {"pooled": share, "stories": share, "general": share} (None: not measured);
    paired: {split: {method: {metric: {"mean", "ci95", "n"}}}};
    perplexity: {split: {"ratio": {kind: int8 / float32}}}.
    Returns {"checks": {name: bool}, "failures": [why, ...], "passed": bool}."""
    failures: list[str] = []
    pooled = identical.get("pooled")
    checks = {"identical_pooled": pooled is not None and pooled >= gate["identical_pooled"]}
    if not checks["identical_pooled"]:
        failures.append(f"identical fills pooled {pooled} < {gate['identical_pooled']}")
    per_split = True
    for split in SPLITS:
        share = identical.get(split)
        if share is None or share < gate["identical_per_split"]:
            per_split = False
            failures.append(f"identical fills on {split} {share} < {gate['identical_per_split']}")
    checks["identical_per_split"] = per_split
    holds = True
    for split in SPLITS:
        if not paired.get(split):
            holds = False
            failures.append(f"no paired differences on {split}")
            continue
        for method, metrics in paired[split].items():
            for metric in PAIRED_METRICS:
                ci = (metrics.get(metric) or {}).get("ci95")
                zero = interval_holds_zero(ci)
                if not zero:
                    holds = False
                    failures.append(f"{split} {method} {metric}: interval {ci} " +
                                    ("does not hold 0" if zero is False else "not measured (under two clusters)"))
    checks["intervals_hold_zero"] = holds
    within = True
    for split in SPLITS:
        ratios = (perplexity.get(split) or {}).get("ratio") or {}
        for kind in PERPLEXITIES:
            ratio = ratios.get(kind)
            if ratio is None or not math.isfinite(ratio) or abs(ratio - 1) > gate["perplexity_tolerance"] + 1e-9:
                within = False
                failures.append(f"{split} {kind}: int8/float32 = {ratio} (allowed 1 +- {gate['perplexity_tolerance']})")
    checks["perplexity_within_tolerance"] = within
    return {"checks": checks, "failures": failures, "passed": all(checks.values())}


# --------------------------------------------------------------------------------------------------
# blanks and perplexities, as model.eval draws them


def _nll(model, ids: list[int], groups: torch.Tensor) -> float:
    from model.decoding import sequence_log_likelihood

    return -sequence_log_likelihood(model, ids, groups)[0]


class _Perplexity:
    """Both models on the same sequences and the same random groups of 4 (drawn once, with the evaluation's
    generator, in its order)."""

    def __init__(self, models: dict):
        self.models = models
        self.nll = {name: {"ar": 0.0, "s4": 0.0} for name in models}
        self.tokens = 0

    def add(self, ids: list[int], rng: torch.Generator) -> None:
        from model.plans import sample_training_groups

        n = len(ids)
        if n < 2:
            return  # model.eval's Perplexities.add draws nothing either
        groups = sample_training_groups(n, "perm4", rng)
        for name, model in self.models.items():
            self.nll[name]["ar"] += _nll(model, ids, torch.arange(n))
            self.nll[name]["s4"] += _nll(model, ids, groups)
        self.tokens += n - 1

    def summary(self) -> dict:
        def ppl(name, kind):
            return round(math.exp(self.nll[name][kind] / self.tokens), 4) if self.tokens else None

        out = {name: {"ppl_a3_ar_order": ppl(name, "ar"), "ppl_a3_random_s4": ppl(name, "s4")}
               for name in self.models}
        out["ratio"] = {kind: (round(out["int8"][kind] / out["fp32"][kind], 5) if self.tokens else None)
                        for kind in PERPLEXITIES}
        out["n_tokens"] = self.tokens
        return out


def story_split(loaded, models: dict, *, limit: int | None, seed: int) -> tuple[list[dict], dict]:
    """The story test split's blanks (4 per story, as `model.eval --blanks-per-story 4`) and perplexities.

    evaluate() draws, per story, the perplexity's random groups and then the blanks from one generator, so
    the perplexity is computed here in the same order: the blanks are then the evaluation's own."""
    from model.data.stories import read_stories
    from model.eval.blanks import story_blanks

    tok, start = loaded.tokenizer, loaded.start_token_id
    rng = torch.Generator().manual_seed(seed)
    extra_rng = torch.Generator().manual_seed(seed + 2)  # as evaluate(): the general split draws with seed + 1
    ppl, examples = _Perplexity(models), []
    stories = read_stories("test", None, limit=limit)
    for n, story in enumerate(stories):
        _progress(f"story perplexity {n + 1}/{len(stories)}")
        ids = ([start] + tok(story["text"], add_special_tokens=False).input_ids)[: loaded.max_length]
        ppl.add(ids, rng)
        for j, example in enumerate(story_blanks(tok, start, story["text"], rng, BLANKS_PER_STORY, extra_rng)):
            sample_id = story["id"] if j == 0 else f"{story['id']}#{example['sentence']}"
            examples.append({**example, "id": sample_id, "cluster": story["id"]})
    return examples, ppl.summary()


def general_split(loaded, models: dict, *, limit: int, n_infill: int, seed: int) -> tuple[list[dict], dict]:
    """The general split's blanks (model.eval's: the middle 40% of one sentence per document) and
    perplexities over its `limit` documents (random groups drawn with the evaluation's generator)."""
    from model.data.general import interleave_sources, read_general, sentence_for_infill
    from model.eval.blanks import middle_infill_example

    tok, start = loaded.tokenizer, loaded.start_token_id
    docs = interleave_sources(read_general("test"), limit)
    rng = torch.Generator().manual_seed(seed + 1)
    ppl = _Perplexity(models)
    for n, doc in enumerate(docs):
        _progress(f"general perplexity {n + 1}/{len(docs)}")
        ppl.add(([start] + tok(doc["text"], add_special_tokens=False).input_ids)[: loaded.max_length], rng)
    examples = []
    for doc in docs:
        if len(examples) >= n_infill:
            break
        sentence = sentence_for_infill(doc["text"])
        example = middle_infill_example(tok, start, sentence) if sentence else None
        if example is not None:
            examples.append({**example, "id": doc["id"], "cluster": doc["id"]})
    return examples, ppl.summary()


# --------------------------------------------------------------------------------------------------
# fills


def read_fills(path: str | Path, key: str) -> dict[str, list[int]]:
    """The fills a FillCache file holds for the weights `key`, read only (the file may belong to a running
    evaluation: nothing is written to it)."""
    fills: dict[str, list[int]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a torn line
            continue
        if isinstance(row, dict) and row.get("model") == key and "blank" in row and "fill" in row:
            fills[row["blank"]] = row["fill"]
    return fills


class _Fills:
    """One model's fills: from a read-only file, from this run's cache, or decoded (and then kept)."""

    def __init__(self, model, key: str, given_grouping: str, *, read_only=None, cache_path=None):
        from model.eval.fill_cache import FillCache

        self.model, self.given_grouping = model, given_grouping
        self.read_only = read_fills(read_only, key) if read_only else {}
        self.cache = FillCache(cache_path, key) if cache_path else None
        self.counts = {"read_only": 0, "cache": 0, "decoded": 0}
        self.seconds = 0.0

    def get(self, example: dict, method: str) -> list[int]:
        from model.eval.fill_cache import _blank_key
        from model.eval.infill import fill, method_identity

        identity = method_identity(method)
        found = self.read_only.get(_blank_key(example, identity, self.given_grouping))
        if found is not None:
            self.counts["read_only"] += 1
            return list(found)
        if self.cache is not None and (found := self.cache.get(example, identity, self.given_grouping)) is not None:
            self.counts["cache"] += 1
            return list(found)
        start = time.perf_counter()
        tokens = fill(method, self.model, None, example, self.given_grouping)
        self.seconds += time.perf_counter() - start
        self.counts["decoded"] += 1
        if self.cache is not None:
            self.cache.put(example, identity, self.given_grouping, tokens)
        return tokens


def _mean(xs):
    return round(sum(xs) / len(xs), 4) if xs else None


def compare_fills(loaded, judge, examples: list[dict], methods, fills: dict, split: str) -> dict:
    """Decode (or read) every blank with both models; the shares of identical fills and the paired scores."""
    from rouge_score import rouge_scorer

    from model.eval.metrics import continuation_nll, paired_difference

    tok = loaded.tokenizer
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    same = {m: [] for m in methods}
    agree = {m: [0, 0] for m in methods}
    scores = {m: {name: {k: [] for k in PAIRED_METRICS} for name in ("fp32", "int8")} for m in methods}
    clusters = {m: {"rougeL": [], "nll": []} for m in methods}
    for n, example in enumerate(examples):
        _progress(f"{split} blank {n + 1}/{len(examples)}")
        for method in methods:
            pair = {name: fills[name].get(example, method) for name in ("fp32", "int8")}
            same[method].append(pair["fp32"] == pair["int8"])
            agree[method][0] += sum(a == b for a, b in zip(pair["fp32"], pair["int8"], strict=False))
            agree[method][1] += max(len(pair["fp32"]), len(pair["int8"]))
            clusters[method]["rougeL"].append(example["cluster"])
            if example["suffix"]:
                clusters[method]["nll"].append(example["cluster"])
            for name, tokens in pair.items():
                text = tok.decode(tokens, skip_special_tokens=True).strip()
                scores[method][name]["rougeL"].append(scorer.score(example["reference"], text)["rougeL"].fmeasure * 100)
                if example["suffix"] and judge is not None:
                    after, together = continuation_nll(judge, example["prefix"], tokens, example["suffix"])
                    scores[method][name]["suffix_nll"].append(after)
                    scores[method][name]["text_nll"].append(together)
    paired = {}
    for method in methods:
        paired[method] = {}
        for metric in PAIRED_METRICS:
            a, b = scores[method]["int8"][metric], scores[method]["fp32"][metric]
            which = clusters[method]["rougeL" if metric == "rougeL" else "nll"]
            paired[method][metric] = paired_difference(a, b, clusters=which) if a else \
                {"mean": None, "ci95": None, "n": 0}
            paired[method][metric]["fp32_mean"] = _mean(b)
    all_same = [s for m in methods for s in same[m]]
    return {"n_blanks": len(examples), "n_fills": len(all_same),
            "identical": _mean([float(s) for s in all_same]),
            "identical_by_method": {m: _mean([float(s) for s in same[m]]) for m in methods},
            "token_agreement": {m: round(a / t, 4) if t else None for m, (a, t) in agree.items()},
            "paired": paired, "n_identical": sum(all_same)}


# --------------------------------------------------------------------------------------------------
# the decoding step


def step_times(loaded, models: dict, rounds: int) -> dict:
    """bench.app's decode (A3 plan, left to right, groups of 1; 128 tokens, 64 open) per model, interleaved
    `rounds` times; the fastest round's mean step of each."""
    from bench.roofline import roofline_plan, time_decode_step

    length = min(128, loaded.max_length)
    plan = roofline_plan(loaded.tokenizer, loaded.start_token_id, length, length // 2)
    best = {name: math.inf for name in models}
    steps = 0
    for r in range(rounds):
        _progress(f"timing round {r + 1}/{rounds}")
        for name, model in models.items():
            seconds, steps = time_decode_step(model, plan)
            best[name] = min(best[name], seconds)
    return {"fp32": round(1000 * best["fp32"], 2), "int8": round(1000 * best["int8"], 2),
            "speedup": round(best["fp32"] / best["int8"], 3), "rounds": rounds, "steps": steps,
            "plan": f"A3 plan, left to right, groups of 1, {length} tokens, {length // 2} open"}


# --------------------------------------------------------------------------------------------------


def run(model_name: str = "default", *, limit: int | None = None, general_infill: int = 120,
        general_limit: int = 300, keep=None, methods=GATE_METHODS, seed: int = 0, fp32_fills=None,
        fills_cache=None, timing_rounds: int = 3) -> dict:
    from model.eval.fill_cache import model_key
    from model.eval.infill import base_or_none
    from model.loading import load_model
    from model.precision import cpu_flags
    from model.quant import DEFAULT_KEEP, quantize_model

    t0 = time.perf_counter()
    loaded = load_model(model_name, device="cpu", dtype=torch.float32)
    judge, why_no_judge = base_or_none(loaded)  # the AR base, in float32: it judges both
    keep = DEFAULT_KEEP if keep is None else tuple(keep)
    int8 = quantize_model(copy.deepcopy(loaded.model), keep).eval()
    models = {"fp32": loaded.model, "int8": int8}
    grouping = loaded.given_grouping
    fills = {"fp32": _Fills(loaded.model, model_key(loaded.model), grouping, read_only=fp32_fills,
                            cache_path=fills_cache),
             "int8": _Fills(int8, model_key(int8), grouping, cache_path=fills_cache)}

    splits, perplexity = {}, {}
    if limit != 0:
        examples, perplexity["stories"] = story_split(loaded, models, limit=limit, seed=seed)
        splits["stories"] = compare_fills(loaded, judge, examples, methods, fills, "stories")
    if general_infill and general_limit:
        examples, perplexity["general"] = general_split(loaded, models, limit=general_limit,
                                                        n_infill=general_infill, seed=seed)
        splits["general"] = compare_fills(loaded, judge, examples, methods, fills, "general")
    n_fills = sum(s["n_fills"] for s in splits.values())
    identical = {"pooled": round(sum(s["n_identical"] for s in splits.values()) / n_fills, 4) if n_fills else None,
                 **{split: splits[split]["identical"] if split in splits else None for split in SPLITS}}
    paired = {split: s["paired"] for split, s in splits.items()}
    steps = step_times(loaded, models, timing_rounds) if timing_rounds else None
    quant = int8.a3_quantization
    flags = cpu_flags()
    result = {
        "model": model_name, "scheme": quant.scheme, "keep": list(quant.keep), "kept": list(quant.kept),
        "quantized_linears": quant.quantized, "methods": list(methods), "seed": seed,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "cpu_int8_flags": [f for f in INT8_FLAGS if f in flags],
        "n_blanks": {split: s["n_blanks"] for split, s in splits.items()},
        "identical_fills": identical,
        "identical_by_method": {split: s["identical_by_method"] for split, s in splits.items()},
        "token_agreement": {split: s["token_agreement"] for split, s in splits.items()},
        "paired": paired, "perplexity": perplexity, "step_ms": steps,
        "fills": {name: {**f.counts, "decode_seconds": round(f.seconds, 1)} for name, f in fills.items()},
        **({"judge_unavailable": why_no_judge} if why_no_judge else {}),
        "gate": GATE,
    }
    result.update(verdict(identical, paired, perplexity))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _methods(text: str) -> tuple[str, ...]:
    from model.eval.infill import A3_METHODS

    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    allowed = list(A3_METHODS)
    bad = [m for m in methods if m not in allowed]
    if bad or not methods:
        raise argparse.ArgumentTypeError(f"unknown methods {bad}; choose from {', '.join(allowed)}")
    return methods


def main(argv: list[str] | None = None) -> None:
    from bench import arg_parser, report

    ap = arg_parser(__doc__)
    ap.add_argument("--limit", type=int, default=None, help="the first N test stories (default all; 0: none)")
    ap.add_argument("--general-infill", type=int, default=120, help="general blanks (0: none)")
    ap.add_argument("--general-limit", type=int, default=300,
                    help="general documents for perplexity, the blanks taken from the first of them")
    ap.add_argument("--keep", default=None,
                    help="comma-separated Linear modules kept in float32: lm_head, first, last or globs "
                         "(default model.quant.DEFAULT_KEEP; '' keeps none)")
    ap.add_argument("--methods", type=_methods, default=GATE_METHODS, help="comma-separated A3 methods")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fp32-fills", default=None, metavar="FILE.jsonl",
                    help="read float32 fills from a `model.eval --fills-cache` file (never written)")
    ap.add_argument("--fills-cache", default=None, metavar="FILE.jsonl",
                    help="keep this run's fills here, and read back those a previous run kept")
    ap.add_argument("--timing-rounds", type=int, default=3, help="interleaved timing rounds (0: no timing)")
    args = ap.parse_args(argv)
    for flag, value in (("--limit", args.limit), ("--general-infill", args.general_infill),
                        ("--general-limit", args.general_limit), ("--timing-rounds", args.timing_rounds)):
        if value is not None and value < 0:
            ap.error(f"{flag} must be at least 0; got {value}")
    if args.fp32_fills and not Path(args.fp32_fills).is_file():
        ap.error(f"--fp32-fills {args.fp32_fills}: no such file")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep = None if args.keep is None else [k for k in args.keep.split(",") if k.strip()]
    try:
        result = run(args.model, limit=args.limit, general_infill=args.general_infill,
                     general_limit=args.general_limit, keep=keep, methods=args.methods, seed=args.seed,
                     fp32_fills=args.fp32_fills, fills_cache=args.fills_cache, timing_rounds=args.timing_rounds)
    except ValueError as err:  # a keep entry naming no Linear module
        ap.error(str(err))
    report(result, as_json=args.json)


if __name__ == "__main__":
    main()

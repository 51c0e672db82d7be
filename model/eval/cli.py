"""Evaluate an A3 model on stories and on general text; prints one JSON object on its last line.

    python -m model.eval --json                     # the default model: the story test split + the general split
    python -m model.eval --json --limit 10 --general-limit 30 --model runs/a3-train/final

Perplexities (exact likelihoods, start token excluded):
    ppl_base_ar        the base AR model, left to right
    ppl_a3_ar_order    the A3 model under left-to-right grouping
    ppl_a3_random_s4   the A3 model under random groups of 4 in random order (seeded)
Infilling, greedy, the blank's length given. Stories: one whole sentence masked (as in the paper's
ROCStories task). General text (assets/general, human-written; recipes v2 and later train on its train
split, and its test split holds no document sharing 8 words in a row with the train split; the base
model may well have seen such text in pretraining): the middle 40% of the tokens of one sentence masked,
the sentence alone. Methods:
    a3_plan            the A3 model, the blank decoded left to right, one token per step, both sides given
    a3_outside_in      the same, in the outside-in order: both edges of the blank, then inwards
    a3_dynamic         the A3 model, dynamic decoding by confidence, one token per step
    a3_rerank          best of N (model.rerank): left to right, ends first, dynamic and three sampled runs
                       (one ends first), the one whose whole text the A3 model finds most likely kept
    diffusion          masked diffusion with the A3 model: every step predicts every blank from all
                       known tokens (given + revealed, laid out as the model reads context: each its own
                       group in position order for ours), reveals the most confident one and feeds it
                       back (diffusion_k2: two per step)
    one_step_parallel  every blank predicted from the given tokens only, reveals never fed back
    ar_prefix          the base AR model from the prefix only, cut to the blank's length
    a3_prefix_only     the A3 model, left to right, with the text after the blank removed
Scores per method: ROUGE-1/2/L F1 x 100 of the fill against the original (Google's rouge-score,
stemming on); suffix_nll, the base AR model's mean NLL per token of the text after the blank given
the text before it and the fill (lower: the fill leads into what follows; `reference` is the original's);
and text_nll, the same over the fill and the text after it together (a degenerate fill that merely ends a
sentence gets a low suffix_nll but pays for itself here); ends_sentence, the % of fills whose text ends
in . ! or ? (a masked story sentence always does; `reference` gives the rate of the originals); repeats,
the % of fills that stutter: an immediately doubled word, or a word 3-gram twice, within the fill and the
3 words on each side (`reference`: the originals' rate). `default_method` names the page's default decoder.

How much a mean can be trusted (a split of ~50 blanks is small): `rougeL_ci95` and `suffix_nll_ci95`,
the 95% bootstrap interval of each method's mean (2,000 resamples of the examples, seeded), and
`infill_paired["<a3 method>-<other>"]` (other: every baseline, and a3_plan), the mean per-example
difference of the A3 method minus the other on the same blanks in rougeL, suffix_nll and text_nll, with its
own interval: an interval that holds 0 means the split does not tell the two apart. `--per-example` adds
each method's per-example rougeL, suffix_nll, text_nll, repeats and fill text (and the story of each), for
comparing two models on the same blanks afterwards (`paired_difference`).
`--blanks-per-story N` masks N different sentences of each story, one example each, for narrower
intervals (at best √N narrower: blanks of one story are correlated, so the intervals resample whole
stories); the first blank of each story is the default's. Its means weight a story by its blanks (a
three-sentence story gives two) and cover more sentence positions, so they are a different quantity from
the default run's: compare runs made with the same N.
`--no-repeat 3` decodes every method, baselines included, with the page's no-repeat rule (model.repeats: no word
next to itself, no 3-word phrase twice within 64 tokens, punctuation not a word); its fills are cached apart
from the rule-free ones and from those of another version of the rule.
`--fills-cache FILE.jsonl` keeps every fill as it is decoded; the same command run again after an
interruption reads those back (same weights, blank and method only) and decodes the rest.
`targets` (model.eval.targets, also `python -m model.eval.targets RUN.json`) reads the page-default targets
off the run: which A3 decoders beat AR prefix and diffusion, keep text NLL and repeats, and the model's own.
`--shard K/N` (with --fills-cache) only decodes every N-th story and general sentence into the cache and
scores nothing: N such runs side by side (one thread each: on a small CPU two processes decode more than one
with two threads), then the same command without --shard, which reads them all back and scores.
`--compare A.json B.json` pairs two such runs (each made with --per-example, on the same blanks: checked)
and prints B minus A for every method both hold, with clustered intervals; nothing is loaded or decoded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from model.eval.fill_cache import FillCache, model_key
from model.eval.infill import EVAL_METHODS, EXTRA_METHODS, compare_runs, evaluate
from model.eval.runs import parse_shard, read_run
from model.eval.targets import check as check_targets


def _compare_files(ap, path_a: str, path_b: str) -> dict:
    try:
        runs = [read_run(path) for path in (path_a, path_b)]
    except ValueError as err:
        ap.error(f"--compare {err}")
    try:
        return {"first": path_a, "second": path_b, "second_minus_first": compare_runs(*runs)}
    except ValueError as err:
        ap.error(f"--compare: {err}")


def main(argv: list[str] | None = None) -> None:
    from model.loading import ModelLoadError, load_model

    ap = argparse.ArgumentParser(prog="python -m model.eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="default | tiny | a checkpoint or adapter directory")
    ap.add_argument("--limit", type=int, default=None, help="only the first N test stories (0: general text only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", choices=["test", "validation"])
    ap.add_argument("--data-dir", default=None, help="a story corpus directory (default assets/stories)")
    ap.add_argument("--general-dir", default=None, help="a general corpus directory (default assets/general)")
    ap.add_argument("--general-limit", type=int, default=300,
                    help="general documents for perplexity, balanced over sources (0: skip general text)")
    ap.add_argument("--general-infill", type=int, default=120, help="general sentences for infilling")
    ap.add_argument("--methods", default=",".join(EVAL_METHODS),
                    help=f"comma-separated, from {', '.join(EVAL_METHODS + EXTRA_METHODS)}")
    ap.add_argument("--per-example", action="store_true",
                    help="add each method's per-example rougeL and suffix_nll (to compare two models later)")
    ap.add_argument("--blanks-per-story", type=int, default=1,
                    help="mask this many different sentences of each story, one example each (narrower intervals)")
    ap.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), default=None,
                    help="print B minus A for two --per-example runs on the same blanks; evaluates nothing")
    ap.add_argument("--fills-cache", default=None, metavar="FILE.jsonl",
                    help="keep every fill here as it is decoded, and read back the ones an interrupted run of "
                         "the same model already made (run the same command again to go on)")
    ap.add_argument("--shard", default=None, metavar="K/N",
                    help="only decode the K-th of every N stories and general sentences into --fills-cache "
                         "(K from 0); score nothing")
    ap.add_argument("--no-repeat", type=int, default=0, metavar="N",
                    help="every method decodes with the no-repeat rule (model.repeats): no token next to itself, "
                         "no token N-gram twice nearby (0: off)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args(argv)
    if args.compare:
        print(json.dumps(_compare_files(ap, *args.compare)))
        return
    for flag, value, least in (("--blanks-per-story", args.blanks_per_story, 1), ("--limit", args.limit, 0),
                               ("--general-limit", args.general_limit, 0), ("--threads", args.threads, 1),
                               ("--general-infill", args.general_infill, 0)):
        if value is not None and value < least:
            ap.error(f"{flag} must be at least {least}; got {value}")
    shard = None
    if args.shard is not None:
        try:
            shard = parse_shard(args.shard)
        except ValueError as err:
            ap.error(str(err))
        if not args.fills_cache:
            ap.error("--shard keeps its fills in --fills-cache FILE.jsonl: name one (the same for every shard)")
    if args.no_repeat < 0 or args.no_repeat == 1:
        ap.error(f"--no-repeat must be 0 (off) or an n-gram size of at least 2; got {args.no_repeat}")
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = set(methods) - set(EVAL_METHODS + EXTRA_METHODS)
    if unknown or not methods:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(EVAL_METHODS + EXTRA_METHODS)}")
    try:
        loaded = load_model(args.model)
    except ModelLoadError as err:
        ap.exit(3, f"--model {args.model}: {err}\n")
    fills_cache = FillCache(args.fills_cache, model_key(loaded.model)) if args.fills_cache else None
    result = evaluate(loaded, limit=args.limit, seed=args.seed, split=args.split, methods=methods,
                      data_dir=Path(args.data_dir) if args.data_dir else None,
                      general_limit=args.general_limit, general_infill=args.general_infill,
                      general_dir=Path(args.general_dir) if args.general_dir else None,
                      per_example=args.per_example, blanks_per_story=args.blanks_per_story,
                      fills_cache=fills_cache, shard=shard, no_repeat=args.no_repeat)
    if shard is not None:
        print(json.dumps(result))
        return
    result["targets"] = check_targets(result)
    if not args.json:
        for sample in result["samples"]:
            print(json.dumps(sample, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Evaluate an A3 model on the story test split; prints one JSON object on its last line.

    python -m model.eval --json                     # the default model, the full test split
    python -m model.eval --json --limit 50 --model runs/a3-train/final

Perplexities (exact likelihoods, start token excluded):
    ppl_base_ar        the base AR model, left to right
    ppl_a3_ar_order    the A3 model under left-to-right grouping
    ppl_a3_random_s4   the A3 model under random groups of 4 in random order (seeded)
Story infilling (one whole sentence of each story masked, as in the paper's ROCStories task), ROUGE
F1 x 100 of the generated sentence against the original (Google's rouge-score, stemming on), greedy:
    a3_plan            the A3 model, the blank decoded left to right, both sides given
    a3_dynamic         the A3 model, dynamic decoding by confidence, one token per step
    diffusion_style    the A3 model, every blank token predicted from the given tokens only
    ar_prefix          the base AR model from the prefix only, cut to the sentence's length
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from model.decoding import (
    collect,
    decode_ar_baseline,
    decode_diffusion,
    decode_dynamic,
    decode_plan,
    sequence_log_likelihood,
)
from model.plans import make_plan, sample_training_groups
from model.stories import read_stories, split_sentences

METHODS = ("a3_plan", "a3_dynamic", "diffusion_style", "ar_prefix")


def ar_log_likelihood(base, token_ids) -> float:
    """log p(x_1..n | x_0) under the base AR model (content stream: row i-1 predicts token i)."""
    ids = torch.as_tensor(token_ids, dtype=torch.long, device=next(base.parameters()).device).view(1, -1)
    with torch.no_grad():
        logits = base(ids, return_content_logits=True).content_logits[0, :-1].float()
    return float(logits.log_softmax(-1).gather(-1, ids[0, 1:, None]).sum())


def infill_example(tokenizer, start_id: int, text: str, rng: torch.Generator) -> dict | None:
    """Mask one sentence (not the first: there is always a prefix) as a blank of its exact length."""
    sentences = split_sentences(text)
    if len(sentences) < 3:
        return None
    k = int(torch.randint(1, len(sentences), (1,), generator=rng))
    before, target, after = " ".join(sentences[:k]), " " + sentences[k], " ".join(sentences[k + 1 :])
    prefix = [start_id] + tokenizer(before, add_special_tokens=False).input_ids
    middle = tokenizer(target, add_special_tokens=False).input_ids
    suffix = tokenizer(" " + after, add_special_tokens=False).input_ids if after else []
    ids = prefix + middle + suffix
    given = torch.ones(len(ids), dtype=torch.bool)
    given[len(prefix) : len(prefix) + len(middle)] = False
    return {"ids": torch.tensor(ids), "given": given, "reference": target.strip(),
            "span": (len(prefix), len(prefix) + len(middle))}


def fill(method: str, model, base, example: dict):
    plan = make_plan(example["ids"], given=example["given"], order="left_to_right")
    if method == "a3_plan":
        trace = collect(decode_plan(model, plan, preview_open=False))
    elif method == "a3_dynamic":
        trace = collect(decode_dynamic(model, plan, strategy="confidence", k=1))
    elif method == "diffusion_style":
        trace = collect(decode_diffusion(model, plan, k=1))
    else:
        trace = collect(decode_ar_baseline(base, plan))
    lo, hi = example["span"]
    return trace.final_ids[lo:hi]


def evaluate(loaded, *, limit: int | None = None, seed: int = 0, split: str = "test",
             methods=METHODS, data_dir=None) -> dict:
    from rouge_score import rouge_scorer

    stories = read_stories(split, data_dir, limit=limit)
    model, base, tok, start = loaded.model, loaded.base(), loaded.tokenizer, loaded.start_token_id
    rng = torch.Generator().manual_seed(seed)
    nll = {"base_ar": 0.0, "a3_ar": 0.0, "a3_random_s4": 0.0}
    n_tokens = 0
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = {m: {"rouge1": [], "rouge2": [], "rougeL": []} for m in methods}
    samples = []
    t0 = time.perf_counter()
    for story in stories:
        ids = [start] + tok(story["text"], add_special_tokens=False).input_ids
        ids = ids[: loaded.max_length]
        n = len(ids)
        nll["base_ar"] -= ar_log_likelihood(base, ids)
        nll["a3_ar"] -= sequence_log_likelihood(model, ids, torch.arange(n))[0]
        nll["a3_random_s4"] -= sequence_log_likelihood(model, ids, sample_training_groups(n, "perm4", rng))[0]
        n_tokens += n - 1
        example = infill_example(tok, start, story["text"], rng)
        if example is None:
            continue
        filled = {}
        for method in methods:
            text = tok.decode(fill(method, model, base, example), skip_special_tokens=True).strip()
            filled[method] = text
            for key, value in scorer.score(example["reference"], text).items():
                scores[method][key].append(value.fmeasure * 100)
        if len(samples) < 5:
            samples.append({"id": story["id"], "reference": example["reference"], **filled})
    mean = lambda xs: round(sum(xs) / len(xs), 2) if xs else float("nan")  # noqa: E731
    return {
        "model": loaded.name, "trained": loaded.trained, "split": split,
        "ppl_base_ar": round(math.exp(nll["base_ar"] / n_tokens), 3),
        "ppl_a3_ar_order": round(math.exp(nll["a3_ar"] / n_tokens), 3),
        "ppl_a3_random_s4": round(math.exp(nll["a3_random_s4"] / n_tokens), 3),
        "infill": {m: {k: mean(v) for k, v in s.items()} for m, s in scores.items()},
        "n_examples": len(stories), "n_infill": len(scores[methods[0]]["rouge1"]), "n_tokens": n_tokens,
        "seed": seed, "seconds": round(time.perf_counter() - t0, 1), "samples": samples,
    }


def main(argv: list[str] | None = None) -> None:
    from model.loading import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="default | tiny | a checkpoint directory")
    ap.add_argument("--limit", type=int, default=None, help="only the first N test stories")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", choices=["test", "validation"])
    ap.add_argument("--data-dir", default=None, help="a corpus directory (default assets/stories)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from pathlib import Path

    loaded = load_model(args.model)
    result = evaluate(loaded, limit=args.limit, seed=args.seed, split=args.split,
                      data_dir=Path(args.data_dir) if args.data_dir else None)
    if not args.json:
        for sample in result["samples"]:
            print(json.dumps(sample, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Would another order's exact likelihood choose better fills than left to right? A decoded pool, scored again.

Best of N keeps the candidate whose whole text the A3 model finds most likely under left-to-right grouping.
A3 gives the exact likelihood under any order, so the choice could read another: the fill after all the
text around it ("fill last": log p(fill | prefix and suffix), the fill left to right or right to left), the
fill in random orders after that text, or the whole text in random orders. This scores every candidate of
a pool (`model.eval.candidates --out`) under each, and weighs the choices each would make:

    python -m model.eval.order_scores runs/eval/pool.jsonl --out runs/eval/pool-orders.jsonl [--threads 2]
    python -m model.eval.order_scores --summary runs/eval/pool-orders.jsonl     # one JSON object

The blanks are read again from the split (`candidates.pool_blanks`, the same arguments as the pool's: the
defaults are the pool's). The summary keeps, per scorer, the best-scoring candidate of today's best of N
among those the pool holds, and reports its means and its difference from today's choice (left to right)
on rougeL and text NLL, paired and story-clustered. docs/evaluation.md has what it found.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from model.decoding import batch_log_likelihood
from model.eval.candidates import by_split, kept_measures, load_or_exit, means, paired_minus, pool_blanks
from model.rerank import CANDIDATES


def order_groups(span: tuple[int, int], length: int, fill_order: torch.Tensor | None = None) -> torch.Tensor:
    """Group ids: every position outside the span in position order (the text around the fill, each its own
    group, as a causal model reads given text), then the span's positions, one group each, in `fill_order`
    (a permutation of 0..span length - 1; default left to right)."""
    lo, hi = span
    groups = torch.empty(length, dtype=torch.long)
    outside = [p for p in range(length) if not lo <= p < hi]
    groups[outside] = torch.arange(len(outside))
    order = torch.arange(hi - lo) if fill_order is None else torch.as_tensor(fill_order)
    groups[lo:hi] = len(outside) + order
    return groups


@torch.no_grad()
def score_fills(model, example: dict, fills: list[list[int]], *, n_random: int = 2,
                generator: torch.Generator | None = None) -> dict[str, list[float]]:
    """Each fill's exact log-likelihood under the other orders (one forward pass per order for all fills):
    fill_last and fill_last_rtl (log p of the fill after the text around it, left to right / right to left),
    fill_random (the same, the fill in `n_random` random orders, averaged) and whole_random (log p of the
    whole text but the start token, `n_random` random orders of the positions after it, averaged)."""
    generator = generator or torch.Generator().manual_seed(0)
    ids0 = torch.as_tensor(example["ids"], dtype=torch.long)
    lo, hi = example["span"]
    length, width = ids0.numel(), hi - lo
    if any(len(f) != width for f in fills):
        raise ValueError(f"every fill must have the span's {width} tokens.")
    ids = torch.stack([torch.cat([ids0[:lo], torch.as_tensor(f, dtype=torch.long), ids0[hi:]]) for f in fills])
    in_fill = torch.zeros(length, dtype=torch.bool)
    in_fill[lo:hi] = True

    def fill_score(order=None) -> list[float]:
        return batch_log_likelihood(model, ids, order_groups((lo, hi), length, order), in_fill)[0].tolist()

    def mean(rows: list[list[float]]) -> list[float]:
        return [sum(col) / len(col) for col in zip(*rows, strict=True)]

    scores = {"fill_last": fill_score(), "fill_last_rtl": fill_score(torch.arange(width).flip(0))}
    scores["fill_random"] = mean([fill_score(torch.randperm(width, generator=generator)) for _ in range(n_random)])
    whole = []
    for _ in range(n_random):
        groups = torch.zeros(length, dtype=torch.long)
        groups[1:] = 1 + torch.randperm(length - 1, generator=generator)
        whole.append(batch_log_likelihood(model, ids, groups)[0].tolist())
    scores["whole_random"] = mean(whole)
    return scores


SCORERS = {  # name -> a candidate's score (higher is kept); the first is today's choice
    "left to right (today)": lambda c: c["logp"],
    "fill last": lambda c: c["fill_last"],
    "fill last, right to left": lambda c: c["fill_last_rtl"],
    "fill last, random orders": lambda c: c["fill_random"],
    "whole text, random orders": lambda c: c["whole_random"],
    "left to right + fill last": lambda c: c["logp"] + c["fill_last"],
    "left to right + whole random": lambda c: c["logp"] + c["whole_random"],
}


def rescore_pool(loaded, pool: Path, out: Path, *, n_random: int = 2, names=None, **blanks) -> int:
    """Write `out`: the pool's records, each candidate of `names` (default today's best of N's) with its
    scores under the other orders. Returns the records written."""
    names = set(names or (name for name, _ in CANDIDATES))
    examples = {sample_id: example for sample_id, _, _, example in pool_blanks(loaded, **blanks)}
    generator = torch.Generator().manual_seed(123)
    written = 0
    with out.open("w", encoding="utf-8") as fh:
        for line in pool.read_text().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if record["id"] not in examples:
                raise ValueError(f"blank {record['id']!r} of {pool} is not one of the split's: give the pool's "
                                 "--split, --limit, --blanks-per-story and --general-infill.")
            record["candidates"] = [c for c in record["candidates"] if c["name"] in names]
            scores = score_fills(loaded.model, examples[record["id"]], [c["fill"] for c in record["candidates"]],
                                 n_random=n_random, generator=generator)
            for i, candidate in enumerate(record["candidates"]):
                candidate.update({key: round(values[i], 4) for key, values in scores.items()})
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            written += 1
    return written


def summary(records: list[dict]) -> dict:
    """Per split and scorer: the kept candidates' means (rougeL, suffix NLL, text NLL, repeats %, sentence
    ends %), and each scorer minus today's on rougeL and text NLL (paired, story-clustered)."""
    from rouge_score import rouge_scorer

    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    out: dict = {}
    for part, rows, clusters in by_split(records):
        result: dict = {"blanks": len(rows)}
        per: dict = {}
        for label, score in SCORERS.items():
            kept = [max(r["candidates"], key=lambda c, r=r: (score(c), -r["candidates"].index(c))) for r in rows]
            per[label] = kept_measures(rows, kept, rouge)
            result[label] = means(per[label])
        today = next(iter(SCORERS))
        for label in list(SCORERS)[1:]:
            for metric in ("rougeL", "text_nll"):
                result[label][f"{metric} minus today"] = paired_minus(per[label][metric], per[today][metric], clusters)
        out[part] = result
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pool", nargs="?", help="a pool decoded by model.eval.candidates --out")
    ap.add_argument("--out", default=None, metavar="FILE.jsonl", help="write the pool with the other orders' scores")
    ap.add_argument("--summary", default=None, metavar="FILE.jsonl", help="weigh the scorers on a scored pool")
    ap.add_argument("--model", default="default")
    ap.add_argument("--split", default="validation", choices=["validation", "test"])
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--blanks-per-story", type=int, default=2)
    ap.add_argument("--general-infill", type=int, default=30)
    ap.add_argument("--random-orders", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.summary:
        path = Path(args.summary)
        if not path.is_file():
            ap.error(f"--summary: no file {path}")
        print(json.dumps(summary([json.loads(line) for line in path.read_text().splitlines() if line.strip()])))
        return
    if not args.pool or not args.out:
        ap.error("give a POOL.jsonl and --out FILE.jsonl (score), or --summary FILE.jsonl (weigh)")
    if not Path(args.pool).is_file():
        ap.error(f"no pool file {args.pool}")
    if args.random_orders < 1:
        ap.error(f"--random-orders must be at least 1; got {args.random_orders}")
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_or_exit(ap, args.model)
    try:
        written = rescore_pool(loaded, Path(args.pool), Path(args.out), n_random=args.random_orders,
                               split=args.split, limit=args.limit, blanks_per_story=args.blanks_per_story,
                               general_infill=args.general_infill)
    except ValueError as err:
        ap.exit(2, f"{err}\n")
    print(json.dumps({"out": args.out, "written": written}))


if __name__ == "__main__":
    sys.exit(main())

"""Which candidates best of N should decode: a pool of candidates decoded on the evaluation's blanks, each
with its A3 score and the judge's measures, so that any set of them can be weighed without decoding again.

    python -m model.eval.candidates --out runs/eval/pool.jsonl --split validation --limit 40 \
        --blanks-per-story 2 --general-infill 30 [--shard 0/2] [--threads 1]
    python -m model.eval.candidates --summary runs/eval/pool.jsonl     # one JSON object: every set, measured

The pool (POOL) is best of N's candidates of today and of before, more left-to-right runs sampled at T = 0.7
and a second sampled ends-first run, every one with the no-repeat rule (`--no-repeat`, default the page's 3).
They are decoded together (`model.rerank.best_of_n`: one lockstep, each exactly as alone) on the blanks
`model.eval` draws for the same split and seed, so a set's choice here is what best of N with that set would
keep. Each line of the output holds one blank: every candidate's fill, its exact A3 log p (left-to-right
grouping), and the base model's suffix and text NLL, whether it repeats itself and whether it ends a
sentence. The summary keeps, for every set of SETS, the most likely candidate of each blank (ties to the
earlier one in the set) and reports the means, the candidates kept, and each set minus the first on rougeL
and text NLL with story-clustered intervals. This is how best of N's candidates were chosen on the
validation split (docs/evaluation.md, "Ends first"); the test split is for the whole run only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from model.config import DecodeConfig, Sampler
from model.eval.infill import Perplexities, base_or_none, general_examples, story_examples
from model.eval.metrics import continuation_nll, ends_sentence, has_repeat, paired_difference
from model.eval.runs import parse_shard
from model.rerank import CANDIDATES, best_of_n, candidates_with


def _plan(order: str, seed: int | None = None) -> DecodeConfig:
    sampler = Sampler(0.7) if seed is not None else Sampler()
    return DecodeConfig("plan", order=order, sampler=sampler, seed=seed or 0, preview_open=False)


BEFORE = ("left to right", "outside-in", "dynamic (confidence)", "right to left", "sampled, T 0.7, seed 1",
          "sampled, T 0.7, seed 2")  # best of N's candidates until ends first joined them
POOL: tuple[tuple[str, DecodeConfig], ...] = (
    *CANDIDATES,
    ("outside-in", _plan("outside_in")),
    ("right to left", _plan("right_to_left")),
    *((f"sampled, T 0.7, seed {s}", _plan("left_to_right", s)) for s in (3, 4, 5, 6)),
    ("ends first, sampled, T 0.7, seed 2", _plan("ends_first", 2)),
)
SETS = {"before": BEFORE, "now": tuple(name for name, _ in CANDIDATES),
        "now + 4 sampled": (*(name for name, _ in CANDIDATES), *(f"sampled, T 0.7, seed {s}" for s in (3, 4, 5, 6))),
        "the whole pool": tuple(name for name, _ in POOL)}


def blank_record(model, base, tokenizer, example: dict, *, given_grouping: str = "causal", no_repeat: int = 3,
                 pool=POOL) -> dict:
    """One blank: every candidate of `pool` decoded, scored by the A3 model and measured by the judge."""
    lo, hi = example["span"]
    found = best_of_n(model, example["ids"], example["given"], candidates=candidates_with(no_repeat, pool),
                      given_grouping=given_grouping)
    before = tokenizer.decode(example["prefix"], skip_special_tokens=True)
    after = tokenizer.decode(example["suffix"], skip_special_tokens=True)

    def judged(fill: list[int]) -> tuple:
        if base is None or not example["suffix"]:
            return None, None
        return continuation_nll(base, example["prefix"], fill, example["suffix"])

    candidates = []
    for c in found.candidates:
        fill = list(c.trace.final_ids[lo:hi])
        text = tokenizer.decode(fill, skip_special_tokens=True).strip()
        suffix, whole = judged(fill)
        candidates.append({"name": c.name, "logp": round(c.logp, 4), "fill": fill, "text": text,
                           "suffix_nll": suffix, "text_nll": whole, "repeat": has_repeat(before, text, after),
                           "ends": ends_sentence(text)})
    reference = example["ids"][lo:hi].tolist()
    suffix, whole = judged(reference)
    return {"reference": example["reference"], "reference_suffix_nll": suffix, "reference_text_nll": whole,
            "candidates": candidates}


def pool_blanks(loaded, *, split: str = "validation", limit: int | None = 40, blanks_per_story: int = 2,
                general_infill: int = 30, seed: int = 0, data_dir=None, general_dir=None) -> list[tuple]:
    """(sample id, "stories" or "general", cluster, example) for every blank `model.eval` draws for the split
    and seed, in its order."""
    from model.data.general import interleave_sources, read_general
    from model.data.stories import read_stories

    rng = torch.Generator().manual_seed(seed)
    extra = torch.Generator().manual_seed(seed + 2)
    blanks = [(sample_id, "stories", story["id"], example) for _, story, sample_id, example in
              story_examples(loaded, read_stories(split, data_dir, limit=limit), rng, extra, blanks_per_story,
                             Perplexities(loaded.model, None, rng).skip)]
    if general_infill:
        docs = interleave_sources(read_general(split, general_dir), None)
        blanks += [(doc["id"], "general", doc["id"], example)
                   for _, doc, example in general_examples(loaded.tokenizer, loaded.start_token_id, docs,
                                                           general_infill)]
    return blanks


def decode_pool(loaded, out: Path, *, split: str = "validation", limit: int | None = 40, blanks_per_story: int = 2,
                general_infill: int = 30, seed: int = 0, shard: tuple[int, int] = (0, 1), no_repeat: int = 3,
                data_dir=None, general_dir=None) -> int:
    """Append one line per blank of this shard to `out` (blanks already there are skipped: run it again to
    go on). The blanks are `model.eval`'s for the split and seed (`pool_blanks`). Returns the lines written."""
    base, _ = base_or_none(loaded)
    model, tok = loaded.model, loaded.tokenizer
    done = set()
    if out.exists():
        done = {json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()}
    blanks = pool_blanks(loaded, split=split, limit=limit, blanks_per_story=blanks_per_story,
                         general_infill=general_infill, seed=seed, data_dir=data_dir, general_dir=general_dir)
    written = 0
    with out.open("a", encoding="utf-8") as fh:
        for n, (sample_id, part, cluster, example) in enumerate(blanks):
            if n % shard[1] != shard[0] or sample_id in done:
                continue
            record = blank_record(model, base, tok, example, given_grouping=loaded.given_grouping,
                                  no_repeat=no_repeat)
            fh.write(json.dumps({"id": sample_id, "split": part, "cluster": cluster, **record}) + "\n")
            fh.flush()
            written += 1
    return written


def kept(record: dict, names) -> dict:
    """The candidate of `names` best of N with that set keeps: the highest log p, ties to the earlier."""
    by_name = {c["name"]: c for c in record["candidates"]}
    chosen = [by_name[name] for name in names]
    return max(chosen, key=lambda c: (c["logp"], -chosen.index(c)))


def kept_measures(rows: list[dict], kept: list[dict], rouge) -> dict[str, list]:
    """Per blank, the measures of the candidate kept for it: rougeL against the original (`rouge`, a
    rouge_score RougeScorer), the judge's suffix and text NLL, repeats and sentence ends (%)."""
    return {"rougeL": [rouge.score(r["reference"], c["text"])["rougeL"].fmeasure * 100
                       for r, c in zip(rows, kept, strict=True)],
            "suffix_nll": [c["suffix_nll"] for c in kept], "text_nll": [c["text_nll"] for c in kept],
            "repeats": [100.0 * c["repeat"] for c in kept], "ends_sentence": [100.0 * c["ends"] for c in kept]}


def means(values: dict[str, list]) -> dict[str, float]:
    """Each measure's mean over the blanks that have it (a blank with no suffix has no judge's NLL)."""
    return {k: round(sum(x for x in v if x is not None) / max(1, sum(x is not None for x in v)), 3)
            for k, v in values.items()}


def paired_minus(a: list, b: list, clusters: list) -> dict:
    """a minus b over the blanks where both have a value, paired and clustered (story-clustered intervals)."""
    both = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x is not None and y is not None]
    return paired_difference([a[i] for i in both], [b[i] for i in both], clusters=[clusters[i] for i in both])


def by_split(records: list[dict]):
    """(split, its records, their story clusters) for each split of a pool that has records."""
    for part in ("stories", "general"):
        rows = [r for r in records if r["split"] == part]
        if rows:
            yield part, rows, [r["cluster"] for r in rows]


def summary(records: list[dict], sets=None) -> dict:
    """Per split and set: the means of the kept candidates' measures, which candidates were kept, and each
    set minus the first (rougeL, text NLL; paired, story-clustered)."""
    from rouge_score import rouge_scorer

    sets = sets or SETS
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    out: dict = {}
    for part, rows, clusters in by_split(records):
        per_set, result = {}, {"blanks": len(rows)}
        for label, names in sets.items():
            chosen = [kept(r, names) for r in rows]
            per_set[label] = values = kept_measures(rows, chosen, scorer)
            picks: dict[str, int] = {}
            for c in chosen:
                picks[c["name"]] = picks.get(c["name"], 0) + 1
            result[label] = {**means(values), "kept": dict(sorted(picks.items(), key=lambda kv: -kv[1]))}
        first = next(iter(sets))
        for label in list(sets)[1:]:
            result[label][f"minus {first}"] = {metric: paired_minus(per_set[label][metric], per_set[first][metric],
                                                                    clusters)
                                               for metric in ("rougeL", "text_nll")}
        out[part] = result
    return out


def load_or_exit(ap: argparse.ArgumentParser, name: str):
    """The model named by --model, or the parser's exit with the reason (status 3)."""
    from model.loading import ModelLoadError, load_model

    try:
        return load_model(name)
    except ModelLoadError as err:
        ap.exit(3, f"--model {name}: {err}\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, metavar="FILE.jsonl", help="decode the pool into this file (appends)")
    ap.add_argument("--summary", default=None, metavar="FILE.jsonl", help="weigh the sets on a decoded pool")
    ap.add_argument("--model", default="default")
    ap.add_argument("--split", default="validation", choices=["validation", "test"])
    ap.add_argument("--limit", type=int, default=40, help="stories of the split (default 40)")
    ap.add_argument("--blanks-per-story", type=int, default=2)
    ap.add_argument("--general-infill", type=int, default=30, help="general sentences (0: none)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--general-dir", default=None)
    ap.add_argument("--shard", default="0/1", metavar="K/N")
    ap.add_argument("--no-repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if bool(args.out) == bool(args.summary):
        ap.error("give --out FILE.jsonl (decode) or --summary FILE.jsonl (weigh), one of them")
    if args.summary:
        path = Path(args.summary)
        if not path.is_file():
            ap.error(f"--summary: no file {path}")
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        print(json.dumps(summary(records)))
        return
    try:
        shard = parse_shard(args.shard)
    except ValueError as err:
        ap.error(str(err))
    for flag, value, least in (("--limit", args.limit, 1), ("--blanks-per-story", args.blanks_per_story, 1),
                               ("--general-infill", args.general_infill, 0), ("--no-repeat", args.no_repeat, 0)):
        if value < least:
            ap.error(f"{flag} must be at least {least}; got {value}")
    if args.no_repeat == 1:
        ap.error("--no-repeat must be 0 (off) or an n-gram size of at least 2; got 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_or_exit(ap, args.model)
    written = decode_pool(loaded, Path(args.out), split=args.split, limit=args.limit,
                          blanks_per_story=args.blanks_per_story, general_infill=args.general_infill, shard=shard,
                          no_repeat=args.no_repeat, data_dir=Path(args.data_dir) if args.data_dir else None,
                          general_dir=Path(args.general_dir) if args.general_dir else None)
    print(json.dumps({"out": args.out, "written": written, "shard": list(shard)}))


if __name__ == "__main__":
    sys.exit(main())

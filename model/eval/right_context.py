"""What the text after a blank buys: teacher-forced NLL of the true fill with and without it.

    python -m model.eval.right_context --json [--model default|PATH] [--split validation] [--limit 40]

For the evaluation's blanks (stories: one whole sentence; general text: the middle 40% of a sentence)
this scores the *original* fill, exactly, in one forward pass each:

    a3_both_sides    the A3 model, given prefix and suffix (causal), the blank left to right after them
    a3_prefix_only   the same with the suffix removed
    base_prefix      the base AR model from the prefix (the reference a model without right context has)

as mean NLL per fill token (lower is better). `a3_prefix_only - a3_both_sides` is what the right context
is worth to the model; greedy decoding (model.eval) only shows it through the fills it picks. Fast (three
forward passes per blank), so it serves as the development measure while training; the test split
stays for model.eval. Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json

import torch

from model.decoding import causal_log_probs, sequence_log_likelihood
from model.plans import make_plan


def fill_nll(model, example: dict, given_grouping: str = "causal") -> float:
    """Mean NLL per token of the blank's original tokens under the A3 model, the blank left to right."""
    lo, hi = example["span"]
    plan = make_plan(example["ids"], given=example["given"], order="left_to_right", given_grouping=given_grouping)
    open_ = ~torch.as_tensor(example["given"], dtype=torch.bool)
    total, _ = sequence_log_likelihood(model, example["ids"], plan.group_ids, scored=open_)
    return -total / (hi - lo)


def base_fill_nll(base, example: dict) -> float:
    """Mean NLL per token of the blank's original tokens under the base AR model, prefix only."""
    lo, hi = example["span"]
    logps = causal_log_probs(base, example["ids"][:hi])  # (hi - 1,): row i - 1 predicts token i
    return -float(logps[lo - 1 : hi - 1].sum()) / (hi - lo)


def measure(loaded, examples: list[dict]) -> dict:
    from model.eval.blanks import prefix_only
    from model.eval.infill import base_or_none

    base, _ = base_or_none(loaded)
    grouping = loaded.given_grouping
    both = [fill_nll(loaded.model, e, grouping) for e in examples]
    prefix = [fill_nll(loaded.model, prefix_only(e), grouping) for e in examples]
    out = {"n": len(examples), "a3_both_sides": _mean(both), "a3_prefix_only": _mean(prefix)}
    if base is not None:
        out["base_prefix"] = _mean([base_fill_nll(base, e) for e in examples])
    out["right_context_gain"] = round(out["a3_prefix_only"] - out["a3_both_sides"], 4) if examples else None
    return out


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def examples_of(loaded, split: str, limit: int | None, seed: int = 0) -> dict[str, list[dict]]:
    """The evaluation's blank shapes on a split: stories (one sentence) and general text (mid-sentence)."""
    from model.data.general import interleave_sources, read_general, sentence_for_infill
    from model.data.stories import read_stories
    from model.eval.blanks import infill_example, middle_infill_example

    tok, start = loaded.tokenizer, loaded.start_token_id
    rng = torch.Generator().manual_seed(seed)
    stories = [infill_example(tok, start, s["text"], rng) for s in read_stories(split, limit=limit)]
    general = []
    for doc in interleave_sources(read_general(split), limit):
        sentence = sentence_for_infill(doc["text"])
        general.append(middle_infill_example(tok, start, sentence) if sentence else None)
    return {"stories": [e for e in stories if e is not None], "general": [e for e in general if e is not None]}


def main(argv: list[str] | None = None) -> None:
    from model.loading import load_model

    ap = argparse.ArgumentParser(prog="python -m model.eval.right_context", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="default | tiny | a checkpoint or adapter directory")
    ap.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    ap.add_argument("--limit", type=int, default=40, help="stories, and general documents per source mix")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="only the JSON line")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    result = {"model": loaded.name, "split": args.split, "seed": args.seed,
              **{name: measure(loaded, examples) for name, examples in
                 examples_of(loaded, args.split, args.limit, args.seed).items()}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Masked diffusion's speed: the known text before the first blank kept in the cache, against a full recompute.

    python -m bench.diffusion --json [--model default|tiny] [--blanks 4] [--threads 2]

The evaluation's story blanks (the test split's first `blanks` stories, one sentence masked each, as
`python -m model.eval` draws them), each decoded by diffusion (k = 1, confidence, the page's no-repeat rule)
twice: with the cache (`decode_diffusion`'s default: the known rows before the first open position computed
once) and with every row recomputed every step (`cache=False`). Reports the seconds of each, their ratio, and
whether every fill came out the same. The given text is laid out as the model reads it (each token its own
group, left to right, for the shipped adapter); for a model that reads it as one bidirectional group there is
nothing to keep, and both runs recompute. Prints one JSON object on its last line; numbers, not assertions.
"""

from __future__ import annotations

import time

import torch

from bench import arg_parser, report
from model.decoding import collect, decode
from model.plans import make_plan


def story_blanks(loaded, n: int) -> list[dict]:
    """The first `n` test stories' blanks, drawn as the evaluation draws them (seed 0, one per story)."""
    from model.data.stories import read_stories
    from model.eval.blanks import story_blanks as draw

    rng, extra = torch.Generator().manual_seed(0), torch.Generator().manual_seed(2)
    blanks = []
    for story in read_stories("test", limit=n):
        blanks += draw(loaded.tokenizer, loaded.start_token_id, story["text"], rng, 1, extra)
    return [b for b in blanks if len(b["ids"]) <= loaded.max_length]


def run(model_name: str, n_blanks: int, threads: int | None = None) -> dict:
    from model.eval.infill import method_config
    from model.loading import load_model

    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(model_name, device="cpu")
    config = method_config("diffusion", 3)
    blanks = story_blanks(loaded, n_blanks)
    plans = [make_plan(b["ids"], given=b["given"], order="left_to_right", given_grouping=loaded.given_grouping)
             for b in blanks]
    collect(decode(loaded.model, plans[0], config))  # warm-up: allocator, thread pool
    seconds, fills = {True: 0.0, False: 0.0}, {True: [], False: []}
    for plan in plans:
        for cache in (True, False):  # in turn, so that a slower stretch of the machine hits both
            start = time.perf_counter()
            trace = collect(decode(loaded.model, plan, config, cache=cache))
            seconds[cache] += time.perf_counter() - start
            fills[cache].append(trace.final_ids)
    return {
        "model": model_name, "blanks": len(plans), "given_grouping": loaded.given_grouping,
        "open_tokens": sum(len(p.open_positions) for p in plans), "tokens": sum(p.length for p in plans),
        "cached_s": round(seconds[True], 3), "recompute_s": round(seconds[False], 3),
        "speedup": round(seconds[False] / seconds[True], 2) if seconds[True] > 0 else None,
        "same_fills": fills[True] == fills[False], "threads": torch.get_num_threads(), "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--blanks", type=int, default=4, help="story blanks to decode (default 4)")
    args = ap.parse_args(argv)
    if args.blanks < 1:
        ap.error(f"--blanks must be at least 1; got {args.blanks}.")
    report(run(args.model, args.blanks, args.threads), as_json=args.json)


if __name__ == "__main__":
    main()

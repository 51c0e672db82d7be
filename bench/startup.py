"""From `python app.py` to a page that answers: seconds until the server serves its config, and until a first
`/infill` through gradio_client comes back filled.

    python -m bench.startup --json                      # the default model, 3 starts
    python -m bench.startup --json --model tiny --runs 1

Each start is a fresh process on a free localhost port (bench.server: `python app.py --model M --port P
--host 127.0.0.1`), with whatever the machine has cached: the converted base model (`warm_cache` says
whether it was already there before the first start; a cold first start converts the GGUF once, about 25 s
on 2 cores) and the operating system's file cache. `first_answer_s` is the issue's measure: the time from the
process start to the first filled answer, a few tokens of one blank. `--threads N` sets the app's torch
threads (OMP_NUM_THREADS; default: every core). Times are wall seconds; nothing is asserted.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time

from bench import arg_parser, report
from bench.server import served_app

TEXT = "Mia found an old key under the porch. [MASK:6] Inside the box was a letter from her grandmother."


def _converted_base_exists() -> bool | None:
    """Whether the default model's converted base is already cached (None where the library cannot say:
    the base comes from the hub, or the GGUF is not installed)."""
    from model import base

    with contextlib.suppress(Exception):
        if base.base_source() != "hub":
            return base.base_converted()
    return None


def one_start(model: str, timeout: float, threads: int | None = None) -> dict:
    from gradio_client import Client

    env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    try:
        with served_app(model, timeout, poll_s=0.1, env=env) as (url, _pid, started):
            serving = time.perf_counter() - started
            filled, _ = Client(url, verbose=False).predict(TEXT, "A3 plan", 0, api_name="/infill")
            answered = time.perf_counter() - started
    except RuntimeError as err:
        raise SystemExit(str(err)) from None
    if "[MASK" in filled:
        raise SystemExit(f"the first /infill came back unfilled: {filled!r}")
    return {"serving_s": round(serving, 2), "first_answer_s": round(answered, 2)}


def main(argv: list[str] | None = None) -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--runs", type=int, default=3, help="starts, one after another (default 3)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds one start may take before it is refused")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error(f"--runs must be at least 1; got {args.runs}")
    warm = _converted_base_exists() if args.model == "default" else None
    runs = [one_start(args.model, args.timeout, args.threads) for _ in range(args.runs)]
    result = {"bench": "startup", "model": args.model, "runs": runs, "warm_cache": warm,
              "first_answer_s": {"first": runs[0]["first_answer_s"],
                                 "median": round(statistics.median(r["first_answer_s"] for r in runs), 2),
                                 "min": min(r["first_answer_s"] for r in runs)},
              "serving_s": {"median": round(statistics.median(r["serving_s"] for r in runs), 2)},
              "threads": args.threads, "cpus": os.cpu_count()}
    report(result, as_json=args.json)


if __name__ == "__main__":
    main()

"""From `python app.py` to a page that answers: seconds until the server serves its config, and until a first
`/infill` through gradio_client comes back filled.

    python -m bench.startup --json                      # the default model, 3 starts
    python -m bench.startup --json --model tiny --runs 1

Each start is a fresh process on a free localhost port (`python app.py --model M --port P --host 127.0.0.1`),
with whatever the machine has cached: the converted base model (`warm_cache` says whether it was already
there before the first start; a cold first start converts the GGUF once, about 25 s on 2 cores) and the
operating system's file cache. `first_answer_s` is the issue's measure: the time from the process start to
the first filled answer, a few tokens of one blank. Times are wall seconds; nothing is asserted.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import arg_parser, report
from bench.fuzz_api import free_port

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Mia found an old key under the porch. [MASK:6] Inside the box was a letter from her grandmother."


def _converted_base_exists() -> bool | None:
    """Whether the default model's converted base is already cached (None where the library cannot say:
    the base comes from the hub, or the GGUF is not installed)."""
    from model import base

    with contextlib.suppress(Exception):
        if base.base_source() != "hub":
            target = base.cache_root() / f"{base.BASE_NAME}-{base._fingerprint(base.gguf_path())}"
            return (target / "done.json").is_file()
    return None


def one_start(model: str, timeout: float, threads: int | None = None) -> dict:
    import httpx
    from gradio_client import Client

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's threads in the app (default: every core)
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", model, "--port", str(port),
                               "--host", "127.0.0.1"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = t0 + timeout
        while True:
            if server.poll() is not None:
                raise SystemExit(f"`python app.py --model {model}` exited with {server.returncode} before serving")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/config", timeout=5).status_code == 200:
                    break
            if time.perf_counter() > deadline:
                raise SystemExit(f"the app did not serve on {url} within {timeout:.0f} s")
            time.sleep(0.1)
        serving = time.perf_counter() - t0
        filled, _ = Client(url, verbose=False).predict(TEXT, "A3 plan", 0, api_name="/infill")
        answered = time.perf_counter() - t0
        if "[MASK" in filled:
            raise SystemExit(f"the first /infill came back unfilled: {filled!r}")
        return {"serving_s": round(serving, 2), "first_answer_s": round(answered, 2)}
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=30)
        if server.poll() is None:
            server.kill()


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

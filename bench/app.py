"""App speed: server time to render one step, and a full decode through the app's code path.

    python -m bench.app --json [--model default|tiny] [--length 128] [--open 64] [--device cuda] [--dtype int8]
                            [--decode-only]

A `length`-token text with `open` blank tokens in the middle is decoded through `Explorer.decode`
(what the Run button calls) with the app's defaults (A3 plan, left to right, groups of 1; each
group's own rows only), plus groups of 2 and dynamic decoding (k = 2). Then every step of the
trace is rendered as the page does it when the stage settles on it: figures, checker verdict,
candidates table, and each figure serialised to JSON as Gradio sends it (`render_ms`); then, as the
page does next, the other open positions' candidates computed on first view (`preview_ms`:
`Explorer.preview`, one forward). `single_s` and `best_of_n_s` time a 14-token blank (BLANK_14, the
page's first example text until 2026-12-07) decoded by A3 plan left to right and by best of N
(model.rerank), the two in turn three times, medians; `best_of_n_ratio` is their ratio, `single_calls` /
`best_of_n_calls` their model calls (a batched call counts once). `--decode-only` skips the rendering
(no plotly needed: the GPU check's machine has no app dependencies), keeping the decodes and the previews.
`roofline_multiple`: the `decode_s` run's mean step (`step_s`) over the time it takes to read the weights a
step reads once (`bound_s`: bench.roofline's weight bytes in `dtype` at a
quick read bandwidth, bench.roofline's `read_bandwidth`: 2 threads, best of 3, measured first; on a GPU
the device's own). `--dtype int8` runs model.quant's int8 weights (opt-in: faster, changes greedy fills);
`dtype` names the weights' precision that ran. Prints one JSON object on its last line; asserts nothing.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench import arg_parser, device_and_dtype, peak_memory_mb, report, synchronize
from bench.roofline import add_bandwidth_flag, read_bandwidth, roofline_fields


def masked_text(tokenizer, length: int, n_open: int) -> str:
    """Corpus text around one blank of `n_open` tokens, `length` tokens in all (start token included)."""
    from bench.decode import bench_input

    given = length - n_open - 1
    for extra in range(0, 16):  # decoding and re-tokenizing can merge tokens: top up until it fits
        ids = bench_input(tokenizer, 0, given + 1 + extra)[1:].tolist()
        cut = len(ids) // 2
        text = tokenizer.decode(ids[:cut]).rstrip() + f" [MASK:{n_open}] " + tokenizer.decode(ids[cut:]).lstrip()
        if len(tokenizer(text.replace(f" [MASK:{n_open}]", "")).input_ids) >= given:
            return text
    return text


BLANK_14 = ("Mia found an old key under the porch. [MASK:14] Inside the box was a letter from her grandmother. "
            "She read it twice and smiled.")  # a 14-token blank (the page's first example text until 2026-12-07)


def best_of_n_timing(explorer, repeats: int = 3) -> dict:
    """`single_s` and `best_of_n_s` for BLANK_14: A3 plan left to right (the page's Run), and best of N
    (model.rerank: every candidate decoded in lockstep, the texts scored in one forward pass), run in
    turn `repeats` times; the medians, their ratio, and the model calls of each."""
    from app.session import Request
    from model.rerank import CANDIDATES, best_of_n

    device = explorer.loaded.device
    ids, given = explorer.sequence(Request(text=BLANK_14))
    single, best, single_calls, best_calls = [], [], 0, 0
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = explorer.decode(Request(text=BLANK_14, method="A3 plan", order="left to right"))
        synchronize(device)
        single.append(time.perf_counter() - start)
        start = time.perf_counter()
        found = best_of_n(explorer.loaded.model, ids, given, given_grouping=explorer.given_grouping)
        synchronize(device)
        best.append(time.perf_counter() - start)
        single_calls, best_calls = result.trace.model_calls, found.model_calls
    single_s, best_of_n_s = statistics.median(single), statistics.median(best)
    return {"single_s": round(single_s, 3), "best_of_n_s": round(best_of_n_s, 3),
            "best_of_n_ratio": round(best_of_n_s / single_s, 2), "best_of_n_candidates": len(CANDIDATES),
            "single_calls": single_calls, "best_of_n_calls": best_calls, "best_of_n_repeats": repeats}


def run(model_name: str, length: int, n_open: int, threads: int | None = None, *, device="cpu", dtype=None,
        decode_only: bool = False, bandwidth_mb: float | None = None) -> dict:
    from app import device_note, settle
    from app.session import Explorer, Request
    from model.loading import load_model

    if threads:
        torch.set_num_threads(threads)
    bandwidth = read_bandwidth(bandwidth_mb, device=device)  # first: before the model takes the memory
    loaded = load_model(model_name, device=device, dtype=dtype)
    explorer = Explorer(loaded)
    settle()  # as app.build() does
    text = masked_text(loaded.tokenizer, length, n_open)
    explorer.decode(Request(text=text[:200] + " [MASK:2]"))  # warm-up

    def decode_seconds(**kwargs) -> tuple[float, object]:
        synchronize(loaded.device)
        start = time.perf_counter()
        result = explorer.decode(Request(text=text, **kwargs))
        synchronize(loaded.device)
        return time.perf_counter() - start, result

    best_of_n_fields = best_of_n_timing(explorer)
    decode_s, result = decode_seconds(method="A3 plan", order="left to right", group_size=1)
    roofline = roofline_fields(loaded.model, loaded.weight_dtype, decode_s / result.n_steps, bandwidth)
    decode_s2, _ = decode_seconds(method="A3 plan", order="left to right", group_size=2)
    dynamic_s, _ = decode_seconds(method="A3 dynamic", k=2)

    render_ms, preview_ms = [], []
    if not decode_only:
        from app.render import render_step

        render_step(result, 0).grid.to_json()  # warm-up (first plotly validation is slow)
    for step in range(-1, result.n_steps):
        start = time.perf_counter()
        explorer.preview(result, step)  # the other open positions' candidates, computed on first view
        synchronize(loaded.device)
        if step >= 0:
            preview_ms.append(1000 * (time.perf_counter() - start))
        if decode_only:
            continue
        start = time.perf_counter()
        rendered = render_step(result, step)
        explorer.verdict(result, step)
        for fig in (rendered.grid, rendered.dag, rendered.masks, rendered.logprob):
            fig.to_json()
        render_ms.append(1000 * (time.perf_counter() - start))
    rendering = {} if decode_only else {
        "render_ms_mean": round(statistics.mean(render_ms), 1), "render_ms_max": round(max(render_ms), 1),
        "render_ms_median": round(statistics.median(render_ms), 1)}
    return {
        "model": model_name, "device": device_note(loaded), "length": len(result.trace.final_ids),
        "open": len(result.trace.plan.open_positions), "steps": result.n_steps,
        "decode_s": round(decode_s, 3), "decode_s_group_size_2": round(decode_s2, 3),
        "decode_s_dynamic_k2": round(dynamic_s, 3),
        **best_of_n_fields,
        **rendering,
        "preview_ms_mean": round(statistics.mean(preview_ms), 1), "preview_ms_max": round(max(preview_ms), 1),
        **roofline,
        **peak_memory_mb(loaded.device), "targets": {"render_ms": 150, "decode_s": 5},
    }


def main(argv: list[str] | None = None) -> None:
    ap = arg_parser(__doc__, device=True, dtype=True)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--open", type=int, default=64)
    ap.add_argument("--decode-only", action="store_true", help="time the decodes and previews, no rendering")
    add_bandwidth_flag(ap)
    args = ap.parse_args(argv)
    device, dtype = device_and_dtype(args)
    result = run(args.model, args.length, args.open, args.threads, device=device, dtype=dtype,
                 decode_only=args.decode_only, bandwidth_mb=args.bandwidth_mb)
    report(result, as_json=args.json)


if __name__ == "__main__":
    main()

"""Order lab speed: exact log-likelihoods of one 64-token text under 32 orders, batched.

    python -m bench.orders --json [--model tiny|default] [--tokens 64] [--orders 32] [--batch-size 8]

Scores the text under the order lab's default set (left_to_right, right_to_left, outside_in, blocks_of_4,
then random orders and random groupings to make up `orders`), batched `batch-size` orders per forward
pass, and once more one order per pass for comparison. Reports seconds (median of `repeats`), the best
and worst orders, and the AR base's log p for reference. Prints one JSON object on its last line.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench import arg_parser, report

TEXT = ("Once upon a time a small boat left the harbour at dawn. The sailors sang an old song while the "
        "wind filled the sails, and a little girl on the shore waved until the boat was only a white dot "
        "on the blue sea. When the sun went down the sea was calm again and the stars came out one by one.")


def text_ids(loaded, n_tokens: int) -> torch.Tensor:
    ids = loaded.tokenizer(TEXT * 4, add_special_tokens=False).input_ids[: n_tokens - 1]
    return torch.tensor([loaded.start_token_id] + ids)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def run(model: str, n_tokens: int, n_orders: int, batch_size: int, repeats: int) -> dict:
    from model.loading import load_model
    from model.orders import ar_log_likelihood, default_orders, order_likelihoods

    loaded = load_model(model)
    ids = text_ids(loaded, n_tokens)
    n_random = max(0, (n_orders - 4) // 2)
    orders = default_orders(len(ids), n_random=n_random)
    orders = (orders + default_orders(len(ids), n_random=n_orders, seed=1)[4:])[:n_orders]
    order_likelihoods(loaded.model, ids, orders[:1])  # warm up
    batched_s, results = timed(lambda: order_likelihoods(loaded.model, ids, orders, batch_size=batch_size), repeats)
    single_s, _ = timed(lambda: order_likelihoods(loaded.model, ids, orders, batch_size=1), repeats)
    best, worst = max(results, key=lambda r: r.logp), min(results, key=lambda r: r.logp)
    ar = ar_log_likelihood(loaded.base(), ids)[0] if loaded.has_base else None
    return {"model": loaded.name, "device": str(loaded.device), "dtype": str(loaded.dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "tokens": len(ids), "orders": len(orders), "batch_size": batch_size,
            "seconds_batched": round(batched_s, 3), "seconds_one_at_a_time": round(single_s, 3),
            "orders_per_second": round(len(orders) / batched_s, 1),
            "best": best.name, "best_logp": round(best.logp, 3), "worst": worst.name,
            "worst_logp": round(worst.logp, 3),
            "left_to_right_logp": round(next(r.logp for r in results if r.name == "left_to_right"), 3),
            "ar_base_logp": None if ar is None else round(ar, 3)}


def main(argv: list[str] | None = None) -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--orders", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report(run(args.model, args.tokens, args.orders, args.batch_size, args.repeats), as_json=args.json)


if __name__ == "__main__":
    main()

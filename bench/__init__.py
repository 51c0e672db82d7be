"""Benchmarks: each prints one JSON object on its last line and asserts nothing."""

import argparse
import json


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def arg_parser(doc: str, *, device: bool = False, dtype: bool = False) -> argparse.ArgumentParser:
    """The options every benchmark takes: --model, --threads, --json; and --device / --dtype for the
    benchmarks that honour them (a flag a benchmark would ignore is not offered)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="default | tiny | a checkpoint directory")
    if device:
        ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs (default cpu)")
    if dtype:
        ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "int8"],
                        help="the model's weights (default: the library's choice for the device); int8: "
                             "model.quant's int8 weights (opt-in, faster, changes greedy fills)")
    ap.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    return ap


def device_and_dtype(args):
    """(torch.device, torch.dtype | None) from --device / --dtype; a clear exit where CUDA is missing."""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this machine has no CUDA device (torch.cuda.is_available() is False).")
    dtype = getattr(args, "dtype", None)
    return torch.device(args.device), (getattr(torch, dtype) if dtype else None)


def synchronize(device) -> None:
    """Wait for queued GPU work, so that a wall time measures it (nothing to wait for on a CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device) -> dict:
    """The process's peak resident memory and, on a GPU, the peak memory torch allocated there."""
    import resource

    import torch

    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.device(device).type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def report(result: dict, *, as_json: bool) -> None:
    """Print a result as an aligned table (unless --json), then as one JSON line."""
    if not as_json:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:>{width}}: {value}")
    print(json.dumps(result))

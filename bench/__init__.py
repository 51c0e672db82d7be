"""Benchmarks: each prints one JSON object on its last line and asserts nothing."""

import argparse
import json


def arg_parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --model, --threads, --json."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="default | tiny | a checkpoint directory")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    return ap


def report(result: dict, *, as_json: bool) -> None:
    """Print a result as an aligned table (unless --json), then as one JSON line."""
    if not as_json:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:>{width}}: {value}")
    print(json.dumps(result))

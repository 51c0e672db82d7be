"""Benchmarks: each prints one JSON object on its last line and asserts nothing."""

import json


def report(result: dict, *, as_json: bool) -> None:
    """Print a result as an aligned table (unless --json), then as one JSON line."""
    if not as_json:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:>{width}}: {value}")
    print(json.dumps(result))

"""An evaluation run's JSON (`python -m model.eval --json` prints it as its last line): read from a file,
and its per-split blocks, for the tools that read runs afterwards (compare, targets, report)."""

from __future__ import annotations

import json
from pathlib import Path

SPLITS = ("stories", "general")


def read_run(path: str | Path) -> dict:
    """The JSON object on the last non-empty line of `path`; ValueError saying what is wrong otherwise."""
    try:
        lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        run = json.loads(lines[-1])
    except (OSError, IndexError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a model.eval output (its last line must be the JSON object): {err}") from None
    if not isinstance(run, dict):
        raise ValueError(f"{path}: not a model.eval output (its last line is not a JSON object)")
    return run


def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" (0 <= K < N) as (K, N): the K-th of every N blanks, for runs decoded side by side; ValueError
    with the message a command line shows otherwise."""
    try:
        shard = tuple(int(part) for part in str(text).split("/"))
        if len(shard) == 2 and 0 <= shard[0] < shard[1]:
            return shard
    except ValueError:
        pass
    raise ValueError(f"--shard must be K/N with 0 <= K < N (e.g. 0/2); got {text!r}")


def infill_block(run: dict, split: str) -> dict:
    """The split's per-method infill scores ({} where the run has none)."""
    return run.get("infill", {}) if split == "stories" else run.get("general", {}).get("infill", {})


def paired_block(run: dict, split: str) -> dict:
    """The split's paired differences ({} where the run has none)."""
    return run.get("infill_paired", {}) if split == "stories" else run.get("general", {}).get("infill_paired", {})

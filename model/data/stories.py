"""The story corpus: where it lives, how to read it, and how a story splits into sentences.

Pure text helpers shared by the distiller (`model.data.distill`), the trainer and the evaluation.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parents[2] / "assets" / "stories"
SPLITS = ("train", "validation", "test")

# A sentence ends at . ! or ? (optionally followed by closing quotes/brackets) and whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split a story into sentences, keeping each sentence's trailing quote marks."""
    text = " ".join(text.split())
    if not text:
        return []
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        pieces.append(text[start:end].strip())
        start = end
    pieces.append(text[start:].strip())
    return [p for p in pieces if p]


def corpus_file(split: str, directory: Path | None = None) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return (directory or CORPUS_DIR) / f"{split}.jsonl.gz"


def read_stories(split: str, directory: Path | None = None, limit: int | None = None) -> list[dict]:
    """Records `{"id", "prompt", "text"}` of one split of the shipped (or given) corpus."""
    path = corpus_file(split, directory)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Generate the corpus with `python -m model.data.distill` "
            "(see assets/stories/README.md)."
        )
    return list(iter_jsonl_gz(path, limit))


def iter_jsonl_gz(path: Path, limit: int | None) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if limit is not None and n >= limit:
                return
            yield json.loads(line)

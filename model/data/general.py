"""The general-text corpus: human-written English that is not stories, for training and evaluation.

    python -m model.data.general --build            # needs Debian's wordnet-base, python3.11-doc, dict-jargon

Three sources, each public domain or permissively licensed, each a different register:
    wordnet   everyday English: the example sentences of WordNet 3.0 ("she had a feeling of euphoria";
              WordNet 3.0 license: free use with the copyright notice, see assets/general/README.md)
    pydocs    instructional prose: paragraphs of the Python 3.11 documentation sources (tutorial, howto,
              FAQ, library and language reference; PSF license)
    jargon    encyclopedic entries: paragraphs of the Jargon File 4.4.7 (public domain)
A document is one paragraph (wordnet: one sentence). The split is a hash of the document's text
(90 / 5 / 5), so no document is in two splits. The result ships in assets/general (gzip JSONL, one
`{"id", "source", "text"}` per line) with card.json; the building machine needs the Debian packages,
nobody else does.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
from pathlib import Path

from model.data.stories import iter_jsonl_gz, split_sentences

GENERAL_DIR = Path(__file__).resolve().parents[2] / "assets" / "general"
SPLITS = ("train", "validation", "test")
SOURCES = ("wordnet", "pydocs", "jargon")
WORDNET_DIR = Path("/usr/share/wordnet")
PYDOCS_DIR = Path("/usr/share/doc/python3.11/html/_sources")
PYDOCS_PARTS = ("tutorial", "howto", "faq", "library", "reference", "using")
JARGON_FILE = Path("/usr/share/dictd/jargon.dict.dz")


# --------------------------------------------------------------------------------------------------
# reading the shipped corpus


def general_file(split: str, directory: Path | None = None) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return (directory or GENERAL_DIR) / f"{split}.jsonl.gz"


def read_general(split: str, directory: Path | None = None, limit: int | None = None) -> list[dict]:
    """Records `{"id", "source", "text"}` of one split of the shipped (or given) general corpus."""
    path = general_file(split, directory)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist. Build it with `python -m model.data.general --build` "
                                "(see assets/general/README.md).")
    return list(iter_jsonl_gz(path, limit))


def interleave_sources(records: list[dict], limit: int | None = None) -> list[dict]:
    """Round-robin over the sources (in SOURCES order), so any prefix is a balanced sample."""
    by_source = {s: [r for r in records if r["source"] == s] for s in SOURCES}
    out: list[dict] = []
    for i in range(max((len(v) for v in by_source.values()), default=0)):
        out.extend(v[i] for v in by_source.values() if i < len(v))
    return out[:limit] if limit is not None else out


# --------------------------------------------------------------------------------------------------
# extraction (pure text functions; tested on small inputs)

_WORDNET_EXAMPLE = re.compile(r'"([^"]{3,})"')


def wordnet_examples(data_line: str) -> list[str]:
    """The quoted example sentences of one `data.*` line, as sentences (capitalised, end punctuation)."""
    if "|" not in data_line:
        return []
    gloss = data_line.split("|", 1)[1]
    out = []
    for example in _WORDNET_EXAMPLE.findall(gloss):
        example = " ".join(example.split()).strip(" ;")
        if len(example.split()) < 6 or not example[0].isalpha():
            continue
        example = example[0].upper() + example[1:]
        if example[-1] not in ".!?":
            example += "."
        out.append(example)
    return out


_RST_ROLE = re.compile(r":[a-z:]+:`!?~?([^`<]*?)(?:\s*<[^>]*>)?`")
_RST_LITERAL = re.compile(r"``([^`]*)``")
_RST_LINK = re.compile(r"`([^`<]*?)\s*<[^>]*>`_+")
_RST_EMPH = re.compile(r"\*\*?([^*]+)\*\*?")


def rst_paragraphs(text: str) -> list[str]:
    """Prose paragraphs of an reStructuredText source: no directives, code, tables, lists or titles;
    roles and literals reduced to their text."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if any(line.startswith((" ", "\t")) for line in lines):
            continue  # indented: code, directive body, block quote
        first = lines[0]
        if first.startswith(("..", "*", "-", "+", "|", "=", ">>>", "#", "1.", "(")) or "::" in block:
            continue
        if len(lines) > 1 and re.fullmatch(r"[=\-~^*#+\"']{3,}", lines[1].strip()):
            continue  # a title
        para = " ".join(line.strip() for line in lines)
        para = _RST_ROLE.sub(r"\1", para)
        para = _RST_LINK.sub(r"\1", para)
        para = _RST_LITERAL.sub(r"\1", para)
        para = _RST_EMPH.sub(r"\1", para)
        para = para.replace("\\", "")
        if "`" in para or "|" in para or len(para.split()) < 12 or para[-1] not in ".!?":
            continue
        out.append(para)
    return out


def jargon_paragraphs(text: str) -> list[str]:
    """Definition paragraphs of the Jargon File's dictd text: indented blocks, cross-reference
    braces removed, no pronunciation or source-note paragraphs."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if not all(line.startswith("    ") for line in lines if line.strip()):
            continue
        para = " ".join(line.strip() for line in lines).strip()
        para = re.sub(r"\{\s*([^}]*?)\s*\}", r"\1", para)
        para = re.sub(r"^\d+\.\s+", "", para)
        para = re.sub(r"^\[[^\]]*\]\s*", "", para)  # [from Greek ...] etymology notes
        if len(para.split()) < 12 or para[-1] not in ".!?\"”" or not para[0].isalpha():
            continue
        if sum(ord(c) < 128 for c in para) < 0.98 * len(para):
            continue
        out.append(para.replace("“", '"').replace("”", '"').replace("’", "'").replace("‘", "'")
                   .replace("—", " - "))
    return out


def split_of(text: str) -> str:
    """90 / 5 / 5 by a hash of the text."""
    bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < 5 else "validation" if bucket < 10 else "train"


def middle_span(n_tokens: int, fraction: float = 0.4) -> tuple[int, int]:
    """The middle `fraction` of n tokens as [lo, hi) (at least one token; one token kept on each side)."""
    width = max(1, min(n_tokens - 2, round(n_tokens * fraction)))
    lo = max(1, (n_tokens - width) // 2)
    return lo, lo + width


# --------------------------------------------------------------------------------------------------
# building


def _collect() -> dict[str, list[str]]:
    import zlib

    wordnet = []
    for part in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET_DIR / f"data.{part}").read_text(encoding="latin-1").splitlines():
            if not line.startswith("  "):
                wordnet.extend(wordnet_examples(line))
    pydocs = []
    for part in PYDOCS_PARTS:
        for path in sorted((PYDOCS_DIR / part).rglob("*.rst.txt")):
            pydocs.extend(rst_paragraphs(path.read_text(encoding="utf-8")))
    raw = JARGON_FILE.read_bytes()
    jargon = jargon_paragraphs(zlib.decompress(raw, 16 + zlib.MAX_WBITS).decode("utf-8"))
    return {"wordnet": wordnet, "pydocs": pydocs, "jargon": jargon}


OVERLAP_WORDS = 8  # a held-out document sharing this many words in a row with a training one is dropped


def ngrams(text: str, n: int = OVERLAP_WORDS) -> set[int]:
    words = re.findall(r"\w+", text.lower())
    return {hash(" ".join(words[i : i + n])) for i in range(len(words) - n + 1)}


def drop_overlapping(splits: dict[str, list[dict]], n: int = OVERLAP_WORDS) -> dict[str, int]:
    """Remove from the held-out splits (validation, test) every document that shares an n-word sequence
    with a training document (Python docs and the Jargon File repeat boilerplate across entries, so a
    test paragraph may otherwise have been trained on nearly word for word). The training split is kept
    as it is. Returns how many documents each held-out split lost."""
    seen: set[int] = set()
    for record in splits["train"]:
        seen |= ngrams(record["text"], n)
    dropped = {}
    for split in ("validation", "test"):
        kept = [r for r in splits[split] if not (ngrams(r["text"], n) & seen)]
        dropped[split] = len(splits[split]) - len(kept)
        splits[split] = kept
    return dropped


def _counts(splits: dict[str, list[dict]]) -> dict:
    return {source: {s: sum(r["source"] == source for r in splits[s]) for s in SPLITS} for source in SOURCES}


def _write(splits: dict[str, list[dict]], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        with gzip.open(dest / f"{split}.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def dedupe(directory: Path = GENERAL_DIR) -> dict:
    """`drop_overlapping` on the corpus as stored (no Debian packages needed); rewrites the held-out
    splits and the card, returns the card."""
    splits = {s: read_general(s, directory) for s in SPLITS}
    dropped = drop_overlapping(splits)
    _write({s: splits[s] for s in ("validation", "test")}, directory)
    card = json.loads((directory / "card.json").read_text())
    card.update(documents=_counts(splits), held_out_dedup=_dedup_note(dropped))
    (directory / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def _dedup_note(dropped: dict[str, int]) -> dict:
    return {"rule": f"validation and test documents sharing {OVERLAP_WORDS} words in a row with a train document "
                    "are dropped", "dropped": dropped}


def build(dest: Path = GENERAL_DIR, max_chars: dict | None = None) -> dict:
    """Extract, dedupe, split and write the corpus; returns the card."""
    max_chars = max_chars or {"wordnet": 10**9, "pydocs": 2_400_000, "jargon": 10**9}
    docs = _collect()
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for source in SOURCES:
        seen, used = set(), 0
        for text in docs[source]:
            key = text.lower()
            if key in seen or used > max_chars[source]:
                continue
            seen.add(key)
            used += len(text)
            split = split_of(text)
            splits[split].append({"id": f"{source}-{len(seen):06d}", "source": source, "text": text})
    dropped = drop_overlapping(splits)
    _write(splits, dest)
    card = {"sources": {"wordnet": "WordNet 3.0 example sentences (Debian wordnet-base 1:3.0-37)",
                        "pydocs": f"Python 3.11 documentation sources {list(PYDOCS_PARTS)} (Debian python3.11-doc)",
                        "jargon": "The Jargon File 4.4.7 (Debian dict-jargon 4.4.7-3.1)"},
            "documents": _counts(splits), "chars_per_source_cap": max_chars,
            "split": "sha256(text) % 100: <5 test, <10 validation, else train", "held_out_dedup": _dedup_note(dropped)}
    (dest / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def sentence_for_infill(text: str, min_words: int = 8, max_words: int = 30) -> str | None:
    """The first sentence of a document with a length fit for the middle-span infilling task."""
    for sentence in split_sentences(text):
        if min_words <= len(sentence.split()) <= max_words:
            return sentence
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m model.data.general", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="store_true", help="extract from the Debian packages into --dest")
    ap.add_argument("--dedupe", action="store_true",
                    help=f"drop held-out documents sharing {OVERLAP_WORDS} words in a row with train (in --dest)")
    ap.add_argument("--dest", type=Path, default=GENERAL_DIR)
    args = ap.parse_args(argv)
    if not (args.build or args.dedupe):
        ap.error("nothing to do: pass --build or --dedupe")
    print(json.dumps(build(args.dest) if args.build else dedupe(args.dest)))


if __name__ == "__main__":
    main()
